"""Findings: rules over the model that say what went wrong and what to check."""

from __future__ import annotations

from dicomtrace.findings.base import Finding, sort_findings


def evaluate(analysis) -> list[Finding]:
    """Every finding for an analysis, most severe first."""
    from dicomtrace.findings import rules

    found: list[Finding] = []
    for rule in rules.ALL:
        found.extend(rule(analysis))
    return sort_findings(found)


__all__ = ["Finding", "evaluate"]
