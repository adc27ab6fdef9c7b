"""dicomtrace.dimse.operations.OperationPairing: requests and their responses (PS3.7 9.1)."""

from __future__ import annotations

from dicomtrace.dimse.operations import ACCEPTOR, PENDING, REQUESTOR, OperationPairing

R, A = REQUESTOR, ACCEPTOR


def test_final_response_ends_the_request():
    p = OperationPairing()
    assert p.request(R, 1, "C-ECHO", "echo") == (None, None)
    assert p.outstanding() == [("C-ECHO", "echo")]
    assert p.response(A, 1, 0x0000) == "echo"
    assert p.outstanding() == []
    assert p.response(A, 1, 0x0000) is None  # a second final answer answers nothing


def test_pending_responses_keep_it_outstanding():
    p = OperationPairing()
    p.request(R, 7, "C-FIND", "find")
    assert [p.response(A, 7, PENDING[0]) for _ in range(3)] == ["find"] * 3
    assert p.outstanding() == [("C-FIND", "find")]
    assert p.response(A, 7, 0x0000) == "find"
    assert p.response(A, 7, PENDING[1]) == "find"  # a late pending still belongs to it
    assert p.outstanding() == []


def test_response_from_the_wrong_side_or_for_an_unknown_id():
    p = OperationPairing()
    p.request(R, 1, "C-ECHO", "echo")
    assert p.response(R, 1, 0) is None  # the requestor does not answer itself
    assert p.response(A, 2, 0) is None


def test_reused_message_id_is_reported_and_answered_in_order():
    p = OperationPairing()
    p.request(R, 1, "C-STORE", "first")
    reused, _ = p.request(R, 1, "C-STORE", "second")
    assert reused == "first"
    assert p.response(A, 1, 0) == "first"
    assert p.response(A, 1, 0) == "second"


def test_cancel_names_the_outstanding_request():
    p = OperationPairing()
    p.request(R, 3, "C-FIND", "find")
    assert p.cancelled(R, 3) == "find"
    assert p.cancelled(R, 4) is None and p.cancelled(A, 3) is None


def test_c_get_sub_operations_are_the_acceptors_stores():
    p = OperationPairing()
    p.request(R, 1, "C-GET", "get")
    assert p.request(A, 100, "C-STORE", "store")[1] == "get"
    assert p.request(R, 2, "C-STORE", "own store")[1] is None  # the requestor's own C-STORE
    p.response(A, 1, 0)
    assert p.request(A, 101, "C-STORE", "late")[1] is None


def test_request_of_finds_the_latest_request_with_an_id():
    p = OperationPairing()
    p.request(R, 9, "C-STORE", "x")
    assert p.request_of(R, 9) == "x" and p.request_of(A, 9) is None
