"""dicomtrace.ul.association: the PS3.8 Table 9-10 state machine, as an observer sees it."""

from __future__ import annotations

import pytest

from dicomtrace.ul import association as ua
from dicomtrace.ul.pdu import (
    A_ABORT, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, A_RELEASE_RP, A_RELEASE_RQ, P_DATA_TF,
)

RQ, AC, RJ, DT, RLRQ, RLRP, AB = (A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF,
                                  A_RELEASE_RQ, A_RELEASE_RP, A_ABORT)
R, A = "requestor", "acceptor"


def run(steps, midstream=False):
    m = ua.AssociationStateMachine()
    if midstream:
        m.joined_midstream()
    out = []
    for pdu, sender in steps:
        out.append([type(e).__name__ for e in m.receive(pdu, sender)])
    return m.state, out


def test_released_association():
    state, events = run([(RQ, R), (AC, A), (DT, R), (DT, A), (RLRQ, R), (RLRP, A)])
    assert state == ua.CLOSED
    assert events == [["Requested"], ["Accepted"], [], [], ["ReleaseRequested"], ["Released"]]


def test_rejected_association():
    assert run([(RQ, R), (RJ, A)]) == (ua.CLOSED, [["Requested"], ["Rejected"]])


def test_release_collision_is_allowed():
    state, events = run([(RQ, R), (AC, A), (RLRQ, R), (RLRQ, A), (RLRP, A)])
    assert state == ua.CLOSED and events[3] == ["ReleaseRequested"]


@pytest.mark.parametrize("state_steps", [[], [(RQ, R)], [(RQ, R), (AC, A)], [(RQ, R), (AC, A), (RLRQ, R)],
                                         [(RQ, R), (RJ, A)]])
def test_abort_in_every_state(state_steps):
    state, events = run(state_steps + [(AB, A)])
    assert state == ua.CLOSED and events[-1] == ["Aborted"]


@pytest.mark.parametrize("steps,wording", [
    ([(DT, R)], "P-DATA-TF from the requestor before any A-ASSOCIATE-RQ"),
    ([(RQ, R), (DT, R)], "P-DATA-TF from the requestor before the A-ASSOCIATE-AC"),
    ([(RQ, R), (RJ, A), (DT, R)], "P-DATA-TF from the requestor after the association ended"),
    ([(RQ, R), (RQ, R)], "A-ASSOCIATE-RQ from the requestor while the association is requested"),
    ([(AC, A)], "A-ASSOCIATE-AC from the acceptor while the association is idle"),
    ([(RQ, R), (AC, A), (RJ, A)], "A-ASSOCIATE-RJ from the acceptor while the association is established"),
    ([(RLRQ, R)], "A-RELEASE-RQ from the requestor while the association is idle"),
    ([(RQ, R), (AC, A), (RLRP, A)], "A-RELEASE-RP from the acceptor with no release requested"),
    ([(RQ, R), (AC, R)], "A-ASSOCIATE-AC sent by the requestor"),
])
def test_unexpected_pdus_are_named(steps, wording):
    m = ua.AssociationStateMachine()
    for pdu, sender in steps[:-1]:
        m.receive(pdu, sender)
    events = m.receive(*steps[-1])
    assert wording in [e.message for e in events if type(e) is ua.UnexpectedPdu]


def test_unexpected_pdu_still_moves_the_state_where_table_9_10_would():
    # a second RQ changes nothing; an AC out of place still establishes (the peers go on)
    assert run([(RQ, R), (RQ, R)])[0] == ua.REQUESTED
    assert run([(AC, A)])[0] == ua.ESTABLISHED


def test_midstream_start_excuses_what_came_before_the_capture():
    state, events = run([(DT, R), (AC, A), (RLRQ, R), (RLRP, A)], midstream=True)
    assert state == ua.CLOSED
    assert events == [[], ["Accepted"], ["ReleaseRequested"], ["Released"]]


def test_every_transition_cites_a_known_state_and_event():
    states = {ua.IDLE, ua.REQUESTED, ua.ESTABLISHED, ua.RELEASING, ua.CLOSED}
    for (state, pdu), (nxt, event) in ua.TRANSITIONS.items():
        assert state in states and nxt in states and pdu in (RQ, AC, RJ, DT, RLRQ, RLRP, AB)
        assert event is None or issubclass(event, ua.AssociationEvent)
    assert set(ua.UNEXPECTED) == {RQ, AC, RJ, DT, RLRQ, RLRP}  # an A-ABORT is never out of place
