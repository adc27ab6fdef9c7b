"""The typed interface of the findings stage."""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITY_ORDER = {"error": 0, "warning": 1, "note": 2}


@dataclass(slots=True)
class Finding:
    """What went wrong (or is worth knowing), the evidence, and what to do about it."""

    code: str  # stable kebab-case identifier, documented in docs/findings.md
    severity: str  # error, warning, note
    message: str  # what was seen, in plain words
    hint: str = ""  # likely causes and what to check or change
    association: int | None = None
    frames: list[int] = field(default_factory=list)
    operations: list[int] = field(default_factory=list)  # message IDs concerned
    details: dict = field(default_factory=dict)
    id: int = 0  # 1-based, unique within an analysis (findings.links numbers them)
    caused_by: int | None = None  # the id of the root cause's finding, for a consequence

    def to_json(self) -> dict:
        out = {"id": self.id, "code": self.code, "severity": self.severity,
               "association": self.association,
               "frames": sorted(set(f for f in self.frames if f is not None)),
               "message": self.message, "hint": self.hint, "caused_by": self.caused_by}
        if self.operations:
            out["message_ids"] = self.operations
        if self.details:
            out["details"] = self.details
        return out


def completing_frame(response) -> int:
    """The frame that completes a response's PDU: Wireshark shows the message there (and
    "TCP segment of a reassembled PDU" at the earlier ones). Response.last_frame where the
    model records it, else its first frame."""
    return getattr(response, "last_frame", 0) or response.frame


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 9),
                                           f.association if f.association is not None else 0,
                                           min(f.frames) if f.frames else 0))
