"""Findings from what the decoders flagged as nonconforming (PS3.8 section 9, PS3.7)."""

from __future__ import annotations

from collections import defaultdict

from dicomtrace.findings.association import label
from dicomtrace.findings.base import Finding

ISSUES = {
    "malformed-pdu": ("error",
                      "A PDU did not follow the layout of PS3.8 section 9.3; the bytes around the "
                      "offset show what was wrong. A peer that sends it is nonconforming (report it "
                      "to its vendor); the receiving side may abort or misread the message."),
    "pdu-exceeds-max-length": ("warning",
                               "The sender ignored the maximum PDU length the receiver announced "
                               "in its A-ASSOCIATE (PS3.8 D.1); strict receivers abort. Fix the "
                               "sender, or raise the receiver's maximum PDU size."),
    "invalid-presentation-context-id": ("warning",
                                        "Presentation context IDs must be odd numbers from 1 to 255 "
                                        "and match a negotiated context (PS3.8 9.3.2.2); strict "
                                        "peers reject or abort. A vendor fix is needed."),
    "invalid-pdv-flags": ("warning",
                          "Only bits 0 (command/data) and 1 (last fragment) of the PDV message "
                          "control header may be set (PS3.8 E.2); strict peers abort."),
    "unexpected-pdu": ("error",
                       "A PDU arrived that the association's state does not allow (PS3.8 table "
                       "9-10), e.g. data before the association was accepted or after it was "
                       "released. The peers disagree about the association's state: look at "
                       "both sides' logs and timeouts."),
    "context-misuse": ("error",
                       "A message used a presentation context that was not accepted, or carried "
                       "a SOP class other than the one negotiated for it. The receiver will refuse "
                       "or misinterpret it; the sender must pick the context negotiated for the "
                       "SOP class (and transfer syntax) it sends."),
    "message-id-reused": ("warning",
                          "A Message ID must be unique among the requests outstanding on an "
                          "association (PS3.7 9.1.1.1); a reused ID makes responses ambiguous. "
                          "A fix in the sender is needed."),
}


def protocol_issues(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        by_code = defaultdict(list)
        for issue in a.issues:
            if issue.code in ISSUES:
                by_code[issue.code].append(issue)
        for code, issues in by_code.items():
            severity, hint = ISSUES[code]
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
