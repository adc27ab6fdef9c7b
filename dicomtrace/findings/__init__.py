"""Findings: rules over the model that say what went wrong and what to check."""

from __future__ import annotations

from dicomtrace.findings.base import Finding


def evaluate(analysis) -> list[Finding]:
    """Every finding for an analysis: root causes most severe first, each followed by the
    findings it caused (``caused_by``), numbered (``id``)."""
    from dicomtrace.findings import rules
    from dicomtrace.findings.links import link

    found: list[Finding] = []
    for rule in rules.ALL:
        found.extend(rule(analysis))
    return link(found)


__all__ = ["Finding", "evaluate"]
