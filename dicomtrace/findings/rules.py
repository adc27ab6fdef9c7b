"""All finding rules, in one list (one module per area)."""

from dicomtrace.findings import association, conformance, network, operation, query, retrieve, tls

ALL = (association.RULES + operation.RULES + query.RULES + retrieve.RULES + conformance.RULES
       + network.RULES + tls.RULES)
