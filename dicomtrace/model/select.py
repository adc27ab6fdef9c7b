"""Selecting associations and operations, like Wireshark's display filters (all must match)."""

from __future__ import annotations

from dataclasses import dataclass, fields

STATUS_CATEGORIES = ("success", "warning", "failure", "cancel", "pending", "unanswered")


@dataclass(frozen=True, slots=True)
class Selection:
    """Each field empty: no condition.  Names are the command line's (``--on-port``) and
    the JSON ``filters`` keys."""

    ae: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    on_port: tuple[int, ...] = ()
    command: tuple[str, ...] = ()  # DIMSE service, e.g. C-STORE
    status: tuple[str, ...] = ()  # STATUS_CATEGORIES
    association: tuple[int, ...] = ()

    def applied(self) -> dict:
        """The conditions given (JSON ``filters``); empty when none."""
        return {f.name: list(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)}

    def keeps(self, a) -> bool:
        """Does association ``a`` pass the association-level conditions?"""
        return ((not self.association or a.id in self.association)
                and (not self.ae or bool({a.calling_ae, a.called_ae} & set(self.ae)))
                and (not self.ip or bool({a.requestor.ip, a.acceptor.ip} & set(self.ip)))
                and (not self.on_port or bool({a.requestor.port, a.acceptor.port} & set(self.on_port))))

    def operations(self, a) -> list:
        return [op for op in a.operations
                if (not self.command or op.service in self.command)
                and (not self.status
                     or (op.final.info.category if op.final else "unanswered") in self.status)]

    def apply(self, analysis, findings: list) -> list:
        """Keep, in place, the associations and operations selected; return the findings
        about what is kept (and those about no association)."""
        if not self.applied():
            return findings
        kept = []
        for a in analysis.associations:
            if not self.keeps(a):
                continue
            if self.command or self.status:
                ops = self.operations(a)
                if not ops:
                    continue
                a.operations = ops
            kept.append(a)
        analysis.associations = kept
        ids = {a.id for a in kept}
        return [f for f in findings if f.association is None or f.association in ids]
