"""Issue #4: every association / operation / C-FIND / C-MOVE / C-GET finding code is
produced by real traffic, and stays quiet on the same traffic without the fault.

The traffic comes from real peers on loopback under tcpdump (tests/scenarios.py and
tests/scenarios_findings.py): dcmtk storescu/echoscu/findscu/movescu/getscu,
dcmqrscp and storescp, and pynetdicom acceptors and requestors whose handlers answer
chosen statuses, sleep, hang, abort, support only some presentation contexts, or
break the C-MOVE rules. Each capture holds many associations (one per case); it is
built once per module and analysed once (`dicomtrace analyze --format json`).

For each finding: its code, severity, association, the frames that show it (the
request / response / PDU frames the analysis itself reports for that association)
and the words of the message that matter; and a clean counterpart in the same
capture (same peers, no fault) where the code is absent.

The network codes and the hand-crafted conformance codes are tested in
test_findings_network.py and test_findings_conformance.py.

Set DICOMTRACE_LAB_KEEP=/some/dir to keep the captures (DIR/findings_<scenario>/).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import lab
import scenarios
import scenarios_findings
from scenarios import CT, MR, SC

pytestmark = pytest.mark.usefixtures("dicomtrace_cli")

LOUD = ("error", "warning")


@pytest.fixture(scope="module")
def flab(tmp_path_factory):
    the_lab = scenarios.ScenarioLab(tmp_path_factory, [scenarios_findings.ALL, scenarios.ALL], "findings")
    yield the_lab
    print("\n" + the_lab.report_timings())


@pytest.fixture(scope="module")
def ops(flab):
    sc = flab.scenario("ops")
    return sc, flab.analyze(sc.pcap)


@pytest.fixture(scope="module")
def qrf(flab):
    sc = flab.scenario("qrf")
    return sc, flab.analyze(sc.pcap)


@pytest.fixture(scope="module")
def reject(flab):
    sc = flab.scenario("reject")
    return sc, flab.analyze(sc.pcap)


@pytest.fixture(scope="module")
def ops_cut(flab, ops):
    """The ops capture from the frame of FASTSCU's third C-STORE-RQ on (editcap -r):
    FASTSCU is the first association, so the cut starts in the middle of it."""
    sc, doc = ops
    fast = assoc_by(doc, "FASTSCU")
    op3 = fast["operations"][2]
    assert op3["message_id"] == scenarios_findings.FAST_IDS["ok3"]
    total = int(lab.capinfos(sc.pcap)["Number of packets"])
    cut = lab.editcap(sc.pcap, sc.dir / "ops_cut.pcap", "-F", "pcap", "-r",
                      frames=[f"{op3['request_frame']}-{total}"])
    return op3["request_frame"], fast, flab.analyze(cut)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def assoc_by(doc: dict, calling, called=None) -> dict:
    found = [a for a in doc["associations"]
             if a["calling_ae"] == calling and (called is None or a["called_ae"] == called)]
    assert len(found) == 1, (f"{len(found)} associations {calling!r} -> {called!r}; have "
                             f"{[(a['calling_ae'], a['called_ae']) for a in doc['associations']]}")
    return found[0]


# The lab's dcmtk 3.6.7 peers leave Nagle on (TCP_NODELAY unset), so on loopback most of
# their associations really stall on delayed ACKs: that note is true here, and judged by
# tests/real/test_findings_stall.py; the findings below are about DIMSE and the Upper Layer.
TCP_TIMING = {"tcp-delayed-ack-stall"}


def findings_for(doc: dict, assoc_id, code=None) -> list[dict]:
    return [f for f in doc["findings"] if f.get("association") == assoc_id
            and (f["code"] == code if code is not None else f["code"] not in TCP_TIMING)]


def the_finding(doc: dict, a: dict, code: str) -> dict:
    found = findings_for(doc, a["id"], code)
    assert len(found) == 1, (f"{len(found)} {code} findings on association {a['id']} "
                             f"({a['calling_ae']} -> {a['called_ae']}); its findings: "
                             f"{[(f['code'], f['message']) for f in findings_for(doc, a['id'])]}")
    return found[0]


def codes_of(doc: dict, a: dict) -> list[str]:
    return [f["code"] for f in findings_for(doc, a["id"])]


def loud(doc: dict, assoc_id) -> list[tuple]:
    return [(f["code"], f["message"]) for f in findings_for(doc, assoc_id) if f["severity"] in LOUD]


def op_by_id(a: dict, msg_id: int, command: str | None = None, sender: str = "requestor") -> dict:
    found = [op for op in a["operations"] if op["message_id"] == msg_id and op.get("sender", sender) == sender
             and (command is None or op["command"] == command)]
    assert len(found) == 1, f"association {a['id']}: {len(found)} operations with message ID {msg_id}"
    return found[0]


def rq(op: dict) -> int:
    """The frame that completes a request (the one a finding names: Wireshark shows the
    message there)."""
    return op["request_last_frame"]


def rsp(op: dict) -> int:
    """The frame that completes the final response."""
    return op.get("response_last_frame") or op["response_frame"]


def check(f: dict, a: dict, code: str, severity: str, frames=(), in_message=(), in_hint=()):
    """A finding's code, severity, association, frames (all of those given) and words."""
    where = f"{code} on association {a['id']} ({a['calling_ae']} -> {a['called_ae']}): {f['message']}"
    assert f["code"] == code, where
    assert f["severity"] == severity, where
    assert f["association"] == a["id"], where
    missing = [fr for fr in frames if fr not in f["frames"]]
    assert not missing, f"{where}: frames {f['frames']} lack {missing}"
    for words in in_message:
        assert words in f["message"], f"{where}: no {words!r} in the message"
    for words in in_hint:
        assert words.lower() in f["hint"].lower(), f"{where}: no {words!r} in the hint {f['hint']!r}"


# --------------------------------------------------------------------------
# association-rejected (pynetdicom acceptors, tests/scenarios.py reject_scenario)
# --------------------------------------------------------------------------

REJECT_CASES = [
    # calling, called, words in the message, words in the hint
    ("REQUESTOR", "RJ_1_1_7", ["permanently", "called-AE-title-not-recognized"],
     ["called AE title", "“RJ_1_1_7”", "case"]),
    ("REQUESTOR", "NOTSTRICT", ["permanently", "called-AE-title-not-recognized"],
     ["called AE title", "“NOTSTRICT”"]),                           # pynetdicom require_called_aet
    ("REQUESTOR", "RJ_1_1_3", ["permanently", "calling-AE-title-not-recognized"],
     ["calling AE title", "“REQUESTOR”", "127.0.0.1"]),
    ("STRANGER", "PICKY", ["permanently", "calling-AE-title-not-recognized"],
     ["calling AE title", "“STRANGER”"]),                           # pynetdicom require_calling_aet
    ("REQUESTOR", "RJ_1_3_2", ["permanently", "local-limit-exceeded"], ["licen", "connection", "limit"]),
    ("REQUESTOR", "RJ_2_3_2", ["temporarily", "local-limit-exceeded"], ["licen", "connection", "limit"]),
    ("REQUESTOR", "RJ_2_3_1", ["temporarily", "temporary-congestion"], ["retry"]),
    ("REQUESTOR", "RJ_1_1_1", ["permanently", "no-reason-given"], ["log"]),
    ("REQUESTOR", "RJ_1_1_2", ["application-context-name-not-supported"], ["application context"]),
    ("REQUESTOR", "RJ_2_2_2", ["protocol-version-not-supported"], ["protocol version"]),
]


@pytest.mark.parametrize("calling,called,words,hint", REJECT_CASES, ids=[c[1] for c in REJECT_CASES])
def test_association_rejected(reject, calling, called, words, hint):
    sc, doc = reject
    a = assoc_by(doc, calling, called)
    assert a["outcome"] == "rejected"
    f = the_finding(doc, a, "association-rejected")
    check(f, a, "association-rejected", "error", frames=[a["request_frame"], a["reject"]["frame"]],
          in_message=[f"“{calling}” → “{called}”", *words], in_hint=hint)
    rj = a["reject"]
    assert f["details"] == {"result": rj["result"], "source": rj["source"], "reason": rj["reason"]}


def test_association_rejected_once_per_rejection_and_not_when_accepted(reject):
    sc, doc = reject
    rejected = {a["id"] for a in doc["associations"] if a["outcome"] == "rejected"}
    assert len(rejected) == sum(1 for s in sc.truth["seen"] if s["rejected"])
    reported = [f["association"] for f in doc["findings"] if f["code"] == "association-rejected"]
    assert sorted(reported) == sorted(rejected)
    ok = assoc_by(doc, "REQUESTOR", "ACCEPTME")       # the same acceptor, accepted and released
    assert ok["outcome"] == "released"
    assert findings_for(doc, ok["id"]) == []


# --------------------------------------------------------------------------
# presentation contexts (pynetdicom PCSCP: CT, MR implicit VR only, Verification)
# --------------------------------------------------------------------------

def test_presentation_context_rejected_abstract_syntax(ops):
    sc, doc = ops
    assert sc.truth["pcsop"] == [(3, SC, 3)], "what the pynetdicom requestor saw"
    a = assoc_by(doc, "PCSOP", "PCSCP")
    f = the_finding(doc, a, "presentation-context-rejected")
    check(f, a, "presentation-context-rejected", "warning", frames=[a["accept_frame"]],
          in_message=["1 of 2", "context 3", "Secondary Capture Image Storage", SC,
                      "abstract-syntax-not-supported"],
          in_hint=["abstract syntax not supported"])
    assert "transfer-syntaxes-not-supported" not in f["message"]
    assert f["details"]["rejected"] == [{"id": 3, "abstract_syntax": SC, "result": 3}]


def test_presentation_context_rejected_transfer_syntax(ops):
    sc, doc = ops
    assert sc.truth["pcts"] == [(3, MR, 4)]
    a = assoc_by(doc, "PCTS", "PCSCP")
    f = the_finding(doc, a, "presentation-context-rejected")
    check(f, a, "presentation-context-rejected", "warning", frames=[a["accept_frame"]],
          in_message=["context 3", "MR Image Storage", "transfer-syntaxes-not-supported", "JPEG Baseline"],
          in_hint=["transfer syntax", "compression"])
    assert "abstract-syntax-not-supported" not in f["message"]
    assert f["details"]["rejected"] == [{"id": 3, "abstract_syntax": MR, "result": 4}]


def test_presentation_context_rejected_but_served_elsewhere_is_a_note(ops):
    """CT proposed twice (JPEG Baseline only, then explicit VR): one rejected, CT still served."""
    sc, doc = ops
    assert sc.truth["pcnote"] == [(1, CT, 4)]
    a = assoc_by(doc, "PCNOTE", "PCSCP")
    f = the_finding(doc, a, "presentation-context-rejected")
    check(f, a, "presentation-context-rejected", "note", frames=[a["accept_frame"]],
          in_message=["context 1", "transfer-syntaxes-not-supported", "accepted in another context"])
    assert loud(doc, a["id"]) == []


def test_presentation_contexts_all_accepted_is_quiet(ops):
    sc, doc = ops
    assert sc.truth["pcclean"] == []
    a = assoc_by(doc, "PCCLEAN", "PCSCP")
    assert [pc["result"] for pc in a["presentation_contexts"]] == [0, 0, 0]
    assert [op["status"] for op in a["operations"]] == [0, 0]
    assert findings_for(doc, a["id"]) == []


@pytest.mark.parametrize("calling,called", [("ECHONONE", "NOECHO"),   # dcmtk echoscu, no Verification there
                                            ("PYNONE", "PCSCP")])     # pynetdicom: SC, MR/JPEG only
def test_no_accepted_presentation_context(ops, calling, called):
    sc, doc = ops
    a = assoc_by(doc, calling, called)
    assert a["presentation_contexts"] and all(pc["result"] not in (0, None) for pc in a["presentation_contexts"])
    assert a["operations"] == []
    f = the_finding(doc, a, "no-accepted-presentation-context")
    check(f, a, "no-accepted-presentation-context", "error", frames=[a["accept_frame"]],
          in_message=[f"“{calling}” → “{called}”", "every presentation context"],
          in_hint=["transfer syntax"])
    assert sorted(r["id"] for r in f["details"]["rejected"]) == sorted(pc["id"] for pc in a["presentation_contexts"])
    # said once, not also as presentation-context-rejected
    assert "presentation-context-rejected" not in codes_of(doc, a)
    if calling == "PYNONE":
        assert sc.truth["pynone_established"] is False


def test_no_accepted_presentation_context_quiet_when_one_is_accepted(ops):
    sc, doc = ops
    for calling in ("PCSOP", "PCTS", "PCNOTE", "PCCLEAN"):
        assert "no-accepted-presentation-context" not in codes_of(doc, assoc_by(doc, calling, "PCSCP"))


# --------------------------------------------------------------------------
# association-aborted
# --------------------------------------------------------------------------

@pytest.mark.parametrize("calling,sent_by,command,msg_id,hint", [
    ("STOREHANG", "requestor", "C-STORE", 1, "timeout"),    # storescu -td 1 gives up waiting
    ("FINDHANG", "requestor", "C-FIND", 1, "timeout"),      # findscu -td 1 gives up waiting
    ("ABORTSCP", "acceptor", "C-STORE", 7, "acceptor"),     # pynetdicom C-STORE handler aborts
])
def test_association_aborted_in_flight(ops, calling, sent_by, command, msg_id, hint):
    sc, doc = ops
    a = assoc_by(doc, calling, "PYOPS")
    assert a["outcome"] == "aborted" and a["abort"]["sent_by"] == sent_by
    op = op_by_id(a, msg_id, command)
    assert op["status"] is None
    f = the_finding(doc, a, "association-aborted")
    check(f, a, "association-aborted", "error", frames=[a["abort"]["frame"], op["request_frame"]],
          in_message=[f"The {sent_by} aborted", f"frame {a['abort']['frame']}", "service-user",
                      f"In flight: {command} message {msg_id}"],
          in_hint=[hint])
    assert f["details"] == {"source": 0, "reason": 0, "sent_by": sent_by}
    assert f["message_ids"] == [msg_id]


def test_association_aborted_with_nothing_in_flight_is_a_warning(ops):
    """pynetdicom: a C-ECHO answered, then A-ABORT instead of A-RELEASE."""
    sc, doc = ops
    a = assoc_by(doc, "REQABORT", "PYOPS")
    assert [op["status"] for op in a["operations"]] == [0]
    f = the_finding(doc, a, "association-aborted")
    check(f, a, "association-aborted", "warning", frames=[a["abort"]["frame"]],
          in_message=["The requestor aborted", "No operation was in progress"])
    assert f["details"]["sent_by"] == "requestor"
    assert "request-unanswered" not in codes_of(doc, a)


def test_association_aborted_quiet_on_release(ops):
    sc, doc = ops
    for calling in ("FASTSCU", "SLOWSCU", "DIMSEFAIL", "DIMSEWARN", "DIMSEOK"):
        a = assoc_by(doc, calling, "PYOPS")
        assert a["outcome"] == "released"
        assert "association-aborted" not in codes_of(doc, a), calling


# --------------------------------------------------------------------------
# association-incomplete (the capture stopped while associations were open)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("calling,unfinished", [("IDLEOPEN", None), ("INFLIGHT", "C-STORE message 77")])
def test_association_incomplete(ops, calling, unfinished):
    sc, doc = ops
    a = assoc_by(doc, calling, "PYOPS")
    assert a["outcome"] == "incomplete"
    f = the_finding(doc, a, "association-incomplete")
    check(f, a, "association-incomplete", "note", in_message=["still open"], in_hint=["capture"])
    last_op_frame = max(fr for op in a["operations"] for fr in (op["request_frame"], op.get("response_frame"))
                        if fr)
    assert f["frames"] and max(f["frames"]) >= last_op_frame
    if unfinished:
        assert f"unfinished: {unfinished}" in f["message"]
    else:
        assert "unfinished" not in f["message"]
        assert loud(doc, a["id"]) == []


def test_association_incomplete_quiet_when_closed(ops):
    sc, doc = ops
    incomplete = {f["association"] for f in doc["findings"] if f["code"] == "association-incomplete"}
    ids = {a["id"]: a["calling_ae"] for a in doc["associations"]}
    assert {ids[i] for i in incomplete} == {"IDLEOPEN", "INFLIGHT"}


# --------------------------------------------------------------------------
# capture-starts-midstream (editcap cut in the middle of FASTSCU)
# --------------------------------------------------------------------------

def test_capture_starts_midstream(ops_cut):
    cut_frame, full, doc = ops_cut
    [a] = [x for x in doc["associations"] if x["requestor"] == full["requestor"]]
    assert a["capture_started_midstream"] is True and a["calling_ae"] is None
    ids = [op["message_id"] for op in a["operations"] if op["command"] == "C-STORE"]
    assert ids == [33, 34, 35]
    f = the_finding(doc, a, "capture-starts-midstream")
    check(f, a, "capture-starts-midstream", "note", frames=[1],
          in_message=["begins after", "3 operation(s) were still decoded", "inferred"],
          in_hint=["start the capture"])
    assert loud(doc, a["id"]) == []
    # the associations that began after the cut are whole
    others = [x for x in doc["associations"] if x is not a]
    assert others and not [x for x in others if x["capture_started_midstream"]]
    assert not [x for x in others if "capture-starts-midstream" in codes_of(doc, x)]


def test_capture_starts_midstream_quiet_on_whole_capture(ops):
    sc, doc = ops
    a = assoc_by(doc, "FASTSCU", "PYOPS")
    assert a["capture_started_midstream"] is False
    assert not [f for f in doc["findings"] if f["code"] == "capture-starts-midstream"]


# --------------------------------------------------------------------------
# dimse-failure, dimse-warning (pynetdicom C-STORE handler statuses, storescu)
# --------------------------------------------------------------------------

DIMSE_FAILURES = [
    # label, status, words of the meaning, error comment, offending element, hint words
    ("a700", 0xA700, "out of resources", None, None, "disk"),
    ("a900", 0xA900, "does not match SOP class", "IOD check failed: Rows missing", None, "validate"),
    ("c000", 0xC000, "cannot understand", "Lab cannot parse this", "(0028,0010)", "parse"),
    ("r0122", 0x0122, "SOP class not supported", "MR not configured here", None, "SOP class"),
]


@pytest.mark.parametrize("label,status,meaning,comment,offending,hint", DIMSE_FAILURES,
                         ids=[c[0] for c in DIMSE_FAILURES])
def test_dimse_failure(ops, label, status, meaning, comment, offending, hint):
    sc, doc = ops
    a = assoc_by(doc, "DIMSEFAIL", "PYOPS")
    order = ["a700", "a900", "c000", "r0122"]
    msg_id = sc.truth["DIMSEFAIL_ids"][order.index(label)]
    op = op_by_id(a, msg_id, "C-STORE")
    assert op["status"] == status and op["sop_instance_uid"] == sc.files[label].sop_instance_uid
    found = [f for f in findings_for(doc, a["id"], "dimse-failure") if f["details"]["status"] == status]
    assert len(found) == 1, [f["message"] for f in findings_for(doc, a["id"])]
    f = found[0]
    words = [f"message {msg_id}", f"0x{status:04X}", meaning, sc.files[label].sop_instance_uid]
    if comment:
        words.append(f"Error Comment: “{comment}”")
    if offending:
        words.append(f"Offending Element: {offending}")
    check(f, a, "dimse-failure", "error", frames=[rq(op), rsp(op)],
          in_message=words, in_hint=[hint])
    assert f["message_ids"] == [msg_id]
    if not comment:
        assert "Error Comment" not in f["message"]


def test_dimse_failure_one_per_status(ops):
    sc, doc = ops
    a = assoc_by(doc, "DIMSEFAIL", "PYOPS")
    got = sorted(f["details"]["status"] for f in findings_for(doc, a["id"], "dimse-failure"))
    assert got == sorted(s for _, s, *_ in DIMSE_FAILURES)
    assert "dimse-warning" not in codes_of(doc, a)


def test_dimse_warning_coercion(ops):
    sc, doc = ops
    a = assoc_by(doc, "DIMSEWARN", "PYOPS")
    first, second = sc.truth["DIMSEWARN_ids"]
    op = op_by_id(a, first, "C-STORE")
    assert op["status"] == 0xB000 and op_by_id(a, second, "C-STORE")["status"] == 0
    f = the_finding(doc, a, "dimse-warning")
    check(f, a, "dimse-warning", "warning", frames=[rq(op), rsp(op)],
          in_message=[f"message {first}", "0xB000", "coercion"], in_hint=["coercion", "harmless"])
    assert f["message_ids"] == [first]
    assert "dimse-failure" not in codes_of(doc, a)


def test_dimse_status_quiet_on_success(ops):
    sc, doc = ops
    a = assoc_by(doc, "DIMSEOK", "PYOPS")
    assert [op["status"] for op in a["operations"]] == [0, 0, 0]
    assert findings_for(doc, a["id"]) == []


# --------------------------------------------------------------------------
# request-unanswered
# --------------------------------------------------------------------------

@pytest.mark.parametrize("calling,command,msg_id,severity,end", [
    ("STOREHANG", "C-STORE", 1, "error", "the association was aborted"),   # storescu -td 1
    ("FINDHANG", "C-FIND", 1, "error", "the association was aborted"),     # findscu -td 1
    ("INFLIGHT", "C-STORE", 77, "warning", "the capture ended"),           # capture stopped first
])
def test_request_unanswered(ops, calling, command, msg_id, severity, end):
    sc, doc = ops
    a = assoc_by(doc, calling, "PYOPS")
    op = op_by_id(a, msg_id, command)
    assert op["status"] is None and op["responses"] == []
    f = the_finding(doc, a, "request-unanswered")
    check(f, a, "request-unanswered", severity, frames=[rq(op)],
          in_message=[f"{command} message {msg_id} (frame {rq(op)})", f"before {end}"],
          in_hint=["timeout"])
    assert f["message_ids"] == [msg_id]
    if calling == "STOREHANG":
        assert sc.truth["storehang_waited"] >= 1.0, "storescu did not wait for its DIMSE timeout"


def test_request_unanswered_quiet_when_answered(ops, qrf):
    sc, doc = ops
    for calling in ("FASTSCU", "SLOWSCU", "DIMSEFAIL", "DIMSEOK", "REQABORT", "IDLEOPEN"):
        assert "request-unanswered" not in codes_of(doc, assoc_by(doc, calling, "PYOPS")), calling
    _, qdoc = qrf
    assert "request-unanswered" not in codes_of(qdoc, assoc_by(qdoc, "FINDOK", "QRSCP"))


# --------------------------------------------------------------------------
# slow-response (pynetdicom C-STORE handler sleeping ~2 s on one of five)
# --------------------------------------------------------------------------

def test_slow_response(ops):
    sc, doc = ops
    a = assoc_by(doc, "SLOWSCU", "PYOPS")
    slow_id = sc.truth["slow_ids"]["slow"]
    op = op_by_id(a, slow_id, "C-STORE")
    assert op["status"] == 0
    f = the_finding(doc, a, "slow-response")
    check(f, a, "slow-response", "warning", frames=[rq(op), rsp(op)],
          in_message=["1 C-STORE response(s)", f"message {slow_id}", "median"], in_hint=["busy"])
    assert f["message_ids"] == [slow_id]
    slowest, median = f["details"]["slowest_s"], f["details"]["median_s"]
    assert scenarios_findings.SLOW_SECONDS - 0.05 <= slowest <= scenarios_findings.SLOW_SECONDS + 1.0
    assert median < 0.2
    m = re.search(r"took ([\d.]+) s after its request ended, (\d+)× the median of ([\d.]+) ms", f["message"])
    assert m, f["message"]
    assert abs(float(m.group(1)) - slowest) < 0.01
    assert abs(int(m.group(2)) - slowest / median) <= max(1.0, 0.01 * slowest / median)
    assert abs(float(m.group(3)) - median * 1000) < 0.1


def test_slow_response_quiet_when_all_fast(ops):
    sc, doc = ops
    a = assoc_by(doc, "FASTSCU", "PYOPS")
    assert len(a["operations"]) == 5 and all(op["status"] == 0 for op in a["operations"])
    assert findings_for(doc, a["id"]) == []


# --------------------------------------------------------------------------
# C-FIND: no matches, key mismatches (dcmqrscp and a pynetdicom C-FIND SCP)
# --------------------------------------------------------------------------

def _find_op(a):
    [op] = [op for op in a["operations"] if op["command"] == "C-FIND"]
    return op


def test_cfind_no_matches(qrf):
    sc, doc = qrf
    a = assoc_by(doc, "FINDNONE", "QRSCP")
    op = _find_op(a)
    assert op["matches"] == 0 and op["status"] == 0
    f = the_finding(doc, a, "cfind-no-matches")
    check(f, a, "cfind-no-matches", "note", frames=[rq(op), rsp(op)],
          in_message=["found no matches", "PatientID='NOBODY'"])
    assert "cfind-key-mismatch" not in codes_of(doc, a), "nothing wrong with PatientID=NOBODY"


def test_cfind_quiet_on_matches(qrf):
    sc, doc = qrf
    a = assoc_by(doc, "FINDOK", "QRSCP")
    op = _find_op(a)
    assert op["matches"] == 1 and op["status"] == 0
    assert findings_for(doc, a["id"]) == []


@pytest.mark.parametrize("calling,pitfall", [
    ("FINDSPACE", "separates name components with a space or comma instead of “^”"),   # "Lab QFP1"
    ("FINDLOWER", "has lower-case letters"),                                          # "lab^qfp1"
    ("FINDDATE", "is not a DICOM date or date range"),                                # "2024-01-02"
])
def test_cfind_key_mismatch_explains_zero_matches(qrf, calling, pitfall):
    """The data is there (patient Lab^QFP1, study date 20240102) but the query is wrong."""
    sc, doc = qrf
    a = assoc_by(doc, calling, "QRSCP")
    op = _find_op(a)
    assert op["matches"] == 0
    f = the_finding(doc, a, "cfind-key-mismatch")
    key = "StudyDate" if calling == "FINDDATE" else "PatientName"
    check(f, a, "cfind-key-mismatch", "warning", frames=[rq(op), rsp(op)],
          in_message=[f"C-FIND message {op['message_id']}", key, pitfall])
    assert "cfind-no-matches" in codes_of(doc, a)


@pytest.mark.parametrize("calling,value", [("FINDSPACE", "Lab QFP1"), ("FINDLOWER", "lab^qfp1")])
def test_cfind_key_mismatch_quotes_the_person_name_as_sent(qrf, calling, value):
    """A person name is one value, not one value per character (PersonName is iterable)."""
    sc, doc = qrf
    a = assoc_by(doc, calling, "QRSCP")
    assert _find_op(a)["dataset"]["attributes"]["PatientName"] == value
    assert f"PatientName {value!r}" in the_finding(doc, a, "cfind-key-mismatch")["message"]


def test_cfind_key_mismatch_keys_returned_differ(qrf):
    """pynetdicom C-FIND SCP answering with PatientBirthDate (not asked) and without
    StudyDescription and StudyDate (asked): a note, there was a match."""
    sc, doc = qrf
    a = assoc_by(doc, "FINDSLOPPY", "PYFIND")
    op = _find_op(a)
    assert op["matches"] == 1
    f = the_finding(doc, a, "cfind-key-mismatch")
    check(f, a, "cfind-key-mismatch", "note", frames=[rq(op), rsp(op)],
          in_message=["keys asked that no response returned: StudyDate, StudyDescription",
                      "keys returned that were not asked for: PatientBirthDate"])
    assert loud(doc, a["id"]) == []


def test_cfind_key_mismatch_quiet_when_keys_match(qrf):
    sc, doc = qrf
    a = assoc_by(doc, "FINDEXACT", "PYFIND")
    op = _find_op(a)
    assert op["matches"] == 1
    assert findings_for(doc, a["id"]) == []


# --------------------------------------------------------------------------
# C-MOVE / C-GET
# --------------------------------------------------------------------------

def _retrieve_op(a, command="C-MOVE"):
    [op] = [op for op in a["operations"] if op["command"] == command and op.get("sender", "requestor") == "requestor"]
    return op


def _sub(doc, op) -> list[dict]:
    return [b for b in doc["associations"] if b["id"] in (op.get("sub_associations") or [])]


@pytest.mark.parametrize("calling,scp", [("MOVELOST", "QRSCP"),     # dcmqrscp
                                         ("MVLOST", "PYMOVE")])     # pynetdicom C-MOVE handler yields None
def test_move_destination_unknown(qrf, calling, scp):
    sc, doc = qrf
    a = assoc_by(doc, calling, scp)
    op = _retrieve_op(a)
    assert op["status"] == 0xA801 and op["move_destination"] == "NOWHERE"
    assert op["message_id"] == sc.truth["move_ids"][calling][0]
    f = the_finding(doc, a, "move-destination-unknown")
    check(f, a, "move-destination-unknown", "error", frames=[rq(op), rsp(op)],
          in_message=["“NOWHERE”", f"(“{scp}”)", "0xA801", f"C-MOVE message {op['message_id']}"],
          in_hint=["“NOWHERE”", "port"])
    assert f["details"] == {"move_destination": "NOWHERE"}
    # said once: not also as a DIMSE failure or an unreachable destination
    assert sorted(codes_of(doc, a)) == ["move-destination-unknown"]


def test_move_destination_unknown_quiet_when_known(qrf):
    sc, doc = qrf
    for calling, scp in (("MOVEGOOD", "QRSCP"), ("MVGOOD", "PYMOVE")):
        a = assoc_by(doc, calling, scp)
        assert _retrieve_op(a)["status"] == 0
        assert findings_for(doc, a["id"]) == [], calling


def test_move_suboperation_failed_sub_association_rejected(qrf):
    """dcmqrscp moves to WRONGDEST, whose pynetdicom SCP (titled REALDEST) refuses that called AE."""
    sc, doc = qrf
    a = assoc_by(doc, "MOVEPICKY", "QRSCP")
    op = _retrieve_op(a)
    [sub] = _sub(doc, op)
    assert (sub["calling_ae"], sub["called_ae"], sub["outcome"]) == ("QRSCP", "WRONGDEST", "rejected")
    f = the_finding(doc, a, "move-suboperation-failed")
    check(f, a, "move-suboperation-failed", "error",
          frames=[rq(op), rsp(op), sub["request_frame"]],
          in_message=[f"sub-association {sub['id']} was rejected", "called-AE-title-not-recognized",
                      "counts 2 failed"],
          in_hint=["rejection"])
    assert "association-rejected" in codes_of(doc, sub)


def test_move_suboperation_failed_sop_class_refused(qrf):
    """dcmqrscp moves CT to CTREFUSER, a pynetdicom SCP without CT: the sub-association
    carries no C-STORE and the final response counts the failures."""
    sc, doc = qrf
    a = assoc_by(doc, "MOVEREFUSE", "QRSCP")
    op = _retrieve_op(a)
    [sub] = _sub(doc, op)
    assert sub["called_ae"] == "CTREFUSER" and sub["operations"] == []
    assert [pc["result"] for pc in sub["presentation_contexts"] if pc["abstract_syntax"] == CT] == [3]
    f = the_finding(doc, a, "move-suboperation-failed")
    check(f, a, "move-suboperation-failed", "error", frames=[rq(op), rsp(op)],
          in_message=["counts 2 failed"])
    pc = the_finding(doc, sub, "presentation-context-rejected")
    assert pc["severity"] == "warning" and "abstract-syntax-not-supported" in pc["message"]
    # the message lists the first 10 of 119 rejected contexts; the details have them all
    assert {"id": next(p["id"] for p in sub["presentation_contexts"] if p["abstract_syntax"] == CT),
            "abstract_syntax": CT, "result": 3} in pc["details"]["rejected"]


@pytest.mark.parametrize("calling,command", [("MOVEFULL", "C-MOVE"),   # destination answers 0xA700
                                             ("GETFAIL", "C-GET")])    # C-GET SCU's handler answers 0xA700
def test_move_suboperation_failed_stores_fail(qrf, calling, command):
    sc, doc = qrf
    a = assoc_by(doc, calling, "QRSCP")
    op = _retrieve_op(a, command)
    if command == "C-MOVE":
        [sub] = _sub(doc, op)
        stores = [s for s in sub["operations"] if s["command"] == "C-STORE"]
        # on the sub-association: one dimse-failure for both C-STOREs with the same status
        [df] = findings_for(doc, sub["id"], "dimse-failure")
        assert df["details"]["count"] == 2 and df["details"]["status"] == 0xA700
        assert "2 C-STORE request(s)" in df["message"]
    else:
        stores = [s for s in a["operations"] if s["command"] == "C-STORE" and s["sender"] == "acceptor"]
    assert len(stores) == 2 and all(s["status"] == 0xA700 for s in stores)
    f = the_finding(doc, a, "move-suboperation-failed")
    check(f, a, "move-suboperation-failed", "error",
          frames=[rq(op), rsp(op), *[rq(s) for s in stores]],
          in_message=[f"{command} message {op['message_id']}", "2 C-STORE sub-operation(s) failed (0xA700)",
                      "counts 2 failed"])


def test_move_suboperation_failed_get_without_role_selection(qrf):
    """pynetdicom C-GET SCU that proposes CT storage but no SCP role: dcmqrscp may not
    send the C-STOREs and counts them failed."""
    sc, doc = qrf
    a = assoc_by(doc, "GETNOROLE", "QRSCP")
    assert not a["role_selection"]["requestor"]
    op = _retrieve_op(a, "C-GET")
    assert [s for s in a["operations"] if s["command"] == "C-STORE"] == []
    assert op["status"] == 0xA702 and op["responses"][-1]["failed"] == 2
    f = the_finding(doc, a, "move-suboperation-failed")
    check(f, a, "move-suboperation-failed", "error", frames=[rq(op), rsp(op)],
          in_message=["C-GET message 1", "counts 2 failed"])


def test_move_suboperation_failed_when_pynetdicom_answers_a801_after_a_rejected_sub_association(qrf):
    """pynetdicom's C-MOVE SCP knows REJECTDEST's address, opens the sub-association, gets
    A-ASSOCIATE-RJ (called AE title not recognised) and then answers 0xA801: the capture
    shows the destination is known and the sub-association was rejected."""
    sc, doc = qrf
    a = assoc_by(doc, "MVREJECT", "PYMOVE")
    op = _retrieve_op(a)
    assert op["status"] == 0xA801
    [sub] = _sub(doc, op)
    assert (sub["calling_ae"], sub["called_ae"], sub["outcome"]) == ("PYMOVE", "REJECTDEST", "rejected")
    assert sub["reject"]["reason"] == 7
    f = the_finding(doc, a, "move-suboperation-failed")
    check(f, a, "move-suboperation-failed", "error",
          frames=[rq(op), rsp(op), sub["request_frame"]],
          in_message=[f"sub-association {sub['id']} was rejected", "called-AE-title-not-recognized"])


@pytest.mark.parametrize("calling,scp,command", [("MOVEGOOD", "QRSCP", "C-MOVE"), ("GETOK", "QRSCP", "C-GET"),
                                                 ("MVGOOD", "PYMOVE", "C-MOVE"), ("GTGOOD", "PYMOVE", "C-GET")])
def test_retrieve_findings_quiet_when_all_stored(qrf, calling, scp, command):
    sc, doc = qrf
    a = assoc_by(doc, calling, scp)
    op = _retrieve_op(a, command)
    final = op["responses"][-1]
    assert op["status"] == 0 and (final["completed"], final["failed"] or 0) == (2, 0)
    if command == "C-MOVE":
        [sub] = _sub(doc, op)
        assert [s["status"] for s in sub["operations"]] == [0, 0]
    retrieve_codes = {"move-suboperation-failed", "move-suboperation-count-mismatch",
                      "move-final-before-suboperations", "move-destination-unknown",
                      "move-destination-unreachable"}
    assert not retrieve_codes & set(codes_of(doc, a))
    assert loud(doc, a["id"]) == []


@pytest.mark.parametrize("calling,command", [("MVCOUNT", "C-MOVE"), ("MVEARLY", "C-MOVE"), ("GTCOUNT", "C-GET")])
def test_move_suboperation_count_mismatch(qrf, calling, command):
    """pynetdicom SCP storing two objects (on its own sub-association, or on the C-GET
    association) and then reporting 0 completed sub-operations."""
    sc, doc = qrf
    a = assoc_by(doc, calling, "PYMOVE")
    op = _retrieve_op(a, command)
    final = op["responses"][-1]
    assert op["status"] == 0 and final["completed"] == 0
    words = [f"{command} message {op['message_id']}", "reports 0 completed", "2 successful C-STORE(s) were seen"]
    if command == "C-MOVE":
        [sub] = _sub(doc, op)
        assert sub["calling_ae"] == "PYMOVE" and [s["status"] for s in sub["operations"]] == [0, 0]
        assert all(s["move_originator_ae"] == calling and s["move_originator_message_id"] == op["message_id"]
                   for s in sub["operations"])
        words.append(f"sub-association(s) {sub['id']}")
    else:
        assert [s["status"] for s in a["operations"] if s["command"] == "C-STORE"] == [0, 0]
    f = the_finding(doc, a, "move-suboperation-count-mismatch")
    check(f, a, "move-suboperation-count-mismatch", "warning", frames=[rq(op), rsp(op)],
          in_message=words)
    assert f["details"] == {"reported": 0, "seen": 2}


def test_move_final_before_suboperations(qrf):
    """pynetdicom C-MOVE SCP: final response at once, then a thread stores the study on
    its own association with Move Originator AE Title / Message ID."""
    sc, doc = qrf
    a = assoc_by(doc, "MVEARLY", "PYMOVE")
    op = _retrieve_op(a)
    [sub] = _sub(doc, op)
    assert sub["called_ae"] == "EARLYDEST" and sub["start_time"] > op["response_time"]
    stores = [s for s in sub["operations"] if s["command"] == "C-STORE"]
    assert len(stores) == 2
    f = the_finding(doc, a, "move-final-before-suboperations")
    check(f, a, "move-final-before-suboperations", "error",
          frames=[rq(op), rsp(op), *[rq(s) for s in stores]],
          in_message=[f"frame {op['response_frame']}", "before 2 of its C-STORE"], in_hint=["C.4.2.3"])


def test_move_final_before_suboperations_quiet_when_stores_come_first(qrf):
    sc, doc = qrf
    for calling, scp in (("MVCOUNT", "PYMOVE"), ("MVGOOD", "PYMOVE"), ("MOVEGOOD", "QRSCP"),
                         ("GTGOOD", "PYMOVE"), ("GTCOUNT", "PYMOVE"), ("GETOK", "QRSCP")):
        assert "move-final-before-suboperations" not in codes_of(doc, assoc_by(doc, calling, scp)), calling


# --------------------------------------------------------------------------
# clean captures: no warning, no error
# --------------------------------------------------------------------------

# scenarios.py captures and the associations in them that are faulty by design
CLEAN_SCENARIOS = {
    "echo": [("ECHOREF", "REFUSER")],     # storescp --refuse
    "store": [],
    "qr": [("MOVELOST", "QRSCP")],        # C-MOVE to an unknown destination (0xA801)
}


@pytest.mark.parametrize("name", list(CLEAN_SCENARIOS))
def test_clean_scenarios_have_no_warning_or_error(flab, name):
    """C-ECHO, C-STORE, C-FIND, C-MOVE (to movescu and to storescp) and C-GET between dcmtk peers."""
    sc = flab.scenario(name)
    doc = flab.analyze(sc.pcap)
    faulty = {a["id"] for a in doc["associations"] if (a["calling_ae"], a["called_ae"]) in CLEAN_SCENARIOS[name]}
    assert len(faulty) == len(CLEAN_SCENARIOS[name])
    clean = [a for a in doc["associations"] if a["id"] not in faulty]
    assert clean
    commands = {op["command"] for a in clean for op in a["operations"]}
    want = {"echo": {"C-ECHO"}, "store": {"C-STORE"}, "qr": {"C-FIND", "C-MOVE", "C-GET", "C-STORE"}}[name]
    assert commands == want
    noisy = [(f["association"], f["code"], f["message"]) for f in doc["findings"]
             if f["severity"] in LOUD and f.get("association") not in faulty]
    assert noisy == []


def _shared():
    out = []
    for p in lab.shared_captures():
        exp = Path(str(p) + ".expected.json")
        if exp.exists():
            out.append(pytest.param(p, json.loads(exp.read_text()), id=p.name))
    return out


@pytest.mark.parametrize("pcap,expected", _shared())
def test_shared_captures(flab, pcap, expected):
    """../shared/captures: the clean ones have no warning or error at all; the others
    have the findings their expected.json requires."""
    doc = flab.analyze(pcap, *expected.get("args", []))
    codes = {f["code"] for f in doc["findings"]}
    if expected.get("clean"):
        assert [(f["code"], f["message"]) for f in doc["findings"] if f["severity"] in LOUD] == []
    for code in expected.get("findings_required", []):
        assert code in codes, f"{pcap.name}: {code} missing; have {sorted(codes)}"


def test_clean_associations_of_the_finding_captures(ops, qrf):
    """The clean counterparts in the findings captures, with their sub-associations."""
    _, odoc = ops
    for calling in ("FASTSCU", "DIMSEOK"):
        assert loud(odoc, assoc_by(odoc, calling, "PYOPS")["id"]) == [], calling
    assert loud(odoc, assoc_by(odoc, "PCCLEAN", "PCSCP")["id"]) == []
    _, qdoc = qrf
    for calling, scp in (("FINDOK", "QRSCP"), ("FINDEXACT", "PYFIND"), ("GETOK", "QRSCP"),
                         ("MVGOOD", "PYMOVE"), ("GTGOOD", "PYMOVE"), ("MOVEGOOD", "QRSCP")):
        a = assoc_by(qdoc, calling, scp)
        assert loud(qdoc, a["id"]) == [], calling
    mv = _retrieve_op(assoc_by(qdoc, "MVGOOD", "PYMOVE"))
    for sub in _sub(qdoc, mv):
        assert loud(qdoc, sub["id"]) == []


def test_clean_move_to_a_destination_supporting_only_what_it_receives(qrf):
    """dcmqrscp moves a CT study to GOODDEST, a pynetdicom storage SCP for CT and MR:
    every object arrives; issue #4 says a clean C-MOVE has no warning."""
    sc, doc = qrf
    op = _retrieve_op(assoc_by(doc, "MOVEGOOD", "QRSCP"))
    [sub] = _sub(doc, op)
    assert sub["called_ae"] == "GOODDEST" and [s["status"] for s in sub["operations"]] == [0, 0]
    assert sorted(sc.truth["received"]["good"]) == sc.truth["instances"]["QF1"]
    assert loud(doc, sub["id"]) == []
