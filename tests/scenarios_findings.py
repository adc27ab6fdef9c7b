"""Scenario generators for tests/real/test_findings_real.py (issue #4): real traffic that
should, or should not, produce each finding of docs/findings.md.

Two captures, each with many associations (every association is one case, so a
capture is analysed once for many tests):

* ops_scenario -- pynetdicom acceptors whose handlers answer with chosen statuses,
  sleep, hang or abort; presentation contexts they support only in part; dcmtk and
  pynetdicom requestors; at the end two associations still open when the capture
  stops (one waiting for a C-STORE response).
* qr_findings_scenario -- dcmqrscp queried with good and bad C-FIND keys and
  asked to move to good, unknown, rejecting, SOP-class-refusing and failing
  pynetdicom destinations; a pynetdicom C-GET SCU whose C-STOREs fail; a
  pynetdicom C-FIND SCP that returns other keys than asked; a nonconforming
  pynetdicom C-MOVE / C-GET SCP (final response before its C-STOREs, counts that
  do not match what was stored).

Peers are stopped and threads joined when a scenario ends; traffic stays on
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import lab
from scenarios import (CT, LOOPBACK, MR, SC, Scenario, DcmtkPeer, index_into_db, status_dataset, _named_files, _text, bpf_ports, msg_ids,
                       pyae, pyserver, write_dcmqrscp_config)

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

# --------------------------------------------------------------------------
# ops: statuses, slow and missing answers, aborts, negotiation, capture end
# --------------------------------------------------------------------------

# label -> what the PYOPS C-STORE handler does with that instance
#   int: answer that status; ("status", code, comment, offending)
OPS_BEHAVIOUR = {
    "ok1": 0x0000, "ok2": 0x0000, "ok3": 0x0000, "ok4": 0x0000, "ok5": 0x0000,
    "a700": 0xA700,
    "a900": (0xA900, "IOD check failed: Rows missing", None),
    "c000": (0xC000, "Lab cannot parse this", 0x00280010),
    "r0122": (0x0122, "MR not configured here", None),
    "b000": 0xB000,
    "slow": "slow",          # sleep SLOW_SECONDS, then success
    "hang_store": "hang",    # never answers (until the scenario ends)
    "hang_open": "hang",     # never answers within the capture
    "abort": "abort",        # the acceptor aborts the association
}
OPS_SPECS = {k: lab.DicomSpec(sop=("MR" if k in ("r0122", "a900") else "CT"), size=6 * 1024,
                              patient=f"OPS{i}", study=f"OPS{i}")
             for i, k in enumerate(OPS_BEHAVIOUR)}
SLOW_SECONDS = 2.0
FAST_ORDER = ["ok1", "ok2", "ok3", "ok4", "ok5"]            # FASTSCU: all answered at once
SLOW_ORDER = ["ok1", "ok2", "slow", "ok3", "ok4"]           # SLOWSCU: the 3rd takes ~2 s
FAST_IDS = {k: 31 + i for i, k in enumerate(FAST_ORDER)}
SLOW_IDS = {k: 41 + i for i, k in enumerate(SLOW_ORDER)}


@contextlib.contextmanager
def _set_on_exit(events):
    try:
        yield
    finally:
        for e in events:
            e.set()


def ops_scenario(d: Path) -> Scenario:
    """One capture, associations in this order (calling AE -> called AE):

    FASTSCU -> PYOPS      pynetdicom, 5 C-STOREs answered at once (message IDs 31..35)
    SLOWSCU -> PYOPS      pynetdicom, 5 C-STOREs, the 3rd (message 43) answered after ~2 s
    DIMSEFAIL -> PYOPS    storescu --no-halt: 0xA700, 0xA900, 0xC000 (+ Error Comment and
                          Offending Element), 0x0122
    DIMSEWARN -> PYOPS    storescu: 0xB000 then 0x0000
    DIMSEOK -> PYOPS      storescu: three successes (the clean counterpart)
    STOREHANG -> PYOPS    storescu -td 1: no C-STORE-RSP; storescu aborts after 1 s
    FINDHANG -> PYOPS     findscu -td 1: no C-FIND-RSP; findscu aborts after 1 s
    ABORTSCP -> PYOPS     pynetdicom: the C-STORE handler aborts (acceptor A-ABORT, in flight)
    REQABORT -> PYOPS     pynetdicom: C-ECHO, then A-ABORT instead of A-RELEASE
    PCSOP -> PCSCP        pynetdicom proposes CT and SC; PCSCP has no SC (result 3)
    PCTS -> PCSCP         CT, and MR with JPEG Baseline only; PCSCP has MR implicit only (result 4)
    PCNOTE -> PCSCP       CT with JPEG Baseline only (rejected) and CT explicit (accepted)
    PCCLEAN -> PCSCP      CT, MR implicit, Verification: all accepted (clean counterpart)
    ECHONONE -> NOECHO    echoscu to an SCP without Verification: every context rejected
    PYNONE -> PCSCP       pynetdicom proposes SC and MR/JPEG only: every context rejected
    IDLEOPEN -> PYOPS     pynetdicom C-ECHO, association still open when the capture stops
    INFLIGHT -> PYOPS     pynetdicom C-STORE sent, response not yet given when the capture stops
    """
    from pydicom import dcmread
    from pynetdicom import AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import (CTImageStorage, MRImageStorage, StudyRootQueryRetrieveInformationModelFind,
                                      Verification)

    t0 = time.monotonic()
    files = _named_files(d / "files", OPS_SPECS)
    by_uid = {files[k].sop_instance_uid: k for k in OPS_BEHAVIOUR}
    gates = {k: threading.Event() for k in ("hang_store", "hang_open", "find")}
    entered = {k: threading.Event() for k in ("hang_open",)}
    seen_statuses: dict[str, int] = {}

    def on_store(event):
        label = by_uid[str(event.request.AffectedSOPInstanceUID)]
        what = OPS_BEHAVIOUR[label]
        if what == "slow":
            time.sleep(SLOW_SECONDS)
            return 0x0000
        if what == "hang":
            if label in entered:
                entered[label].set()
            gates[label].wait(30)
            return 0x0000
        if what == "abort":
            event.assoc.abort()
            return 0x0000
        if isinstance(what, int):
            return what
        status, comment, offending = what
        return status_dataset(status, comment, offending)

    def on_find(event):
        gates["find"].wait(30)
        yield 0x0000, None

    ops_ae = pyae("PYOPS")
    for cx in AllStoragePresentationContexts:
        ops_ae.add_supported_context(cx.abstract_syntax)
    ops_ae.add_supported_context(Verification)
    ops_ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    # PCSCP: CT in any default syntax, MR only in implicit VR, no SC; Verification
    pc_ae = pyae("PCSCP")
    pc_ae.add_supported_context(CTImageStorage)
    pc_ae.add_supported_context(MRImageStorage, lab.IMPLICIT_VR_LE)
    pc_ae.add_supported_context(Verification)
    noecho_ae = pyae("NOECHO")
    noecho_ae.add_supported_context(MRImageStorage)

    ports = {k: lab.free_port() for k in ("ops", "pc", "noecho")}
    logs: dict[str, str] = {}
    truth: dict = {"behaviour": OPS_BEHAVIOUR, "fast_ids": FAST_IDS, "slow_ids": SLOW_IDS,
                   "fast_order": FAST_ORDER, "slow_order": SLOW_ORDER, "statuses": seen_statuses}
    ds = {k: dcmread(files[k].path) for k in files}

    def py_assoc(calling, port, called, contexts):
        ae = pyae(calling)
        for c in contexts:
            ae.add_requested_context(*c) if isinstance(c, tuple) else ae.add_requested_context(c)
        return ae.associate(LOOPBACK, port, ae_title=called)

    def stores(calling, order, ids):
        assoc = py_assoc(calling, ports["ops"], "PYOPS", [(CT, lab.EXPLICIT_VR_LE)])
        if not assoc.is_established:
            raise lab.LabError(f"{calling}: association not established")
        for k in order:
            st = assoc.send_c_store(ds[k], msg_id=ids[k])
            seen_statuses[f"{calling}:{k}"] = int(st.Status)
        assoc.release()

    def storescu(calling, labels, *extra):
        r = lab.run_storescu(LOOPBACK, ports["ops"], [files[k].path for k in labels], aet=calling, aec="PYOPS",
                             extra_args=list(extra), check=False)
        logs[calling] = _text(r)
        truth[f"{calling}_ids"] = msg_ids(logs[calling], "Sending Store Request")
        return r

    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_C_FIND, on_find)]
    pcap = d / "ops.pcap"
    late: dict = {}
    try:
        # (the handlers waiting on gates are let go before the servers shut down)
        with pyserver(ops_ae, ports["ops"], handlers), \
                pyserver(pc_ae, ports["pc"], [(evt.EVT_C_STORE, lambda event: 0x0000)]), \
                pyserver(noecho_ae, ports["noecho"]), _set_on_exit(gates.values()):
            with lab.Capture(pcap, "lo", bpf_ports(*ports.values())):
                stores("FASTSCU", FAST_ORDER, FAST_IDS)
                stores("SLOWSCU", SLOW_ORDER, SLOW_IDS)
                storescu("DIMSEFAIL", ["a700", "a900", "c000", "r0122"], "--no-halt")
                storescu("DIMSEWARN", ["b000", "ok1"])
                storescu("DIMSEOK", ["ok1", "ok2", "ok3"])
                # requestors that give up waiting (dcmtk DIMSE timeout 1 s: they abort)
                t = time.monotonic()
                storescu("STOREHANG", ["hang_store"], "-td", "1")
                truth["storehang_waited"] = time.monotonic() - t
                gates["hang_store"].set()
                r = lab.run([lab.dcmtk("findscu"), "-v", "-S", "-td", "1", "-aet", "FINDHANG", "-aec", "PYOPS",
                             "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=HANG", "-k", "StudyInstanceUID",
                             LOOPBACK, str(ports["ops"])], timeout=30, check=False)
                logs["FINDHANG"] = _text(r)
                gates["find"].set()
                # the acceptor aborts with the C-STORE in flight
                assoc = py_assoc("ABORTSCP", ports["ops"], "PYOPS", [(CT, lab.EXPLICIT_VR_LE)])
                with contextlib.suppress(Exception):
                    assoc.send_c_store(ds["abort"], msg_id=7)
                # the requestor aborts after a finished C-ECHO
                assoc = py_assoc("REQABORT", ports["ops"], "PYOPS", [Verification])
                assoc.send_c_echo(msg_id=5)
                assoc.abort()
                # presentation contexts
                assoc = py_assoc("PCSOP", ports["pc"], "PCSCP",
                                 [(CT, lab.EXPLICIT_VR_LE), (SC, lab.EXPLICIT_VR_LE)])
                truth["pcsop"] = [(c.context_id, c.abstract_syntax, c.result) for c in
                                  assoc.rejected_contexts]
                assoc.send_c_store(ds["ok1"])
                assoc.release()
                assoc = py_assoc("PCTS", ports["pc"], "PCSCP", [(CT, lab.EXPLICIT_VR_LE), (MR, JPEG_BASELINE)])
                truth["pcts"] = [(c.context_id, c.abstract_syntax, c.result) for c in assoc.rejected_contexts]
                assoc.send_c_store(ds["ok1"])
                assoc.release()
                assoc = py_assoc("PCNOTE", ports["pc"], "PCSCP", [(CT, JPEG_BASELINE), (CT, lab.EXPLICIT_VR_LE)])
                truth["pcnote"] = [(c.context_id, c.abstract_syntax, c.result) for c in assoc.rejected_contexts]
                assoc.send_c_store(ds["ok1"])
                assoc.release()
                assoc = py_assoc("PCCLEAN", ports["pc"], "PCSCP",
                                 [(CT, lab.EXPLICIT_VR_LE), (MR, lab.IMPLICIT_VR_LE), Verification])
                truth["pcclean"] = [(c.context_id, c.abstract_syntax, c.result) for c in
                                    assoc.rejected_contexts]
                assoc.send_c_echo()
                assoc.send_c_store(ds["ok1"])
                assoc.release()
                r = lab.run_echoscu(LOOPBACK, ports["noecho"], aec="NOECHO", aet="ECHONONE", check=False)
                logs["ECHONONE"] = _text(r)
                assoc = py_assoc("PYNONE", ports["pc"], "PCSCP", [(SC, lab.EXPLICIT_VR_LE), (MR, JPEG_BASELINE)])
                truth["pynone_established"] = assoc.is_established
                if assoc.is_established:
                    assoc.release()
                # still open when the capture stops: an idle association, and one waiting
                idle = py_assoc("IDLEOPEN", ports["ops"], "PYOPS", [Verification])
                idle.send_c_echo(msg_id=9)
                late["idle"] = idle
                inflight = py_assoc("INFLIGHT", ports["ops"], "PYOPS", [(CT, lab.EXPLICIT_VR_LE)])
                late["inflight"] = inflight
                th = threading.Thread(target=lambda: inflight.send_c_store(ds["hang_open"], msg_id=77),
                                      daemon=True)
                th.start()
                late["thread"] = th
                if not entered["hang_open"].wait(10):
                    raise lab.LabError("INFLIGHT C-STORE never reached the handler")
                time.sleep(0.2)
            # the capture has stopped: let the late associations end
            gates["hang_open"].set()
            late["thread"].join(15)
            late["inflight"].release()
            late["idle"].release()
    finally:
        for g in gates.values():
            g.set()
        for a in ("idle", "inflight"):
            if a in late:
                with contextlib.suppress(Exception):
                    late[a].abort()
    return Scenario("ops", d, pcap, ports, files, truth=truth, logs=logs, seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# query/retrieve: dcmqrscp, pynetdicom destinations, pynetdicom Q/R SCPs
# --------------------------------------------------------------------------

QRF_SPECS = {
    # study QF1: 2 CT of patient QFP1; study QF2: 1 MR of QFP2
    "f1": lab.DicomSpec(sop="CT", size=10 * 1024, patient="QFP1", study="QF1", series="QF1S"),
    "f2": lab.DicomSpec(sop="CT", size=12 * 1024, patient="QFP1", study="QF1", series="QF1S"),
    "f3": lab.DicomSpec(sop="MR", size=10 * 1024, patient="QFP2", study="QF2"),
}
# destinations dcmqrscp knows (HostTable): AE title -> which pynetdicom server
QRF_DESTS = {"GOODDEST": "good", "WRONGDEST": "picky", "CTREFUSER": "mronly", "FULLDEST": "full"}
# queries to dcmqrscp with findscu: calling AE -> keys
QRF_FINDS = {
    "FINDOK": ["PatientID=PID-QFP1", "PatientName", "StudyInstanceUID", "StudyDate"],
    "FINDNONE": ["PatientID=NOBODY", "StudyInstanceUID"],
    "FINDSPACE": ["PatientName=Lab QFP1", "StudyInstanceUID"],     # space instead of ^
    "FINDLOWER": ["PatientName=lab^qfp1", "StudyInstanceUID"],     # lower case
    "FINDDATE": ["StudyDate=2024-01-02", "StudyInstanceUID"],      # not YYYYMMDD
}
# pynetdicom C-FIND SCP (PYFIND): keys asked; it answers SLOPPY with other keys
PYFIND_KEYS = ["StudyInstanceUID", "StudyDescription", "StudyDate"]


def qr_findings_scenario(d: Path) -> Scenario:
    """One capture, associations (calling AE -> called AE) in this order:

    FINDOK, FINDNONE, FINDSPACE, FINDLOWER, FINDDATE -> QRSCP   findscu (see QRF_FINDS)
    MOVEGOOD -> QRSCP     movescu of study QF1 to GOODDEST (pynetdicom, stores all): clean
    MOVELOST -> QRSCP     movescu to NOWHERE: 0xA801
    MOVEPICKY -> QRSCP    to WRONGDEST: a pynetdicom SCP titled REALDEST that requires its
                          own called AE title rejects the sub-association (1/1/7)
    MOVEREFUSE -> QRSCP   to CTREFUSER: a pynetdicom SCP without CT rejects the CT context
    MOVEFULL -> QRSCP     to FULLDEST: a pynetdicom SCP answering 0xA700 to every C-STORE
    GETFAIL -> QRSCP      pynetdicom C-GET SCU whose C-STORE handler answers 0xA700
    GETOK -> QRSCP        the same C-GET SCU answering 0x0000 (clean counterpart)
    GETNOROLE -> QRSCP    the same C-GET SCU without SCP/SCU role selection: dcmqrscp
                          may not send C-STOREs back
    FINDSLOPPY -> PYFIND  findscu; PYFIND returns PatientBirthDate (not asked) and leaves
                          out StudyDescription (asked)
    FINDEXACT -> PYFIND   the same query; PYFIND returns exactly the keys asked
    MVEARLY -> PYMOVE     movescu to EARLYDEST: PYMOVE sends the final response (0 sub-ops)
                          at once, then a thread stores the study on its own association
                          with Move Originator AE Title / Message ID set
    MVCOUNT -> PYMOVE     movescu to COUNTDEST: PYMOVE stores 2 objects on its own
                          sub-association, then reports 0 completed sub-operations
    MVLOST -> PYMOVE      movescu to NOWHERE: 0xA801 from pynetdicom
    MVGOOD -> PYMOVE      movescu to GOODDEST: conforming pynetdicom C-MOVE (clean)
    MVREJECT -> PYMOVE    movescu to REJECTDEST: PYMOVE knows it (the REALDEST SCP) but that
                          SCP rejects the called AE title; pynetdicom then answers 0xA801
    GTCOUNT -> PYMOVE     pynetdicom C-GET: PYMOVE sends 2 C-STOREs on the association
                          and then reports 0 completed sub-operations
    GTGOOD -> PYMOVE      pynetdicom C-GET, conforming (clean)
    """
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import (CTImageStorage, MRImageStorage,
                                      StudyRootQueryRetrieveInformationModelFind as FIND,
                                      StudyRootQueryRetrieveInformationModelGet as GET,
                                      StudyRootQueryRetrieveInformationModelMove as MOVE)

    t0 = time.monotonic()
    files = _named_files(d / "files", QRF_SPECS)
    ds = {k: dcmread(f.path) for k, f in files.items()}
    db = index_into_db(files.values(), d / "db")
    names = ("qr", "good", "picky", "mronly", "full", "pyfind", "pymove", "dest")
    ports = {k: lab.free_port() for k in names}
    cfg = write_dcmqrscp_config(d / "dcmqrscp.cfg", ports["qr"], db, "QRSCP",
                                {t: ports[k] for t, k in QRF_DESTS.items()})
    study = {"QF1": files["f1"].study_instance_uid, "QF2": files["f3"].study_instance_uid}
    truth: dict = {"study": study, "instances": {
        s: sorted(f.sop_instance_uid for f in files.values() if f.study_instance_uid == u)
        for s, u in study.items()}}
    logs: dict[str, str] = {}
    received: dict[str, list] = {}

    # move destinations
    def dest_ae(title, classes=(CTImageStorage, MRImageStorage), **attrs):
        ae = pyae(title)
        for c in classes:
            ae.add_supported_context(c)
        for k, v in attrs.items():
            setattr(ae, k, v)
        return ae

    def store_into(key, status):
        def handler(event):
            received.setdefault(key, []).append(str(event.request.AffectedSOPInstanceUID))
            return status
        return handler

    # PYFIND: answers SLOPPY with keys not asked for, EXACT with exactly the keys asked
    def on_find(event):
        q = event.identifier
        r = Dataset()
        r.QueryRetrieveLevel = "STUDY"
        r.PatientID = q.PatientID
        r.StudyInstanceUID = files["f1"].study_instance_uid
        if q.PatientID == "SLOPPY":
            r.PatientBirthDate = "19700101"      # not asked
        else:
            r.StudyDescription = "Lab study QF1"
            r.StudyDate = "20240102"
        yield 0xFF00, r

    # PYMOVE: a C-MOVE / C-GET SCP, conforming or not by move destination / calling AE
    threads: list[threading.Thread] = []

    def own_stores(called, labels, originator, msg_id):
        ae = pyae("PYMOVE")
        ae.add_requested_context(CT, lab.EXPLICIT_VR_LE)
        assoc = ae.associate(LOOPBACK, ports["dest"], ae_title=called)
        if not assoc.is_established:
            raise lab.LabError(f"PYMOVE -> {called} not established")
        statuses = [int(assoc.send_c_store(ds[k], msg_id=100 + i, originator_aet=originator,
                                           originator_id=msg_id).Status) for i, k in enumerate(labels)]
        assoc.release()
        truth.setdefault("own_stores", {})[called] = statuses

    def on_move(event):
        dest = event.move_destination.strip()
        originator = event.assoc.requestor.ae_title.strip()
        msg_id = event.request.MessageID
        if dest == "EARLYDEST":
            def later():
                time.sleep(0.3)
                own_stores("EARLYDEST", ["f1", "f2"], originator, msg_id)
            th = threading.Thread(target=later, daemon=True)
            th.start()
            threads.append(th)
            yield LOOPBACK, ports["dest"]
            yield 0
            return
        if dest == "COUNTDEST":
            own_stores("COUNTDEST", ["f1", "f2"], originator, msg_id)
            yield LOOPBACK, ports["dest"]
            yield 0
            return
        if dest == "REJECTDEST":   # known, but its SCP refuses that called AE title
            yield LOOPBACK, ports["picky"]
            yield 2
            yield 0xFF00, ds["f1"]
            yield 0xFF00, ds["f2"]
            return
        if dest != "GOODDEST":
            yield None, None
            return
        yield LOOPBACK, ports["dest"]
        yield 2
        yield 0xFF00, ds["f1"]
        yield 0xFF00, ds["f2"]

    def on_get(event):
        if event.assoc.requestor.ae_title.strip() == "GTCOUNT":
            for k in ("f1", "f2"):
                event.assoc.send_c_store(ds[k])
            yield 0
            return
        yield 2
        yield 0xFF00, ds["f1"]
        yield 0xFF00, ds["f2"]

    pymove = pyae("PYMOVE")
    for c in (FIND, MOVE, GET):
        pymove.add_supported_context(c)
    pymove.add_supported_context(CTImageStorage, lab.EXPLICIT_VR_LE, scp_role=True, scu_role=False)
    pymove.add_requested_context(CT, lab.EXPLICIT_VR_LE)
    pyfind = pyae("PYFIND")
    pyfind.add_supported_context(FIND)
    pyfind.add_supported_context(MOVE)

    def run_tool(tool, calling, called, port, args):
        r = lab.run([lab.dcmtk(tool), "-v", "-S", "-to", "10", "-ta", "10", "-td", "10", "-aet", calling,
                     "-aec", called, *map(str, args), LOOPBACK, str(port)], timeout=60, check=False)
        logs[calling] = _text(r)
        return r

    def pyget(calling, port, called, status, role=True):
        ae = pyae(calling)
        ae.add_requested_context(GET)
        ae.add_requested_context(CT, lab.EXPLICIT_VR_LE)
        roles = [build_role(CT, scp_role=True)] if role else []
        assoc = ae.associate(LOOPBACK, port, ae_title=called, ext_neg=roles,
                             evt_handlers=[(evt.EVT_C_STORE, store_into(calling, status))])
        if not assoc.is_established:
            raise lab.LabError(f"{calling} not established")
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = study["QF1"]
        out = [(int(st.Status), int(st.get("NumberOfCompletedSuboperations", -1)),
                int(st.get("NumberOfFailedSuboperations", -1))) for st, _ in assoc.send_c_get(q, GET)]
        assoc.release()
        truth[calling] = out

    pcap = d / "qrf.pcap"
    dest_store = lab.StoreSCP(d / "rx_dest", ports["dest"], aet="ANYDEST", log_dir=d, name="storescp-dest")
    try:
        with DcmtkPeer("dcmqrscp", ["-v", "-c", cfg, ports["qr"]], ports["qr"], d, "dcmqrscp"), dest_store, \
                pyserver(dest_ae("GOODDEST"), ports["good"], [(evt.EVT_C_STORE, store_into("good", 0))]), \
                pyserver(dest_ae("REALDEST", require_called_aet=True), ports["picky"]), \
                pyserver(dest_ae("CTREFUSER", classes=(MRImageStorage,)), ports["mronly"]), \
                pyserver(dest_ae("FULLDEST"), ports["full"], [(evt.EVT_C_STORE, store_into("full", 0xA700))]), \
                pyserver(pyfind, ports["pyfind"], [(evt.EVT_C_FIND, on_find)]), \
                pyserver(pymove, ports["pymove"], [(evt.EVT_C_MOVE, on_move), (evt.EVT_C_GET, on_get)]):
            with lab.Capture(pcap, "lo", bpf_ports(*ports.values())):
                for calling, keys in QRF_FINDS.items():
                    run_tool("findscu", calling, "QRSCP", ports["qr"],
                             ["-k", "QueryRetrieveLevel=STUDY", *[a for k in keys for a in ("-k", k)]])
                for calling, dest in (("MOVEGOOD", "GOODDEST"), ("MOVELOST", "NOWHERE"),
                                      ("MOVEPICKY", "WRONGDEST"), ("MOVEREFUSE", "CTREFUSER"),
                                      ("MOVEFULL", "FULLDEST")):
                    run_tool("movescu", calling, "QRSCP", ports["qr"],
                             ["-aem", dest, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study['QF1']}"])
                pyget("GETFAIL", ports["qr"], "QRSCP", 0xA700)
                pyget("GETOK", ports["qr"], "QRSCP", 0x0000)
                pyget("GETNOROLE", ports["qr"], "QRSCP", 0x0000, role=False)
                for calling, pid in (("FINDSLOPPY", "SLOPPY"), ("FINDEXACT", "EXACT")):
                    run_tool("findscu", calling, "PYFIND", ports["pyfind"],
                             ["-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={pid}",
                              *[a for k in PYFIND_KEYS for a in ("-k", k)]])
                for calling, dest in (("MVEARLY", "EARLYDEST"), ("MVCOUNT", "COUNTDEST"), ("MVLOST", "NOWHERE"),
                                      ("MVGOOD", "GOODDEST"), ("MVREJECT", "REJECTDEST")):
                    run_tool("movescu", calling, "PYMOVE", ports["pymove"],
                             ["-aem", dest, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study['QF1']}"])
                    for th in threads:
                        th.join(15)
                pyget("GTCOUNT", ports["pymove"], "PYMOVE", 0x0000)
                pyget("GTGOOD", ports["pymove"], "PYMOVE", 0x0000)
    finally:
        for th in threads:
            th.join(15)
    truth["received"] = received
    truth["move_ids"] = {k: msg_ids(v, "Sending Move Request") for k, v in logs.items()}
    truth["find_ids"] = {k: msg_ids(v, "Sending Find Request") for k, v in logs.items()}
    logs["dcmqrscp"] = (d / "dcmqrscp.err").read_text(errors="replace")
    return Scenario("qrf", d, pcap, ports, files, truth=truth, logs=logs, seconds=time.monotonic() - t0)


ALL = {"ops": ops_scenario, "qrf": qr_findings_scenario}
