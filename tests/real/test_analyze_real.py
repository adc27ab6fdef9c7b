"""Issue #3: `dicomtrace analyze --format json` on real DICOM traffic.

Every capture here is made by real peers on loopback under tcpdump (see
tests/scenarios.py): dcmtk echoscu/storescu/findscu/movescu/getscu against
storescp and dcmqrscp, and pynetdicom where dcmtk cannot be told what to do
(every A-ASSOCIATE-RJ, chosen statuses, aborts at chosen moments, 0xA801).
The expectations are what the generating side knows: AE titles and ports it
used, files it sent and the data sets the SCP stored, message IDs from the
dcmtk logs, statuses and reject/abort codes it sent.

Each scenario's capture is built once per module (lazily, by the first test
that needs it) and each analysis (capture + options) is run once. Captures go
to pytest's tmp dirs, or to $DICOMTRACE_LAB_KEEP/<scenario>/ when that is set
(to keep them for a bug report).
"""

from __future__ import annotations

import json

import pytest

import lab
import scenarios
from scenarios import CT, MR, SC, STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE, VERIFICATION

SCHEMA_PATH = lab.REPO_ROOT / "dicomtrace" / "schema" / "analysis.schema.json"  # shipped (test_cli compares)
SUCCESS, PENDING = 0x0000, 0xFF00

pytestmark = pytest.mark.usefixtures("dicomtrace_cli")


_validator = None


def validate(doc: dict) -> None:
    """The document satisfies the contract the package ships (dicomtrace/schema/)."""
    global _validator
    if _validator is None:
        import jsonschema
        schema = json.loads(SCHEMA_PATH.read_text())
        cls = jsonschema.validators.validator_for(schema)
        _validator = cls(schema)
    errors = sorted(_validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "schema: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    the_lab = scenarios.ScenarioLab(tmp_path_factory, [scenarios.ALL], "analyze", validate)
    yield the_lab
    print("\n" + the_lab.report_timings())  # how long each scenario and analysis took (with -s)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def assoc_by(doc: dict, *, calling=None, called=None) -> dict:
    found = [a for a in doc["associations"]
             if (calling is None or a["calling_ae"] == calling) and (called is None or a["called_ae"] == called)]
    assert len(found) == 1, (f"{len(found)} associations {calling!r} -> {called!r}; have "
                             f"{[(a['calling_ae'], a['called_ae']) for a in doc['associations']]}")
    return found[0]


def requests(a: dict, command: str, sender: str = "requestor") -> list[dict]:
    return [op for op in a["operations"] if op["command"] == command and op.get("sender", sender) == sender]


def findings_for(doc: dict, assoc_id: int, code: str | None = None) -> list[dict]:
    return [f for f in doc["findings"] if f.get("association") == assoc_id and (code is None or f["code"] == code)]


def loud_findings(doc: dict, assoc_id: int) -> list[tuple]:
    return [(f["code"], f["message"]) for f in findings_for(doc, assoc_id) if f["severity"] in ("error", "warning")]


def check_acceptor(a: dict, port: int) -> None:
    assert a["acceptor"] == {"ip": scenarios.LOOPBACK, "port": port}
    assert a["requestor"]["ip"] == scenarios.LOOPBACK and a["requestor"]["port"] != port


def check_store_op(op: dict, f: lab.DicomFileInfo, received: scenarios.Received | None, *, msg_id=None,
                   inferred=False) -> None:
    """A C-STORE that carried file f, answered with success, whose data set the SCP stored as received."""
    where = f"C-STORE of {f.name} (message {op['message_id']})"
    assert op["command"] == "C-STORE"
    if msg_id is not None:
        assert op["message_id"] == msg_id, where
    assert op["sop_class_uid"] == f.sop_class_uid, where
    assert op["sop_instance_uid"] == f.sop_instance_uid, where
    assert op["status"] == SUCCESS and op["status_category"] == "success", where
    assert [r["status"] for r in op["responses"]] == [SUCCESS], where
    assert op["dataset_complete"] is True, where
    if received is not None:
        assert op["dataset_bytes"] == received.dataset_size, \
            f"{where}: dataset_bytes {op['dataset_bytes']}, the SCP stored a {received.dataset_size}-byte data set"
    ds = op["dataset"]
    assert ds is not None, where
    if received is not None:
        assert ds["transfer_syntax"] == received.transfer_syntax, where
    assert ds["transfer_syntax_inferred"] is inferred, where
    attrs = ds["attributes"]
    assert attrs.get("SOPInstanceUID") == f.sop_instance_uid, where
    assert attrs.get("PatientID") == f.patient_id, where
    assert attrs.get("StudyInstanceUID") == f.study_instance_uid, where


def check_context_of(a: dict, op: dict, sop_class: str) -> dict:
    """The op's presentation context exists, was accepted and is for sop_class."""
    pcs = {pc["id"]: pc for pc in a["presentation_contexts"]}
    pc = pcs.get(op["presentation_context_id"])
    assert pc is not None, f"message {op['message_id']}: context {op['presentation_context_id']} unknown"
    assert pc["abstract_syntax"] == sop_class and pc["result"] == 0
    assert pc["transfer_syntax"] in pc["proposed_transfer_syntaxes"]
    return pc


# --------------------------------------------------------------------------
# C-ECHO (dcmtk) and a dcmtk rejection
# --------------------------------------------------------------------------

def test_echo(real):
    sc = real.scenario("echo")
    doc = real.analyze(sc.pcap)
    assert len(doc["associations"]) == 2
    a = assoc_by(doc, calling="ECHOSCU", called="STORESCP")
    check_acceptor(a, sc.ports["scp"])
    assert a["outcome"] == "released" and a["reject"] is None and a["abort"] is None
    assert a["capture_started_midstream"] is False
    [op] = a["operations"]
    assert op["command"] == "C-ECHO" and op["sop_class_uid"] == VERIFICATION
    assert op["message_id"] == sc.truth["echo_ids"][0]
    assert op["status"] == SUCCESS and op["status_category"] == "success"
    assert [r["status"] for r in op["responses"]] == [SUCCESS]
    check_context_of(a, op, VERIFICATION)
    assert a["implementation"] == {"requestor": dcmtk_implementation(), "acceptor": dcmtk_implementation()}
    assert loud_findings(doc, a["id"]) == []


def dcmtk_implementation() -> dict:
    """What dcmtk announces: OFFIS implementation class UID root + version, OFFIS_DCMTK_<version>."""
    import re
    out = lab.run([lab.dcmtk("echoscu"), "--version"], timeout=10).stdout.decode()
    version = re.search(r"v(\d+)\.(\d+)\.(\d+)", out).groups()
    return {"class_uid": "1.2.276.0.7230010.3.0." + ".".join(version),
            "version_name": "OFFIS_DCMTK_" + "".join(version)}


def test_echo_refused_by_storescp(real):
    """storescp --refuse: A-ASSOCIATE-RJ permanent / service user / no reason (as echoscu reports)."""
    sc = real.scenario("echo")
    doc = real.analyze(sc.pcap)
    assert sc.truth["refused_as_seen_by_echoscu"] == ("Permanent", "User", "No Reason")
    a = assoc_by(doc, calling="ECHOREF", called="REFUSER")
    check_acceptor(a, sc.ports["refuser"])
    assert a["outcome"] == "rejected" and a["abort"] is None and a["operations"] == []
    assert (a["reject"]["result"], a["reject"]["source"], a["reject"]["reason"]) == (1, 1, 1)
    assert findings_for(doc, a["id"], "association-rejected")


# --------------------------------------------------------------------------
# C-STORE: several SOP classes, explicit and implicit VR, 4096-byte PDUs
# --------------------------------------------------------------------------

def test_store_every_object(real):
    sc = real.scenario("store")
    doc = real.analyze(sc.pcap)
    runs = sc.truth["runs"]
    received = sc.truth["received"]
    assert len(doc["associations"]) == len(runs)
    assert len(received) == sum(len(r["files"]) for r in runs), "storescp did not store every file"
    for run in runs:
        a = assoc_by(doc, calling=run["calling"], called="STORESCP")
        check_acceptor(a, sc.ports["scp"])
        assert a["outcome"] == "released" and a["reject"] is None and a["abort"] is None
        ops = requests(a, "C-STORE")
        assert len(ops) == len(run["files"]) == len(a["operations"])
        for op, name, msg_id in zip(ops, run["files"], run["ids"], strict=True):
            f = sc.files[name]
            check_store_op(op, f, received[f.sop_instance_uid], msg_id=msg_id)
            pc = check_context_of(a, op, f.sop_class_uid)
            assert op["dataset"]["transfer_syntax"] == pc["transfer_syntax"]
        assert loud_findings(doc, a["id"]) == []


def test_store_sop_classes_and_both_vrs_on_the_wire(real):
    """The scenario really covers CT, MR and SC, explicit and implicit VR data sets on the wire."""
    sc = real.scenario("store")
    doc = real.analyze(sc.pcap)
    seen = {(op["sop_class_uid"], op["dataset"]["transfer_syntax"])
            for a in doc["associations"] for op in a["operations"]}
    assert {c for c, _ in seen} == {CT, MR, SC}
    assert {t for _, t in seen} == {lab.EXPLICIT_VR_LE, lab.IMPLICIT_VR_LE}
    a2 = assoc_by(doc, calling="STORESCU2")
    assert all(pc["transfer_syntax"] == lab.IMPLICIT_VR_LE
               for pc in a2["presentation_contexts"] if pc["result"] == 0), "-xi proposes implicit VR only"


def test_store_small_pdus(real):
    """storescp --max-pdu 4096: data sets cross many PDUs; max PDU lengths as negotiated."""
    sc = real.scenario("store")
    doc = real.analyze(sc.pcap)
    for run in sc.truth["runs"]:
        a = assoc_by(doc, calling=run["calling"])
        requested = int(run["args"][run["args"].index("--max-pdu") + 1])
        assert a["max_pdu_length"] == {"requestor": requested, "acceptor": scenarios.STORE_SCP_MAX_PDU}
        sent = sum(op["dataset_bytes"] for op in a["operations"])
        # every P-DATA-TF carries at most 4096 - 6 (PDV header) bytes of a data set
        assert a["pdus"]["requestor"] >= sent / (scenarios.STORE_SCP_MAX_PDU - 6)


def test_store_objects_list(real):
    sc = real.scenario("store")
    doc = real.analyze(sc.pcap)
    received = sc.truth["received"]
    objs = {o["sop_instance_uid"]: o for o in doc.get("objects", [])}
    assert set(objs) == set(received)
    for uid, o in objs.items():
        assert o["bytes"] == received[uid].dataset_size and o["complete"] is True
        assert o["sop_class_uid"] == received[uid].sop_class_uid
        assert o["transfer_syntax"] == received[uid].transfer_syntax


# --------------------------------------------------------------------------
# Query/Retrieve: findscu, movescu and getscu against dcmqrscp
# --------------------------------------------------------------------------

def test_find_pending_matches(real):
    sc = real.scenario("qr")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="FINDSCU", called="QRSCP")
    check_acceptor(a, sc.ports["qr"])
    assert a["outcome"] == "released"
    [op] = a["operations"]
    assert op["command"] == "C-FIND" and op["sop_class_uid"] == STUDY_ROOT_FIND
    assert op["message_id"] == scenarios.msg_ids(sc.truth["runs"]["find"]["log"], "Sending Find Request")[0]
    studies = sc.truth["study_uid"]
    statuses = [r["status"] for r in op["responses"]]
    assert statuses == [PENDING] * len(studies) + [SUCCESS]
    assert op["status"] == SUCCESS and op["matches"] == len(studies)
    got = {}
    for r in op["responses"][:-1]:
        ident = r["identifier"]
        got[ident["StudyInstanceUID"]] = (ident.get("PatientID") or "").strip()
    want = {uid: sc.truth["patients"][label] for label, uid in studies.items()}
    assert got == want
    assert loud_findings(doc, a["id"]) == []


def test_find_without_matches(real):
    sc = real.scenario("qr")
    doc = real.analyze(sc.pcap)
    [op] = assoc_by(doc, calling="FINDNONE")["operations"]
    assert op["command"] == "C-FIND" and op["matches"] == 0
    assert [r["status"] for r in op["responses"]] == [SUCCESS]
    assert op["dataset"]["attributes"].get("PatientID") == "NOBODY"


@pytest.mark.parametrize("run,calling,destination,label,port_key,received_key", [
    ("move_self", "MOVESCU", "MOVESCU", "QA", "movescu", "moved"),       # to movescu's own --port listener
    ("move_third", "MOVETHIRD", "STORESCP", "QB", "storescp", "stored"),  # to a third party (storescp)
])
def test_move_with_sub_association(real, run, calling, destination, label, port_key, received_key):
    sc = real.scenario("qr")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling=calling, called="QRSCP")
    check_acceptor(a, sc.ports["qr"])
    [op] = a["operations"]
    assert op["command"] == "C-MOVE" and op["sop_class_uid"] == STUDY_ROOT_MOVE
    assert op["move_destination"] == destination
    assert op["message_id"] == scenarios.msg_ids(sc.truth["runs"][run]["log"], "Sending Move Request")[0]
    assert op["dataset"]["attributes"].get("StudyInstanceUID") == sc.truth["study_uid"][label]
    instances = sc.truth["instances"][label]
    n = len(instances)
    # dcmqrscp: one pending response after each sub-operation, then the final one
    pending = [r for r in op["responses"] if r["status"] == PENDING]
    assert len(pending) == n and op["responses"][-1]["status"] == SUCCESS
    assert [r["completed"] for r in pending] == list(range(1, n + 1))
    assert [r["remaining"] for r in pending] == list(range(n - 1, -1, -1))
    final = op["responses"][-1]
    assert op["status"] == SUCCESS
    assert (final["completed"], final["failed"] or 0, final["warning"] or 0) == (n, 0, 0)
    # the sub-association: the SCP's own AE title calls the move destination
    sub = assoc_by(doc, calling="QRSCP", called=destination)
    check_acceptor(sub, sc.ports[port_key])
    assert op.get("sub_associations") == [sub["id"]]
    assert sub["outcome"] == "released"
    received = sc.truth[received_key]
    stores = requests(sub, "C-STORE")
    assert sorted(s["sop_instance_uid"] for s in stores) == instances == sorted(received)
    for s in stores:
        f = next(f for f in sc.files.values() if f.sop_instance_uid == s["sop_instance_uid"])
        check_store_op(s, f, received[f.sop_instance_uid])
        # dcmqrscp puts Move Originator AE Title / Message ID in each sub-operation
        assert s.get("move_originator_ae") == calling
        assert s.get("move_originator_message_id") == op["message_id"]
    assert loud_findings(doc, a["id"]) == [] and loud_findings(doc, sub["id"]) == []


def test_move_to_unknown_destination_dcmqrscp(real):
    sc = real.scenario("qr")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="MOVELOST", called="QRSCP")
    [op] = a["operations"]
    assert op["command"] == "C-MOVE" and op["move_destination"] == "NOWHERE"
    assert op["status"] == 0xA801 and op["status_category"] == "failure"
    assert not op.get("sub_associations")
    assert not [b for b in doc["associations"] if b["called_ae"] == "NOWHERE"]


def test_get_with_sub_operations_and_roles(real):
    sc = real.scenario("qr")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="GETSCU", called="QRSCP")
    check_acceptor(a, sc.ports["qr"])
    assert a["outcome"] == "released"
    [get] = requests(a, "C-GET")
    assert get["sop_class_uid"] == STUDY_ROOT_GET
    assert get["message_id"] == scenarios.msg_ids(sc.truth["runs"]["get"]["log"], "Sending C-GET Request")[0]
    instances = sc.truth["instances"]["QA"]
    n = len(instances)
    pending = [r for r in get["responses"] if r["status"] == PENDING]
    assert len(pending) == n
    assert [r["completed"] for r in pending] == list(range(1, n + 1))
    assert [r["remaining"] for r in pending] == list(range(n - 1, -1, -1))
    final = get["responses"][-1]
    assert get["status"] == SUCCESS and (final["completed"], final["failed"] or 0) == (n, 0)
    # the C-STOREs come from the acceptor on the same association
    subs = get.get("sub_operations") or []
    assert sorted(s["sop_instance_uid"] for s in subs) == instances
    assert all(s["status"] == SUCCESS for s in subs)
    stores = [op for op in a["operations"] if op["command"] == "C-STORE"]
    assert len(stores) == n and all(op["sender"] == "acceptor" for op in stores)
    got = sc.truth["got"]
    assert sorted(got) == instances
    for s in stores:
        f = next(f for f in sc.files.values() if f.sop_instance_uid == s["sop_instance_uid"])
        check_store_op(s, f, got[f.sop_instance_uid])
    assert not [b for b in doc["associations"] if b["calling_ae"] == "QRSCP" and b["called_ae"] == "GETSCU"]
    # SCP/SCU role selection: getscu asks to be SCP of the storage classes, dcmqrscp agrees
    roles = a["role_selection"]
    for side in ("requestor", "acceptor"):
        by_class = {r["sop_class_uid"]: r for r in roles[side]}
        for cls in (CT, MR, SC):
            assert cls in by_class, f"{side}: no role selection for {cls}"
            assert by_class[cls]["scp_role"] == 1, f"{side}: {by_class[cls]}"
    assert loud_findings(doc, a["id"]) == []


def test_qr_filters(real):
    """--command, --ae, --on-port, --status and --association select as the generating side knows."""
    sc = real.scenario("qr")
    full = real.analyze(sc.pcap)
    ids = {(a["calling_ae"], a["called_ae"]): a["id"] for a in full["associations"]}
    assert len(full["associations"]) == 8
    moves = real.analyze(sc.pcap, "--command", "C-MOVE")
    assert sorted(a["calling_ae"] for a in moves["associations"]) == ["MOVELOST", "MOVESCU", "MOVETHIRD"]
    assert all(op["command"] == "C-MOVE" for a in moves["associations"] for op in a["operations"])
    by_ae = real.analyze(sc.pcap, "--ae", "MOVESCU")
    assert {a["id"] for a in by_ae["associations"]} == {ids[("MOVESCU", "QRSCP")], ids[("QRSCP", "MOVESCU")]}
    by_port = real.analyze(sc.pcap, "--on-port", sc.ports["storescp"])
    assert [a["id"] for a in by_port["associations"]] == [ids[("QRSCP", "STORESCP")]]
    failed = real.analyze(sc.pcap, "--status", "failure")
    assert [a["id"] for a in failed["associations"]] == [ids[("MOVELOST", "QRSCP")]]
    one = real.analyze(sc.pcap, "--association", ids[("GETSCU", "QRSCP")])
    assert [a["calling_ae"] for a in one["associations"]] == ["GETSCU"]


# --------------------------------------------------------------------------
# A-ASSOCIATE-RJ: every (result, source, reason) pynetdicom can send
# --------------------------------------------------------------------------

@pytest.mark.parametrize("combo", scenarios.REJECT_COMBOS, ids=lambda c: "rj-%d-%d-%d" % c)
def test_reject_every_combination(real, combo):
    sc = real.scenario("reject")
    doc = real.analyze(sc.pcap)
    called = "RJ_%d_%d_%d" % combo
    [seen] = [s for s in sc.truth["seen"] if s["called"] == called]
    assert seen["rejected"] and seen["rsd"] == combo, f"pynetdicom requestor saw {seen}"
    a = assoc_by(doc, calling="REQUESTOR", called=called)
    check_acceptor(a, sc.ports["any"])
    assert a["outcome"] == "rejected" and a["abort"] is None and a["operations"] == []
    rj = a["reject"]
    assert (rj["result"], rj["source"], rj["reason"]) == combo
    assert rj.get("text")
    assert findings_for(doc, a["id"], "association-rejected")


@pytest.mark.parametrize("calling,called,port_key,combo", [
    ("REQUESTOR", "NOTSTRICT", "called", (1, 1, 7)),  # ae.require_called_aet
    ("STRANGER", "PICKY", "calling", (1, 1, 3)),      # ae.require_calling_aet
    ("USERSCU", "GUARDED", "userid", (2, 2, 1)),      # EVT_USER_ID handler says no
])
def test_reject_by_pynetdicom_itself(real, calling, called, port_key, combo):
    sc = real.scenario("reject")
    doc = real.analyze(sc.pcap)
    [seen] = [s for s in sc.truth["seen"] if s["called"] == called]
    assert seen["rsd"] == combo, f"pynetdicom requestor saw {seen}"
    a = assoc_by(doc, calling=calling, called=called)
    check_acceptor(a, sc.ports[port_key])
    assert a["outcome"] == "rejected"
    assert (a["reject"]["result"], a["reject"]["source"], a["reject"]["reason"]) == combo
    if calling == "USERSCU":
        ui = a["user_identity"]["requestor"]
        assert ui["type"] == 2 and ui["username"] == "alice" and ui["positive_response_requested"] is True
        assert "wrong-password" not in json.dumps(doc), "the passcode must not be printed"


def test_accepted_between_rejections(real):
    sc = real.scenario("reject")
    doc = real.analyze(sc.pcap)
    assert len(doc["associations"]) == len(sc.truth["seen"])
    a = assoc_by(doc, calling="REQUESTOR", called="ACCEPTME")
    assert a["outcome"] == "released" and a["reject"] is None
    assert [pc["result"] for pc in a["presentation_contexts"]] == [0]
    import pynetdicom
    py = {"class_uid": pynetdicom.PYNETDICOM_IMPLEMENTATION_UID,
          "version_name": pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION}
    assert a["implementation"] == {"requestor": py, "acceptor": py}


# --------------------------------------------------------------------------
# A-ABORT and A-P-ABORT
# --------------------------------------------------------------------------

def _abort(a):
    return a["abort"]["source"], a["abort"]["reason"], a["abort"]["sent_by"]


def test_abort_by_acceptor_during_data_set(real):
    """storescp --abort-during: the acceptor aborts while a 3 MB data set arrives."""
    sc = real.scenario("abort")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="SENDBIG", called="ABORTDURING")
    check_acceptor(a, sc.ports["during"])
    assert a["outcome"] == "aborted" and a["reject"] is None
    assert _abort(a) == (0, 0, "acceptor")
    [op] = a["operations"]
    big = sc.files["big"]
    assert op["command"] == "C-STORE" and op["sop_instance_uid"] == big.sop_instance_uid
    assert op["message_id"] == scenarios.msg_ids(sc.logs["during"], "Sending Store Request")[0]
    assert op["status"] is None and op["responses"] == []
    assert op["dataset_complete"] is False
    assert 0 < op["dataset_bytes"] < big.dataset_size
    assert findings_for(doc, a["id"], "association-aborted")


def test_abort_by_acceptor_after_data_set(real):
    """storescp --abort-after: the whole data set arrived, then the acceptor aborts instead of answering."""
    sc = real.scenario("abort")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="SENDSMALL", called="ABORTAFTER")
    assert a["outcome"] == "aborted" and _abort(a) == (0, 0, "acceptor")
    [op] = a["operations"]
    small = sc.files["small"]
    assert op["sop_instance_uid"] == small.sop_instance_uid
    assert op["status"] is None and op["responses"] == []
    assert op["dataset_complete"] is True and op["dataset_bytes"] == small.dataset_size


def test_abort_by_requestor_instead_of_release(real):
    """storescu --abort: two successful stores, then an A-ABORT from the requestor."""
    sc = real.scenario("abort")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="QUITTER", called="PLAIN")
    check_acceptor(a, sc.ports["plain"])
    assert a["outcome"] == "aborted" and _abort(a) == (0, 0, "requestor")
    ops = requests(a, "C-STORE")
    assert [op["message_id"] for op in ops] == sc.truth["quitter_ids"]
    for op, key in zip(ops, ("small", "small2"), strict=True):
        check_store_op(op, sc.files[key], None)


def test_abort_by_requestor_mid_transfer(real):
    """pynetdicom requestor writes an A-ABORT after 40 P-DATA-TF PDUs of a 3 MB data set."""
    sc = real.scenario("abort")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="MIDABORT", called="PLAIN")
    assert a["outcome"] == "aborted" and _abort(a) == (0, 0, "requestor")
    [op] = a["operations"]
    assert op["sop_instance_uid"] == sc.files["big"].sop_instance_uid
    assert op["status"] is None and op["responses"] == []
    assert op["dataset_complete"] is False
    assert op["dataset_bytes"] == sc.truth["midabort"]["data_bytes"]
    [obj] = [o for o in doc["objects"] if o["association"] == a["id"]]
    assert obj["complete"] is False and obj["bytes"] == op["dataset_bytes"]


def test_abort_capture_filters(real):
    """--status unanswered keeps the operations that never got a final response."""
    sc = real.scenario("abort")
    doc = real.analyze(sc.pcap, "--status", "unanswered")
    assert sorted(a["calling_ae"] for a in doc["associations"]) == sorted(
        ["SENDBIG", "SENDSMALL", "MIDABORT", "DROPPER", "HANDLERSCU", "APABORTSCU"])
    assert all(op["status"] is None for a in doc["associations"] for op in a["operations"])
    ok = real.analyze(sc.pcap, "--status", "success")
    assert [a["calling_ae"] for a in ok["associations"]] == ["QUITTER"]


def test_reset_by_requestor_mid_transfer(real):
    """pynetdicom requestor resets the TCP connection (SO_LINGER 0) after 40 P-DATA-TF PDUs:
    no A-ABORT, no A-RELEASE -> outcome reset."""
    sc = real.scenario("abort")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="DROPPER", called="PLAIN")
    assert a["outcome"] == "reset" and a["abort"] is None and a["reject"] is None
    assert a["closed_by"] == "reset"
    [op] = a["operations"]
    assert op["sop_instance_uid"] == sc.files["big"].sop_instance_uid
    assert op["status"] is None and op["dataset_complete"] is False
    # an RST discards what was still in the socket buffer: at most what pynetdicom wrote
    assert 0 < op["dataset_bytes"] <= sc.truth["dropper"]["data_bytes"]


@pytest.mark.parametrize("calling,command,expected", [
    ("HANDLERSCU", "C-STORE", (0, 0, "acceptor")),   # C-STORE handler calls assoc.abort()
    ("APABORTSCU", "C-ECHO", (2, 6, "acceptor")),    # C-ECHO handler sends A-P-ABORT, invalid PDU parameter value
])
def test_abort_from_pynetdicom_handler(real, calling, command, expected):
    sc = real.scenario("abort")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling=calling, called="PYABORT")
    check_acceptor(a, sc.ports["py"])
    assert a["outcome"] == "aborted" and _abort(a) == expected
    assert a["abort"].get("text")
    [op] = a["operations"]
    assert op["command"] == command and op["status"] is None
    if command == "C-STORE":
        assert op["dataset_complete"] is True and op["dataset_bytes"] == sc.files["small"].dataset_size
    assert findings_for(doc, a["id"], "association-aborted")


# --------------------------------------------------------------------------
# statuses chosen by a pynetdicom SCP
# --------------------------------------------------------------------------

CATEGORY = {0x0000: "success", 0xA700: "failure", 0xB000: "warning", 0xC000: "failure", 0xA900: "failure"}


def test_store_statuses_from_handler(real):
    sc = real.scenario("status")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="STATUSSCU", called="PYSTATUS")
    check_acceptor(a, sc.ports["scp"])
    assert a["outcome"] == "released"
    ops = requests(a, "C-STORE")
    order = sc.truth["order"]
    assert len(ops) == len(order)
    assert [op["message_id"] for op in ops] == sc.truth["store_ids"]
    for op, key in zip(ops, order, strict=True):
        status, comment, offending = sc.truth["statuses"][key]
        f = sc.files[key]
        assert op["sop_instance_uid"] == f.sop_instance_uid and op["sop_class_uid"] == f.sop_class_uid
        assert op["status"] == status, f"{key}: status {op['status']:#06x}, handler returned {status:#06x}"
        assert op["status_category"] == CATEGORY[status], key
        [r] = op["responses"]
        assert r["status"] == status
        assert r.get("error_comment") == comment, key
        if offending:
            assert "(%04X,%04X)" % (offending >> 16, offending & 0xFFFF) in r.get("offending_elements", [])
        assert op["dataset_complete"] is True and op["dataset_bytes"] == f.dataset_size


def test_move_destination_unknown_from_pynetdicom(real):
    sc = real.scenario("status")
    doc = real.analyze(sc.pcap)
    a = assoc_by(doc, calling="MOVER", called="PYSTATUS")
    [op] = requests(a, "C-MOVE")
    assert op["message_id"] == sc.truth["move_ids"][0]
    assert op["move_destination"] == "NOWHERE" and op["sop_class_uid"] == STUDY_ROOT_MOVE
    assert op["status"] == 0xA801 and op["status_category"] == "failure"
    assert [r["status"] for r in op["responses"]] == [0xA801]
    assert not op.get("sub_associations")


# --------------------------------------------------------------------------
# a non-standard port: --port, the heuristic, --no-heuristic
# --------------------------------------------------------------------------

def _port_summary(doc):
    return [(a["calling_ae"], a["called_ae"], a["outcome"], a["acceptor"]["port"],
             [(op["command"], op["message_id"], op["status"], op["sop_instance_uid"], op["dataset_bytes"])
              for op in a["operations"]]) for a in doc["associations"]]


def test_nonstandard_port(real):
    sc = real.scenario("port")
    port = sc.ports["scp"]
    plist = f"104,11112,{port},50000-51000" if port != 4242 else "104,11112,4242,50000-51000"
    given = real.analyze(sc.pcap, "--port", plist)
    heuristic = real.analyze(sc.pcap)
    strict = real.analyze(sc.pcap, "--port", plist, "--no-heuristic")
    blind = real.analyze(sc.pcap, "--no-heuristic")
    f = sc.files["p1"]
    want = [("PORTECHO", "PORTSCP", "released", port, [("C-ECHO", 1, SUCCESS, None, None)]),
            ("PORTSTORE", "PORTSCP", "released", port,
             [("C-STORE", 1, SUCCESS, f.sop_instance_uid, sc.truth["received"][f.sop_instance_uid].dataset_size)])]
    assert _port_summary(given) == want
    assert _port_summary(heuristic) == want
    assert _port_summary(strict) == want
    assert [a["detected_by"] for a in given["associations"]] == ["port", "port"]
    assert all(a["detected_by"] != "port" for a in heuristic["associations"])
    assert blind["associations"] == [], "--no-heuristic without the port must not find DICOM"


# --------------------------------------------------------------------------
# two associations at the same time
# --------------------------------------------------------------------------

def test_overlapping_associations(real):
    sc = real.scenario("overlap")
    doc = real.analyze(sc.pcap)
    assert len(doc["associations"]) == 2
    a = assoc_by(doc, calling="OVERLAP_A", called="OVERSCP")
    b = assoc_by(doc, calling="OVERLAP_B", called="OVERSCP")
    for x in (a, b):
        check_acceptor(x, sc.ports["scp"])
        assert x["outcome"] == "released"
    assert a["requestor"]["port"] != b["requestor"]["port"]
    assert a["start_time"] < b["start_time"] < a["end_time"], "the associations did not overlap"
    received = sc.truth["received"]
    for x, keys in ((a, ("a1", "a2")), (b, ("b1", "b2"))):
        ops = requests(x, "C-STORE")
        assert len(ops) == 2 == len(x["operations"])
        for op, k in zip(ops, keys, strict=True):
            assert sc.truth["statuses"][k] == SUCCESS
            check_store_op(op, sc.files[k], received[sc.files[k].sop_instance_uid], msg_id=sc.truth["ids"][k])
    for x in (a, b):
        assert loud_findings(doc, x["id"]) == []


# --------------------------------------------------------------------------
# a capture that starts in the middle of an association
# --------------------------------------------------------------------------

def test_midstream_full_capture_reference(real):
    """The uncut capture: all six C-STOREs, nothing inferred (the reference for the cuts)."""
    sc = real.scenario("midstream")
    doc = real.analyze(sc.pcap)
    [a] = doc["associations"]
    assert a["capture_started_midstream"] is False and a["calling_ae"] == "MIDSCU"
    ops = requests(a, "C-STORE")
    assert [op["message_id"] for op in ops] == [sc.truth["ids"][k] for k in sc.truth["order"]]
    for op, k in zip(ops, sc.truth["order"], strict=True):
        f = sc.files[k]
        check_store_op(op, f, sc.truth["received"][f.sop_instance_uid])
    # the cuts below then have to infer both encodings
    cut_ts = {op["dataset"]["transfer_syntax"] for op, k in zip(ops, sc.truth["order"])
              if k in sc.truth["cuts"]["boundary"]["complete"]}
    assert cut_ts == {lab.EXPLICIT_VR_LE, lab.IMPLICIT_VR_LE}


@pytest.mark.parametrize("with_port", [False, True], ids=["heuristic", "port"])
@pytest.mark.parametrize("cut", ["boundary", "inside"])
def test_midstream_cut(real, cut, with_port):
    sc = real.scenario("midstream")
    c = sc.truth["cuts"][cut]
    args = ("--port", sc.ports["scp"]) if with_port else ()
    doc = real.analyze(c["pcap"], *args)
    assert len(doc["associations"]) == 1, f"cut at frame {c['frame']}: {len(doc['associations'])} associations"
    [a] = doc["associations"]
    assert a["capture_started_midstream"] is True
    assert a["acceptor"] == {"ip": scenarios.LOOPBACK, "port": sc.ports["scp"]}
    assert a["requestor"] == {"ip": scenarios.LOOPBACK, "port": sc.ports["scu"]}
    assert a["calling_ae"] is None and a["called_ae"] is None
    assert a["outcome"] == "released"
    by_uid = {op["sop_instance_uid"]: op for op in requests(a, "C-STORE")}
    for k in c["complete"]:
        f = sc.files[k]
        op = by_uid.get(f.sop_instance_uid)
        assert op is not None, f"cut at frame {c['frame']}: C-STORE of {k} (message {sc.truth['ids'][k]}) missing"
        check_store_op(op, f, sc.truth["received"][f.sop_instance_uid], msg_id=sc.truth["ids"][k], inferred=True)
    # nothing invented: no operation for an object whose command was cut away
    cut_away = [sc.files[k].sop_instance_uid for k in sc.truth["order"] if k not in c["complete"]]
    assert not [op for op in a["operations"] if op["sop_instance_uid"] in cut_away and op["status"] == SUCCESS
                and op["dataset_complete"]]
    assert findings_for(doc, a["id"], "capture-starts-midstream")


@pytest.mark.parametrize("cut", ["boundary", "inside"])
def test_midstream_cut_blames_nobody(real, cut):
    """Starting mid-association is the capture's doing: no error or warning finding
    (capture-starts-midstream and response-without-request are notes)."""
    sc = real.scenario("midstream")
    doc = real.analyze(sc.truth["cuts"][cut]["pcap"])
    [a] = doc["associations"]
    assert loud_findings(doc, a["id"]) == []


def test_capture_ends_mid_association(real):
    """The capture keeps only the frames before the 4th C-STORE: outcome incomplete,
    the first three C-STOREs complete and answered."""
    sc = real.scenario("midstream")
    head = sc.truth["head"]
    doc = real.analyze(head["pcap"])
    [a] = doc["associations"]
    assert a["outcome"] == "incomplete" and a["abort"] is None and a["reject"] is None
    assert a["calling_ae"] == "MIDSCU" and a["called_ae"] == "MIDSCP"
    assert a["capture_started_midstream"] is False
    ops = requests(a, "C-STORE")
    assert len(ops) == len(head["complete"]) == len(a["operations"])
    for op, k in zip(ops, head["complete"], strict=True):
        f = sc.files[k]
        check_store_op(op, f, sc.truth["received"][f.sop_instance_uid], msg_id=sc.truth["ids"][k])
    assert findings_for(doc, a["id"], "association-incomplete")
