"""Scenario generators for tests/real/test_analyze_real.py (issue #3).

Each generator makes real DICOM traffic between real peers on loopback
under tcpdump and returns a :class:`Scenario`: the capture plus what the
generating side knows (AE titles, ports, files sent and received, message
ids from the dcmtk logs, statuses returned by pynetdicom handlers, the
reject and abort codes that were sent). The tests then check `dicomtrace
analyze --format json` against that knowledge.

Peers: dcmtk (storescp, storescu, echoscu, findscu, movescu, getscu,
dcmqrscp) through tests/lab/, and in-process pynetdicom AEs for what
dcmtk cannot be told to do (any A-ASSOCIATE-RJ, handler statuses, aborts at
chosen moments, a C-MOVE SCP answering 0xA801). Every server started here
is stopped when its scenario ends; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import lab

LOOPBACK = "127.0.0.1"
CT, MR, SC = (lab.SOP_CLASSES[k][0] for k in ("CT", "MR", "SC"))
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"


@dataclass
class Scenario:
    """A finished capture and what the generating side knows about it."""

    name: str
    dir: Path
    pcap: Path
    ports: dict = field(default_factory=dict)      # role -> TCP port of a listener
    files: dict = field(default_factory=dict)      # label -> lab.DicomFileInfo
    truth: dict = field(default_factory=dict)      # free-form: what was sent/answered
    logs: dict = field(default_factory=dict)       # peer -> its log text
    seconds: float = 0.0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _text(res) -> str:
    return (res.stdout + res.stderr).decode(errors="replace")


def msg_ids(log: str, what: str) -> list[int]:
    """Message IDs from dcmtk -v logs, e.g. what="Sending Store Request" ->
    'I: Sending Store Request (MsgID 3, CT)'."""
    return [int(m) for m in re.findall(re.escape(what) + r" \(MsgID (\d+)", log)]


@dataclass
class Received:
    """One object a storage SCP wrote: where its data set starts and how big it is."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    dataset_size: int
    patient_id: str
    study_instance_uid: str


def received_objects(directory) -> dict[str, Received]:
    """SOP instance UID -> Received, for every Part 10 file a SCP wrote into directory."""
    from pydicom import dcmread
    out = {}
    for p in sorted(Path(directory).iterdir()):
        if not p.is_file():
            continue
        try:
            ds = dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        off = lab.dataset_offset_of(p)
        out[str(ds.SOPInstanceUID)] = Received(
            p, str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID),
            p.stat().st_size - off, str(ds.PatientID), str(ds.StudyInstanceUID))
    return out


class DcmtkPeer(lab.Peer):
    """Any dcmtk server (dcmqrscp, storescp with odd options, movescu's listener ...)."""

    def __init__(self, tool: str, args, port: int, log_dir, name: str, cwd=None):
        super().__init__([lab.dcmtk(tool), *[str(a) for a in args]], port=port, log_dir=log_dir,
                         name=name, cwd=cwd)


def pyae(title: str, *, max_pdu: int = 16382, timeout: float = 10):
    from pynetdicom import AE
    ae = AE(ae_title=title)
    ae.maximum_pdu_size = max_pdu
    ae.network_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    return ae


@contextlib.contextmanager
def pyserver(ae, port: int, handlers=()):
    """A pynetdicom server on 127.0.0.1:port for the with-block."""
    server = ae.start_server((LOOPBACK, port), block=False, evt_handlers=list(handlers))
    try:
        lab.wait_listening(port, timeout=10, what=f"pynetdicom {ae.ae_title}")
        yield server
    finally:
        server.shutdown()


def bpf_ports(*ports: int) -> str:
    return " or ".join(f"tcp port {p}" for p in ports)


def pdv_data_bytes(pdu) -> int:
    """Data-set bytes (not command) carried by a pynetdicom P-DATA-TF PDU."""
    n = 0
    for item in pdu.presentation_data_value_items:
        value = item.presentation_data_value  # first byte: message control header
        if not value[0] & 1:
            n += len(value) - 1
    return n


# --------------------------------------------------------------------------
# dcmtk: C-ECHO (accepted and refused)
# --------------------------------------------------------------------------

def echo_scenario(d: Path) -> Scenario:
    """echoscu -> storescp (C-ECHO, released); echoscu -> storescp --refuse (rejected 1/1/1)."""
    t0 = time.monotonic()
    port, refuse_port = lab.free_port(), lab.free_port()
    pcap = d / "echo.pcap"
    with lab.Capture(pcap, "lo", bpf_ports(port, refuse_port)):
        with lab.StoreSCP(d / "rx", port, aet="STORESCP", log_dir=d) as scp, \
                DcmtkPeer("storescp", ["-v", "--refuse", "-aet", "REFUSER", refuse_port], refuse_port, d,
                          "refuser"):
            ok = lab.run_echoscu(LOOPBACK, port, aec="STORESCP", aet="ECHOSCU")
            refused = lab.run_echoscu(LOOPBACK, refuse_port, aec="REFUSER", aet="ECHOREF", check=False)
    ok_log, ref_log = _text(ok), _text(refused)
    if refused.returncode == 0 or "Association Rejected" not in ref_log:
        raise lab.LabError(f"storescp --refuse did not reject: {ref_log}")
    m = re.search(r"Result: Rejected (\w+), Source: Service (\w+)\s+F: Reason: (.+)", ref_log)
    return Scenario("echo", d, pcap, {"scp": port, "refuser": refuse_port},
                    truth={"echo_ids": msg_ids(ok_log, "Sending Echo Request"),
                           "refused_as_seen_by_echoscu": m.groups() if m else None},
                    logs={"echoscu": ok_log, "echoscu-refused": ref_log, "storescp": scp.log()},
                    seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# dcmtk: C-STORE of several SOP classes, both VRs, 4096-byte PDUs
# --------------------------------------------------------------------------

STORE_SPECS = {
    "ct_ex": lab.DicomSpec(sop="CT", size=10 * 1024, explicit_vr=True, patient="STA", study="STA"),
    "mr_im": lab.DicomSpec(sop="MR", size=200 * 1024, explicit_vr=False, patient="STB", study="STB"),
    "sc_ex": lab.DicomSpec(sop="SC", size=700 * 1024, explicit_vr=True, patient="STC", study="STC"),
    "ct_im": lab.DicomSpec(sop="CT", size=60 * 1024, explicit_vr=False, patient="STA", study="STA"),
    "mr_ex": lab.DicomSpec(sop="MR", size=120 * 1024, explicit_vr=True, patient="STD", study="STD"),
}
STORE_RUNS = [
    # (files, storescu arguments): the SCP limits PDUs to 4096 bytes; the second
    # association proposes implicit VR only (storescu converts explicit files)
    (["ct_ex", "mr_im", "sc_ex"], ["--max-pdu", "8192"]),
    (["ct_im", "mr_ex"], ["-xi", "--max-pdu", "4096"]),
]
STORE_SCP_MAX_PDU = 4096


def _named_files(d: Path, specs: dict) -> dict:
    made = lab.make_dicom_files(d, [lab.DicomSpec(**{**s.__dict__, "name": k}) for k, s in specs.items()])
    return {f.name: f for f in made}


def store_scenario(d: Path) -> Scenario:
    t0 = time.monotonic()
    files = _named_files(d / "files", STORE_SPECS)
    port = lab.free_port()
    pcap = d / "store.pcap"
    runs = []
    with lab.Capture(pcap, "lo", bpf_ports(port)):
        with lab.StoreSCP(d / "rx", port, aet="STORESCP", max_pdu=STORE_SCP_MAX_PDU, log_dir=d) as scp:
            for i, (names, args) in enumerate(STORE_RUNS, 1):
                res = lab.run_storescu(LOOPBACK, port, [files[n].path for n in names], aet=f"STORESCU{i}",
                                       aec="STORESCP", extra_args=args)
                log = _text(res)
                runs.append({"calling": f"STORESCU{i}", "files": names, "args": args,
                             "ids": msg_ids(log, "Sending Store Request"), "log": log})
    return Scenario("store", d, pcap, {"scp": port}, files,
                    truth={"runs": runs, "received": received_objects(d / "rx")},
                    logs={"storescp": scp.log()}, seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# dcmtk: dcmqrscp with findscu, movescu (to itself and to a storescp), getscu
# --------------------------------------------------------------------------

QR_SPECS = {
    # study QA: 3 CT of patient QP1; study QB: 2 MR of QP2 (implicit VR); study QC: 1 SC of QP3
    "qa1": lab.DicomSpec(sop="CT", size=20 * 1024, patient="QP1", study="QA", series="QA1"),
    "qa2": lab.DicomSpec(sop="CT", size=24 * 1024, patient="QP1", study="QA", series="QA1"),
    "qa3": lab.DicomSpec(sop="CT", size=28 * 1024, patient="QP1", study="QA", series="QA1"),
    "qb1": lab.DicomSpec(sop="MR", size=30 * 1024, explicit_vr=False, patient="QP2", study="QB"),
    "qb2": lab.DicomSpec(sop="MR", size=34 * 1024, explicit_vr=False, patient="QP2", study="QB"),
    "qc1": lab.DicomSpec(sop="SC", size=16 * 1024, patient="QP3", study="QC"),
}


def write_dcmqrscp_config(path: Path, port: int, db: Path, aet: str, hosts: dict[str, int]) -> Path:
    """dcmqrscp configuration: one storage area (AE aet, any peer) and move destinations
    hosts {AE title: port} on 127.0.0.1. No UserName/GroupName: stays root, no setuid."""
    lines = [f"NetworkTCPPort = {port}", "MaxPDUSize = 16384", "MaxAssociations = 16", "",
             "HostTable BEGIN"]
    lines += [f"{t.lower()} = ({t}, {LOOPBACK}, {p})" for t, p in hosts.items()]
    lines += ["HostTable END", "", "VendorTable BEGIN", "VendorTable END", "",
              "AETable BEGIN", f"{aet} {db} RW (200, 1024mb) ANY", "AETable END", ""]
    path.write_text("\n".join(lines))
    return path


def index_into_db(files, db: Path) -> Path:
    """Copy the files into a new dcmqrscp storage area and index them (dcmqridx wants
    absolute paths)."""
    db.mkdir()
    stored = []
    for f in files:
        target = db / f.path.name
        target.write_bytes(f.path.read_bytes())
        stored.append(str(target))
    lab.run([lab.dcmtk("dcmqridx"), str(db), *stored], timeout=60)
    return db


def qr_scenario(d: Path) -> Scenario:
    t0 = time.monotonic()
    files = _named_files(d / "files", QR_SPECS)
    db = index_into_db(files.values(), d / "db")
    qr_port, mv_port, st_port = lab.free_port(), lab.free_port(), lab.free_port()
    cfg = write_dcmqrscp_config(d / "dcmqrscp.cfg", qr_port, db, "QRSCP",
                                {"MOVESCU": mv_port, "STORESCP": st_port})
    study = {k: files[k].study_instance_uid for k in ("qa1", "qb1", "qc1")}
    study_uid = {"QA": study["qa1"], "QB": study["qb1"], "QC": study["qc1"]}
    runs = {}

    def tool(name, args, key):
        res = lab.run([lab.dcmtk(name), "-v", "-to", "20", "-ta", "20", "-td", "20", *args,
                       LOOPBACK, str(qr_port)], timeout=60, check=False)
        runs[key] = {"rc": res.returncode, "log": _text(res)}
        return runs[key]

    pcap = d / "qr.pcap"
    (d / "moved").mkdir()
    (d / "got").mkdir()
    with lab.Capture(pcap, "lo", bpf_ports(qr_port, mv_port, st_port)):
        with DcmtkPeer("dcmqrscp", ["-v", "-c", cfg, qr_port], qr_port, d, "dcmqrscp"), \
                lab.StoreSCP(d / "rx", st_port, aet="STORESCP", log_dir=d) as scp:
            tool("findscu", ["-S", "-aet", "FINDSCU", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=STUDY",
                             "-k", "StudyInstanceUID", "-k", "PatientID"], "find")
            tool("findscu", ["-S", "-aet", "FINDNONE", "-aec", "QRSCP", "-k", "QueryRetrieveLevel=STUDY",
                             "-k", "StudyInstanceUID", "-k", "PatientID=NOBODY"], "find_none")
            tool("movescu", ["-S", "-aet", "MOVESCU", "-aec", "QRSCP", "-aem", "MOVESCU", "--port", mv_port,
                             "-od", d / "moved", "-k", "QueryRetrieveLevel=STUDY",
                             "-k", f"StudyInstanceUID={study_uid['QA']}"], "move_self")
            tool("movescu", ["-S", "-aet", "MOVETHIRD", "-aec", "QRSCP", "-aem", "STORESCP",
                             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid['QB']}"],
                 "move_third")
            tool("movescu", ["-S", "-aet", "MOVELOST", "-aec", "QRSCP", "-aem", "NOWHERE",
                             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid['QC']}"],
                 "move_unknown")
            tool("getscu", ["-S", "-aet", "GETSCU", "-aec", "QRSCP", "-od", d / "got",
                            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid['QA']}"],
                 "get")
            st_log = scp.log()
    for key in ("find", "find_none", "move_self", "move_third", "get"):
        if runs[key]["rc"] != 0:
            raise lab.LabError(f"{key} failed: {runs[key]['log'][-3000:]}")
    by_study = {s: sorted(f.sop_instance_uid for f in files.values() if f.study_instance_uid == u)
                for s, u in study_uid.items()}
    return Scenario("qr", d, pcap, {"qr": qr_port, "movescu": mv_port, "storescp": st_port}, files,
                    truth={"study_uid": study_uid, "instances": by_study, "runs": runs,
                           "moved": received_objects(d / "moved"), "stored": received_objects(d / "rx"),
                           "got": received_objects(d / "got"),
                           "patients": {"QA": "PID-QP1", "QB": "PID-QP2", "QC": "PID-QP3"}},
                    logs={"storescp": st_log, "dcmqrscp": (d / "dcmqrscp.err").read_text(errors="replace")},
                    seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# pynetdicom: every A-ASSOCIATE-RJ (result, source, reason) it allows
# --------------------------------------------------------------------------

REJECT_COMBOS = [(result, source, reason)
                 for result in (1, 2)
                 for source, reasons in ((1, (1, 2, 3, 7)), (2, (1, 2)), (3, (1, 2)))
                 for reason in reasons]


def reject_scenario(d: Path) -> Scenario:
    """One pynetdicom acceptor rejects each association with the (result, source, reason)
    written in its called AE title ("RJ_r_s_d", sent from an EVT_REQUESTED handler);
    three more acceptors reject the way pynetdicom itself does: called AE title not
    recognised (require_called_aet), calling AE title not recognised
    (require_calling_aet), user identity refused (EVT_USER_ID handler -> 2/2/1)."""
    from pynetdicom import evt
    from pynetdicom.pdu_primitives import UserIdentityNegotiation
    from pynetdicom.sop_class import Verification

    t0 = time.monotonic()
    ports = {k: lab.free_port() for k in ("any", "called", "calling", "userid")}

    def on_requested(event):
        called = event.assoc.requestor.primitive.called_ae_title.strip()
        if called.startswith("RJ_"):
            r, s, reason = (int(x) for x in called.split("_")[1:])
            event.assoc.acse.send_reject(r, s, reason)
            # what pynetdicom does for its own rejections: wait for the peer to close
            event.assoc.kill()

    def server_ae(title, **attrs):
        ae = pyae(title)
        ae.add_supported_context(Verification)
        for k, v in attrs.items():
            setattr(ae, k, v)
        return ae

    seen = []  # per association: AE titles, port, and (result, source, reason) as the requestor saw it

    def try_assoc(port, calling, called, user=None):
        ae = pyae(calling)
        ae.add_requested_context(Verification)
        kw = {}
        if user:
            ui = UserIdentityNegotiation()
            ui.user_identity_type = 2
            ui.primary_field = user[0].encode()
            ui.secondary_field = user[1].encode()
            ui.positive_response_requested = True
            kw["ext_neg"] = [ui]
        assoc = ae.associate(LOOPBACK, port, ae_title=called, **kw)
        p = assoc.acceptor.primitive
        got = (p.result, p.result_source, p.diagnostic) if assoc.is_rejected and p is not None else None
        seen.append({"calling": calling, "called": called, "port": port, "rejected": assoc.is_rejected,
                     "rsd": got, "established": assoc.is_established})
        if assoc.is_established:
            assoc.release()

    pcap = d / "reject.pcap"
    with lab.Capture(pcap, "lo", bpf_ports(*ports.values())):
        with pyserver(server_ae("ANYSCP"), ports["any"], [(evt.EVT_REQUESTED, on_requested)]), \
                pyserver(server_ae("STRICT", require_called_aet=True), ports["called"]), \
                pyserver(server_ae("PICKY", require_calling_aet=["FRIEND"]), ports["calling"]), \
                pyserver(server_ae("GUARDED"), ports["userid"],
                         [(evt.EVT_USER_ID, lambda event: (False, None))]):
            for r, s, reason in REJECT_COMBOS:
                try_assoc(ports["any"], "REQUESTOR", f"RJ_{r}_{s}_{reason}")
            try_assoc(ports["any"], "REQUESTOR", "ACCEPTME")
            try_assoc(ports["called"], "REQUESTOR", "NOTSTRICT")
            try_assoc(ports["calling"], "STRANGER", "PICKY")
            try_assoc(ports["userid"], "USERSCU", "GUARDED", user=("alice", "wrong-password"))
    return Scenario("reject", d, pcap, ports, truth={"seen": seen}, seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# aborts: by the acceptor mid-transfer and after the data set, by the requestor
# mid-transfer and instead of a release, A-P-ABORT from the provider
# --------------------------------------------------------------------------

def abort_scenario(d: Path) -> Scenario:
    from pydicom import dcmread
    from pynetdicom import evt
    from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
    from pynetdicom.sop_class import CTImageStorage, Verification

    t0 = time.monotonic()
    files = _named_files(d / "files", {
        "big": lab.DicomSpec(sop="CT", size=3 * 1024 * 1024, patient="AB1", study="AB1"),
        "small": lab.DicomSpec(sop="CT", size=12 * 1024, patient="AB2", study="AB2"),
        "small2": lab.DicomSpec(sop="MR", size=12 * 1024, patient="AB3", study="AB3"),
    })
    ports = {k: lab.free_port() for k in ("during", "after", "plain", "py")}
    truth: dict = {}

    # pynetdicom acceptor: C-STORE handler aborts (A-ABORT, service user) after the
    # data set arrived; C-ECHO handler sends an A-P-ABORT (provider, reason 6)
    def on_store(event):
        event.assoc.abort()
        return 0x0000

    def on_echo(event):
        event.assoc.acse.send_ap_abort(0x06)
        return 0x0000

    scp_ae = pyae("PYABORT", max_pdu=4096)
    scp_ae.add_supported_context(Verification)
    scp_ae.add_supported_context(CTImageStorage)

    # pynetdicom requestor quitting mid-transfer: after its 40th P-DATA-TF has gone
    # out, the DUL thread itself either writes an A-ABORT (source 0, reason 0) and
    # shuts the socket (pynetdicom would queue an abort behind the data set), or
    # resets the connection (SO_LINGER 0, close: an RST, no A-ABORT)
    def quit_after(n: int, how: str, sent: dict):
        def on_sent(event):
            if isinstance(event.pdu, P_DATA_TF) and sent["pdus"] < n:
                sent["pdus"] += 1
                sent["data_bytes"] += pdv_data_bytes(event.pdu)
                if sent["pdus"] == n:
                    sock = event.assoc.dul.socket.socket
                    if how == "abort":
                        pdu = A_ABORT_RQ()
                        pdu.source, pdu.reason_diagnostic = 0, 0
                        sock.sendall(pdu.encode())
                        sock.shutdown(socket.SHUT_RDWR)
                    else:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        sock.close()
        return on_sent

    def store_then_quit(calling: str, how: str) -> dict:
        sent = {"pdus": 0, "data_bytes": 0}
        ae = pyae(calling)
        ae.add_requested_context(CTImageStorage, lab.EXPLICIT_VR_LE)
        assoc = ae.associate(LOOPBACK, ports["plain"], ae_title="PLAIN",
                             evt_handlers=[(evt.EVT_PDU_SENT, quit_after(40, how, sent))])
        if not assoc.is_established:
            raise lab.LabError(f"{calling} association not established")
        with contextlib.suppress(Exception):
            assoc.send_c_store(big)
        with contextlib.suppress(Exception):
            assoc.kill()
        if sent["pdus"] != 40:
            raise lab.LabError(f"{calling} sent only {sent['pdus']} P-DATA-TF PDUs")
        return sent

    big = dcmread(files["big"].path)
    pcap = d / "abort.pcap"
    logs = {}
    with lab.Capture(pcap, "lo", bpf_ports(*ports.values())):
        with DcmtkPeer("storescp", ["-v", "--abort-during", "--max-pdu", 4096, "-aet", "ABORTDURING",
                                    "-od", d, ports["during"]], ports["during"], d, "storescp-during"), \
                DcmtkPeer("storescp", ["-v", "--abort-after", "-aet", "ABORTAFTER", "-od", d,
                                       ports["after"]], ports["after"], d, "storescp-after"), \
                lab.StoreSCP(d / "rx", ports["plain"], aet="PLAIN", max_pdu=4096, log_dir=d) as plain, \
                pyserver(scp_ae, ports["py"], [(evt.EVT_C_STORE, on_store), (evt.EVT_C_ECHO, on_echo)]):
            # 1. acceptor (storescp --abort-during) aborts while the 3 MB data set arrives
            r = lab.run_storescu(LOOPBACK, ports["during"], [files["big"].path], aet="SENDBIG",
                                 aec="ABORTDURING", check=False)
            logs["during"] = _text(r)
            # 2. acceptor (storescp --abort-after) aborts after the data set, before answering
            r = lab.run_storescu(LOOPBACK, ports["after"], [files["small"].path], aet="SENDSMALL",
                                 aec="ABORTAFTER", check=False)
            logs["after"] = _text(r)
            # 3. requestor (storescu --abort) aborts instead of releasing, after two stores
            r = lab.run_storescu(LOOPBACK, ports["plain"], [files["small"].path, files["small2"].path],
                                 aet="QUITTER", aec="PLAIN", extra_args=["--abort"])
            logs["quitter"] = _text(r)
            truth["quitter_ids"] = msg_ids(logs["quitter"], "Sending Store Request")
            # 4. requestor (pynetdicom) aborts in the middle of the 3 MB data set
            truth["midabort"] = store_then_quit("MIDABORT", "abort")
            # 4b. requestor (pynetdicom) resets the connection in the middle of the data set
            truth["dropper"] = store_then_quit("DROPPER", "reset")
            # 5. acceptor (pynetdicom C-STORE handler) aborts after the data set
            ae = pyae("HANDLERSCU")
            ae.add_requested_context(CTImageStorage, lab.EXPLICIT_VR_LE)
            assoc = ae.associate(LOOPBACK, ports["py"], ae_title="PYABORT")
            assoc.send_c_store(dcmread(files["small"].path))
            # 6. acceptor (pynetdicom C-ECHO handler) sends A-P-ABORT reason 6
            ae = pyae("APABORTSCU")
            ae.add_requested_context(Verification)
            assoc = ae.associate(LOOPBACK, ports["py"], ae_title="PYABORT")
            assoc.send_c_echo()
            time.sleep(0.2)
            logs["plain"] = plain.log()
    if "ABORT initiated" not in (d / "storescp-during.err").read_text(errors="replace"):
        raise lab.LabError("storescp --abort-during did not abort")
    return Scenario("abort", d, pcap, ports, files, truth=truth, logs=logs, seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# pynetdicom SCP answering with chosen statuses (C-STORE) and 0xA801 (C-MOVE)
# --------------------------------------------------------------------------

# SOP instance label -> (status, error comment, offending element)
STORE_STATUSES = {
    "st_ok": (0x0000, None, None),
    "st_a700": (0xA700, None, None),
    "st_b000": (0xB000, None, None),
    "st_c000": (0xC000, "Lab refuses this object", 0x00100020),
    "st_a900": (0xA900, "SOP class does not match", None),
}


def status_scenario(d: Path) -> Scenario:
    from pynetdicom import AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove, Verification

    t0 = time.monotonic()
    specs = {k: lab.DicomSpec(sop=s, size=8 * 1024, patient=k, study=k)
             for k, s in zip(STORE_STATUSES, ("CT", "MR", "SC", "CT", "MR"))}
    files = _named_files(d / "files", specs)
    by_uid = {files[k].sop_instance_uid: v for k, v in STORE_STATUSES.items()}
    port = lab.free_port()
    moves = []

    def on_store(event):
        status, comment, offending = by_uid[str(event.request.AffectedSOPInstanceUID)]
        return status_dataset(status, comment, offending)

    def on_move(event):
        moves.append(event.move_destination)
        yield None, None  # pynetdicom: move destination unknown -> 0xA801

    ae = pyae("PYSTATUS")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax)
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    order = list(STORE_STATUSES)
    pcap = d / "status.pcap"
    with lab.Capture(pcap, "lo", bpf_ports(port)):
        with pyserver(ae, port, [(evt.EVT_C_STORE, on_store), (evt.EVT_C_MOVE, on_move)]):
            r = lab.run_storescu(LOOPBACK, port, [files[k].path for k in order], aet="STATUSSCU",
                                 aec="PYSTATUS", extra_args=["--no-halt"], check=False)
            store_log = _text(r)
            r = lab.run([lab.dcmtk("movescu"), "-v", "-S", "-aet", "MOVER", "-aec", "PYSTATUS",
                         "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                         "-k", f"StudyInstanceUID={files['st_ok'].study_instance_uid}", LOOPBACK, str(port)],
                        timeout=60, check=False)
            move_log = _text(r)
    if moves != ["NOWHERE"]:
        raise lab.LabError(f"C-MOVE handler saw {moves}")
    return Scenario("status", d, pcap, {"scp": port}, files,
                    truth={"order": order, "statuses": STORE_STATUSES,
                           "store_ids": msg_ids(store_log, "Sending Store Request"),
                           "move_ids": msg_ids(move_log, "Sending Move Request")},
                    logs={"storescu": store_log, "movescu": move_log}, seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# a non-standard port (4242)
# --------------------------------------------------------------------------

def port_scenario(d: Path, port: int = 4242) -> Scenario:
    """echoscu and storescu to storescp on a port outside dicomtrace's default list."""
    t0 = time.monotonic()
    if lab.port_listening(port):
        port = lab.free_port()
    files = _named_files(d / "files", {"p1": lab.DicomSpec(sop="CT", size=30 * 1024, patient="PORT")})
    pcap = d / "port.pcap"
    with lab.Capture(pcap, "lo", bpf_ports(port)):
        with lab.StoreSCP(d / "rx", port, aet="PORTSCP", log_dir=d):
            lab.run_echoscu(LOOPBACK, port, aec="PORTSCP", aet="PORTECHO")
            lab.run_storescu(LOOPBACK, port, [files["p1"].path], aet="PORTSTORE", aec="PORTSCP")
    return Scenario("port", d, pcap, {"scp": port}, files, truth={"received": received_objects(d / "rx")},
                    seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# two associations at the same time
# --------------------------------------------------------------------------

OVERLAP_IDS = {"a1": 11, "b1": 21, "a2": 12, "b2": 22}


def overlap_scenario(d: Path) -> Scenario:
    """Two pynetdicom requestors on one pynetdicom acceptor, their C-STOREs interleaved:
    A opens, B opens, A stores, B stores, A stores, B stores, A releases, B releases."""
    from pydicom import dcmread
    t0 = time.monotonic()
    files = _named_files(d / "files", {
        "a1": lab.DicomSpec(sop="CT", size=50 * 1024, patient="OVA"),
        "b1": lab.DicomSpec(sop="MR", size=40 * 1024, explicit_vr=False, patient="OVB"),
        "a2": lab.DicomSpec(sop="SC", size=30 * 1024, patient="OVA"),
        "b2": lab.DicomSpec(sop="CT", size=20 * 1024, patient="OVB"),
    })
    port = lab.free_port()
    pcap = d / "overlap.pcap"
    statuses = {}
    with lab.Capture(pcap, "lo", bpf_ports(port)):
        with lab.PynetdicomSCP(LOOPBACK, port, aet="OVERSCP", output_dir=d / "rx", max_pdu=8192):
            lab.wait_listening(port, timeout=10)
            assocs = {}
            for who in ("A", "B"):
                ae = pyae(f"OVERLAP_{who}", max_pdu=8192)
                for k in ("a1", "b1", "a2", "b2"):
                    f = files[k]
                    ae.add_requested_context(f.sop_class_uid, f.transfer_syntax_uid)
                assocs[who] = ae.associate(LOOPBACK, port, ae_title="OVERSCP")
                if not assocs[who].is_established:
                    raise lab.LabError(f"overlap association {who} not established")
            for k in ("a1", "b1", "a2", "b2"):
                st = assocs[k[0].upper()].send_c_store(dcmread(files[k].path), msg_id=OVERLAP_IDS[k])
                statuses[k] = int(st.Status)
            assocs["A"].release()
            assocs["B"].release()
    return Scenario("overlap", d, pcap, {"scp": port}, files,
                    truth={"statuses": statuses, "ids": OVERLAP_IDS, "received": received_objects(d / "rx")},
                    seconds=time.monotonic() - t0)


# --------------------------------------------------------------------------
# a capture that starts in the middle of an association (editcap -r)
# --------------------------------------------------------------------------

# CT files implicit VR, MR and SC explicit: each SOP class is negotiated with its file's
# transfer syntax only, so both encodings travel in one association
MID_SPECS = {f"m{i}": lab.DicomSpec(sop=("CT", "MR", "SC")[i % 3], size=(40 + 30 * i) * 1024,
                                    explicit_vr=i % 3 != 0, patient=f"MID{i}", study=f"MID{i}")
             for i in range(6)}
MID_IDS = {f"m{i}": 101 + i for i in range(6)}


def _client_frames(pcap, client: tuple[str, int]) -> list[tuple[int, int, int]]:
    """(frame, stream offset, length) of the client's data segments (tshark relative seq)."""
    out = []
    for row in lab._tcp_frames(pcap, "tcp.len > 0", extra_fields=["tcp.seq", "tcp.len"]):
        frame, _stream, sip, sport, *_rest = row
        seq, tlen = int(row[-2]), int(row[-1])
        if (sip, sport) == client:
            out.append((frame, seq - 1, tlen))
    return out


def midstream_scenario(d: Path) -> Scenario:
    """A pynetdicom requestor sends 6 files to storescp (4096-byte PDUs), each SOP class
    on a context with one transfer syntax (CT implicit VR, MR and SC explicit), message
    IDs 101..106; two cuts of the capture keep the frames from the middle onward:

    * "boundary": from the frame holding the start of the 4th C-STORE-RQ command;
    * "inside": from the frame in the middle of the 2nd data set;

    and one more keeps the frames up to the 4th command only (truth["head"]: the
    capture ends while the association is open).

    truth["cuts"][name] = {"frame": first kept frame, "complete": labels of the
    C-STOREs whose command and data set are entirely in the cut capture}.
    """
    t0 = time.monotonic()
    files = _named_files(d / "files", MID_SPECS)
    port = lab.free_port()
    full = d / "mid_full.pcap"
    order = list(MID_SPECS)
    from pydicom import dcmread
    ae = pyae("MIDSCU")
    for sop in ("CT", "MR", "SC"):
        ae.add_requested_context(lab.SOP_CLASSES[sop][0],
                                 lab.IMPLICIT_VR_LE if sop == "CT" else lab.EXPLICIT_VR_LE)
    with lab.Capture(full, "lo", bpf_ports(port)):
        with lab.StoreSCP(d / "rx", port, aet="MIDSCP", max_pdu=4096, log_dir=d):
            assoc = ae.associate(LOOPBACK, port, ae_title="MIDSCP")
            if not assoc.is_established:
                raise lab.LabError("midstream association not established")
            for k in order:
                st = assoc.send_c_store(dcmread(files[k].path), msg_id=MID_IDS[k])
                if int(st.Status) != 0:
                    raise lab.LabError(f"midstream C-STORE of {k}: status {st}")
            assoc.release()
    ids = [MID_IDS[k] for k in order]
    streams = lab.tshark_streams(full)
    if len(streams) != 1:
        raise lab.LabError(f"midstream capture has {len(streams)} TCP streams")
    s = streams[0]
    client = s["syn_client"]
    follow = lab.tshark_follow_raw(full, 0, client=client)
    # where each C-STORE-RQ command and its data set start and end in the client stream
    cmd_starts, data_spans = [], []
    cur_data = None
    for item in lab.pdv_items(follow.client_to_server):
        if item.is_command:  # command fragment: a new command starts after each data set
            if len(cmd_starts) == len(data_spans):
                cmd_starts.append(item.pdu_offset)
        else:
            if cur_data is None:
                cur_data = item.pdu_offset
            if item.is_last:
                data_spans.append((cur_data, item.pdu_end))
                cur_data = None
    if len(cmd_starts) != len(order) or len(data_spans) != len(order):
        raise lab.LabError(f"midstream: {len(cmd_starts)} commands, {len(data_spans)} data sets")
    frames = _client_frames(full, client)

    def frame_at(offset):
        for fr, start, n in frames:
            if start <= offset < start + n:
                return fr, start
        raise lab.LabError(f"no client frame holds stream offset {offset}")

    cuts = {}
    # boundary: 4th command; the C-STOREs from the 4th on are complete in the cut
    fr, start = frame_at(cmd_starts[3])
    first_complete = 3 if start == cmd_starts[3] else 4
    cuts["boundary"] = {"frame": fr, "aligned": start == cmd_starts[3]}
    # inside: the middle of the 2nd data set; the C-STOREs from the 3rd on are complete
    mid = (data_spans[1][0] + data_spans[1][1]) // 2
    fr2, _ = frame_at(mid)
    if fr2 >= cuts["boundary"]["frame"]:
        raise lab.LabError("midstream: cut points out of order")
    cuts["inside"] = {"frame": fr2, "aligned": False}
    cuts["boundary"]["complete"] = order[first_complete:]
    cuts["inside"]["complete"] = order[2:]
    last = s["last_frame"]
    for name, c in cuts.items():
        c["pcap"] = lab.editcap(full, d / f"mid_{name}.pcap", "-F", "pcap", "-r",
                                frames=[f"{c['frame']}-{last}"])
    # head: the capture ends just before the 4th command (the association is still open)
    head = {"last_frame": cuts["boundary"]["frame"] - 1, "complete": order[:3]}
    head["pcap"] = lab.editcap(full, d / "mid_head.pcap", "-F", "pcap", "-r",
                               frames=[f"1-{head['last_frame']}"])
    return Scenario("midstream", d, full, {"scp": port, "scu": client[1]}, files,
                    truth={"order": order, "ids": dict(zip(order, ids)), "cuts": cuts, "head": head,
                           "received": received_objects(d / "rx"), "cmd_starts": cmd_starts},
                    seconds=time.monotonic() - t0)


ALL = {
    "echo": echo_scenario,
    "store": store_scenario,
    "qr": qr_scenario,
    "reject": reject_scenario,
    "abort": abort_scenario,
    "status": status_scenario,
    "port": port_scenario,
    "overlap": overlap_scenario,
    "midstream": midstream_scenario,
}


def status_dataset(status: int, comment: str | None = None, offending: int | None = None):
    """A pynetdicom handler's answer: a status with optional Error Comment and Offending Element."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment
    if offending:
        ds.OffendingElement = [offending]
    return ds


class ScenarioLab:
    """Builds scenarios on first use (from the first registry that has the name) and runs
    each analysis once; DICOMTRACE_LAB_KEEP=DIR keeps the captures out of pytest's
    rotating tmp dirs."""

    def __init__(self, factory, registries, prefix: str, validate=None):
        self.factory = factory
        self.registries = registries
        self.prefix = prefix
        self.validate = validate
        self.built: dict = {}
        self.failed: dict = {}
        self.docs: dict = {}
        self.timings: dict = {}

    def dir(self, name: str) -> Path:
        return lab.work_dir(self.factory, f"{self.prefix}_{name}")

    def scenario(self, name: str):
        import pytest
        if name in self.failed:
            pytest.fail(f"scenario {name} could not be built: {self.failed[name]}")
        if name not in self.built:
            gen = next(r[name] for r in self.registries if name in r)
            try:
                self.built[name] = gen(self.dir(name))
            except lab.LabError as e:
                self.failed[name] = e
                raise
            self.timings[f"build {name}"] = self.built[name].seconds
        return self.built[name]

    def analyze(self, pcap, *args) -> dict:
        import json
        key = (str(pcap), *map(str, args))
        if key not in self.docs:
            t0 = time.monotonic()
            res = lab.run_dicomtrace("analyze", pcap, "--format", "json", *args)
            doc = json.loads(res.stdout)
            self.timings[f"analyze {Path(pcap).name} {' '.join(map(str, args))}"] = time.monotonic() - t0
            if self.validate is not None:
                self.validate(doc)
            self.docs[key] = doc
        return self.docs[key]

    def report_timings(self) -> str:
        return "\n".join(f"{v:6.2f}s {k}" for k, v in sorted(self.timings.items(), key=lambda kv: -kv[1]))
