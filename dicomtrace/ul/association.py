"""The association state machine of PS3.8 9.2 (Table 9-10), seen from the wire.

An observer of a capture sees PDUs, not service primitives, and does not act: of the
thirteen states of Table 9-10 it can tell apart the five below, the same for both
roles.  ONE table, :data:`TRANSITIONS`, maps (state, PDU type) to the next state and the
event to emit, in the manner of h11's ``_state.py``; a PDU the table does not list for
a state is an :class:`UnexpectedPdu` (Table 9-10's AA-1/AA-8 column: the peers would
abort), with the next state :data:`UNEXPECTED` says.  The machine does not know which
side is which: the caller names the sender of each PDU ("requestor" / "acceptor").
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomtrace.ul.pdu import (
    A_ABORT, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, A_RELEASE_RP, A_RELEASE_RQ, P_DATA_TF,
)

# the states an observer can tell apart, with the Table 9-10 states they stand for
IDLE = "idle"                # Sta1, Sta2 (connection open, no A-ASSOCIATE-RQ yet)
REQUESTED = "requested"      # Sta3, Sta5 (A-ASSOCIATE-RQ sent, no answer yet)
ESTABLISHED = "established"  # Sta6
RELEASING = "releasing"      # Sta7-Sta12 (A-RELEASE-RQ sent, release collisions included)
CLOSED = "closed"            # Sta13 (rejected, released or aborted; awaiting the close)


@dataclass(slots=True, frozen=True)
class AssociationEvent:
    """Something the association did; ``sender`` is who sent the PDU."""

    sender: str


class Requested(AssociationEvent):
    """A-ASSOCIATE-RQ (Table 9-10 AE-6: Sta2 -> Sta3, seen as Sta5 from the requestor's side)."""
    __slots__ = ()


class Accepted(AssociationEvent):
    """A-ASSOCIATE-AC (AE-3: Sta5 -> Sta6)."""
    __slots__ = ()


class Rejected(AssociationEvent):
    """A-ASSOCIATE-RJ (AE-4: Sta5 -> Sta1)."""
    __slots__ = ()


class ReleaseRequested(AssociationEvent):
    """A-RELEASE-RQ (AR-2: Sta6 -> Sta8; AR-8 in Sta7: release collision)."""
    __slots__ = ()


class Released(AssociationEvent):
    """A-RELEASE-RP (AR-3: Sta7 -> Sta1)."""
    __slots__ = ()


class Aborted(AssociationEvent):
    """A-ABORT (AA-3 in any state -> Sta1)."""
    __slots__ = ()


@dataclass(slots=True, frozen=True)
class UnexpectedPdu(AssociationEvent):
    """A PDU that Table 9-10 does not allow in this state (AA-1 / AA-8 / AA-6)."""

    message: str
    with_offset: bool = True  # the stream offset of the PDU locates it (not for a wrong sender)


# (state, PDU type) -> (next state, event), with the Table 9-10 action of each transition
TRANSITIONS: dict[tuple[str, int], tuple[str, type[AssociationEvent] | None]] = {
    (IDLE, A_ASSOCIATE_RQ): (REQUESTED, Requested),          # Sta2 + Evt6 -> AE-6
    (REQUESTED, A_ASSOCIATE_AC): (ESTABLISHED, Accepted),    # Sta5 + Evt3 -> AE-3
    (REQUESTED, A_ASSOCIATE_RJ): (CLOSED, Rejected),         # Sta5 + Evt4 -> AE-4
    (ESTABLISHED, P_DATA_TF): (ESTABLISHED, None),           # Sta6 + Evt10 -> DT-2
    (RELEASING, P_DATA_TF): (RELEASING, None),               # Sta7 + Evt10 -> AR-6
    (ESTABLISHED, A_RELEASE_RQ): (RELEASING, ReleaseRequested),  # Sta6 + Evt12 -> AR-2
    (RELEASING, A_RELEASE_RQ): (RELEASING, ReleaseRequested),    # Sta7 + Evt12 -> AR-8 (collision)
    (RELEASING, A_RELEASE_RP): (CLOSED, Released),           # Sta7 + Evt13 -> AR-3
    (IDLE, A_ABORT): (CLOSED, Aborted),                      # Sta2 + Evt16 -> AA-2
    (REQUESTED, A_ABORT): (CLOSED, Aborted),                 # Sta5 + Evt16 -> AA-3
    (ESTABLISHED, A_ABORT): (CLOSED, Aborted),               # Sta6 + Evt16 -> AA-3
    (RELEASING, A_ABORT): (CLOSED, Aborted),                 # Sta7 + Evt16 -> AA-3
    (CLOSED, A_ABORT): (CLOSED, Aborted),                    # Sta13 + Evt16 -> AA-2
}

# a PDU out of place: (next state or None to stay, event still emitted, wording of the
# problem, excused after a mid-stream start whose earlier PDUs were never captured)
UNEXPECTED: dict[int, tuple[str | None, type[AssociationEvent] | None, str, bool]] = {
    A_ASSOCIATE_RQ: (None, None, "A-ASSOCIATE-RQ from the {sender} while the association is {state}", False),
    A_ASSOCIATE_AC: (ESTABLISHED, Accepted, "A-ASSOCIATE-AC from the {sender} while the association is {state}", True),
    A_ASSOCIATE_RJ: (CLOSED, Rejected, "A-ASSOCIATE-RJ from the {sender} while the association is {state}", True),
    A_RELEASE_RQ: (RELEASING, ReleaseRequested, "A-RELEASE-RQ from the {sender} while the association is {state}", False),
    A_RELEASE_RP: (CLOSED, Released, "A-RELEASE-RP from the {sender} with no release requested", False),
    P_DATA_TF: (None, None, "P-DATA-TF from the {sender} {where}", False),
}
WHERE = {IDLE: "before any A-ASSOCIATE-RQ", REQUESTED: "before the A-ASSOCIATE-AC",
         CLOSED: "after the association ended"}
# who may send which PDU (Table 9-10 is written for one side; the other is AA-8)
SENDER = {A_ASSOCIATE_AC: "acceptor"}


class AssociationStateMachine:
    """The state of one association; :meth:`receive` takes each PDU's type and sender."""

    def __init__(self):
        self.state = IDLE
        self.midstream = False

    def joined_midstream(self) -> None:
        """The capture began after the negotiation: data transfer is assumed (Sta6)."""
        if self.state == IDLE:
            self.midstream = True
            self.state = ESTABLISHED

    def receive(self, pdu_type: int, sender: str) -> list[AssociationEvent]:
        state = self.state
        out: list[AssociationEvent] = []
        hit = TRANSITIONS.get((state, pdu_type))
        if hit is not None:
            self.state, event = hit
        else:
            nxt, event, text, excused = UNEXPECTED[pdu_type]
            if not (excused and self.midstream):
                out.append(UnexpectedPdu(sender, text.format(sender=sender, state=state,
                                                             where=WHERE.get(state, f"in state {state}"))))
            if nxt is not None:
                self.state = nxt
        expected = SENDER.get(pdu_type)
        if expected is not None and sender != expected:
            out.append(UnexpectedPdu(sender, f"{_NAMES[pdu_type]} sent by the {sender}", with_offset=False))
        if event is not None:
            out.append(event(sender))
        return out


_NAMES = {A_ASSOCIATE_AC: "A-ASSOCIATE-AC"}
