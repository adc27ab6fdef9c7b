"""Findings from what the decoders flagged as nonconforming (PS3.8 section 9, PS3.7)."""

from __future__ import annotations

from collections import defaultdict

from dicomtrace.findings.association import label
from dicomtrace.findings.base import Finding
from dicomtrace.findings.codes import advice, default_severity

# Codes the decoders (ul/, dimse/, model/) record as protocol issues; registered in codes.py.
ISSUES = ("malformed-pdu", "pdu-exceeds-max-length", "invalid-presentation-context-id",
          "invalid-pdv-flags", "unexpected-pdu", "context-misuse", "message-id-reused",
          "unknown-command-field")


def protocol_issues(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        by_code = defaultdict(list)
        for issue in a.issues:
            if issue.code in ISSUES:
                by_code[issue.code].append(issue)
        for code, issues in by_code.items():
            severity, hint = default_severity(code), advice(code)
            first = issues[0]
            where = f" (stream offset {first.offset})" if first.offset is not None and code == "malformed-pdu" else ""
            msg = f"On {label(a)}, the {first.side}: {first.message}{where}."
            if len(issues) > 1:
                msg += f" {len(issues) - 1} more like it"
                others = sorted({i.message for i in issues[1:]} - {first.message})
                if others:
                    msg += ", e.g. " + "; ".join(others[:3])
                msg += "."
            out.append(Finding(code, severity, msg, hint, a.id,
                               [i.frame for i in issues[:20] if i.frame is not None],
                               details={"count": len(issues),
                                        "offsets": [i.offset for i in issues[:20]]}))
    return out


RULES = [protocol_issues]
