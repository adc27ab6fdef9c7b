"""Issue #3: what `dicomtrace analyze` decodes, against tshark 4.0's DICOM dissector.

Captures: every /work/shared/captures/*.pcap / *.pcapng, the session's
store_capture (storescu -> storescp on loopback, 3 associations, one with
4096-byte PDUs; tests/conftest.py) and a capture made here (`mixed_capture`):
C-ECHO and C-STORE with unusual AE titles (inner spaces), a storescu that
aborts instead of releasing (A-ABORT), and a storescp started with --refuse
(A-ASSOCIATE-RJ).

tshark is run as
    tshark -n -o dicom.tag_tree:TRUE -r CAP -d tcp.port==PORT,dicom ... -Y dicom
           -T pdml -J "frame ip ipv6 tcp dicom"
PDML, not `-T fields`, because a frame can carry several PDUs and a PDV many
tags: `-T fields` flattens them and the values of dicom.tag.value.16u no longer
line up with dicom.tag. `dicom.tag_tree:TRUE` is needed for tshark to put the
tag number and value of each element in fields at all (it is off by default).

What tshark calls each field (tshark -G fields, Wireshark 4.0):

    PDU type                         dicom.pdu.type            show "0x01" .. "0x07"
    calling / called AE title        dicom.assoc.ae.calling / dicom.assoc.ae.called
                                     (the 16 bytes, padding kept)
    A-ASSOCIATE-RJ result/source/reason  dicom.assoc.reject.result / .source / .reason
    A-ABORT source / reason          dicom.assoc.abort.source / dicom.assoc.abort.reason
    PDV context / flags              dicom.pdv.ctx / dicom.pdv.flags (bit 0 command, bit 1 last)
    an element                       an unnamed field holding dicom.tag (show "0x00000100" =
                                     (0000,0100)) and one dicom.tag.value.{16u,32u,str,...}
    Command Field (0000,0100)        dicom.tag == 0x00000100, value in dicom.tag.value.16u
                                     (show is the number, e.g. "33" = 0x0021 C-MOVE-RQ)
    Message ID (0000,0110)           dicom.tag == 0x00000110, dicom.tag.value.16u
    Message ID Being Responded To (0000,0120)  dicom.tag == 0x00000120, dicom.tag.value.16u
    Status (0000,0900)               dicom.tag == 0x00000900, dicom.tag.value.16u
    Remaining/Completed/Failed/Warning sub-operations (0000,1020..1023)  dicom.tag.value.16u
    frames of a PDU split over TCP segments   tcp.segments, whose showname lists "#frame(bytes)"

dicomtrace side: `analyze --format json` (associations[].calling_ae/_raw,
called_ae/_raw, pdus.{requestor,acceptor}, reject, abort, operations[].command,
message_id, status, responses[]) and, for the order of PDU types, the
reassembled streams of `conversations --dump-streams` fed to
dicomtrace.ul.stream.PduStream.

Also: the analyze output of every capture validates against
the shipped dicomtrace/schema/analysis.schema.json (JSON Schema draft 2020-12).
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lab
from dicomtrace.ul.stream import PduHeader, PduStream

SCHEMA = lab.REPO_ROOT / "dicomtrace" / "schema" / "analysis.schema.json"  # shipped (test_cli compares)

COMMANDS = {0x0001: "C-STORE", 0x0010: "C-GET", 0x0020: "C-FIND", 0x0021: "C-MOVE", 0x0030: "C-ECHO",
            0x0100: "N-EVENT-REPORT", 0x0110: "N-GET", 0x0120: "N-SET", 0x0130: "N-ACTION",
            0x0140: "N-CREATE", 0x0150: "N-DELETE", 0x0FFF: "C-CANCEL"}
TAG_COMMAND, TAG_MSG_ID, TAG_RESPONDED_TO, TAG_STATUS = 0x0100, 0x0110, 0x0120, 0x0900
TAG_REMAINING, TAG_COMPLETED, TAG_FAILED, TAG_WARNING = 0x1020, 0x1021, 0x1022, 0x1023


# --------------------------------------------------------------------------
# tshark
# --------------------------------------------------------------------------

Endpoint = tuple[str, int]


@dataclass
class TsharkPdu:
    frame: int          # the frame in which tshark completed (and shows) the PDU
    first_frame: int    # the first frame holding its bytes (from tcp.segments), else = frame
    stream: int
    src: Endpoint
    dst: Endpoint
    type: int
    calling: str | None = None
    called: str | None = None
    reject: tuple | None = None   # (result, source, reason)
    abort: tuple | None = None    # (source, reason)
    # ("command", {tag: value}) per command PDV and ("data", {tag: (VR, value)}) per last data
    # PDV (where tshark decodes the reassembled data set), in the order they are in the PDU
    items: list = field(default_factory=list)

    @property
    def commands(self) -> list[dict]:
        return [tags for kind, tags in self.items if kind == "command"]


def _int(text: str) -> int:
    return int(text, 0)


def _show(el, name):
    f = el.find(f".//field[@name='{name}']")
    return None if f is None else f.get("show")


def _segments(wrapper) -> list[int]:
    f = wrapper.find(".//field[@name='tcp.segments']")
    if f is None:
        return []
    return [int(x) for x in re.findall(r"#(\d+)\(", f.get("showname") or "")]


def tshark_dicom(pcap, ports) -> list[TsharkPdu]:
    """Every DICOM PDU tshark decodes, in capture order (several per frame possible)."""
    args = ["-n", "-o", "dicom.tag_tree:TRUE", "-r", str(pcap)]
    for p in sorted(ports):
        args += ["-d", f"tcp.port=={p},dicom"]
    args += ["-Y", "dicom", "-T", "pdml", "-J", "frame ip ipv6 tcp dicom"]
    xml = lab.run(["tshark", *args], timeout=600).stdout
    # long attributes (hex of pixel data: tens of MB) are never needed, and expat is
    # quadratic on huge tokens fed piecewise: drop them before parsing
    xml = re.sub(rb' (?:value|show)="[^"]{512,}"', b"", xml)
    out: list[TsharkPdu] = []
    for _ev, pkt in ET.iterparse(io.BytesIO(xml), events=("end",)):
        if pkt.tag != "packet":
            continue
        frame = int(_show(pkt, "frame.number"))
        stream = int(_show(pkt, "tcp.stream"))
        src = (_show(pkt, "ip.src") or _show(pkt, "ipv6.src"), int(_show(pkt, "tcp.srcport")))
        dst = (_show(pkt, "ip.dst") or _show(pkt, "ipv6.dst"), int(_show(pkt, "tcp.dstport")))
        pending_segments: list[int] = []
        for proto in pkt.findall("proto"):
            name = proto.get("name")
            if name == "fake-field-wrapper":
                pending_segments = _segments(proto)
                continue
            if name != "dicom":
                continue
            first = min(pending_segments) if pending_segments else frame
            pending_segments = []
            t = proto.find("field[@name='dicom.pdu.type']")
            if t is None:
                continue
            pdu = TsharkPdu(frame, first, stream, lab.normalize_endpoint(src), lab.normalize_endpoint(dst),
                            _int(t.get("show")), _show(proto, "dicom.assoc.ae.calling"),
                            _show(proto, "dicom.assoc.ae.called"))
            if pdu.type == 3:
                pdu.reject = tuple(_int(_show(proto, f"dicom.assoc.reject.{k}"))
                                   for k in ("result", "source", "reason"))
            if pdu.type == 7:
                pdu.abort = tuple(_int(_show(proto, f"dicom.assoc.abort.{k}")) for k in ("source", "reason"))
            for pdv in proto.iter("field"):
                flags = pdv.find("field[@name='dicom.pdv.flags']")
                if flags is None:
                    continue
                flags = _int(flags.get("show"))
                if not flags & 1 and not flags & 2:
                    continue  # a data set fragment that is not the last: tshark decodes at the last
                tags, vrs = {}, {}
                for element in pdv.findall("field"):  # top-level elements only (not in sequences)
                    tag = element.find("field[@name='dicom.tag']")
                    if tag is None:
                        continue
                    num = _int(tag.get("show"))
                    vr = element.find("field[@name='dicom.tag.vr']")
                    vrs[num] = vr.get("show") if vr is not None else None
                    value = next((v for v in element.findall("field")
                                  if (v.get("name") or "").startswith("dicom.tag.value.")), None)
                    if value is not None and value.get("show") is not None:
                        tags[num] = int(value.get("show")) if value.get("name") in (
                            "dicom.tag.value.16u", "dicom.tag.value.32u", "dicom.tag.value.16s",
                            "dicom.tag.value.32s") else value.get("show")
                    elif _show(element, "dicom.tag.vl") == "0":
                        tags[num] = ""
                if flags & 1:
                    if TAG_COMMAND in tags:
                        pdu.items.append(("command", tags))
                else:
                    pdu.items.append(("data", {t: (vrs.get(t), v) for t, v in tags.items()}))
            out.append(pdu)
        pkt.clear()
    return out


# --------------------------------------------------------------------------
# captures
# --------------------------------------------------------------------------

@dataclass
class Subject:
    name: str
    pcap: Path
    ports: set[int]


def _shared_subjects() -> list[Subject]:
    out = []
    for p in lab.shared_captures():
        ports = {104, 11112}
        truth = p.with_name(p.name.rsplit(".", 1)[0] + ".truth.json")
        if truth.is_file():
            t = json.loads(truth.read_text())
            ports |= {v for k, v in t.items() if k.endswith("_port") and isinstance(v, int)}
        out.append(Subject(p.name, p, ports))
    return out


SHARED = {s.name: s for s in _shared_subjects()}
LAB_SUBJECTS = ("lab:store_capture", "lab:mixed_capture")
ALL_SUBJECTS = sorted(SHARED) + list(LAB_SUBJECTS)


@pytest.fixture(scope="module")
def mixed_capture(dicomtrace_cli, tmp_path_factory) -> Subject:
    """C-ECHO and C-STORE with inner-space AE titles, an aborted association, a refused one."""
    d = tmp_path_factory.mktemp("mixed_capture")
    files = lab.make_dicom_files(d / "files", [lab.DicomSpec(sop="CT", size=20 * 1024),
                                               lab.DicomSpec(sop="SC", size=60 * 1024, explicit_vr=False),
                                               lab.DicomSpec(sop="MR", size=30 * 1024)])
    ok_port, refuse_port = lab.free_port(), lab.free_port()
    while refuse_port == ok_port:
        refuse_port = lab.free_port()
    pcap = d / "mixed.pcap"
    with lab.Capture(pcap, "lo", f"tcp port {ok_port} or tcp port {refuse_port}"):
        with lab.StoreSCP(d / "recv", ok_port, aet="LAB SCP", log_dir=d, name="scp"), \
                lab.StoreSCP(d / "recv_refuse", refuse_port, extra_args=["--refuse"], log_dir=d,
                             name="scp_refuse"):
            lab.run_echoscu("127.0.0.1", ok_port, aet="DT CALLING 1", aec="LAB SCP 1")
            lab.run_storescu("127.0.0.1", ok_port, [f.path for f in files[:2]], aet="DT-STORE", aec="LAB SCP")
            lab.run_storescu("127.0.0.1", ok_port, [files[2].path], aet="DT-ABORT", aec="LAB SCP",
                             extra_args=["--abort"])
            res = lab.run_echoscu("127.0.0.1", refuse_port, aet="DT-REFUSED", aec="NOBODY", check=False)
            assert res.returncode != 0, "storescp --refuse accepted the association"
    return Subject("lab:mixed_capture", pcap, {ok_port, refuse_port})


@dataclass
class Bundle:
    """Everything known about one capture, computed once."""
    subject: Subject
    analysis: dict
    conversations: dict
    dumps: Path
    tshark: list[TsharkPdu]

    def assoc_pdus(self, a: dict) -> list[TsharkPdu]:
        """tshark's PDUs of one dicomtrace association (same two endpoints)."""
        ends = {lab.normalize_endpoint(a["requestor"]), lab.normalize_endpoint(a["acceptor"])}
        return [p for p in self.tshark if {p.src, p.dst} == ends]

    def dump(self, a: dict, side: str) -> bytes:
        req, acc = lab.normalize_endpoint(a["requestor"]), lab.normalize_endpoint(a["acceptor"])
        for c in self.conversations["connections"]:
            client, server = lab.normalize_endpoint(c["client"]), lab.normalize_endpoint(c["server"])
            if (client, server) == (req, acc):
                who = "client" if side == "requestor" else "server"
            elif (client, server) == (acc, req):
                who = "server" if side == "requestor" else "client"
            else:
                continue
            p = self.dumps / f"conn-{c['id']}-{who}.bin"
            return p.read_bytes() if p.exists() else b""
        raise AssertionError(f"no connection for association {a['id']}")


_bundles: dict[str, Bundle] = {}


@pytest.fixture
def bundle(request, tmp_path_factory) -> Bundle:
    name = request.param
    if name not in _bundles:
        if name == "lab:store_capture":
            sc = request.getfixturevalue("store_capture")
            subject = Subject(name, sc.pcap, {sc.server[1]})
        elif name == "lab:mixed_capture":
            subject = request.getfixturevalue("mixed_capture")
        else:
            subject = SHARED[name]
        request.getfixturevalue("dicomtrace_cli")
        analysis = json.loads(lab.run_dicomtrace("analyze", subject.pcap, "--format", "json").stdout)
        for a in analysis["associations"]:
            subject.ports.add(a["acceptor"]["port"])
        dumps = tmp_path_factory.mktemp("dumps")
        conv = json.loads(lab.run_dicomtrace("conversations", subject.pcap, "--format", "json",
                                             "--dump-streams", dumps).stdout)
        _bundles[name] = Bundle(subject, analysis, conv, dumps, tshark_dicom(subject.pcap, subject.ports))
    return _bundles[name]


def subjects(names=ALL_SUBJECTS):
    return pytest.mark.parametrize("bundle", list(names), indirect=True)


def _side(a: dict, p: TsharkPdu) -> str:
    return "requestor" if p.src == lab.normalize_endpoint(a["requestor"]) else "acceptor"


# --------------------------------------------------------------------------
# associations, AE titles, PDUs
# --------------------------------------------------------------------------

@subjects()
def test_associations_and_ae_titles(bundle):
    """One association per A-ASSOCIATE-RQ tshark sees, same endpoints; calling/called AE
    titles as tshark shows them (raw: the 16 bytes with padding; stripped: trailing spaces off)."""
    rqs = [p for p in bundle.tshark if p.type == 1]
    assert rqs, "tshark decoded no A-ASSOCIATE-RQ: wrong ports?"
    want = sorted((p.src, p.dst, p.calling, p.called) for p in rqs)
    got = sorted((lab.normalize_endpoint(a["requestor"]), lab.normalize_endpoint(a["acceptor"]),
                  a["calling_ae_raw"], a["called_ae_raw"]) for a in bundle.analysis["associations"])
    assert got == want
    for a in bundle.analysis["associations"]:
        assert a["calling_ae"] == a["calling_ae_raw"].rstrip(" ")
        assert a["called_ae"] == a["called_ae_raw"].rstrip(" ")
        rq = next(p for p in rqs if p.src == lab.normalize_endpoint(a["requestor"]))
        assert a["request_frame"] in range(rq.first_frame, rq.frame + 1), \
            f"association {a['id']}: request_frame {a['request_frame']}, tshark: frames {rq.first_frame}-{rq.frame}"


@subjects()
def test_pdu_counts_per_side(bundle):
    """associations[].pdus.requestor / .acceptor = the PDUs tshark decodes each way."""
    for a in bundle.analysis["associations"]:
        count = Counter(_side(a, p) for p in bundle.assoc_pdus(a))
        assert a["pdus"] == {"requestor": count["requestor"], "acceptor": count["acceptor"]}, \
            f"association {a['id']} ({a['calling_ae']} -> {a['called_ae']})"


@subjects()
def test_pdu_type_sequence_per_side(bundle):
    """The order of PDU types each way: dicomtrace's Upper Layer parser on the reassembled
    stream vs tshark (by frame, then position in the frame)."""
    for a in bundle.analysis["associations"]:
        for side in ("requestor", "acceptor"):
            want = [p.type for p in bundle.assoc_pdus(a) if _side(a, p) == side]
            s = PduStream()
            got = [ev.pdu_type for ev in s.feed(bundle.dump(a, side), 0, 0.0) if type(ev) is PduHeader]
            assert got == want, f"association {a['id']} {side}: dicomtrace {got[:40]} vs tshark {want[:40]}"


@subjects()
def test_reject_and_abort(bundle):
    """A-ASSOCIATE-RJ result/source/reason and A-ABORT source/reason as tshark decodes them."""
    for a in bundle.analysis["associations"]:
        pdus = bundle.assoc_pdus(a)
        rj = [p for p in pdus if p.type == 3]
        ab = [p for p in pdus if p.type == 7]
        if rj:
            assert a["outcome"] == "rejected"
            assert (a["reject"]["result"], a["reject"]["source"], a["reject"]["reason"]) == rj[0].reject
            assert a["reject"].get("frame", rj[0].frame) in range(rj[0].first_frame, rj[0].frame + 1)
        else:
            assert a["reject"] is None
        if ab:
            assert a["outcome"] == "aborted"
            assert (a["abort"]["source"], a["abort"]["reason"]) == ab[0].abort
            if "sent_by" in a["abort"]:
                assert a["abort"]["sent_by"] == _side(a, ab[0])
        else:
            assert a["abort"] is None


def test_mixed_capture_has_every_outcome(mixed_capture):
    """The capture made here really holds what the other tests rely on (tshark's view)."""
    pdus = tshark_dicom(mixed_capture.pcap, mixed_capture.ports)
    types = Counter(p.type for p in pdus)
    assert types[1] == 4 and types[2] == 3 and types[3] == 1 and types[7] == 1, types
    assert {p.calling for p in pdus if p.type == 1} >= {"DT CALLING 1    ", "DT-STORE        "}


# --------------------------------------------------------------------------
# DIMSE commands
# --------------------------------------------------------------------------

def _tshark_commands(bundle: Bundle, a: dict) -> dict[str, list]:
    """{"requestor": [...], "acceptor": [...]} command sets each side sent, in order, with
    the frames of their PDU."""
    out: dict[str, list] = defaultdict(list)
    for p in bundle.assoc_pdus(a):
        for tags in p.commands:
            out[_side(a, p)].append((p, tags))
    return out


def _request_view(tags: dict) -> tuple:
    return COMMANDS.get(tags[TAG_COMMAND], hex(tags[TAG_COMMAND])), tags.get(TAG_MSG_ID)


def _response_view(tags: dict) -> tuple:
    return (COMMANDS.get(tags[TAG_COMMAND] & 0x7FFF, hex(tags[TAG_COMMAND])), tags.get(TAG_RESPONDED_TO),
            tags.get(TAG_STATUS), tags.get(TAG_REMAINING), tags.get(TAG_COMPLETED), tags.get(TAG_FAILED),
            tags.get(TAG_WARNING))


@subjects()
def test_commands_message_ids_statuses(bundle):
    """Requests (command, message id) each side sent and responses (command, message id
    responded to, status, sub-operation counts) in order, and each operation's final
    status, as tshark decodes the command sets."""
    if any(a["operations"] for a in bundle.analysis["associations"]):
        assert any(p.commands for p in bundle.tshark), "tshark decoded no command set (dicom.tag_tree?)"
    for a in bundle.analysis["associations"]:
        cmds = _tshark_commands(bundle, a)
        for sender in ("requestor", "acceptor"):
            other = "acceptor" if sender == "requestor" else "requestor"
            ops = sorted((op for op in a["operations"] if op["sender"] == sender),
                         key=lambda op: op["request_frame"])
            want_rq = [_request_view(t) for _p, t in cmds[sender] if not t[TAG_COMMAND] & 0x8000]
            got_rq = [(op["command"], op["message_id"]) for op in ops]
            assert got_rq == want_rq, f"association {a['id']}: requests sent by the {sender}"
            want_rsp = [_response_view(t) for _p, t in cmds[other] if t[TAG_COMMAND] & 0x8000]
            got_rsp = sorted(((r["frame"], i), (op["command"], op["message_id"], r["status"], r["remaining"],
                                                r["completed"], r["failed"], r["warning"]))
                             for op in ops for i, r in enumerate(op["responses"]))
            assert [v for _k, v in got_rsp] == want_rsp, f"association {a['id']}: responses to the {sender}"
            for op in ops:
                final = op["responses"][-1]["status"] if op["responses"] else None
                assert op["status"] == final, f"association {a['id']} message {op['message_id']}"


@subjects()
def test_command_frames_within_tshark_pdu(bundle):
    """Each request's and response's frame lies within the frames tshark used for that PDU
    (from its first TCP segment to the frame where tshark completes it)."""
    for a in bundle.analysis["associations"]:
        cmds = _tshark_commands(bundle, a)
        for sender in ("requestor", "acceptor"):
            other = "acceptor" if sender == "requestor" else "requestor"
            ops = sorted((op for op in a["operations"] if op["sender"] == sender),
                         key=lambda op: op["request_frame"])
            rq_pdus = [p for p, t in cmds[sender] if not t[TAG_COMMAND] & 0x8000]
            for op, p in zip(ops, rq_pdus):
                assert p.first_frame <= op["request_frame"] <= p.frame, \
                    f"association {a['id']} message {op['message_id']}: request_frame {op['request_frame']}, " \
                    f"tshark frames {p.first_frame}-{p.frame}"
            rsp_pdus = [p for p, t in cmds[other] if t[TAG_COMMAND] & 0x8000]
            frames = sorted(r["frame"] for op in ops for r in op["responses"])
            for f, p in zip(frames, rsp_pdus):
                assert p.first_frame <= f <= p.frame, \
                    f"association {a['id']}: response frame {f}, tshark frames {p.first_frame}-{p.frame}"


# --------------------------------------------------------------------------
# data set attributes
# --------------------------------------------------------------------------

def _tshark_text(vr: str | None, value) -> str:
    """tshark's value as dicomtrace writes attribute values: numbers as decimal text,
    strings without padding, UIDs without the name tshark appends ("1.2... (CT Image Storage)")."""
    if isinstance(value, int):
        return str(value)
    text = value.rstrip(" \x00")
    if vr == "UI":
        text = text.split(" ", 1)[0].rstrip("\x00")
    return text


def _attribute_pairs(bundle: Bundle, pn: bool):
    """(where, keyword, dicomtrace value, tshark value) for every attribute of every request
    data set (C-STORE data sets, C-FIND/C-MOVE identifiers) that both decode; pn selects
    the attributes of VR PN (True) or all others (False)."""
    from pydicom.datadict import tag_for_keyword
    pairs = []
    for a in bundle.analysis["associations"]:
        for sender in ("requestor", "acceptor"):
            ops = sorted((op for op in a["operations"] if op["sender"] == sender and op.get("dataset")),
                         key=lambda op: op["request_frame"])
            # the data sets that follow a request command sent by this side
            sent, last_command = [], None
            for p in bundle.assoc_pdus(a):
                if _side(a, p) != sender:
                    continue
                for kind, tags in p.items:
                    if kind == "command":
                        last_command = tags[TAG_COMMAND]
                    elif last_command is not None and not last_command & 0x8000:
                        sent.append(tags)
            assert len(sent) == len(ops), f"association {a['id']}: tshark decodes {len(sent)} data sets " \
                                          f"sent by the {sender}, dicomtrace has {len(ops)} operations with one"
            for op, ds in zip(ops, sent):
                for keyword, value in (op["dataset"].get("attributes") or {}).items():
                    tag = tag_for_keyword(keyword)
                    if tag is None or tag not in ds or not isinstance(value, str):
                        continue
                    vr, shown = ds[tag]
                    if (vr == "PN") != pn:
                        continue
                    pairs.append((f"association {a['id']} message {op['message_id']}", keyword, value,
                                  _tshark_text(vr, shown)))
    return pairs


@subjects()
def test_dataset_attributes(bundle):
    """The attributes dicomtrace shows of each request data set / identifier (other than
    person names) have the values tshark decodes."""
    pairs = _attribute_pairs(bundle, pn=False)
    if any(op.get("dataset") for a in bundle.analysis["associations"] for op in a["operations"]):
        assert pairs, "no attribute compared"
    bad = [p for p in pairs if p[2] != p[3]]
    assert not bad, f"{len(bad)} of {len(pairs)} differ, e.g. " + "; ".join(
        f"{w} {k}: dicomtrace {d!r}, tshark {t!r}" for w, k, d, t in bad[:5])


@subjects()
def test_person_name_attributes(bundle):
    """Person names (VR PN: PatientName, ReferringPhysicianName, ...) as tshark shows them."""
    pairs = _attribute_pairs(bundle, pn=True)
    if not pairs:
        pytest.skip("no person name in this capture's request data sets")
    bad = [p for p in pairs if p[2] != p[3]]
    assert not bad, f"{len(bad)} of {len(pairs)} differ, e.g. " + "; ".join(
        f"{w} {k}: dicomtrace {d!r}, tshark {t!r}" for w, k, d, t in bad[:5])


# --------------------------------------------------------------------------
# the JSON contract
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} not available")
    schema = json.loads(SCHEMA.read_text())
    assert schema.get("$schema") == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _validate(validator, doc, what):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{what}: {len(errors)} schema errors, e.g. " + "; ".join(
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors[:5])


@subjects()
def test_analysis_validates_against_schema(bundle, validator):
    _validate(validator, bundle.analysis, bundle.subject.name)
    assert bundle.analysis["capture"]["packets"] == int(lab.capinfos(bundle.subject.pcap)["Number of packets"])


@pytest.mark.parametrize("variant", ["pcapng", "gzip", "nano"])
def test_analysis_of_other_containers_validates(dicomtrace_cli, store_capture, validator, variant):
    """The same traffic in pcapng, gzip and nanosecond pcap: valid, and the same associations."""
    doc = json.loads(lab.run_dicomtrace("analyze", store_capture.variants[variant], "--format", "json").stdout)
    _validate(validator, doc, variant)
    ref = json.loads(lab.run_dicomtrace("analyze", store_capture.pcap, "--format", "json").stdout)
    assert _timeless(doc["associations"]) == _timeless(ref["associations"])


def _timeless(x):
    """x without times, durations and what is computed from them (they differ in the last
    digits between containers) and without the TCP block."""
    if isinstance(x, dict):
        return {k: _timeless(v) for k, v in x.items()
                if k not in ("tcp", "metrics", "limitation")
                and not re.search(r"time|latency|duration|rtt|throughput|delay|transfer", k)}
    if isinstance(x, list):
        return [_timeless(v) for v in x]
    return x
