"""Issue #6: `dicomtrace export` on real DICOM traffic.

The references are the bytes the receiving peers themselves wrote:

* storescu -> storescp in four associations (explicit VR; implicit VR only;
  RLE Lossless; JPEG Lossless SV1 -- each compressed syntax really negotiated),
  several SOP classes, and a 22 MB multi-frame object. storescp runs with
  ``+B`` (bit-preserving: the data set it writes is the one it read off the
  wire) and ``+xa`` (it accepts the compressed syntaxes), so each exported
  data set must be byte-identical to what storescp stored;
* the same between two network namespaces with loss: segments missing from
  the capture until their retransmission fills the hole, and segments
  captured and then dropped (duplicates) -- still identical (see LOSS);
* the loopback capture with one data frame in the middle of one object
  deleted (bytes really missing): that object is ``.partial`` and
  ``complete: false``, the others identical;
* getscu and movescu (both ``+B``) against dcmqrscp: the C-STORE
  sub-operations, identical to what the retrievers stored and to the
  originals;
* ../shared/captures/store_multi.pcap and move_ok.pcap against their
  ``*.truth.json``.

Every capture is made once per module; each export (capture + options) runs
once. Set DICOMTRACE_LAB_KEEP=DIR to keep the captures for a bug report.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lab
import scenarios

pytestmark = pytest.mark.usefixtures("dicomtrace_cli")

LOOPBACK = "127.0.0.1"
CT, MR, SC = (lab.SOP_CLASSES[k][0] for k in ("CT", "MR", "SC"))
MF_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
MF_FRAMES, MF_ROWS, MF_COLS = 42, 512, 512           # 42 x 512 KiB = 22 MB of pixel data

# label -> spec; patients/studies/series chosen so the patient/study/series layout
# has shared folders (PA: one study, two series; PB: two studies)
SPECS = {
    "ct_ex": lab.DicomSpec(sop="CT", size=30 * 1024, patient="PA", study="SA1", series="SA1a"),
    "sc_ex": lab.DicomSpec(sop="SC", size=700 * 1024, patient="PA", study="SA1", series="SA1b"),
    "mr_im": lab.DicomSpec(sop="MR", size=200 * 1024, explicit_vr=False, patient="PB", study="SB1"),
    "ct_im": lab.DicomSpec(sop="CT", size=60 * 1024, explicit_vr=False, patient="PB", study="SB2"),
    "ct_rle_src": lab.DicomSpec(sop="CT", size=120 * 1024, patient="PC", study="SC1"),
    "mr_ex": lab.DicomSpec(sop="MR", size=90 * 1024, patient="PC", study="SC1", series="SC1b"),
    "mr_jpeg_src": lab.DicomSpec(sop="MR", size=80 * 1024, patient="PD", study="SD1"),
}
# (calling AE, storescu arguments, labels sent): -R proposes only the files' SOP classes;
# -xi implicit VR only; -xr/-xs add RLE / JPEG lossless contexts (storescp +xa accepts them)
RUNS = [
    ("STORE_EX", ["-R"], ["ct_ex", "sc_ex", "mf_big"]),
    ("STORE_IM", ["-R", "-xi"], ["mr_im", "ct_im"]),
    ("STORE_RLE", ["-R", "-xr"], ["ct_rle", "mr_ex"]),
    ("STORE_JPEG", ["-R", "-xs"], ["mr_jpeg"]),
]
WIRE_SYNTAX = {"ct_ex": lab.EXPLICIT_VR_LE, "sc_ex": lab.EXPLICIT_VR_LE, "mf_big": lab.EXPLICIT_VR_LE,
               "mr_im": lab.IMPLICIT_VR_LE, "ct_im": lab.IMPLICIT_VR_LE, "ct_rle": RLE_LOSSLESS,
               "mr_ex": lab.EXPLICIT_VR_LE, "mr_jpeg": JPEG_LOSSLESS_SV1}
HOLE_LABEL = "sc_ex"   # the object whose middle data frame is deleted in the holes capture
FLAT_NAME = re.compile(r"^(\d+)_(\d+)_([0-9.]+)\.dcm(\.partial)?$")


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------

@dataclass
class Obj:
    """One object sent: its label, the file sent, its UIDs and patient/study/series."""
    label: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str


def _obj(label: str, path: Path) -> Obj:
    from pydicom import dcmread
    ds = dcmread(path, stop_before_pixels=True)
    return Obj(label, Path(path), str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.PatientID),
               str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))


def make_multiframe(path: Path, frames: int = MF_FRAMES, rows: int = MF_ROWS, cols: int = MF_COLS) -> Path:
    """A multi-frame grayscale word SC object (explicit VR LE), 16-bit random pixels."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    uid = lambda *p: generate_uid(prefix=lab.UID_ROOT, entropy_srcs=["export-mf", *p])  # noqa: E731
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MF_WORD_SC)
    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = UID(lab.EXPLICIT_VR_LE)
    meta.ImplementationClassUID = UID(lab.UID_ROOT + "1")
    meta.ImplementationVersionName = "DTLAB_1"
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "20240103", "090000"
    ds.AccessionNumber = "ACCMF"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.PatientName, ds.PatientID = "Lab^MultiFrame", "PID-PMF"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "SMF", 1, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 40
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(20240103)
    ds.PixelData = rng.integers(0, 4096, size=frames * rows * cols, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def make_objects(d: Path) -> dict[str, Obj]:
    made = lab.make_dicom_files(d, [lab.DicomSpec(**{**s.__dict__, "name": k}) for k, s in SPECS.items()])
    paths = {f.name: f.path for f in made}
    lab.run([lab.dcmtk("dcmcrle"), paths.pop("ct_rle_src"), d / "ct_rle.dcm"], timeout=60)
    lab.run([lab.dcmtk("dcmcjpeg"), "+e1", paths.pop("mr_jpeg_src"), d / "mr_jpeg.dcm"], timeout=60)
    paths["ct_rle"], paths["mr_jpeg"] = d / "ct_rle.dcm", d / "mr_jpeg.dcm"
    paths["mf_big"] = make_multiframe(d / "mf_big.dcm")
    return {k: _obj(k, p) for k, p in paths.items()}


# --------------------------------------------------------------------------
# captures
# --------------------------------------------------------------------------

@dataclass
class StoreLab:
    """A finished C-STORE capture: what was sent, in which association, and what storescp kept."""
    dir: Path
    pcap: Path
    objects: dict                       # label -> Obj
    received: dict                      # SOP instance UID -> scenarios.Received (storescp +B files)
    runs: list = field(default_factory=list)   # per association: {"calling", "labels", "ids", "log"}
    info: dict = field(default_factory=dict)
    seconds: float = 0.0
    ref: lab.TsharkReference = None

    def __post_init__(self):
        self.ref = lab.TsharkReference(self.pcap)

    def by_uid(self) -> dict[str, Obj]:
        return {o.sop_instance_uid: o for o in self.objects.values()}

    def sent(self) -> list[tuple[int, str, int]]:
        """(association id, label, message id) of every C-STORE, associations numbered from 1."""
        return [(i, label, mid) for i, r in enumerate(self.runs, 1) for label, mid in zip(r["labels"], r["ids"])]


def keep_dir(factory, name: str) -> Path:
    return lab.work_dir(factory, f"export_{name}")


def run_stores(objects: dict, host: str, port: int, netns: str | None = None) -> list[dict]:
    runs = []
    for calling, args, labels in RUNS:
        res = lab.run_storescu(host, port, [objects[k].path for k in labels], aet=calling, aec="STORESCP",
                               extra_args=args, netns=netns, timeout=180)
        log = scenarios._text(res)
        ids = scenarios.msg_ids(log, "Sending Store Request")
        if len(ids) != len(labels):
            raise lab.LabError(f"{calling}: {len(ids)} store requests for {labels}: {log[-2000:]}")
        runs.append({"calling": calling, "labels": labels, "ids": ids, "log": log})
    return runs


def check_received(cap: StoreLab) -> None:
    """The lab itself: storescp kept every object, each in the transfer syntax we meant."""
    for label, o in cap.objects.items():
        r = cap.received.get(o.sop_instance_uid)
        if r is None:
            raise lab.LabError(f"storescp did not store {label}")
        if r.transfer_syntax != WIRE_SYNTAX[label]:
            raise lab.LabError(f"{label} went as {r.transfer_syntax}, wanted {WIRE_SYNTAX[label]}")


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> dict[str, Obj]:
    return make_objects(keep_dir(tmp_path_factory, "files"))


@pytest.fixture(scope="module")
def store(tmp_path_factory, objects) -> StoreLab:
    """storescu -> storescp (+B +xa) on loopback, the four associations of RUNS."""
    t0 = time.monotonic()
    d = keep_dir(tmp_path_factory, "store")
    port = lab.free_port()
    pcap = d / "store.pcap"
    with lab.Capture(pcap, "lo", f"tcp port {port}"):
        with lab.StoreSCP(d / "rx", port, extra_args=["+B", "+xa"], log_dir=d):
            runs = run_stores(objects, LOOPBACK, port)
    cap = StoreLab(d, pcap, objects, scenarios.received_objects(d / "rx"), runs, {"port": port},
                   time.monotonic() - t0)
    check_received(cap)
    return cap


# Loss that leaves holes in the capture. A LossRule on "output" does not: nftables drops
# the packet inside the sender's own stack, TCP sees the send fail and sends the same bytes
# again at once, so the capture never misses them. Holes come from a queue that drops a
# packet TCP believes sent: nftables puts REORDER_PERCENT of a's TCP packets into a slow
# htb class (NetnsPair's reordering) whose leaf here is a one-packet pfifo_head_drop, so
# a packet waiting there is dropped when the next one comes. The capture on a's veth
# (after the qdisc) lacks it until the retransmission. The LossRules on "input" drop
# packets after the capture point: captured, then retransmitted (duplicates), both ways.
LOSS = [lab.LossRule("a", 1.0, "input"), lab.LossRule("b", 1.0, "input")]
REORDER_PERCENT, REORDER_RATE = 10.0, "2mbit"


@pytest.fixture(scope="module")
def lossy(tmp_path_factory, objects) -> StoreLab:
    """The same associations from netns a to storescp in netns b over a veth (MTU 1500)
    with random loss, captured on a's veth."""
    t0 = time.monotonic()
    d = keep_dir(tmp_path_factory, "lossy")
    pcap = d / "lossy.pcap"
    with lab.NetnsPair(mtu=1500, loss=LOSS, reorder_percent=REORDER_PERCENT, reorder_src="a",
                       reorder_rate=REORDER_RATE) as net:
        lab.run(["tc", "qdisc", "add", "dev", net.if_a, "parent", "1:20", "handle", "20:", "pfifo_head_drop",
                 "limit", "1"], netns=net.ns_a, timeout=15)
        port = 11112
        with lab.Capture(pcap, net.if_a, f"tcp port {port}", netns=net.ns_a):
            with lab.StoreSCP(d / "rx", port, extra_args=["+B", "+xa"], netns=net.ns_b, log_dir=d):
                runs = run_stores(objects, net.ip_b, port, netns=net.ns_a)
        qdisc = lab.run(["tc", "-s", "qdisc", "show", "dev", net.if_a], netns=net.ns_a, timeout=15).stdout.decode()
        m = re.search(r"pfifo_head_drop 20:.*?dropped (\d+)", qdisc, re.S)
        info = {"head_drops": int(m.group(1)) if m else 0, "qdisc": qdisc,
                "nft_a": net.nft_counters("a"), "nft_b": net.nft_counters("b")}
    cap = StoreLab(d, pcap, objects, scenarios.received_objects(d / "rx"), runs, info, time.monotonic() - t0)
    check_received(cap)
    return cap


def data_pdvs(stream: bytes) -> list[list[tuple[int, int]]]:
    """Per DIMSE data set in a gap-free UL byte stream, in order: the (stream offset, length)
    of each of its PDV values."""
    out, cur = [], []
    for item in lab.pdv_items(stream):
        if not item.is_command:
            cur.append((item.value_offset, len(item.value)))
            if item.is_last:
                out.append(cur)
                cur = []
    return out


def dataset_offset(pdvs: list[tuple[int, int]], stream_offset: int) -> int:
    """Where a stream offset falls in the data set made of these PDV values (a header
    counts as the start of the next value)."""
    before = 0
    for start, n in pdvs:
        if stream_offset < start + n:
            return before + max(0, stream_offset - start)
        before += n
    return before


@pytest.fixture(scope="module")
def holes(tmp_path_factory, store) -> StoreLab:
    """The loopback capture with the client frame holding the middle of HOLE_LABEL's data set
    deleted (editcap): those bytes are missing from the capture for good."""
    d = keep_dir(tmp_path_factory, "holes")
    assoc, index = next((i, r["labels"].index(HOLE_LABEL)) for i, r in enumerate(store.runs)
                        if HOLE_LABEL in r["labels"])
    stream = sorted(store.ref.streams)[assoc]
    client = store.ref.streams[stream]["syn_client"]
    follow = store.ref.follow(stream)
    pdvs = data_pdvs(follow.client_to_server)[index]
    first, end = pdvs[0][0], pdvs[-1][0] + pdvs[-1][1]
    mid = (first + end) // 2
    frame, start, size = next((fr, start, n) for fr, start, n in scenarios._client_frames(store.pcap, client)
                              if start <= mid < start + n and start > first and start + n < end)
    pcap = lab.editcap(store.pcap, d / "holes.pcap", "-F", "pcap", frames=[frame])
    return StoreLab(d, pcap, store.objects, store.received, store.runs,
                    {"deleted_frame": frame, "deleted_bytes": size, "label": HOLE_LABEL,
                     "hole_from": dataset_offset(pdvs, start), "hole_to": dataset_offset(pdvs, start + size)})


# C-GET and C-MOVE: study QG (3 CT, explicit VR) retrieved by getscu, study QM (one MR
# explicit, one MR implicit VR) moved by movescu to its own storage SCP
QR_SPECS = {
    "g1": lab.DicomSpec(sop="CT", size=20 * 1024, patient="QP1", study="QG", series="QG1"),
    "g2": lab.DicomSpec(sop="CT", size=300 * 1024, patient="QP1", study="QG", series="QG1"),
    "g3": lab.DicomSpec(sop="CT", size=1100 * 1024, patient="QP1", study="QG", series="QG2"),
    "m1": lab.DicomSpec(sop="MR", size=150 * 1024, patient="QP2", study="QM"),
    "m2": lab.DicomSpec(sop="MR", size=40 * 1024, explicit_vr=False, patient="QP2", study="QM"),
}


@dataclass
class QRLab:
    dir: Path
    pcap: Path
    files: dict                # label -> lab.DicomFileInfo (the originals in dcmqrscp's storage)
    got: dict                  # SOP instance UID -> scenarios.Received (getscu +B)
    moved: dict                # SOP instance UID -> scenarios.Received (movescu +B)
    logs: dict
    seconds: float = 0.0


@pytest.fixture(scope="module")
def qr(tmp_path_factory) -> QRLab:
    t0 = time.monotonic()
    d = keep_dir(tmp_path_factory, "qr")
    files = scenarios._named_files(d / "files", QR_SPECS)
    db = d / "db"
    db.mkdir()
    stored = []
    for f in files.values():
        target = db / f.path.name
        shutil.copyfile(f.path, target)
        stored.append(str(target))
    lab.run([lab.dcmtk("dcmqridx"), str(db), *stored], timeout=60)
    qr_port, mv_port = lab.free_port(), lab.free_port()
    cfg = scenarios.write_dcmqrscp_config(d / "dcmqrscp.cfg", qr_port, db, "QRSCP", {"MOVESCU": mv_port})
    logs = {}

    def tool(name, args, cwd):
        # cwd: movescu 3.6.7 with +B writes into the working directory, whatever -od says
        res = lab.run([lab.dcmtk(name), "-v", "-to", "20", "-ta", "20", "-td", "20", *map(str, args),
                       LOOPBACK, str(qr_port)], timeout=90, check=False, cwd=cwd)
        logs[name] = scenarios._text(res)
        if res.returncode != 0:
            raise lab.LabError(f"{name} failed: {logs[name][-3000:]}")

    pcap = d / "qr.pcap"
    (d / "got").mkdir()
    (d / "moved").mkdir()
    with lab.Capture(pcap, "lo", scenarios.bpf_ports(qr_port, mv_port)):
        with scenarios.DcmtkPeer("dcmqrscp", ["-v", "-c", cfg, qr_port], qr_port, d, "dcmqrscp"):
            tool("getscu", ["-S", "+B", "-aet", "GETSCU", "-aec", "QRSCP", "-od", d / "got",
                            "-k", "QueryRetrieveLevel=STUDY",
                            "-k", f"StudyInstanceUID={files['g1'].study_instance_uid}"], d / "got")
            tool("movescu", ["-S", "+B", "-aet", "MOVESCU", "-aec", "QRSCP", "-aem", "MOVESCU", "--port", mv_port,
                             "-od", d / "moved", "-k", "QueryRetrieveLevel=STUDY",
                             "-k", f"StudyInstanceUID={files['m1'].study_instance_uid}"], d / "moved")
    got, moved = scenarios.received_objects(d / "got"), scenarios.received_objects(d / "moved")
    for what, have, labels in (("getscu", got, "g1 g2 g3"), ("movescu", moved, "m1 m2")):
        want = {files[k].sop_instance_uid for k in labels.split()}
        if set(have) != want:
            raise lab.LabError(f"{what} stored {sorted(have)}, wanted {sorted(want)}")
    return QRLab(d, pcap, files, got, moved, logs, time.monotonic() - t0)


# --------------------------------------------------------------------------
# running the exporter
# --------------------------------------------------------------------------

@dataclass
class Export:
    out: Path
    doc: dict
    returncode: int
    seconds: float

    @property
    def exported(self) -> list[dict]:
        return self.doc["exported"]

    def files(self) -> list[Path]:
        """Every file under the output directory (what the user sees)."""
        return sorted(p for p in self.out.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """export(capture, *options) -> Export, each (capture, options) run once."""
    cache: dict = {}
    base = tmp_path_factory.mktemp("export_out")

    def run(pcap, *args) -> Export:
        key = (str(pcap), *map(str, args))
        if key not in cache:
            out = base / f"out{len(cache) + 1}"
            t0 = time.monotonic()
            res = lab.run_dicomtrace("export", pcap, "-o", out, "--format", "json", *args, check=False,
                                     timeout=300)
            if res.returncode not in (0, 1):
                raise AssertionError(f"dicomtrace export {pcap} {args}: exit {res.returncode}: "
                                     f"{res.stderr.decode(errors='replace')[-2000:]}")
            cache[key] = Export(out, json.loads(res.stdout), res.returncode, time.monotonic() - t0)
        return cache[key]
    return run


def data_set_of(path) -> bytes:
    """The bytes after a Part 10 file's meta group."""
    p = Path(path)
    return p.read_bytes()[lab.dataset_offset_of(p):]


def meta_of(path):
    from pydicom.filereader import read_file_meta_info
    return read_file_meta_info(path)


def first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    for i in range(0, n, 65536):
        if a[i:i + 65536] != b[i:i + 65536]:
            return i + next(j for j, (x, y) in enumerate(zip(a[i:i + 65536], b[i:i + 65536])) if x != y)
    return n


def assert_same_data_set(exported: Path, reference: Path, what: str) -> None:
    got, want = data_set_of(exported), data_set_of(reference)
    if got != want:
        raise AssertionError(f"{what}: exported data set {exported.name} ({len(got)} bytes) differs from "
                             f"{reference} ({len(want)} bytes), first at byte {first_difference(got, want)}")


def check_meta(path: Path, sop_class: str, sop_instance: str, transfer_syntax: str) -> None:
    from dicomtrace.export.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
    m = meta_of(path)
    assert str(m.MediaStorageSOPClassUID) == sop_class, path.name
    assert str(m.MediaStorageSOPInstanceUID) == sop_instance, path.name
    assert str(m.TransferSyntaxUID) == transfer_syntax, path.name
    assert str(m.ImplementationClassUID) == IMPLEMENTATION_CLASS_UID, path.name
    assert m.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME, path.name
    assert bytes(m.FileMetaInformationVersion) == b"\x00\x01", path.name


def check_exported_against(ex: Export, received: dict, *, expect_uids: set[str]) -> None:
    """Every exported file: in the JSON and on disk, complete, meta group right, data set
    byte-identical to the receiver's file; and exactly the expected objects."""
    on_disk = set(ex.files())
    listed = [Path(e["file"]) for e in ex.exported]
    assert set(listed) == on_disk, f"exported list vs files on disk: {sorted(set(listed) ^ on_disk)}"
    assert len(listed) == len(on_disk)
    uids = [e["sop_instance_uid"] for e in ex.exported]
    assert sorted(uids) == sorted(expect_uids), "exported objects differ from the objects sent"
    for e in ex.exported:
        p = Path(e["file"])
        r = received[e["sop_instance_uid"]]
        assert e["kind"] == "store" and e["command"] == "C-STORE-RQ", e
        assert e["complete"] is True and e["incomplete_reason"] is None, e
        assert not p.name.endswith(".partial"), p
        assert e["bytes"] == r.dataset_size, f"{p.name}: bytes {e['bytes']} vs {r.dataset_size} received"
        assert e["sop_class_uid"] == r.sop_class_uid and e["transfer_syntax"] == r.transfer_syntax, e
        check_meta(p, r.sop_class_uid, r.sop_instance_uid, r.transfer_syntax)
        assert_same_data_set(p, r.path, e["sop_instance_uid"])


def check_objects_list(ex: Export, *, all_complete: bool = True) -> None:
    """The analyze part of the document lists each C-STORE data set with the file it went to."""
    by_file = {e["file"]: e for e in ex.exported}
    for o in ex.doc["objects"]:
        if o["file"] is None:
            continue
        e = by_file.pop(o["file"])
        assert (o["association"], o["message_id"], o["sop_instance_uid"], o["bytes"], o["complete"]) == \
            (e["association"], e["message_id"], e["sop_instance_uid"], e["bytes"], e["complete"])
        if all_complete:
            assert o["complete"] is True
    assert not by_file, f"exported but not in objects: {sorted(by_file)}"


def dcmdump_reads(path: Path) -> dict:
    """dcmdump reads the whole file without error; returns the tags printed with +P."""
    res = lab.run([lab.dcmtk("dcmdump"), "-Un", "+P", "0002,0010", "+P", "0008,0016", "+P", "0008,0018",
                   str(path)], timeout=60, check=False)
    text = (res.stdout + res.stderr).decode(errors="replace")
    assert res.returncode == 0 and "E:" not in text, f"dcmdump {path.name}: exit {res.returncode}: {text[-1500:]}"
    return dict(re.findall(r"^\((\w{4},\w{4})\) UI \[?=?([^\]\s]+)", text, re.M))


# --------------------------------------------------------------------------
# 1. storescu -> storescp on loopback
# --------------------------------------------------------------------------

def sent_uids(cap: StoreLab) -> set[str]:
    return {cap.objects[label].sop_instance_uid for _a, label, _m in cap.sent()}


def test_lab_storescp_kept_the_wire_bytes(store):
    """The reference itself: each data set storescp (+B) stored is, byte for byte, one that
    tshark reassembles from the capture, and the other way round."""
    import hashlib
    wire = []
    for stream in sorted(store.ref.streams):
        c2s, _s2c = store.ref.follow(stream)
        wire += [hashlib.sha256(m["data"]).hexdigest() for m in lab.pdata_messages(c2s) if not m["command"]]
    stored = [hashlib.sha256(data_set_of(r.path)).hexdigest() for r in store.received.values()]
    assert sorted(wire) == sorted(stored)
    assert len(wire) == len(store.sent())


def test_store_export_identical_to_storescp(store, export):
    ex = export(store.pcap)
    assert ex.returncode == 0
    check_exported_against(ex, store.received, expect_uids=sent_uids(store))
    check_objects_list(ex)
    # every association, transfer syntax and SOP class made it out
    assert {e["association"] for e in ex.exported} == {1, 2, 3, 4}
    assert {e["transfer_syntax"] for e in ex.exported} == set(WIRE_SYNTAX.values())
    assert {e["sop_class_uid"] for e in ex.exported} == {CT, MR, SC, MF_WORD_SC}
    big = next(e for e in ex.exported if e["sop_class_uid"] == MF_WORD_SC)
    assert big["bytes"] > 20 * 1024 * 1024


def test_store_flat_names(store, export):
    """ASSOC_MSGID_SOPINSTANCE.dcm, with the association numbered in capture order and the
    message ID storescu sent."""
    ex = export(store.pcap)
    by_uid = store.by_uid()
    want = {(a, m, store.objects[label].sop_instance_uid) for a, label, m in store.sent()}
    got = set()
    for e in ex.exported:
        p = Path(e["file"])
        assert p.parent == ex.out, f"{p} not directly in the output directory"
        m = FLAT_NAME.match(p.name)
        assert m, f"{p.name} does not follow ASSOC_MSGID_SOPINSTANCE.dcm"
        assoc, mid, uid = int(m.group(1)), int(m.group(2)), m.group(3)
        assert (assoc, mid, uid) == (e["association"], e["message_id"], e["sop_instance_uid"]), p.name
        assert uid in by_uid
        got.add((assoc, mid, uid))
    assert got == want
    # the calling AE of each association as dicomtrace saw it
    calling = {a["id"]: a["calling_ae"] for a in ex.doc["associations"]}
    assert calling == {i: r["calling"] for i, r in enumerate(store.runs, 1)}


def test_store_files_read_by_dcmdump_and_pydicom(store, export):
    import numpy as np
    from pydicom import dcmread
    ex = export(store.pcap)
    for e in ex.exported:
        p = Path(e["file"])
        tags = dcmdump_reads(p)
        assert tags.get("0008,0018") == e["sop_instance_uid"], (p.name, tags)
        assert tags.get("0008,0016") == e["sop_class_uid"], (p.name, tags)
        ds = dcmread(p)
        assert str(ds.SOPInstanceUID) == e["sop_instance_uid"]
        assert str(ds.file_meta.TransferSyntaxUID) == e["transfer_syntax"]
        assert str(ds.file_meta.MediaStorageSOPInstanceUID) == str(ds.SOPInstanceUID)
        o = store.by_uid()[e["sop_instance_uid"]]
        assert str(ds.PatientID) == o.patient_id and str(ds.SeriesInstanceUID) == o.series_instance_uid
        if e["transfer_syntax"] in (lab.EXPLICIT_VR_LE, lab.IMPLICIT_VR_LE, RLE_LOSSLESS):
            # pixels decode (RLE with pydicom's own decoder) to what the source file holds
            want = dcmread(o.path).pixel_array
            assert np.array_equal(ds.pixel_array, want), p.name
        if e["sop_class_uid"] == MF_WORD_SC:
            assert int(ds.NumberOfFrames) == MF_FRAMES and len(ds.PixelData) == MF_FRAMES * MF_ROWS * MF_COLS * 2


def test_store_layout_patient_study_series(store, export):
    ex = export(store.pcap, "--layout", "patient/study/series")
    check_exported_against(ex, store.received, expect_uids=sent_uids(store))
    by_uid = store.by_uid()
    for e in ex.exported:
        p = Path(e["file"])
        o = by_uid[e["sop_instance_uid"]]
        rel = p.relative_to(ex.out).parts
        assert rel[:3] == (o.patient_id, o.study_instance_uid, o.series_instance_uid), rel
        assert len(rel) == 4 and rel[3].endswith(".dcm") and o.sop_instance_uid in rel[3], rel
    # shared folders: patient PA has one study with two series, PB two studies
    tops = {p.relative_to(ex.out).parts[0] for p in ex.files()}
    assert tops == {o.patient_id for o in by_uid.values() if o.label in WIRE_SYNTAX}
    pa = ex.out / store.objects["ct_ex"].patient_id
    assert len(list(pa.iterdir())) == 1 and len(list(next(pa.iterdir()).iterdir())) == 2
    assert len(list((ex.out / store.objects["mr_im"].patient_id).iterdir())) == 2


def test_store_filter_min_size(store, export):
    sizes = {uid: r.dataset_size for uid, r in store.received.items()}
    threshold = store.received[store.objects["mr_im"].sop_instance_uid].dataset_size  # exactly one object's size
    ex = export(store.pcap, "--min-size", threshold)
    want = {u for u in sent_uids(store) if sizes[u] >= threshold}
    assert 1 < len(want) < len(sent_uids(store))
    check_exported_against(ex, store.received, expect_uids=want)
    assert store.objects["mr_im"].sop_instance_uid in {e["sop_instance_uid"] for e in ex.exported}
    ex = export(store.pcap, "--min-size", 20 * 1024 * 1024)
    check_exported_against(ex, store.received, expect_uids={store.objects["mf_big"].sop_instance_uid})


def test_store_filter_sop_class(store, export):
    ex = export(store.pcap, "--sop-class", CT)
    want = {u for u in sent_uids(store) if store.by_uid()[u].sop_class_uid == CT}
    assert len(want) == 3   # ct_ex, ct_im, ct_rle: three associations, three transfer syntaxes
    check_exported_against(ex, store.received, expect_uids=want)
    ex = export(store.pcap, "--sop-class", MR, "--sop-class", MF_WORD_SC)
    want = {u for u in sent_uids(store) if store.by_uid()[u].sop_class_uid in (MR, MF_WORD_SC)}
    check_exported_against(ex, store.received, expect_uids=want)


def test_store_filter_association_and_ae(store, export):
    for assoc in (2, 3):
        ex = export(store.pcap, "--association", assoc)
        want = {store.objects[label].sop_instance_uid for a, label, _m in store.sent() if a == assoc}
        check_exported_against(ex, store.received, expect_uids=want)
        assert {e["association"] for e in ex.exported} == {assoc}
    ex = export(store.pcap, "--association", 1, "--association", 4)
    want = {store.objects[label].sop_instance_uid for a, label, _m in store.sent() if a in (1, 4)}
    check_exported_against(ex, store.received, expect_uids=want)
    ex = export(store.pcap, "--ae", "STORE_JPEG")
    check_exported_against(ex, store.received, expect_uids={store.objects["mr_jpeg"].sop_instance_uid})
    ex = export(store.pcap, "--ae", "STORESCP")   # the called AE: every association
    check_exported_against(ex, store.received, expect_uids=sent_uids(store))


def test_store_complete_only_keeps_everything_whole(store, export):
    ex = export(store.pcap, "--complete-only")
    check_exported_against(ex, store.received, expect_uids=sent_uids(store))


# --------------------------------------------------------------------------
# 2. loss (holes filled by retransmissions) and bytes really missing
# --------------------------------------------------------------------------

def test_lossy_export_identical(lossy, export):
    # the capture really has holes (segments first seen only as retransmissions) and
    # duplicates; the exported data sets being identical to storescp's shows both were mended
    assert lossy.info["head_drops"] > 0, lossy.info["qdisc"]
    holes = lab.tshark_flag_counts(lossy.pcap, "tcp.analysis.lost_segment")
    assert sum(holes.values()) > 0, "no segment missing before its retransmission: the test proves nothing"
    ex = export(lossy.pcap)
    assert ex.returncode == 0
    check_exported_against(ex, lossy.received, expect_uids=sent_uids(lossy))
    check_objects_list(ex)


def test_holes_hit_object_partial(holes, export):
    ex = export(holes.pcap)
    hit = holes.objects[HOLE_LABEL].sop_instance_uid
    partial = [e for e in ex.exported if not e["complete"]]
    assert [e["sop_instance_uid"] for e in partial] == [hit], \
        f"frame {holes.info['deleted_frame']} deleted: partial {[e['sop_instance_uid'] for e in partial]}"
    e = partial[0]
    p = Path(e["file"])
    assert p.name.endswith(".dcm.partial") and p.is_file(), p
    assert FLAT_NAME.match(p.name)
    assert e["incomplete_reason"], e
    obj = next(o for o in ex.doc["objects"] if o["sop_instance_uid"] == hit)
    assert obj["complete"] is False and obj["file"] == e["file"]
    # what was captured before the hole is in place, byte for byte; what the file holds from
    # the hole on is either the original byte at its place or a zero (a lost byte), never
    # anything else, and the file is not longer than the data set
    import numpy as np
    r = holes.received[hit]
    check_meta(p, r.sop_class_uid, hit, r.transfer_syntax)
    got, want = data_set_of(p), data_set_of(r.path)
    assert e["bytes"] == len(got) <= len(want), (e["bytes"], len(got), len(want))
    a, b = holes.info["hole_from"], holes.info["hole_to"]
    assert 0 < a < b < len(want)
    assert len(got) >= a and got[:a] == want[:a], \
        f"partial: {len(got)} bytes, first difference at {first_difference(got, want)}, hole at {a}..{b}"
    g = np.frombuffer(got, np.uint8)[a:]
    w = np.frombuffer(want, np.uint8)[a:len(got)]
    bad = np.flatnonzero((g != w) & (g != 0))
    assert not bad.size, f"partial: byte {a + int(bad[0])} is neither the original nor zero"
    # every other object whole and byte-identical
    others = [x for x in ex.exported if x["sop_instance_uid"] != hit]
    assert {Path(x["file"]) for x in others} | {p} == set(ex.files())
    for x in others:
        r = holes.received[x["sop_instance_uid"]]
        assert x["complete"] is True, x
        check_meta(Path(x["file"]), r.sop_class_uid, r.sop_instance_uid, r.transfer_syntax)
        assert_same_data_set(Path(x["file"]), r.path, x["sop_instance_uid"])
    assert sorted(x["sop_instance_uid"] for x in others) == sorted(sent_uids(holes) - {hit})


def test_holes_complete_only_skips_partial(holes, export):
    ex = export(holes.pcap, "--complete-only")
    hit = holes.objects[HOLE_LABEL].sop_instance_uid
    check_exported_against(ex, holes.received, expect_uids=sent_uids(holes) - {hit})
    assert not [p for p in ex.files() if p.name.endswith(".partial")]


# --------------------------------------------------------------------------
# 3. C-GET and C-MOVE sub-operations (dcmqrscp)
# --------------------------------------------------------------------------

def test_cget_and_cmove_sub_operations(qr, export):
    ex = export(qr.pcap)
    assert ex.returncode == 0
    received = {**qr.got, **qr.moved}
    check_exported_against(ex, received, expect_uids=set(received))
    check_objects_list(ex)
    assocs = {a["id"]: a for a in ex.doc["associations"]}
    by_uid = {f.sop_instance_uid: f for f in qr.files.values()}
    for e in ex.exported:
        a = assocs[e["association"]]
        f = by_uid[e["sop_instance_uid"]]
        if e["sop_instance_uid"] in qr.got:
            # C-GET: the C-STOREs travel on the retriever's own association, from QRSCP
            assert (a["calling_ae"], a["called_ae"]) == ("GETSCU", "QRSCP"), a["calling_ae"]
        else:
            # C-MOVE: on the sub-association dcmqrscp opens to movescu's listener
            assert (a["calling_ae"], a["called_ae"]) == ("QRSCP", "MOVESCU"), a["calling_ae"]
        # and, where it went in the original's own transfer syntax, identical to the original
        if e["transfer_syntax"] == f.transfer_syntax_uid:
            assert data_set_of(e["file"]) == f.dataset_bytes(), f"{f.name}: differs from the original"
        dcmdump_reads(Path(e["file"]))
    assert sum(1 for e in ex.exported if e["transfer_syntax"] == by_uid[e["sop_instance_uid"]].transfer_syntax_uid) >= 4


QR_REQUESTS = {0x0010: "C-GET-RQ", 0x0020: "C-FIND-RQ", 0x0021: "C-MOVE-RQ"}


def test_qr_include_identifiers_and_commands(qr, export):
    """--include stores,identifiers,commands: besides the same C-STORE data sets, every
    command set and every C-GET/C-MOVE identifier that crossed the wire, byte for byte
    (as tshark reassembles the streams), each in a Part 10 file pydicom reads."""
    from pydicom import dcmread
    ex = export(qr.pcap, "--include", "stores,identifiers,commands")
    ref = lab.TsharkReference(qr.pcap)
    wire_cmds, wire_ids = [], []
    for stream in sorted(ref.streams):
        for direction in ref.follow(stream):
            last_cmd = None
            for m in lab.pdata_messages(direction):
                if m["command"]:
                    wire_cmds.append(m["data"])
                    last_cmd = int(lab.read_dataset_bytes(m["data"], lab.IMPLICIT_VR_LE).CommandField)
                elif last_cmd in QR_REQUESTS:
                    wire_ids.append((QR_REQUESTS[last_cmd], m["data"]))
    assert len(wire_ids) == 2 and len(wire_cmds) > 10
    kinds = {}
    for e in ex.exported:
        kinds.setdefault(e["kind"], []).append(e)
    assert set(kinds) == {"store", "command", "identifier"}, sorted(kinds)
    assert set(ex.files()) == {Path(e["file"]) for e in ex.exported}
    received = {**qr.got, **qr.moved}
    assert sorted(e["sop_instance_uid"] for e in kinds["store"]) == sorted(received)
    for e in kinds["store"]:
        assert_same_data_set(Path(e["file"]), received[e["sop_instance_uid"]].path, e["sop_instance_uid"])
    assert sorted(data_set_of(e["file"]) for e in kinds["command"]) == sorted(wire_cmds)
    for e in kinds["command"]:
        ds = dcmread(e["file"])
        assert str(ds.file_meta.TransferSyntaxUID) == lab.IMPLICIT_VR_LE
        assert "CommandField" in ds and e["complete"] is True
    assert sorted((e["command"], data_set_of(e["file"])) for e in kinds["identifier"]) == sorted(wire_ids)
    studies = {"C-GET-RQ": qr.files["g1"].study_instance_uid, "C-MOVE-RQ": qr.files["m1"].study_instance_uid}
    for e in kinds["identifier"]:
        ds = dcmread(e["file"])
        assert (ds.QueryRetrieveLevel, str(ds.StudyInstanceUID)) == ("STUDY", studies[e["command"]]), e


# --------------------------------------------------------------------------
# 4. the shared captures against their truth files
# --------------------------------------------------------------------------

def _truth_objects(name: str) -> list[dict]:
    truth = json.loads((lab.SHARED_CAPTURES / f"{name}.truth.json").read_text())
    if name == "store_multi":
        return truth["objects_assoc1"] + truth["objects_assoc2"]
    return truth["objects"]


@pytest.mark.parametrize("name", ["store_multi", "move_ok"])
def test_shared_capture_against_truth(name, export):
    from pydicom import dcmread
    pcap = lab.SHARED_CAPTURES / f"{name}.pcap"
    if not pcap.is_file():
        pytest.skip(f"{pcap} not there")
    truth = {o["sop_instance"]: o for o in _truth_objects(name)}
    ex = export(pcap)
    assert ex.returncode == 0
    assert sorted(e["sop_instance_uid"] for e in ex.exported) == sorted(truth)
    assert set(ex.files()) == {Path(e["file"]) for e in ex.exported}
    for e in ex.exported:
        p = Path(e["file"])
        t = truth[e["sop_instance_uid"]]
        assert e["complete"] is True and not p.name.endswith(".partial"), e
        assert len(data_set_of(p)) == t["dataset_bytes"] == e["bytes"], \
            f"{p.name}: {len(data_set_of(p))} data set bytes, truth {t['dataset_bytes']}"
        ds = dcmread(p)
        assert str(ds.SOPInstanceUID) == t["sop_instance"]
        assert str(ds.SOPClassUID) == t["sop_class"] == str(ds.file_meta.MediaStorageSOPClassUID)
        assert str(ds.PatientID) == t["patient_id"]
        dcmdump_reads(p)
    check_objects_list(ex)
