"""One cause, one headline: findings that share a cause are linked to their root.

Each rule below names a root finding and the consequences that follow from it on the
same association (and, where it matters, the same operation). A consequence gets
``caused_by`` = the root's ``id`` and a hint that points at the root instead of
advice of its own that could contradict it (a C-MOVE whose destination never
answered is not "out of resources"). Order: every root, most severe first, each
followed by its consequences.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from dicomtrace.findings.base import Finding, sort_findings


class Link(NamedTuple):
    root: str  # code of the root finding
    consequence: str  # code of the finding it causes
    same_operation: bool  # they must share a message ID
    hint: str  # the consequence's hint ({root} is the root's code)
    when: Callable[[Finding, Finding], bool] | None = None  # (root, consequence) -> linked?


def _cut_off(root: Finding, cons: Finding) -> bool:
    return bool(cons.details.get("cut_off"))


def _aborted_for_context(root: Finding, cons: Finding) -> bool:
    return bool(cons.details.get("after_rejected_context"))


def _unanswered_incomplete(root: Finding, cons: Finding) -> bool:
    return bool(cons.details.get("request_incomplete"))


LINKS: tuple[Link, ...] = (
    # a C-MOVE whose destination never answered: the failure status, the missing
    # responses and sub-operation counts all follow from it
    Link("move-destination-unreachable", "dimse-failure", True,
         "A consequence of {root}: the Q/R SCP answered with this failure because it could not "
         "open the sub-association to the move destination, not for a reason of its own. Fix "
         "the destination's address and port first."),
    Link("move-destination-unreachable", "request-unanswered", True,
         "A consequence of {root}: the Q/R SCP was still trying to reach the move destination "
         "when the requestor gave up."),
    Link("move-destination-unreachable", "move-suboperation-failed", True,
         "A consequence of {root}: no sub-operation could run without a sub-association."),
    Link("move-destination-unreachable", "move-suboperation-count-mismatch", True,
         "A consequence of {root}."),
    Link("move-destination-unreachable", "idle-gap", True,
         "A consequence of {root}: the silence is the Q/R SCP waiting for the destination."),
    # a requestor that aborts because a context it needed was rejected
    Link("no-accepted-presentation-context", "association-aborted", False,
         "A consequence of {root}: the requestor aborted because nothing it needed was "
         "accepted. Fix the negotiation (see {root}), not the abort.", _aborted_for_context),
    Link("presentation-context-rejected", "association-aborted", False,
         "A consequence of {root}: the requestor aborted right after the acceptor rejected "
         "presentation contexts it needed. Fix the negotiation (see {root}), not the abort.",
         _aborted_for_context),
    # a TCP reset is the root of the association's end without release
    Link("tcp-reset", "connection-closed-without-release", False,
         "A consequence of {root}: see there who reset the connection."),
    # an object cut off by the association's end, or whose bytes the capture missed
    Link("association-aborted", "object-incomplete", False,
         "A consequence of {root}: the transfer was cut off by the abort.", _cut_off),
    Link("tcp-reset", "object-incomplete", False,
         "A consequence of {root}: the transfer was cut off by the reset.", _cut_off),
    Link("tcp-data-missing", "object-incomplete", False,
         "A consequence of {root}: the capture missed bytes; the receiver may still have the "
         "whole object. Capture with a larger buffer to be sure."),
    # a request whose data set never arrived whole cannot be answered
    Link("object-incomplete", "request-unanswered", True,
         "A consequence of {root}: the request's data set never reached the responder whole, "
         "so it could not answer; look at why the transfer stopped, not at the responder.",
         _unanswered_incomplete),
)


def _shares_operation(a: Finding, b: Finding) -> bool:
    return bool(set(a.operations) & set(b.operations))


def link(findings: list[Finding]) -> list[Finding]:
    """Set ``caused_by``, reword the consequences' hints, number them (``id``) and order
    them: roots most severe first, each followed by its consequences."""
    by_assoc: dict[int | None, list[Finding]] = {}
    for f in findings:
        by_assoc.setdefault(f.association, []).append(f)
    cause: dict[int, Finding] = {}  # id(consequence) -> root
    for group in by_assoc.values():
        for rule in LINKS:
            roots = [f for f in group if f.code == rule.root]
            if not roots:
                continue
            for cons in group:
                if cons.code != rule.consequence or id(cons) in cause:
                    continue
                for root in roots:
                    if root is cons or id(root) in cause and cause[id(root)] is cons:
                        continue
                    if rule.same_operation and not _shares_operation(root, cons):
                        continue
                    if rule.when is not None and not rule.when(root, cons):
                        continue
                    cause[id(cons)] = root
                    cons.hint = rule.hint.format(root=rule.root)
                    break
    # a chain (A causes B causes C) ends at its first root
    def top(f: Finding) -> Finding:
        seen = set()
        while id(f) in cause and id(f) not in seen:
            seen.add(id(f))
            f = cause[id(f)]
        return f

    ordered: list[Finding] = []
    children: dict[int, list[Finding]] = {}
    for f in sort_findings(findings):
        if id(f) in cause:
            children.setdefault(id(top(f)), []).append(f)
    for f in sort_findings(findings):
        if id(f) not in cause:
            ordered.append(f)
            ordered.extend(children.get(id(f), []))
    for n, f in enumerate(ordered, 1):
        f.id = n
    for f in ordered:
        f.caused_by = top(f).id if id(f) in cause else None
    return ordered
