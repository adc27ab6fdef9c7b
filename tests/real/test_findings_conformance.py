"""Issue #4: the protocol-conformance findings of `dicomtrace analyze`, from hand-crafted streams.

No real peer sends these errors, so the captures are written here: Ethernet /
IPv4 / TCP frames (handshake, data segments each acknowledged, FIN both ways,
correct sequence numbers, acknowledgements and checksums) carrying a DICOM
association whose PDUs are encoded with pynetdicom's own classes
(pynetdicom.pdu.A_ASSOCIATE_RQ / _AC / P_DATA_TF, pynetdicom.dimse_messages):

    A-ASSOCIATE-RQ  contexts 1 CT (explicit, implicit LE), 3 Study Root FIND,
                    5 MR (JPEG baseline only), 7 MR (explicit LE); max PDU 16384
    A-ASSOCIATE-AC  1, 3, 7 accepted; 5 rejected (transfer syntaxes not supported)
    C-STORE CT  message 1 on context 1 (20 KB data set: two 16384-byte P-DATA-TFs)
    C-FIND      message 2 on context 3: two pending matches, then success
    C-STORE MR  message 3 on context 7
    A-RELEASE-RQ / -RP, FIN both ways

Every PDU goes in its own TCP segment(s), so each has known frame numbers.
One capture holds the clean association first, then one association per
mutation (so association ids are checked too), then the clean one again; a
second capture holds only the clean association. Each capture is analysed
once. Set DICOMTRACE_LAB_KEEP=DIR to keep the captures in DIR/findings-conformance/.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lab
from unit.wire import pdata_pdus as _pdata
from unit.wire import presentation_context as _context
from unit.wire import release_rp, release_rq

pytestmark = pytest.mark.usefixtures("dicomtrace_cli")

CONFORMANCE_CODES = ("malformed-pdu", "pdu-exceeds-max-length", "invalid-presentation-context-id",
                     "invalid-pdv-flags", "unexpected-pdu", "context-misuse", "message-id-reused",
                     "response-without-request", "ae-title-anomaly")
DICOM_PORT = 11112
CLIENT_IP, SERVER_IP = "10.99.0.1", "10.99.0.2"
APP_CONTEXT = "1.2.840.10008.3.1.1.1"
EXPLICIT, IMPLICIT, JPEG_BASELINE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"
CT, MR = lab.SOP_CLASSES["CT"][0], lab.SOP_CLASSES["MR"][0]
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION = "1.2.840.10008.1.1"
MAX_PDU = 16384
MSS = 1460


# --------------------------------------------------------------------------
# pcap writer: Ethernet / IPv4 / TCP
# --------------------------------------------------------------------------

def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class PcapWriter:
    """Frames (Ethernet, one capture) with timestamps 1 ms apart; numbered from 1."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.records: list[tuple[float, bytes]] = []
        self.time = start

    def add(self, frame: bytes) -> int:
        self.records.append((self.time, frame))
        self.time += 0.001
        return len(self.records)

    def write(self, path) -> Path:
        out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
        for t, frame in self.records:
            sec = int(t)
            out.append(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(frame), len(frame)))
            out.append(frame)
        Path(path).write_bytes(b"".join(out))
        return Path(path)


class TcpFlow:
    """One TCP connection written into a PcapWriter.

    send() writes a payload as MSS-sized segments (PSH on the last) and then
    the receiver's acknowledgement; sequence and acknowledgement numbers follow
    the bytes sent; IPv4 and TCP checksums are correct.
    """

    def __init__(self, w: PcapWriter, client: tuple[str, int], server: tuple[str, int],
                 isn_client: int = 0x10000000, isn_server: int = 0x70000000):
        self.w = w
        self.ends = {"c": client, "s": server}
        self.mac = {"c": b"\x02\x00\x00\x00\x00\x01", "s": b"\x02\x00\x00\x00\x00\x02"}
        self.isn = {"c": isn_client, "s": isn_server}
        self.seq = {"c": isn_client + 1, "s": isn_server + 1}
        self.ip_id = {"c": 1, "s": 1}

    @staticmethod
    def other(side: str) -> str:
        return "s" if side == "c" else "c"

    def packet(self, side: str, flags: int, payload: bytes = b"", seq: int | None = None,
               ack: int | None = None, options: bytes = b"") -> int:
        o = self.other(side)
        (sip, sport), (dip, dport) = self.ends[side], self.ends[o]
        seq = self.seq[side] if seq is None else seq
        ack = (self.seq[o] if flags & ACK else 0) if ack is None else ack
        hl = 20 + len(options)
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (hl // 4) << 4,
                          flags, 65535, 0, 0) + options
        pseudo = _ip(sip) + _ip(dip) + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
        csum = _checksum(pseudo + tcp + payload)
        tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
        total = 20 + len(tcp) + len(payload)
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, self.ip_id[side], 0x4000, 64, 6, 0, _ip(sip), _ip(dip))
        iph = iph[:10] + struct.pack("!H", _checksum(iph)) + iph[12:]
        self.ip_id[side] += 1
        eth = self.mac[o] + self.mac[side] + b"\x08\x00"
        return self.w.add(eth + iph + tcp + payload)

    def open(self) -> list[int]:
        mss = struct.pack("!BBH", 2, 4, MSS)
        f1 = self.packet("c", SYN, seq=self.isn["c"], ack=0, options=mss)
        f2 = self.packet("s", SYN | ACK, seq=self.isn["s"], ack=self.seq["c"], options=mss)
        f3 = self.packet("c", ACK)
        return [f1, f2, f3]

    def send(self, side: str, data: bytes) -> list[int]:
        frames = []
        for i in range(0, len(data), MSS):
            chunk = data[i:i + MSS]
            last = i + MSS >= len(data)
            frames.append(self.packet(side, ACK | (PSH if last else 0), chunk))
            self.seq[side] += len(chunk)
        self.packet(self.other(side), ACK)
        return frames

    def close(self) -> list[int]:
        f1 = self.packet("c", FIN | ACK)
        self.seq["c"] += 1
        f2 = self.packet("s", FIN | ACK)
        self.seq["s"] += 1
        f3 = self.packet("c", ACK)
        return [f1, f2, f3]


# --------------------------------------------------------------------------
# DICOM PDUs, encoded by pynetdicom
# --------------------------------------------------------------------------

def _associate(calling: str, called: str, contexts, max_pdu: int, results=None) -> bytes:
    """A-ASSOCIATE-RQ (results None) or -AC, encoded by pynetdicom."""
    from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE, ImplementationClassUIDNotification, ImplementationVersionNameNotification,
        MaximumLengthNotification,
    )
    p = A_ASSOCIATE()
    p.application_context_name = APP_CONTEXT
    p.calling_ae_title = calling
    p.called_ae_title = called
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_pdu
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = lab.UID_ROOT + "4"
    iv = ImplementationVersionNameNotification()
    iv.implementation_version_name = "DTCRAFT_1"
    p.user_information = [ml, ic, iv]
    if results is None:
        p.presentation_context_definition_list = [_context(c, a, t) for c, a, t in contexts]
        pdu = A_ASSOCIATE_RQ()
    else:
        p.result = 0
        p.presentation_context_definition_results_list = [
            _context(c, a, [results[c][1]] if results[c][1] else [t[0]], results[c][0]) for c, a, t in contexts]
        pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(p)
    return pdu.encode()


def _items(pdu: bytes):
    """(offset, item type, item length) of the variable items of an A-ASSOCIATE-RQ/AC."""
    pos = 74
    while pos + 4 <= len(pdu):
        itype, ilen = pdu[pos], struct.unpack(">H", pdu[pos + 2:pos + 4])[0]
        yield pos, itype, ilen
        pos += 4 + ilen


def set_context_id(pdu: bytes, old: int, new: int) -> bytes:
    """Rewrite a presentation context item's ID (pynetdicom refuses even IDs)."""
    b = bytearray(pdu)
    for pos, itype, _ilen in _items(pdu):
        if itype in (0x20, 0x21) and b[pos + 4] == old:
            b[pos + 4] = new
            return bytes(b)
    raise AssertionError(f"no presentation context {old}")


def set_ae(pdu: bytes, which: str, raw: bytes) -> bytes:
    """Overwrite the called (10:26) or calling (26:42) AE title field with 16 raw bytes."""
    assert len(raw) == 16
    start = 10 if which == "called" else 26
    return pdu[:start] + raw + pdu[start + 16:]


def grow_item(pdu: bytes, item_type: int, extra: int) -> bytes:
    """Make an item's length claim `extra` bytes more than it has (the PDU length is kept)."""
    b = bytearray(pdu)
    for pos, itype, ilen in _items(pdu):
        if itype == item_type:
            struct.pack_into(">H", b, pos + 2, ilen + extra)
            return bytes(b)
    raise AssertionError(f"no item 0x{item_type:02X}")


def _encode_ds(ds, implicit: bool) -> bytes:
    from pynetdicom.dsutils import encode
    return encode(ds, implicit, True)


def store_rq(mid: int, sop_class: str, uid: str, dataset: bytes, context_id: int, max_pdu: int = MAX_PDU):
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    p = C_STORE()
    p.MessageID = mid
    p.AffectedSOPClassUID = sop_class
    p.AffectedSOPInstanceUID = uid
    p.Priority = 2
    p.DataSet = io.BytesIO(dataset)
    m = C_STORE_RQ()
    m.primitive_to_message(p)
    return _pdata(m, context_id, max_pdu)


def store_rsp(mid: int, sop_class: str, uid: str, context_id: int, status: int = 0):
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE
    p = C_STORE()
    p.MessageIDBeingRespondedTo = mid
    p.AffectedSOPClassUID = sop_class
    p.AffectedSOPInstanceUID = uid
    p.Status = status
    m = C_STORE_RSP()
    m.primitive_to_message(p)
    return _pdata(m, context_id, MAX_PDU)


def find_rq(mid: int, identifier: bytes, context_id: int):
    from pynetdicom.dimse_messages import C_FIND_RQ
    from pynetdicom.dimse_primitives import C_FIND
    p = C_FIND()
    p.MessageID = mid
    p.AffectedSOPClassUID = FIND
    p.Priority = 2
    p.Identifier = io.BytesIO(identifier)
    m = C_FIND_RQ()
    m.primitive_to_message(p)
    return _pdata(m, context_id, MAX_PDU)


def find_rsp(mid: int, status: int, identifier: bytes | None, context_id: int):
    from pynetdicom.dimse_messages import C_FIND_RSP
    from pynetdicom.dimse_primitives import C_FIND
    p = C_FIND()
    p.MessageIDBeingRespondedTo = mid
    p.AffectedSOPClassUID = FIND
    p.Status = status
    if identifier is not None:
        p.Identifier = io.BytesIO(identifier)
    m = C_FIND_RSP()
    m.primitive_to_message(p)
    return _pdata(m, context_id, MAX_PDU)


def image(sop_class: str, uid: str, size: int) -> bytes:
    """A small image data set, explicit VR little endian."""
    from pydicom.dataset import Dataset
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.Modality = "CT" if sop_class == CT else "MR"
    ds.PatientName = "Craft^Patient"
    ds.PatientID = "CRAFT1"
    ds.StudyInstanceUID = lab.UID_ROOT + "77.1"
    ds.SeriesInstanceUID = lab.UID_ROOT + "77.2"
    ds.Rows, ds.Columns = size // 128, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * (ds.Rows * 128 // 256) + bytes(ds.Rows * 128 % 256)
    return _encode_ds(ds, implicit=False)


def query(pid: str | None = "CRAFT*", name: str | None = None) -> bytes:
    from pydicom.dataset import Dataset
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = pid or ""
    ds.StudyInstanceUID = "" if name is None else name
    return _encode_ds(ds, implicit=True)


# --------------------------------------------------------------------------
# the association and its mutations
# --------------------------------------------------------------------------

CONTEXTS = [(1, CT, [EXPLICIT, IMPLICIT]), (3, FIND, [IMPLICIT]), (5, MR, [JPEG_BASELINE]), (7, MR, [EXPLICIT])]
RESULTS = {1: (0, EXPLICIT), 3: (0, IMPLICIT), 5: (4, None), 7: (0, EXPLICIT)}
CT_UID, MR_UID = lab.UID_ROOT + "77.3", lab.UID_ROOT + "77.4"
STUDY_A, STUDY_B = lab.UID_ROOT + "77.10", lab.UID_ROOT + "77.11"


@dataclass
class Step:
    side: str          # "c" (requestor) or "s" (acceptor)
    data: bytes
    tag: str = ""


@dataclass
class Variant:
    """What a mutation is expected to produce: code, severity, the tagged step whose first frame
    shows it, and words the message must contain."""
    name: str
    code: str | None
    severity: str | None = None
    tag: str | None = None
    words: tuple = ()
    also: tuple = ()               # other conformance codes the mutation legitimately causes
    resync: bool = False           # later operations and the release must still be decoded


VARIANTS = [
    Variant("clean", None),
    Variant("item-overflow", "malformed-pdu", "error", "rq", ("item 0x50 claims",)),
    Variant("unknown-pdu-type", "malformed-pdu", "error", "bogus", ("unknown PDU type 0x0A",), resync=True),
    Variant("pdv-length-overflow", "malformed-pdu", "error", "find", ("PDV item length",), resync=True),
    Variant("oversized-pdata", "pdu-exceeds-max-length", "warning", "store1+1",
            ("exceed the maximum length of 16384 bytes", "largest 20"), resync=True),
    Variant("even-context-id", "invalid-presentation-context-id", "warning", "rq",
            ("presentation context ID 8, an even number",)),
    Variant("pdv-reserved-bits", "invalid-pdv-flags", "warning", "store3", ("0x07",), resync=True),
    Variant("pdata-before-accept", "unexpected-pdu", "error", "store1", ("before the A-ASSOCIATE-AC",)),
    Variant("pdata-after-release", "unexpected-pdu", "error", "late", ("after the association ended",)),
    Variant("rejected-context", "context-misuse", "error", "store3",
            ("presentation context 5, which was rejected",)),
    Variant("message-id-reused", "message-id-reused", "warning", "find2", ("reuses message ID 2",)),
    Variant("orphan-response", "response-without-request", "warning", "orphan", ("message 99",)),
    Variant("ae-leading-spaces", "ae-title-anomaly", "warning", "rq", ("leading spaces",)),
    Variant("ae-lower-case", "ae-title-anomaly", "note", "rq", ("lower-case",)),
    Variant("ae-all-spaces", "ae-title-anomaly", "warning", "rq", ("empty (all spaces)",)),
    Variant("clean-again", None),
]
BY_NAME = {v.name: v for v in VARIANTS}


def script(variant: str) -> list[Step]:
    """The association's PDUs, in order, with the mutation `variant` applied."""
    calling, called = "CRAFTSCU", "CRAFTSCP"
    contexts, results = list(CONTEXTS), dict(RESULTS)
    if variant == "even-context-id":
        contexts.append((9, VERIFICATION, [IMPLICIT]))
        results[9] = (0, IMPLICIT)
    if variant == "ae-lower-case":
        called = "craftscp"
    rq = _associate(calling, called, contexts, MAX_PDU)
    ac = _associate(calling, called, contexts, MAX_PDU, results)
    if variant == "even-context-id":
        rq, ac = set_context_id(rq, 9, 8), set_context_id(ac, 9, 8)
    if variant == "ae-leading-spaces":
        rq = set_ae(rq, "calling", b"  LEADSCU       ")
    if variant == "ae-all-spaces":
        rq = set_ae(rq, "calling", b" " * 16)
    if variant == "item-overflow":
        rq = grow_item(rq, 0x50, 12)

    s: list[Step] = []

    def add(side, pdus, tag=""):
        for i, pdu in enumerate(pdus if isinstance(pdus, list) else [pdus]):
            s.append(Step(side, pdu, tag if i == 0 else f"{tag}+{i}" if tag else ""))

    add("c", rq, "rq")
    # C-STORE CT, message 1, context 1: 20 KB data set in 16384-byte PDUs (one PDU when oversized)
    ct = image(CT, CT_UID, 20 * 1024)
    store1 = store_rq(1, CT, CT_UID, ct, 1, 0 if variant == "oversized-pdata" else MAX_PDU)
    if variant == "pdata-before-accept":
        add("c", store1, "store1")
        add("s", ac, "ac")
    else:
        add("s", ac, "ac")
        add("c", store1, "store1")
    add("s", store_rsp(1, CT, CT_UID, 1), "store1-rsp")
    if variant == "unknown-pdu-type":
        add("c", b"\x0a\x00\x00\x00\x00\x04\xab\xcd\xef\x12", "bogus")
    # C-FIND, message 2, context 3
    find = find_rq(2, query(), 3)
    if variant == "pdv-length-overflow":
        cmd = bytearray(find[0])
        ilen = struct.unpack(">I", cmd[6:10])[0]
        struct.pack_into(">I", cmd, 6, ilen + 40)
        find[0] = bytes(cmd)
    add("c", find, "find")
    if variant == "message-id-reused":
        add("c", find_rq(2, query("CRAFT2*"), 3), "find2")
    add("s", find_rsp(2, 0xFF00, query("CRAFT1", STUDY_A), 3), "find-pending1")
    add("s", find_rsp(2, 0xFF00, query("CRAFT1", STUDY_B), 3), "find-pending2")
    add("s", find_rsp(2, 0x0000, None, 3), "find-final")
    if variant == "message-id-reused":
        add("s", find_rsp(2, 0x0000, None, 3), "find2-final")
    if variant == "orphan-response":
        add("s", store_rsp(99, CT, lab.UID_ROOT + "77.99", 1), "orphan")
    # C-STORE MR, message 3, context 7 (5: rejected)
    mr = image(MR, MR_UID, 4 * 1024)
    ctx = 5 if variant == "rejected-context" else 7
    store3 = store_rq(3, MR, MR_UID, mr, ctx)
    if variant == "pdv-reserved-bits":
        cmd = bytearray(store3[0])
        assert cmd[11] == 0x03
        cmd[11] = 0x07
        store3[0] = bytes(cmd)
    add("c", store3, "store3")
    add("s", store_rsp(3, MR, MR_UID, ctx), "store3-rsp")
    add("c", release_rq(), "release-rq")
    add("s", release_rp(), "release-rp")
    if variant == "pdata-after-release":
        add("c", store_rq(4, CT, CT_UID + ".4", image(CT, CT_UID + ".4", 2048), 1), "late")
    return s


@dataclass
class Written:
    """Where each association of a crafted capture is and which frames its steps got."""
    pcap: Path
    order: list[str]                                    # variant per association id - 1
    frames: dict = field(default_factory=dict)          # variant -> tag -> [frames]
    client: dict = field(default_factory=dict)          # variant -> (ip, port)
    streams: dict = field(default_factory=dict)         # variant -> {"c": bytes, "s": bytes}
    all_frames: dict = field(default_factory=dict)      # variant -> (first, last) frame

    def first(self, variant: str, tag: str) -> int:
        return self.frames[variant][tag][0]


def write_capture(path: Path, variants: list[str]) -> Written:
    w = PcapWriter()
    out = Written(path, list(variants))
    for i, name in enumerate(variants):
        client = (CLIENT_IP, 40001 + i)
        flow = TcpFlow(w, client, (SERVER_IP, DICOM_PORT), isn_client=0x10000000 + i * 7919,
                       isn_server=0x70000000 + i * 104729)
        start = len(w.records) + 1
        flow.open()
        frames = defaultdict(list)
        streams = {"c": bytearray(), "s": bytearray()}
        for step in script(name):
            got = flow.send(step.side, step.data)
            streams[step.side] += step.data
            if step.tag:
                frames[step.tag] += got
        flow.close()
        out.frames[name] = dict(frames)
        out.client[name] = client
        out.streams[name] = {k: bytes(v) for k, v in streams.items()}
        out.all_frames[name] = (start, len(w.records))
    w.write(path)
    return out


def analyze(pcap) -> dict:
    res = lab.run([sys.executable, "-m", "dicomtrace", "analyze", str(pcap), "--format", "json"],
                  timeout=120, cwd=lab.REPO_ROOT)
    return json.loads(res.stdout)


@dataclass
class Crafted:
    written: Written
    doc: dict
    clean: Written
    clean_doc: dict

    def aid(self, variant: str) -> int:
        return self.written.order.index(variant) + 1

    def association(self, variant: str) -> dict:
        aid = self.aid(variant)
        return next(a for a in self.doc["associations"] if a["id"] == aid)

    def findings(self, variant: str, code: str | None = None) -> list[dict]:
        aid = self.aid(variant)
        return [f for f in self.doc["findings"] if f["association"] == aid and (code is None or f["code"] == code)]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> Crafted:
    d = lab.work_dir(tmp_path_factory, "findings-conformance")
    written = write_capture(d / "mutations.pcap", [v.name for v in VARIANTS])
    clean = write_capture(d / "clean.pcap", ["clean"])
    return Crafted(written, analyze(written.pcap), clean, analyze(clean.pcap))


# --------------------------------------------------------------------------
# the crafted captures are what they claim to be
# --------------------------------------------------------------------------

def _tshark_streams(pcap) -> dict[int, dict]:
    """Per client port: bytes each way, concatenated from tshark's tcp.payload (no retransmissions here)."""
    out: dict[int, dict] = defaultdict(lambda: {"c": bytearray(), "s": bytearray()})
    text = lab.tshark("-n", "-r", str(pcap), "-Y", "tcp.len > 0", "-T", "fields", "-E", "separator=\t",
                      "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.payload")
    for line in text.splitlines():
        sport, dport, payload = line.split("\t")
        sport, dport = int(sport), int(dport)
        if dport == DICOM_PORT:
            out[sport]["c"] += bytes.fromhex(payload)
        else:
            out[dport]["s"] += bytes.fromhex(payload)
    return out


def test_crafted_capture_is_clean_tcp(crafted):
    """tshark finds no TCP problem (sequence numbers, acknowledgements, checksums) and reassembles
    exactly the PDUs written, for every association."""
    pcap = crafted.written.pcap
    flags = lab.tshark("-n", "-r", str(pcap), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                       "-Y", "tcp.analysis.flags || tcp.checksum.status == 0 || ip.checksum.status == 0",
                       "-T", "fields", "-e", "frame.number")
    assert not flags.split(), f"tshark complains about frames {flags.split()[:20]}"
    streams = _tshark_streams(pcap)
    assert len(streams) == len(VARIANTS)
    for name in crafted.written.order:
        port = crafted.written.client[name][1]
        assert bytes(streams[port]["c"]) == crafted.written.streams[name]["c"], name
        assert bytes(streams[port]["s"]) == crafted.written.streams[name]["s"], name
    # and the clean stream is valid DICOM UL for the lab's own strict parser
    for side in ("c", "s"):
        lab.split_pdus(crafted.written.streams["clean"][side])


def test_tshark_dicom_dissector_agrees_the_clean_associations_are_clean(crafted):
    """Wireshark's DICOM dissector (an independent decoder) flags nothing in the clean associations."""
    text = lab.tshark("-n", "-r", str(crafted.written.pcap), "-d", f"tcp.port=={DICOM_PORT},dicom",
                      "-Y", "_ws.expert.severity >= warning || _ws.malformed", "-T", "fields", "-e", "frame.number")
    flagged = {int(x) for x in text.split()}
    assert flagged, "tshark flags none of the mutations"
    for name in ("clean", "clean-again"):
        first, last = crafted.written.all_frames[name]
        assert not {f for f in flagged if first <= f <= last}, name
    clean = lab.tshark("-n", "-r", str(crafted.clean.pcap), "-d", f"tcp.port=={DICOM_PORT},dicom",
                       "-Y", "_ws.expert.severity >= warning || _ws.malformed", "-T", "fields", "-e", "frame.number")
    assert not clean.split()
    dicom = lab.tshark_dicom_pdus(crafted.clean.pcap, DICOM_PORT)
    assert any("A-ASSOCIATE request" in x for x in dicom) and any("C-FIND-RSP" in x for x in dicom), dicom


def test_every_association_is_found(crafted):
    doc = crafted.doc
    assert [a["id"] for a in doc["associations"]] == list(range(1, len(VARIANTS) + 1))
    for name in crafted.written.order:
        a = crafted.association(name)
        assert (a["requestor"]["ip"], a["requestor"]["port"]) == crafted.written.client[name]
        assert (a["acceptor"]["ip"], a["acceptor"]["port"]) == (SERVER_IP, DICOM_PORT)
        first, last = crafted.written.all_frames[name]
        assert first <= a["request_frame"] <= last


# --------------------------------------------------------------------------
# the clean association: no conformance finding, no warning, no error
# --------------------------------------------------------------------------

def _check_clean_association(a: dict, written: Written, name: str):
    assert a["outcome"] == "released"
    assert a["calling_ae"] == "CRAFTSCU" and a["called_ae"] == "CRAFTSCP"
    assert a["max_pdu_length"] == {"requestor": MAX_PDU, "acceptor": MAX_PDU}
    ops = a["operations"]
    assert [(op["command"], op["message_id"], op["presentation_context_id"], op["status"]) for op in ops] == [
        ("C-STORE", 1, 1, 0), ("C-FIND", 2, 3, 0), ("C-STORE", 3, 7, 0)]
    assert ops[1]["matches"] == 2
    assert all(op["dataset_complete"] for op in ops)
    assert ops[0]["request_frame"] == written.first(name, "store1")
    assert ops[1]["response_frame"] == written.first(name, "find-final")
    assert a["request_frame"] == written.first(name, "rq") and a["accept_frame"] == written.first(name, "ac")


def test_clean_capture_has_no_conformance_finding(crafted):
    doc = crafted.clean_doc
    assert len(doc["associations"]) == 1
    _check_clean_association(doc["associations"][0], crafted.clean, "clean")
    bad = [f for f in doc["findings"] if f["code"] in CONFORMANCE_CODES or f["severity"] in ("error", "warning")]
    assert not bad, bad
    # the rejected MR context 5 is a note: MR was accepted on context 7
    assert [(f["code"], f["severity"]) for f in doc["findings"]] == [("presentation-context-rejected", "note")]


@pytest.mark.parametrize("name", ["clean", "clean-again"])
def test_clean_associations_among_the_mutated_ones_are_quiet(crafted, name):
    _check_clean_association(crafted.association(name), crafted.written, name)
    bad = [f for f in crafted.findings(name) if f["code"] in CONFORMANCE_CODES
           or f["severity"] in ("error", "warning")]
    assert not bad, bad


@pytest.mark.parametrize("code", CONFORMANCE_CODES)
def test_each_code_only_where_its_mutation_is(crafted, code):
    """A code is raised on the associations whose mutation causes it, and nowhere else."""
    want = sorted(crafted.aid(v.name) for v in VARIANTS if v.code == code or code in v.also)
    got = sorted(f["association"] for f in crafted.doc["findings"] if f["code"] == code)
    assert got == want, {a: [f["message"][:200] for f in crafted.doc["findings"]
                             if f["association"] == a and f["code"] == code] for a in set(got) ^ set(want)}


# --------------------------------------------------------------------------
# each mutation
# --------------------------------------------------------------------------

MUTATIONS = [v for v in VARIANTS if v.code is not None]


@pytest.mark.parametrize("v", MUTATIONS, ids=[v.name for v in MUTATIONS])
def test_mutation_is_reported(crafted, v: Variant):
    found = crafted.findings(v.name, v.code)
    assert len(found) == 1, (v.name, [(f["code"], f["message"][:200]) for f in crafted.findings(v.name)])
    f = found[0]
    assert f["severity"] == v.severity, f
    frame = crafted.written.first(v.name, v.tag)
    assert frame in f["frames"], (f["frames"], v.tag, frame)
    # every frame named belongs to this association
    first, last = crafted.written.all_frames[v.name]
    assert all(first <= x <= last for x in f["frames"]), f["frames"]
    for words in v.words:
        assert words in f["message"], f["message"]


@pytest.mark.parametrize("v", [v for v in MUTATIONS if v.resync], ids=[v.name for v in MUTATIONS if v.resync])
def test_decoding_goes_on_after_the_mutation(crafted, v: Variant):
    """What follows the bad bytes is still decoded: every operation answered, the release seen."""
    a = crafted.association(v.name)
    w = crafted.written
    assert a["outcome"] == "released", a["outcome"]
    ops = {op["message_id"]: op for op in a["operations"]}
    assert sorted(ops) == [1, 2, 3]
    for mid, tag in ((1, "store1-rsp"), (2, "find-final"), (3, "store3-rsp")):
        assert ops[mid]["status"] == 0 and ops[mid]["response_frame"] == w.first(v.name, tag), (mid, ops[mid])
    assert ops[2]["matches"] == 2
    assert ops[1]["dataset_complete"] and ops[3]["dataset_complete"]
    assert not [f for f in crafted.findings(v.name) if f["code"] == "request-unanswered"]


def test_unknown_pdu_type_resynchronises_at_the_next_pdu(crafted):
    a = crafted.association("unknown-pdu-type")
    w = crafted.written
    find = next(op for op in a["operations"] if op["message_id"] == 2)
    assert find["request_frame"] == w.first("unknown-pdu-type", "find")
    f = crafted.findings("unknown-pdu-type", "malformed-pdu")[0]
    # the requestor's stream offset of the bogus PDU is given
    offset = crafted.written.streams["unknown-pdu-type"]["c"].index(b"\x0a\x00\x00\x00\x00\x04\xab\xcd")
    assert f"stream offset {offset}" in f["message"], f["message"]


def test_item_overflow_still_negotiates(crafted):
    a = crafted.association("item-overflow")
    assert a["outcome"] == "released" and a["accept_frame"] == crafted.written.first("item-overflow", "ac")
    assert [op["status"] for op in a["operations"]] == [0, 0, 0]


def test_pdata_before_accept_counts_every_early_pdu(crafted):
    f = crafted.findings("pdata-before-accept", "unexpected-pdu")[0]
    w = crafted.written.frames["pdata-before-accept"]
    early = [w["store1"][0], w["store1+1"][0], w["store1+2"][0]]   # command, two data set PDUs
    assert set(early) <= set(f["frames"]), (f["frames"], early)
    assert f["details"]["count"] == 3
    assert "P-DATA-TF from the requestor" in f["message"]


def test_rejected_context_names_the_operation(crafted):
    f = crafted.findings("rejected-context", "context-misuse")[0]
    assert "C-STORE-RQ (message 3)" in f["message"], f["message"]
    assert f["frames"] == [crafted.written.first("rejected-context", "store3")]
    a = crafted.association("rejected-context")
    assert next(op for op in a["operations"] if op["message_id"] == 3)["presentation_context_id"] == 5


def test_ae_title_anomaly_details(crafted):
    want = {"ae-leading-spaces": ("calling", "  LEADSCU       "), "ae-lower-case": ("called", "craftscp        "),
            "ae-all-spaces": ("calling", " " * 16)}
    for name, (which, raw) in want.items():
        f = crafted.findings(name, "ae-title-anomaly")[0]
        assert f["details"]["field"] == which and f["details"]["raw"] == raw, f
        assert f["frames"] == [crafted.written.first(name, "rq")]
        a = crafted.association(name)
        assert a[f"{which}_ae_raw"] == raw


def test_reused_message_id_both_requests_answered(crafted):
    """Two C-FINDs with message ID 2, then two final responses to ID 2: each request got one."""
    name = "message-id-reused"
    a = crafted.association(name)
    finds = [op for op in a["operations"] if op["command"] == "C-FIND"]
    assert [op["request_frame"] for op in finds] == [crafted.written.first(name, "find"),
                                                     crafted.written.first(name, "find2")]
    assert all(op["status"] == 0 for op in finds), [op["response_frame"] for op in finds]
    codes = {f["code"] for f in crafted.findings(name)}
    assert not codes & {"request-unanswered", "response-without-request"}, codes
