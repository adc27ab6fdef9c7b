"""Real-traffic laboratory: peers, captures, namespaces and tshark as the referee.

Everything here is meant to be reused by every test that needs real DICOM
traffic (C-STORE, C-FIND, C-MOVE, ...):

* :func:`free_port`, :func:`make_dicom_files` -- ports and Part 10 files;
* :class:`Capture` -- tcpdump (or dumpcap) writing a complete capture file;
* :class:`Peer`, :class:`StoreSCP`, :func:`run_storescu`, :func:`run_echoscu`
  -- dcmtk peers (always the dcmtk binaries: pynetdicom installs console
  scripts of the same names that come first on PATH);
* :class:`PynetdicomSCP`, :func:`pynetdicom_store` -- in-process pynetdicom
  peers, for what dcmtk cannot do (IPv6: dcmtk 3.6.7 cannot connect to ::1);
* :class:`NetnsPair` -- two network namespaces joined by a veth pair, with
  MTU, loss (nftables), reordering (htb + nftables), VLAN;
* :func:`tshark_conv_tcp`, :func:`tshark_follow_raw`,
  :func:`tshark_retransmissions` -- what tshark says about a capture;
* :func:`run_dicomtrace` -- the CLI under test.

Rules kept everywhere: every subprocess has a timeout and no stdin, every
process started here is ended (by its own process group id) when its context
exits, every namespace made here is deleted, and traffic only ever goes to
loopback or to addresses inside namespaces made here.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

DEFAULT_TIMEOUT = 60.0
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def _shared_root() -> Path:
    """../shared next to the repository; DICOMTRACE_SHARED names it for a checkout elsewhere;
    else, in a git worktree, the one beside the main checkout (the parent of the common git
    directory)."""
    if os.environ.get("DICOMTRACE_SHARED"):
        return Path(os.environ["DICOMTRACE_SHARED"])
    here = REPO_ROOT.parent / "shared"
    if here.is_dir():
        return here
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return here
    return Path(common).parent.parent / "shared" if common else here


SHARED_ROOT = _shared_root()
SHARED_CAPTURES = SHARED_ROOT / "captures"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")

_counter = itertools.count(1)


class LabError(RuntimeError):
    """Something in the laboratory itself went wrong (not the code under test)."""


def skip(reason: str):
    """Skip the current test (pytest) or fail loudly outside pytest."""
    try:
        import pytest
    except ImportError:  # pragma: no cover - only outside pytest
        raise LabError(f"skipped: {reason}")
    pytest.skip(reason)


def unique_suffix() -> str:
    """Short, per-process unique suffix (pid + counter) for names."""
    return f"{os.getpid() % 100000}{next(_counter)}"


# --------------------------------------------------------------------------
# running commands
# --------------------------------------------------------------------------

def netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def run(cmd: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True,
        netns: str | None = None, input: bytes | None = None,
        cwd: str | os.PathLike | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command to completion (bytes in/out), never reading our stdin.

    On timeout the whole process group is killed and LabError raised; with
    check=True a non-zero exit raises LabError showing stderr.
    """
    full = netns_prefix(netns) + [str(c) for c in cmd]
    proc = subprocess.Popen(
        full, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
        start_new_session=True)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise LabError(f"timeout after {timeout}s: {' '.join(full)}\n{err.decode(errors='replace')[-2000:]}")
    res = subprocess.CompletedProcess(full, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise LabError(f"exit {proc.returncode}: {' '.join(full)}\nstdout: "
                       f"{out.decode(errors='replace')[-2000:]}\nstderr: {err.decode(errors='replace')[-2000:]}")
    return res


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group of a process we started (start_new_session=True)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Send sig to the group, wait, then SIGKILL if needed. Returns the exit code."""
    if proc.poll() is None:
        _kill_group(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    return proc.returncode


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timeout after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------

def work_dir(factory, name: str) -> Path:
    """A fresh directory for a test's captures: under $DICOMTRACE_LAB_KEEP/NAME when that is
    set (kept out of pytest's rotating tmp dirs, for looking at later), else a pytest tmp dir."""
    keep = os.environ.get("DICOMTRACE_LAB_KEEP")
    if keep:
        d = Path(keep) / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d
    return factory.mktemp(name.replace("/", "_"))


def free_port(host: str = "127.0.0.1", netns: str | None = None) -> int:
    """A TCP port nobody listens on.

    On loopback (no netns) the kernel picks one; ports in 20000-29999 are
    below Linux's default ephemeral range (32768-60999), so a client's own
    port cannot collide with a server port picked here. Inside a netns made
    by this lab everything is free, so a random port in that range is used.
    """
    if netns is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(200):
            port = random.randint(20000, 29999)
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    return random.randint(20000, 29999)


def require_ipv6_loopback() -> None:
    """Skip unless ::1 can be bound (IPv6 enabled on lo)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        skip(f"no IPv6 loopback: {e}")


def port_listening(port: int, netns: str | None = None) -> bool:
    """True when some socket LISTENs on TCP port (checked with ss, no connection made).

    A connection attempt would show up in captures, so it is never used.
    """
    res = run(["ss", "-Hltn", f"sport = :{port}"], netns=netns, timeout=10, check=False)
    return bool(res.stdout.strip())


def wait_listening(port: int, netns: str | None = None, timeout: float = 20.0,
                   proc: subprocess.Popen | None = None, what: str = "server") -> None:
    def ready():
        if proc is not None and proc.poll() is not None:
            raise LabError(f"{what} exited with {proc.returncode} before listening on {port}")
        return port_listening(port, netns)
    wait_for(ready, timeout, 0.05, f"{what} to listen on port {port}")


# --------------------------------------------------------------------------
# DICOM files
# --------------------------------------------------------------------------

SOP_CLASSES = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", "CT"),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "MR"),
    "SC": ("1.2.840.10008.5.1.4.1.1.7", "OT"),
}
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, used by generate_uid


@dataclass
class DicomSpec:
    """What file to make.

    size: approximate total file size in bytes (pixel data fills it: 16-bit
    random pixels, so it does not compress). patient/study/series are labels:
    files with the same label share that UID (default: each file its own).
    """
    sop: str = "CT"               # CT | MR | SC
    size: int = 16 * 1024
    explicit_vr: bool = True
    name: str | None = None
    patient: str | None = None
    study: str | None = None
    series: str | None = None
    seed: int | None = None


@dataclass
class DicomFileInfo:
    path: Path
    name: str
    sop: str
    modality: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    patient_name: str
    transfer_syntax_uid: str
    file_size: int
    dataset_offset: int           # where the data set starts (after preamble, DICM, meta group)
    rows: int
    columns: int

    @property
    def dataset_size(self) -> int:
        return self.file_size - self.dataset_offset

    def dataset_bytes(self) -> bytes:
        return self.path.read_bytes()[self.dataset_offset:]

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["path"] = str(self.path)
        d["dataset_size"] = self.dataset_size
        return d


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid
    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts]))


def dataset_offset_of(path: str | os.PathLike) -> int:
    """Offset of the data set in a Part 10 file (128 preamble + 'DICM' + meta group)."""
    with open(path, "rb") as f:
        head = f.read(144)
    if len(head) < 144 or head[128:132] != b"DICM":
        raise LabError(f"{path}: not a Part 10 file")
    tag, vr, vlen, value = head[132:136], head[136:138], head[138:140], head[140:144]
    if tag != b"\x02\x00\x00\x00" or vr != b"UL" or struct.unpack("<H", vlen)[0] != 4:
        raise LabError(f"{path}: no (0002,0000) group length first")
    return 144 + struct.unpack("<I", value)[0]


def make_dicom_files(directory: str | os.PathLike, specs: Iterable[DicomSpec | dict]) -> list[DicomFileInfo]:
    """Write one Part 10 file per spec into directory; return what was written.

    UIDs are deterministic (derived from the spec's name/labels) but unique per
    file unless labels are shared.
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: list[DicomFileInfo] = []
    for index, spec in enumerate(specs):
        if isinstance(spec, dict):
            spec = DicomSpec(**spec)
        sop = spec.sop.upper()
        if sop not in SOP_CLASSES:
            raise ValueError(f"unknown SOP kind {spec.sop!r}; use one of {sorted(SOP_CLASSES)}")
        sop_class, modality = SOP_CLASSES[sop]
        name = spec.name or f"{index + 1:03d}_{sop.lower()}_{'ex' if spec.explicit_vr else 'im'}_{spec.size}"
        patient = spec.patient or name
        study = spec.study or name
        series = spec.series or name
        seed = spec.seed if spec.seed is not None else index + 1

        # pixel geometry: 16-bit, columns fixed, rows to reach the size (~1.5 KB of header)
        pixel_budget = max(spec.size - 1500, 64)
        columns = 256 if pixel_budget >= 256 * 2 * 8 else 16
        rows = max(1, math.ceil(pixel_budget / (2 * columns)))
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 4096, size=rows * columns, dtype=np.uint16)

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(sop_class)
        meta.MediaStorageSOPInstanceUID = UID(_uid("instance", name, seed))
        meta.TransferSyntaxUID = UID(EXPLICIT_VR_LE if spec.explicit_vr else IMPLICIT_VR_LE)
        meta.ImplementationClassUID = UID(UID_ROOT + "1")
        meta.ImplementationVersionName = "DTLAB_1"

        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if sop != "SC" else ["DERIVED", "SECONDARY"]
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyDate = "20240102"
        ds.StudyTime = "101112"
        ds.AccessionNumber = f"ACC{index + 1:04d}"
        ds.Modality = modality
        ds.Manufacturer = "dicomtrace lab"
        ds.ReferringPhysicianName = "Ref^Doctor"
        ds.StudyDescription = f"Lab study {study}"
        ds.SeriesDescription = f"Lab series {series}"
        ds.PatientName = f"Lab^{patient}"
        ds.PatientID = f"PID-{patient}"[:64]
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = _uid("study", study)
        ds.SeriesInstanceUID = _uid("series", series)
        ds.StudyID = f"S{index + 1}"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        if sop == "SC":
            ds.ConversionType = "WSD"
        else:
            ds.ImagePositionPatient = [0, 0, index]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [0.5, 0.5]
            ds.SliceThickness = 1
            ds.FrameOfReferenceUID = _uid("for", study)
        if sop == "CT":
            ds.KVP = 120
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
        if sop == "MR":
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTime = 10
            ds.RepetitionTime = 500
            ds.MagneticFieldStrength = 1.5
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()

        path = directory / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(DicomFileInfo(
            path=path, name=name, sop=sop, modality=modality, sop_class_uid=sop_class,
            sop_instance_uid=str(ds.SOPInstanceUID), study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID), patient_id=str(ds.PatientID),
            patient_name=str(ds.PatientName), transfer_syntax_uid=str(meta.TransferSyntaxUID),
            file_size=path.stat().st_size, dataset_offset=dataset_offset_of(path),
            rows=rows, columns=columns))
    return out


# --------------------------------------------------------------------------
# processes in the background
# --------------------------------------------------------------------------

class Peer:
    """A background process (optionally in a netns) ended on exit, logs in files.

    If port is given, entering waits until something listens on it (ss, no
    connection). Leaving sends SIGTERM to the process group, then SIGKILL.
    """

    def __init__(self, cmd: Sequence[str], *, port: int | None = None, netns: str | None = None,
                 log_dir: str | os.PathLike | None = None, name: str = "peer",
                 start_timeout: float = 20.0, cwd: str | os.PathLike | None = None,
                 stop_signal: int = signal.SIGTERM):
        self.cmd = [str(c) for c in cmd]
        self.port = port
        self.netns = netns
        self.name = name
        self.start_timeout = start_timeout
        self.cwd = cwd
        self.stop_signal = stop_signal
        log_dir = Path(log_dir) if log_dir else None
        self.stdout_path = (log_dir / f"{name}.out") if log_dir else None
        self.stderr_path = (log_dir / f"{name}.err") if log_dir else None
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def start(self) -> "Peer":
        out = open(self.stdout_path, "wb") if self.stdout_path else subprocess.DEVNULL
        err = open(self.stderr_path, "wb") if self.stderr_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(netns_prefix(self.netns) + self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, cwd=self.cwd, start_new_session=True)
        finally:
            for f in (out, err):
                if hasattr(f, "close"):
                    f.close()
        try:
            if self.port is not None:
                wait_listening(self.port, self.netns, self.start_timeout, self.proc, self.name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        if self.proc is not None:
            self.returncode = _stop(self.proc, self.stop_signal)
        return self.returncode

    def log(self) -> str:
        text = ""
        for p in (self.stdout_path, self.stderr_path):
            if p and p.exists():
                text += p.read_text(errors="replace")
        return text

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


_dcmtk_cache: dict[str, str] = {}


def dcmtk(tool: str) -> str:
    """Absolute path of a dcmtk binary (not pynetdicom's same-named scripts)."""
    if tool in _dcmtk_cache:
        return _dcmtk_cache[tool]
    candidates = [f"/usr/bin/{tool}", f"/usr/local/bin/{tool}"]
    found = shutil.which(tool)
    if found:
        candidates.append(found)
    for c in candidates:
        if not os.access(c, os.X_OK):
            continue
        res = run([c, "--version"], timeout=10, check=False)
        if b"dcmtk" in (res.stdout + res.stderr).lower():
            _dcmtk_cache[tool] = c
            return c
    skip(f"dcmtk tool {tool} not installed")
    raise AssertionError  # unreachable


class StoreSCP(Peer):
    """dcmtk storescp writing received objects into output_dir.

    extra_args: e.g. ["--max-pdu", "8192"], ["+xi"]. Verbose logging (-v)
    goes to LOG_DIR/<name>.err (dcmtk logs on stdout/stderr).
    """

    def __init__(self, output_dir: str | os.PathLike, port: int | None = None, *, aet: str = "STORESCP",
                 max_pdu: int | None = None, extra_args: Sequence[str] = (), netns: str | None = None,
                 log_dir: str | os.PathLike | None = None, name: str = "storescp", verbose: bool = True):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        port = port or free_port(netns=netns)
        cmd = [dcmtk("storescp"), "-od", str(self.output_dir), "-aet", aet]
        if verbose:
            cmd.append("-v")
        if max_pdu:
            cmd += ["--max-pdu", str(max_pdu)]
        cmd += list(extra_args) + [str(port)]
        super().__init__(cmd, port=port, netns=netns, log_dir=log_dir or self.output_dir.parent, name=name)

    def received(self) -> list[Path]:
        return sorted(p for p in self.output_dir.iterdir() if p.is_file())


def run_storescu(host: str, port: int, files: Sequence[str | os.PathLike], *, aec: str = "STORESCP",
                 aet: str = "STORESCU", max_pdu: int | None = None, max_send_pdu: int | None = None,
                 extra_args: Sequence[str] = (), netns: str | None = None, timeout: float = 120.0,
                 check: bool = True, verbose: bool = True) -> subprocess.CompletedProcess:
    """One storescu association sending files (in order). -ta/-ts keep it bounded.
    verbose=False: no -v (dcmtk refuses -v together with a log configuration, -lc)."""
    cmd = [dcmtk("storescu"), *(["-v"] if verbose else []), "-aet", aet, "-aec", aec, "-ta", "20",
           "-ts", "60"]
    if max_pdu:
        cmd += ["--max-pdu", str(max_pdu)]
    if max_send_pdu:
        cmd += ["--max-send-pdu", str(max_send_pdu)]
    cmd += list(extra_args) + [host, str(port)] + [str(f) for f in files]
    return run(cmd, netns=netns, timeout=timeout, check=check)


def run_echoscu(host: str, port: int, *, aec: str = "ANY-SCP", aet: str = "ECHOSCU",
                extra_args: Sequence[str] = (), netns: str | None = None, timeout: float = 30.0,
                check: bool = True) -> subprocess.CompletedProcess:
    cmd = [dcmtk("echoscu"), "-v", "-aet", aet, "-aec", aec, "-ta", "10", "-ts", "10"]
    cmd += list(extra_args) + [host, str(port)]
    return run(cmd, netns=netns, timeout=timeout, check=check)


class PynetdicomSCP:
    """In-process pynetdicom storage + verification SCP (IPv4 or IPv6 host).

    Received data sets are written as Part 10 files to output_dir (if given)
    and kept in self.received (list of pydicom Datasets).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, aet: str = "PYSCP",
                 output_dir: str | os.PathLike | None = None, max_pdu: int = 16382,
                 ssl_context=None):
        self.ssl_context = ssl_context  # an ssl.SSLContext: DICOM over TLS
        self.host = host
        self.port = port or free_port(host)
        self.aet = aet
        self.output_dir = Path(output_dir) if output_dir else None
        self.max_pdu = max_pdu
        self.received = []
        self.server = None

    def __enter__(self):
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received.append(ds)
            if self.output_dir:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                ds.save_as(self.output_dir / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            return 0x0000

        ae = AE(ae_title=self.aet)
        ae.maximum_pdu_size = self.max_pdu
        ae.network_timeout = 30
        ae.acse_timeout = 30
        ae.dimse_timeout = 30
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        ae.add_supported_context(Verification)
        self.server = ae.start_server((self.host, self.port), block=False, ssl_context=self.ssl_context,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])
        return self

    def __exit__(self, *exc):
        if self.server is not None:
            self.server.shutdown()
        return False


def pynetdicom_store(host: str, port: int, files: Sequence[str | os.PathLike], *, aec: str = "PYSCP",
                     aet: str = "PYSCU", max_pdu: int = 16382, echo: bool = False,
                     tls_args: tuple | None = None) -> list[int]:
    """One association from pynetdicom sending files; returns the C-STORE statuses.
    ``tls_args``: (ssl.SSLContext, server hostname) for DICOM over TLS."""
    from pydicom import dcmread
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    datasets = [dcmread(f) for f in files]
    ae = AE(ae_title=aet)
    ae.maximum_pdu_size = max_pdu
    ae.network_timeout = 30
    ae.acse_timeout = 30
    ae.dimse_timeout = 30
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    if echo:
        ae.add_requested_context(Verification)
    try:
        assoc = ae.associate(host, port, ae_title=aec, tls_args=tls_args)
    except OSError as exc:  # ssl.SSLError included: a TLS handshake that failed
        raise LabError(f"pynetdicom association to [{host}]:{port} failed: {exc}") from None
    if not assoc.is_established:
        raise LabError(f"pynetdicom association to [{host}]:{port} failed")
    statuses = []
    try:
        if echo:
            assoc.send_c_echo()
        for ds in datasets:
            st = assoc.send_c_store(ds)
            statuses.append(int(st.Status) if "Status" in st else -1)
    finally:
        assoc.release()
    return statuses


# --------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------

class Capture:
    """Capture packets into a complete file for the duration of a with-block.

    tool="tcpdump" (default): ``tcpdump -i IFACE -U -s 0 --immediate-mode -w
    FILE [-y LINKTYPE] [--time-stamp-precision=nano] FILTER``. tcpdump only
    writes pcap: fmt="pcapng" converts the finished file with
    ``editcap -F pcapng`` (keeping nanosecond resolution if nano=True).
    tool="dumpcap": native pcapng (several interfaces allowed: iface may be a
    list), or pcap with fmt="pcap".

    Entering waits for the tool to report that it listens; leaving waits
    until the file has stopped growing, sends SIGINT and waits for the tool
    to finish writing. --immediate-mode matters: without it tcpdump's
    TPACKET_V3 ring hands packets over in blocks and a SIGINT loses the last
    (not yet handed over) block -- on loopback, all of a short capture.
    -B (buffer_kib, 64 MiB by default) matters too: with the default 2 MiB
    ring, a few MB over loopback (64 KB segments) made the kernel drop
    packets; a capture whose tool reports kernel drops raises LabError.
    ring=(MB, COUNT): a tcpdump ring buffer, ``-C MB`` (millions of bytes a file) and,
    if COUNT, ``-W COUNT``: files PATH, PATH1, PATH2... or PATH00, PATH01... (see
    :meth:`ring_files`).
    dumpcap with several interfaces does not write frames in time order:
    one interface's packets can land in the file before earlier packets of
    another (seen: a later association's loopback frames first).
    """

    def __init__(self, path: str | os.PathLike, iface: str | Sequence[str] = "lo", bpf: str = "", *,
                 netns: str | None = None, fmt: str = "pcap", nano: bool = False,
                 linktype: str | None = None, snaplen: int = 0, tool: str = "tcpdump",
                 buffer_kib: int = 65536, start_timeout: float = 15.0, stop_timeout: float = 20.0,
                 settle: float = 0.3, ring: tuple[int, int | None] | None = None):
        self.path = Path(path)
        self.ifaces = [iface] if isinstance(iface, str) else list(iface)
        self.bpf = bpf
        self.netns = netns
        if fmt not in ("pcap", "pcapng"):
            raise ValueError("fmt must be pcap or pcapng")
        self.fmt = fmt
        self.nano = nano
        self.linktype = linktype
        self.snaplen = snaplen
        self.tool = tool
        self.buffer_kib = buffer_kib
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.settle = settle
        self.ring = ring
        if ring and (tool != "tcpdump" or fmt != "pcap"):
            raise ValueError("ring buffers are made with tcpdump, as pcap")
        self.proc: subprocess.Popen | None = None
        self.stderr_path = self.path.with_name(self.path.name + f".{tool}.log")
        self.raw_path = self.path if (tool == "dumpcap" or fmt == "pcap") else self.path.with_name(self.path.name + ".tmp.pcap")
        self.packets_captured: int | None = None
        self.packets_dropped: int | None = None

    def _command(self) -> list[str]:
        if self.tool == "tcpdump":
            if len(self.ifaces) != 1:
                raise ValueError("tcpdump captures one interface; use tool='dumpcap' for several")
            cmd = ["tcpdump", "-i", self.ifaces[0], "-U", "--immediate-mode", "-n", "-s", str(self.snaplen),
                   "-B", str(self.buffer_kib), "-w", str(self.raw_path)]
            if self.nano:
                cmd.append("--time-stamp-precision=nano")
            if self.linktype:
                cmd += ["-y", self.linktype]
            if self.ring:
                # -Z root: tcpdump drops privileges before opening the first file of a ring
                cmd += ["-C", str(self.ring[0]), "-Z", "root"]
                if self.ring[1]:
                    cmd += ["-W", str(self.ring[1])]
            if self.bpf:
                cmd.append(self.bpf)
            return cmd
        if self.tool == "dumpcap":
            cmd = ["dumpcap"]
            for i in self.ifaces:
                cmd += ["-i", i, "-B", str(max(1, self.buffer_kib // 1024))]
                if self.linktype:
                    cmd += ["-y", self.linktype]
                if self.snaplen:
                    cmd += ["-s", str(self.snaplen)]
                if self.bpf:
                    cmd += ["-f", self.bpf]
            if self.fmt == "pcap":
                cmd.append("-P")
            cmd += ["-w", str(self.raw_path)]
            return cmd
        raise ValueError(f"unknown capture tool {self.tool}")

    def ring_files(self) -> list[Path]:
        """The files of a ring capture in the order tcpdump wrote them (no wrap-around)."""
        def index(p: Path) -> int:
            rest = p.name[len(self.path.name):]
            return int(rest) if rest else 0
        found = [p for p in self.path.parent.iterdir()
                 if p.name.startswith(self.path.name) and p.name[len(self.path.name):].isdigit()
                 or p == self.path]
        return sorted((p for p in found if p.exists()), key=index)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise LabError(f"{self.tool} exited with {self.proc.returncode}: {self._stderr()}")
        text = self._stderr()
        if self.tool == "tcpdump":
            return "listening on" in text
        # dumpcap prints one "Capturing on ..." line for all interfaces; its
        # capture file exists once all interfaces are open
        return "Capturing on" in text and self.raw_path.exists()

    def _stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "Capture":
        if shutil.which(self.tool) is None:
            skip(f"{self.tool} not installed")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.raw_path.unlink()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(netns_prefix(self.netns) + self._command(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            wait_for(self._ready, self.start_timeout, 0.02, f"{self.tool} to start listening")
            # the file header is written when capture starts; give the ring a moment
            time.sleep(0.1)
        except BaseException:
            _stop(self.proc, signal.SIGKILL)
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        # wait for the file to stop growing (packets in flight written)
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            size = self.raw_path.stat().st_size if self.raw_path.exists() else 0
            now = time.monotonic()
            if size != last:
                last, stable_since = size, now
            elif now - stable_since >= self.settle:
                break
            time.sleep(0.05)
        _stop(self.proc, signal.SIGINT, self.stop_timeout)
        text = self._stderr()
        m = re.search(r"(\d+) packets? captured", text) or re.search(r"Packets captured: (\d+)", text)
        if m:
            self.packets_captured = int(m.group(1))
        m = re.search(r"(\d+) packets? dropped by kernel", text)
        if m:
            self.packets_dropped = int(m.group(1))
        if self.packets_dropped:
            raise LabError(f"{self.tool} dropped {self.packets_dropped} packets: {text}")
        if self.raw_path != self.path:
            run(["editcap", "-F", "pcapng", str(self.raw_path), str(self.path)], timeout=120)
            self.raw_path.unlink()


# --------------------------------------------------------------------------
# capture file conversions (editcap and hand-made)
# --------------------------------------------------------------------------

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D


def editcap(src, dst, *options: str, frames: Sequence[int | str] = (), timeout: float = 120) -> Path:
    """editcap OPTIONS SRC DST [FRAMES...] (frames/ranges to delete, or keep with -r).

    Note: without -F, editcap 4.0 writes pcapng whatever the input was."""
    run(["editcap", *options, str(src), str(dst), *[str(f) for f in frames]], timeout=timeout)
    return Path(dst)


def to_pcapng(src, dst) -> Path:
    return editcap(src, dst, "-F", "pcapng")


def to_nanosecond_pcap(src, dst) -> Path:
    """pcap with nanosecond timestamps (magic a1b23c4d)."""
    return editcap(src, dst, "-F", "nsecpcap")


def gzip_file(src, dst) -> Path:
    with open(src, "rb") as f, gzip.open(dst, "wb", compresslevel=6) as g:
        shutil.copyfileobj(f, g)
    return Path(dst)


def read_pcap(path) -> tuple[dict, list[tuple[tuple[int, int, int, int], bytes]]]:
    """Parse a classic pcap file (either byte order) into header fields and records.

    Returns ({"magic", "endian", "nano", "version", "snaplen", "linktype",
    "thiszone", "sigfigs"}, [((ts_sec, ts_frac, incl_len, orig_len), data), ...]).
    """
    raw = Path(path).read_bytes()
    magic_le = struct.unpack("<I", raw[:4])[0]
    magic_be = struct.unpack(">I", raw[:4])[0]
    if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        e, magic = "<", magic_le
    elif magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        e, magic = ">", magic_be
    else:
        raise LabError(f"{path}: not a classic pcap file")
    vmaj, vmin, thiszone, sigfigs, snaplen, linktype = struct.unpack(e + "HHiIII", raw[4:24])
    hdr = {"magic": magic, "endian": e, "nano": magic == PCAP_MAGIC_NS, "version": (vmaj, vmin),
           "snaplen": snaplen, "linktype": linktype, "thiszone": thiszone, "sigfigs": sigfigs}
    recs = []
    off = 24
    while off + 16 <= len(raw):
        ts_sec, ts_frac, incl, orig = struct.unpack(e + "IIII", raw[off:off + 16])
        data = raw[off + 16:off + 16 + incl]
        if len(data) != incl:
            raise LabError(f"{path}: truncated record at offset {off}")
        recs.append(((ts_sec, ts_frac, incl, orig), data))
        off += 16 + incl
    return hdr, recs


def write_pcap(path, hdr: dict, recs, *, endian: str | None = None, linktype: int | None = None,
               nano: bool | None = None) -> Path:
    """Write a classic pcap file (records as returned by read_pcap)."""
    e = endian or hdr.get("endian", "<")
    nano = hdr.get("nano", False) if nano is None else nano
    magic = PCAP_MAGIC_NS if nano else PCAP_MAGIC_US
    lt = hdr["linktype"] if linktype is None else linktype
    parts = [struct.pack(e + "IHHiIII", magic, 2, 4, hdr.get("thiszone", 0), hdr.get("sigfigs", 0),
                         hdr.get("snaplen", 262144), lt)]
    for (ts_sec, ts_frac, _incl, orig), data in recs:
        parts.append(struct.pack(e + "IIII", ts_sec, ts_frac, len(data), orig))
        parts.append(data)
    Path(path).write_bytes(b"".join(parts))
    return Path(path)


def byteswap_pcap(src, dst) -> Path:
    """Same capture, global and record headers written in the other byte order."""
    hdr, recs = read_pcap(src)
    return write_pcap(dst, hdr, recs, endian=">" if hdr["endian"] == "<" else "<")


LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276


def ethernet_to_linktype(src, dst, linktype: int) -> Path:
    """Rewrite an Ethernet pcap as RAW (101: IP only), NULL (0: 4-byte AF in host order) or
    Linux cooked v1 (113: 16-byte SLL header).

    The 14-byte Ethernet header of each record is removed (orig_len too);
    for NULL a 4-byte address family is prepended in the file's byte order
    (AF_INET=2, AF_INET6=24 as on BSD captures; readers accept 24/28/30).
    Frames that are not IPv4/IPv6 are dropped.
    """
    hdr, recs = read_pcap(src)
    if hdr["linktype"] != LINKTYPE_ETHERNET:
        raise LabError(f"{src}: link type {hdr['linktype']} is not Ethernet")
    out = []
    for (ts, frac, incl, orig), data in recs:
        ethertype = struct.unpack(">H", data[12:14])[0]
        if ethertype not in (0x0800, 0x86DD):
            continue
        ip = data[14:]
        if linktype == LINKTYPE_RAW:
            payload = ip
        elif linktype == LINKTYPE_NULL:
            af = 2 if ethertype == 0x0800 else 24
            payload = struct.pack(hdr["endian"] + "I", af) + ip
        elif linktype == LINKTYPE_LINUX_SLL:
            # packet type 0 (to us), ARPHRD_ETHER, the source MAC, the protocol
            payload = struct.pack(">HHH", 0, 1, 6) + data[6:12] + b"\0\0" + data[12:14] + ip
        else:
            raise ValueError("linktype must be LINKTYPE_RAW, LINKTYPE_NULL or LINKTYPE_LINUX_SLL")
        delta = len(payload) - len(data)
        out.append(((ts, frac, len(payload), orig + delta), payload))
    return write_pcap(dst, hdr, out, linktype=linktype)


def ethernet_add_vlan(src, dst, tags: Sequence[tuple[int, int]] = ((0x8100, 100),)) -> Path:
    """Insert 802.1Q (or QinQ) tags after the MAC addresses of every Ethernet frame.

    tags: outermost first, each (TPID, TCI): (0x8100, 100) is VLAN 100;
    ((0x88A8, 200), (0x8100, 100)) is an 802.1ad outer tag over VLAN 100.
    Record lengths (captured and original) grow by 4 bytes a tag.
    """
    hdr, recs = read_pcap(src)
    if hdr["linktype"] != LINKTYPE_ETHERNET:
        raise LabError(f"{src}: link type {hdr['linktype']} is not Ethernet")
    tag_bytes = b"".join(struct.pack(">HH", tpid, tci) for tpid, tci in tags)
    out = []
    for (ts, frac, incl, orig), data in recs:
        data = data[:12] + tag_bytes + data[12:]
        out.append(((ts, frac, len(data), orig + len(tag_bytes)), data))
    return write_pcap(dst, hdr, out)


def capinfos(path) -> dict:
    """capinfos summary as a dict: "File type", "File encapsulation", "Number of packets", ..."""
    import csv
    import io
    res = run(["capinfos", "-T", "-m", "-Q", "-c", "-E", "-F", "-t", "-d", "-s", "-a", "-e", str(path)],
              timeout=120, check=False)
    rows = list(csv.reader(io.StringIO(res.stdout.decode(errors="replace"))))
    if len(rows) < 2:
        raise LabError(f"capinfos failed on {path}: {res.stderr.decode(errors='replace')}")
    return dict(zip(rows[0], rows[1]))


# --------------------------------------------------------------------------
# network namespaces
# --------------------------------------------------------------------------

def require_netns() -> None:
    """Skip unless we are root and can make a network namespace with a veth."""
    if os.geteuid() != 0:
        skip("needs root for ip netns")
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            skip(f"{tool} not installed")
    probe = f"dtprobe{unique_suffix()}"
    res = run(["ip", "netns", "add", probe], timeout=15, check=False)
    if res.returncode != 0:
        skip(f"ip netns not possible: {res.stderr.decode(errors='replace').strip()}")
    run(["ip", "netns", "del", probe], timeout=15, check=False)


@dataclass
class LossRule:
    """Drop percent% (0.1 steps) of TCP packets going from side src ('a'|'b').

    hook="output": dropped in the sender's namespace before its veth, so a
    capture on either side never sees them (the capture has holes that the
    retransmission fills). hook="input": dropped by the receiver after its
    veth, so a capture taken in the receiver's namespace sees the packet and
    then its retransmission (a true duplicate).
    """
    src: str = "a"
    percent: float = 3.0
    hook: str = "output"


class _Namespaces:
    """Namespaces made for a with-block: set up on entry (skip unless possible), and on exit
    every process still inside them killed and the namespaces deleted (those in _made)."""

    _made: list[str]

    def __enter__(self):
        require_netns()
        try:
            self._setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _setup(self) -> None:
        raise NotImplementedError

    def kill_processes(self) -> None:
        """Kill what still runs inside our namespaces (only processes in them)."""
        for ns in self._made:
            res = run(["ip", "netns", "pids", ns], timeout=15, check=False)
            for pid in res.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)

    def cleanup(self) -> None:
        self.kill_processes()
        for ns in reversed(self._made):
            run(["ip", "netns", "del", ns], timeout=15, check=False)
        self._made.clear()

    def __exit__(self, *exc):
        self.cleanup()
        return False


class NetnsPair(_Namespaces):
    """Two namespaces joined by a veth pair, addressed 10.213.N.1/2 and fd00:213:N::1/2.

    Attributes: ns_a, ns_b, if_a, if_b (veth ends in each), ip_a, ip_b, ip6_a,
    ip6_b, and with vlan=ID also vif_a, vif_b (VLAN sub-interfaces) carrying
    vip_a/vip_b (10.214.N.1/2); the veth itself keeps its addresses too.

    mtu sets both veth ends (and TSO/GSO/GRO are switched off with ethtool
    when offloads=False, the default, so frames on the wire are MTU-sized as
    on a real network and losses hit single segments).
    loss: list of LossRule (or a float: that percent in both directions on output).
    handshake_drop: "syn" drops the first SYN of every IPv4 connection from a to b, "synack" the
    first SYN/ACK b sends back, both at the receiver's input (after a capture on either veth, so
    the capture shows the packet and, about a second later, its retransmission).
    reorder_percent: that share of TCP packets from side reorder_src is put
    in a slow htb class (rate reorder_rate) so they leave later than packets
    sent after them (the kernel has no netem here; htb honours skb->priority
    set by nftables).
    """

    def __init__(self, *, mtu: int = 1500, loss: float | Sequence[LossRule] | None = None,
                 reorder_percent: float = 0.0, reorder_src: str = "a", reorder_rate: str = "20mbit",
                 vlan: int | None = None, offloads: bool = False, name: str = "dt",
                 handshake_drop: Sequence[str] = ()):
        self.suffix = unique_suffix()
        self.ns_a = f"{name}{self.suffix}a"
        self.ns_b = f"{name}{self.suffix}b"
        self.if_a = f"{name}v{self.suffix}a"[:15]
        self.if_b = f"{name}v{self.suffix}b"[:15]
        net = int(self.suffix) % 250 + 1
        self.ip_a, self.ip_b = f"10.213.{net}.1", f"10.213.{net}.2"
        self.ip6_a, self.ip6_b = f"fd00:213:{net}::1", f"fd00:213:{net}::2"
        self.mtu = mtu
        if isinstance(loss, (int, float)):
            loss = [LossRule("a", float(loss)), LossRule("b", float(loss))] if loss else []
        self.loss = list(loss or [])
        self.reorder_percent = reorder_percent
        self.reorder_src = reorder_src
        self.reorder_rate = reorder_rate
        if set(handshake_drop) - {"syn", "synack"}:
            raise ValueError(f"bad handshake_drop {handshake_drop}")
        self.handshake_drop = tuple(handshake_drop)
        self.vlan = vlan
        self.offloads = offloads
        self.vif_a = self.vif_b = self.vip_a = self.vip_b = None
        if vlan is not None:
            self.vif_a = f"{self.if_a[:10]}.{vlan}"[:15]
            self.vif_b = f"{self.if_b[:10]}.{vlan}"[:15]
            self.vip_a, self.vip_b = f"10.214.{net}.1", f"10.214.{net}.2"
        self._made: list[str] = []

    def ns(self, side: str) -> str:
        return self.ns_a if side == "a" else self.ns_b

    def iface(self, side: str) -> str:
        return self.if_a if side == "a" else self.if_b

    def ipx(self, side: str, cmd: str) -> None:
        run(["ip", "-n", self.ns(side)] + cmd.split(), timeout=15)

    def _setup(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            run(["ip", "netns", "add", ns], timeout=15)
            self._made.append(ns)
        run(["ip", "link", "add", self.if_a, "netns", self.ns_a, "mtu", str(self.mtu), "type", "veth",
             "peer", "name", self.if_b, "netns", self.ns_b, "mtu", str(self.mtu)], timeout=15)
        for side, ip, ip6 in (("a", self.ip_a, self.ip6_a), ("b", self.ip_b, self.ip6_b)):
            ns, ifc = self.ns(side), self.iface(side)
            self.ipx(side, "link set lo up")
            self.ipx(side, f"addr add {ip}/24 dev {ifc}")
            self.ipx(side, f"addr add {ip6}/64 dev {ifc} nodad")
            if not self.offloads and shutil.which("ethtool"):
                run(["ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off"], netns=ns,
                    timeout=15, check=False)
            self.ipx(side, f"link set {ifc} up")
            if self.vlan is not None:
                vif = self.vif_a if side == "a" else self.vif_b
                vip = self.vip_a if side == "a" else self.vip_b
                res = run(["ip", "-n", ns, "link", "add", "link", ifc, "name", vif, "type", "vlan",
                           "id", str(self.vlan)], timeout=15, check=False)
                if res.returncode != 0:
                    self.cleanup()
                    skip("kernel cannot make a vlan interface (no 802.1Q support): "
                         + res.stderr.decode(errors="replace").strip())
                self.ipx(side, f"addr add {vip}/24 dev {vif}")
                if not self.offloads and shutil.which("ethtool"):
                    run(["ethtool", "-K", vif, "tso", "off", "gso", "off", "gro", "off"], netns=ns,
                        timeout=15, check=False)
                self.ipx(side, f"link set {vif} up")
        self._nft_setup()
        if self.reorder_percent:
            ns, ifc = self.ns(self.reorder_src), self.iface(self.reorder_src)
            run(["tc", "qdisc", "add", "dev", ifc, "root", "handle", "1:", "htb", "default", "10"], netns=ns, timeout=15)
            run(["tc", "class", "add", "dev", ifc, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"],
                netns=ns, timeout=15)
            run(["tc", "class", "add", "dev", ifc, "parent", "1:", "classid", "1:20", "htb",
                 "rate", self.reorder_rate, "burst", "3000", "cburst", "3000"], netns=ns, timeout=15)

    def _nft_setup(self) -> None:
        self._sets: dict[str, list[str]] = {}
        rules: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for r in self.loss:
            if r.src not in ("a", "b") or r.hook not in ("output", "input"):
                raise ValueError(f"bad loss rule {r}")
            if r.percent <= 0:
                continue
            permille = int(round(r.percent * 10))
            if r.hook == "output":
                side, match = r.src, f'oifname "{self.iface(r.src)}"'
            else:
                side = "b" if r.src == "a" else "a"
                match = f'iifname "{self.iface(side)}"'
            if self.vlan is not None:
                vif = (self.vif_a if side == "a" else self.vif_b)
                match = match.replace(f'"{self.iface(side)}"', f'{{ "{self.iface(side)}", "{vif}" }}')
            rules[side][r.hook].append(f"{match} meta l4proto tcp numgen random mod 1000 < {permille} counter drop")
        for what in self.handshake_drop:
            # a dynamic set remembers the connections (client address and port) already hit, so
            # only the first SYN (or SYN/ACK) of each is dropped and its retransmission passes
            side, flags, key = (("b", "syn", "ip saddr . tcp sport") if what == "syn"
                                else ("a", "syn | ack", "ip daddr . tcp dport"))
            setname = f"first_{what}"
            rules[side]["input"].append(
                f'iifname "{self.iface(side)}" meta nfproto ipv4 tcp flags & (syn | ack) == {flags} '
                f"{key} @{setname} accept")
            rules[side]["input"].append(
                f'iifname "{self.iface(side)}" meta nfproto ipv4 tcp flags & (syn | ack) == {flags} '
                f"add @{setname} {{ {key} }} counter drop")
            self._sets.setdefault(side, []).append(setname)
        if self.reorder_percent:
            side = self.reorder_src
            permille = int(round(self.reorder_percent * 10))
            rules[side]["output"].append(
                f'oifname "{self.iface(side)}" meta l4proto tcp numgen random mod 1000 < {permille} '
                f"counter meta priority set 1:20")
        for side, hooks in rules.items():
            lines = ["table inet dtlab {"]
            for setname in self._sets.get(side, []):
                lines.append(f"  set {setname} {{ type ipv4_addr . inet_service; flags dynamic, timeout; "
                             "timeout 10m; }")
            for hook, rs in hooks.items():
                lines.append(f"  chain {hook} {{")
                lines.append(f"    type filter hook {hook} priority 0; policy accept;")
                lines += [f"    {x}" for x in rs]
                lines.append("  }")
            lines.append("}")
            run(["nft", "-f", "-"], netns=self.ns(side), input=("\n".join(lines) + "\n").encode(), timeout=15)

    def nft_counters(self, side: str) -> str:
        """`nft list ruleset` in that namespace: every lab rule has a counter."""
        return run(["nft", "list", "ruleset"], netns=self.ns(side), timeout=15).stdout.decode()

    def tc_stats(self, side: str) -> str:
        return run(["tc", "-s", "class", "show", "dev", self.iface(side)], netns=self.ns(side),
                   timeout=15, check=False).stdout.decode()



class NetnsChain(_Namespaces):
    """Three namespaces in a row, a - r - b, with IP forwarding in r (a router).

    a: if_a = ip_a (10.215.N.1/24, default route via r); r: if_ra (10.215.N.2) and
    if_rb (10.216.N.2); b: if_b = ip_b (10.216.N.1/24, default route via r).
    drop_percent: {"a": P, "b": P} -- nftables in r's forward chain drops that
    share of TCP packets coming from that side, so a capture on if_a and one on
    if_b are two points of one path with losses between them.  Offloads (TSO,
    GSO, GRO) are off on every interface, so the router forwards the very
    segments each end sent.  :meth:`dropped` reads the rules' counters.
    """

    def __init__(self, drop_percent: dict[str, float] | None = None, *, mtu: int = 1500,
                 name: str = "dc"):
        self.suffix = unique_suffix()
        net = int(self.suffix) % 250 + 1
        self.ns_a, self.ns_r, self.ns_b = (f"{name}{self.suffix}{x}" for x in "arb")
        self.if_a, self.if_ra, self.if_rb, self.if_b = (f"{name}v{self.suffix}{x}"[:15]
                                                        for x in ("a", "ra", "rb", "b"))
        self.ip_a, self.ip_ra = f"10.215.{net}.1", f"10.215.{net}.2"
        self.ip_b, self.ip_rb = f"10.216.{net}.1", f"10.216.{net}.2"
        self.drop_percent = dict(drop_percent or {})
        self.mtu = mtu
        self._made: list[str] = []

    def ns(self, side: str) -> str:
        return {"a": self.ns_a, "r": self.ns_r, "b": self.ns_b}[side]

    def _setup(self) -> None:
        for ns in (self.ns_a, self.ns_r, self.ns_b):
            run(["ip", "netns", "add", ns], timeout=15)
            self._made.append(ns)
        for end, ns_end, rif in ((self.if_a, self.ns_a, self.if_ra), (self.if_b, self.ns_b, self.if_rb)):
            run(["ip", "link", "add", end, "netns", ns_end, "mtu", str(self.mtu), "type", "veth",
                 "peer", "name", rif, "netns", self.ns_r, "mtu", str(self.mtu)], timeout=15)
        for ns, ifc, ip in ((self.ns_a, self.if_a, self.ip_a), (self.ns_r, self.if_ra, self.ip_ra),
                            (self.ns_r, self.if_rb, self.ip_rb), (self.ns_b, self.if_b, self.ip_b)):
            run(["ip", "-n", ns, "link", "set", "lo", "up"], timeout=15)
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifc], timeout=15)
            if shutil.which("ethtool"):
                run(["ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off"], netns=ns,
                    timeout=15, check=False)
            run(["ip", "-n", ns, "link", "set", ifc, "up"], timeout=15)
        run(["ip", "-n", self.ns_a, "route", "add", "default", "via", self.ip_ra], timeout=15)
        run(["ip", "-n", self.ns_b, "route", "add", "default", "via", self.ip_rb], timeout=15)
        run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], netns=self.ns_r, timeout=15)
        rules = []
        for side, pct in self.drop_percent.items():
            if pct > 0:
                ifc = self.if_ra if side == "a" else self.if_rb
                rules.append(f'    iifname "{ifc}" meta l4proto tcp numgen random mod 1000 < '
                             f"{int(round(pct * 10))} counter drop")
        text = ("table inet dtchain {\n  chain forward {\n"
                "    type filter hook forward priority 0; policy accept;\n"
                + "\n".join(rules) + "\n  }\n}\n")
        run(["nft", "-f", "-"], netns=self.ns_r, input=text.encode(), timeout=15)

    def dropped(self) -> dict[str, int]:
        """Packets the router dropped, by the side they came from."""
        text = run(["nft", "list", "ruleset"], netns=self.ns_r, timeout=15).stdout.decode()
        out = {"a": 0, "b": 0}
        for side, ifc in (("a", self.if_ra), ("b", self.if_rb)):
            m = re.search(rf'iifname "{ifc}" .*counter packets (\d+)', text)
            if m:
                out[side] = int(m.group(1))
        return out



# --------------------------------------------------------------------------
# tshark as the referee
# --------------------------------------------------------------------------

def tshark(*args: str, timeout: float = 300) -> str:
    res = run(["tshark", *args], timeout=timeout)
    return res.stdout.decode(errors="replace")


def _split_endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


_UNIT = {"bytes": 1, "kB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4}


def _tcp_frames(pcap, extra_filter: str = "", extra_fields: Sequence[str] = ()) -> list[list[str]]:
    """Per TCP frame: tcp.stream, src ip, src port, dst ip, dst port, frame.len, *extra."""
    args = ["-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f",
            "-e", "frame.number", "-e", "tcp.stream", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
            "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "frame.len"]
    for f in extra_fields:
        args += ["-e", f]
    args += ["-Y", f"tcp{(' && (' + extra_filter + ')') if extra_filter else ''}"]
    rows = []
    for line in tshark(*args).splitlines():
        cols = line.split("\t")
        if len(cols) < 9 or not cols[1]:
            continue
        frame, stream, s4, s6, sp, d4, d6, dp, flen = cols[:9]
        rows.append([int(frame), int(stream), s4 or s6, int(sp), d4 or d6, int(dp), int(flen), *cols[9:]])
    return rows


def tshark_conv_tcp(pcap) -> list[dict]:
    """tshark -q -n -r PCAP -z conv,tcp as dicts (in tshark's order).

    Each: {"a": {"ip","port"}, "b": {"ip","port"}, "frames_a_to_b",
    "bytes_a_to_b", "frames_b_to_a", "bytes_b_to_a", "frames", "bytes",
    "rel_start", "duration", "streams": [tcp.stream indices]}.
    tshark 4.0 prints byte counts truncated to SI units ("10 kB" for 10673); exact
    byte counts are taken from frame.len of each TCP frame (which is what
    conv counts) and checked against tshark's rounded text and exact frame
    counts. The "->" column is frames from A to B, "<-" from B to A.
    """
    text = tshark("-q", "-n", "-r", str(pcap), "-z", "conv,tcp")
    convs = []
    for line in text.splitlines():
        if "<->" not in line:
            continue
        left, _, right = line.partition("<->")
        a = _split_endpoint(left.strip())
        tok = right.split()
        b = _split_endpoint(tok[0])
        nums = tok[1:]
        # frames, value, unit  x3, then rel_start, duration
        f_ba, v_ba, u_ba, f_ab, v_ab, u_ab, f_t, v_t, u_t, start, dur = nums[:11]
        convs.append({
            "a": {"ip": a[0], "port": a[1]}, "b": {"ip": b[0], "port": b[1]},
            "frames_b_to_a": int(f_ba), "frames_a_to_b": int(f_ab), "frames": int(f_t),
            "bytes_text": {"b_to_a": f"{v_ba} {u_ba}", "a_to_b": f"{v_ab} {u_ab}", "total": f"{v_t} {u_t}"},
            "rel_start": float(start), "duration": float(dur),
        })
    # exact bytes from the frames
    agg: dict = defaultdict(lambda: {"frames": Counter(), "bytes": Counter(), "streams": set()})
    for _frame, stream, sip, sport, dip, dport, flen, *_ in _tcp_frames(pcap):
        key = frozenset([(sip, sport), (dip, dport)])
        agg[key]["frames"][(sip, sport)] += 1
        agg[key]["bytes"][(sip, sport)] += flen
        agg[key]["streams"].add(stream)
    for c in convs:
        a, b = (c["a"]["ip"], c["a"]["port"]), (c["b"]["ip"], c["b"]["port"])
        g = agg.get(frozenset([a, b]))
        if g is None:
            raise LabError(f"conv {a}<->{b} not found among TCP frames")
        c["bytes_a_to_b"], c["bytes_b_to_a"] = g["bytes"][a], g["bytes"][b]
        c["bytes"] = c["bytes_a_to_b"] + c["bytes_b_to_a"]
        c["streams"] = sorted(g["streams"])
        if (g["frames"][a], g["frames"][b]) != (c["frames_a_to_b"], c["frames_b_to_a"]):
            raise LabError(f"conv {a}<->{b}: frame counts differ from tshark's fields: "
                           f"{c['frames_a_to_b']}/{c['frames_b_to_a']} vs {g['frames'][a]}/{g['frames'][b]}")
        for k, exact in (("a_to_b", c["bytes_a_to_b"]), ("b_to_a", c["bytes_b_to_a"]), ("total", c["bytes"])):
            v, u = c["bytes_text"][k].split()
            # tshark 4.0 truncates: 10673 bytes prints as "10 kB"
            approx = int(float(v)) * _UNIT[u]
            if not approx <= exact < approx + _UNIT[u]:
                raise LabError(f"conv {a}<->{b}: {k} bytes {exact} inconsistent with tshark's {v} {u}")
    return convs


def conv_directions(conv: dict, client: tuple[str, int]) -> dict:
    """Orient a tshark conv by a known client endpoint: frames/bytes c2s and s2c."""
    a = (conv["a"]["ip"], conv["a"]["port"])
    ab = (conv["frames_a_to_b"], conv["bytes_a_to_b"])
    ba = (conv["frames_b_to_a"], conv["bytes_b_to_a"])
    c2s, s2c = (ab, ba) if tuple(client) == a else (ba, ab)
    return {"c2s_packets": c2s[0], "c2s_bytes": c2s[1], "s2c_packets": s2c[0], "s2c_bytes": s2c[1]}


_MISSING_MARK = re.compile(rb"^\[(\d+) bytes missing in capture file\]\x00?$")


@dataclass
class Follow:
    """tshark follow,tcp,raw of one stream.

    node0/node1 as tshark prints them: node 0 is the source of the first
    packet of the stream in the capture (the SYN sender when the handshake was
    captured). data0/data1: bytes each node sent, in tshark's reassembly,
    without tshark's gap markers; gaps0/gaps1: [(offset in data, missing
    byte count)] where tshark reported bytes missing in the capture.
    client_to_server / server_to_client (and the gaps): oriented by the
    client given to tshark_follow_raw (default: node 0).
    """
    stream: int
    node0: tuple[str, int]
    node1: tuple[str, int]
    data0: bytes
    data1: bytes
    gaps0: list
    gaps1: list
    client: tuple[str, int]

    @property
    def _client_is_0(self) -> bool:
        return self.client == self.node0

    @property
    def server(self) -> tuple[str, int]:
        return self.node1 if self._client_is_0 else self.node0

    @property
    def client_to_server(self) -> bytes:
        return self.data0 if self._client_is_0 else self.data1

    @property
    def server_to_client(self) -> bytes:
        return self.data1 if self._client_is_0 else self.data0

    @property
    def client_gaps(self) -> list:
        return self.gaps0 if self._client_is_0 else self.gaps1

    @property
    def server_gaps(self) -> list:
        return self.gaps1 if self._client_is_0 else self.gaps0

    @property
    def client_missing(self) -> int:
        return sum(n for _, n in self.client_gaps)

    @property
    def server_missing(self) -> int:
        return sum(n for _, n in self.server_gaps)

    def __iter__(self):
        return iter((self.client_to_server, self.server_to_client))


def tshark_follow_raw(pcap, stream_index: int, client: tuple[str, int] | None = None) -> Follow:
    """Parse ``tshark -q -n -r PCAP -z follow,tcp,raw,N``.

    Format (tshark 4.0): header lines "Node 0: ip:port" and "Node 1: ip:port"
    between lines of '='; then one hex line per chunk of reassembled data;
    lines starting with a TAB are node 1's data, others node 0's. Where
    bytes are missing from the capture, tshark 4.0 puts the text
    "[N bytes missing in capture file]" plus a NUL byte into the raw data
    as its own line: those lines are removed here and kept as gaps.
    Returns a Follow, unpackable as (client->server, server->client).
    """
    text = tshark("-q", "-n", "-r", str(pcap), "-z", f"follow,tcp,raw,{stream_index}")
    node = {}
    chunks: dict[int, list[bytes]] = {0: [], 1: []}
    sizes = {0: 0, 1: 0}
    gaps: dict[int, list] = {0: [], 1: []}
    in_body = False
    for line in text.splitlines():
        m = re.match(r"^Node ([01]): (.*)$", line)
        if m:
            node[int(m.group(1))] = _split_endpoint(m.group(2).strip())
            in_body = True
            continue
        if not in_body or not line.strip() or line.startswith("=") or line.startswith("Follow:") \
                or line.startswith("Filter:"):
            continue
        who = 1 if line.startswith("\t") else 0
        hexs = line.strip()
        if not re.fullmatch(r"[0-9a-fA-F]*", hexs):
            raise LabError(f"unexpected follow line: {line[:80]!r}")
        chunk = bytes.fromhex(hexs)
        mark = _MISSING_MARK.match(chunk) if len(chunk) < 64 else None
        if mark:
            gaps[who].append((sizes[who], int(mark.group(1))))
            continue
        chunks[who].append(chunk)
        sizes[who] += len(chunk)
    if 0 not in node or 1 not in node:
        raise LabError(f"tshark follow of stream {stream_index}: no node lines")
    if node[0] == ("", 0) and node[1] == ("", 0):
        raise LabError(f"tshark follow: no tcp.stream {stream_index} in {pcap}")
    c = tuple(client) if client is not None else node[0]
    if c not in (node[0], node[1]):
        raise LabError(f"client {c} is not an endpoint of stream {stream_index}: {node}")
    return Follow(stream_index, node[0], node[1], b"".join(chunks[0]), b"".join(chunks[1]),
                  gaps[0], gaps[1], c)


def tshark_retransmissions(pcap, *, by_direction: bool = False) -> Counter:
    """Frames with tcp.analysis.retransmission, counted per tcp.stream.

    (tshark sets this flag on fast and spurious retransmissions too.) With
    by_direction=True, keys are (stream, (src ip, src port)).
    """
    counts: Counter = Counter()
    for _f, stream, sip, sport, *_ in _tcp_frames(pcap, "tcp.analysis.retransmission"):
        counts[(stream, (sip, sport)) if by_direction else stream] += 1
    return counts


def tshark_flag_counts(pcap, flag: str, *, by_direction: bool = False) -> Counter:
    """Frames matching a display filter (e.g. tcp.analysis.out_of_order), per tcp.stream
    (or per (stream, (src ip, src port)) with by_direction=True)."""
    counts: Counter = Counter()
    for _f, stream, sip, sport, *_ in _tcp_frames(pcap, flag):
        counts[(stream, (sip, sport)) if by_direction else stream] += 1
    return counts


def tshark_payload_bytes(pcap) -> Counter:
    """Sum of tcp.len per (stream, (src ip, src port)): every payload byte, retransmissions included."""
    counts: Counter = Counter()
    for _f, stream, sip, sport, _d, _dp, _fl, tlen in _tcp_frames(pcap, extra_fields=["tcp.len"]):
        counts[(stream, (sip, sport))] += int(tlen or 0)
    return counts


def tshark_streams(pcap) -> dict[int, dict]:
    """Per tcp.stream: first/last frame, first packet's src/dst, SYN sender (the client)
    if the SYN was captured, frame count, and the MSS / window-scale shift each side
    announced in its SYN or SYN/ACK: {"mss": {endpoint: value}, "wscale": {endpoint: shift}}."""
    out: dict[int, dict] = {}
    rows = _tcp_frames(pcap, extra_fields=["tcp.flags", "tcp.options.mss_val", "tcp.options.wscale.shift",
                                           "frame.time_epoch"])
    for frame, stream, sip, sport, dip, dport, _flen, flags, mss, ws, t in rows:
        s = out.setdefault(stream, {"first_frame": frame, "first_src": (sip, sport), "first_dst": (dip, dport),
                                    "syn_client": None, "frames": 0, "mss": {}, "wscale": {},
                                    "first_time": float(t), "last_frame": frame, "last_time": float(t)})
        s["frames"] += 1
        s["last_frame"], s["last_time"] = frame, float(t)
        fl = int(flags, 16) if flags else 0
        if fl & 0x02:
            if not fl & 0x10 and s["syn_client"] is None:
                s["syn_client"] = (sip, sport)
            if mss:
                s["mss"].setdefault((sip, sport), int(mss))
            if ws:
                s["wscale"].setdefault((sip, sport), int(ws))
    return out


def tshark_dicom_pdus(pcap, port: int) -> list[str]:
    """Decode as DICOM on port: one line per frame carrying DICOM PDUs (info column)."""
    return tshark("-n", "-r", str(pcap), "-d", f"tcp.port=={port},dicom", "-Y", "dicom",
                  "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Info").splitlines()


class TsharkReference:
    """What tshark says about one capture, each part computed once (tshark is slow-ish)."""

    def __init__(self, pcap):
        self.pcap = Path(pcap)

    @functools.cached_property
    def convs(self) -> list[dict]:
        return tshark_conv_tcp(self.pcap)

    @functools.cached_property
    def streams(self) -> dict[int, dict]:
        return tshark_streams(self.pcap)

    @functools.cached_property
    def retransmissions(self) -> Counter:
        """per (stream, src endpoint)"""
        return tshark_retransmissions(self.pcap, by_direction=True)

    @functools.cached_property
    def payload(self) -> Counter:
        """per (stream, src endpoint)"""
        return tshark_payload_bytes(self.pcap)

    @functools.cached_property
    def capinfos(self) -> dict:
        return capinfos(self.pcap)

    def flags(self, display_filter: str) -> Counter:
        """per (stream, src endpoint)"""
        if display_filter not in self._flags:
            self._flags[display_filter] = tshark_flag_counts(self.pcap, display_filter, by_direction=True)
        return self._flags[display_filter]

    def follow(self, stream: int) -> Follow:
        if stream not in self._follows:
            s = self.streams[stream]
            client = s["syn_client"] or s["first_src"]
            self._follows[stream] = tshark_follow_raw(self.pcap, stream, client=client)
        return self._follows[stream]

    @functools.cached_property
    def _flags(self) -> dict:
        return {}

    @functools.cached_property
    def _follows(self) -> dict:
        return {}

    def conv_for(self, a: tuple, b: tuple) -> dict:
        want = {normalize_endpoint(a), normalize_endpoint(b)}
        for c in self.convs:
            if {normalize_endpoint((c["a"]["ip"], c["a"]["port"])),
                    normalize_endpoint((c["b"]["ip"], c["b"]["port"]))} == want:
                return c
        raise KeyError(f"no tshark conversation {a} <-> {b}")

    def stream_starting_at(self, frame: int) -> int:
        for idx, s in self.streams.items():
            if s["first_frame"] == frame:
                return idx
        raise KeyError(f"no tcp.stream starts at frame {frame}")


def normalize_endpoint(ep) -> tuple[str, int]:
    """(ip, port) with the IP in canonical text form; accepts a {"ip","port"} dict too."""
    import ipaddress
    if isinstance(ep, dict):
        ep = (ep["ip"], ep["port"])
    ip, port = ep
    try:
        ip = ipaddress.ip_address(ip).compressed
    except ValueError:
        pass
    return ip, int(port)


# --------------------------------------------------------------------------
# DICOM Upper Layer, just enough to check streams (independent of dicomtrace)
# --------------------------------------------------------------------------

PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF",
             5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}


def split_pdus(stream: bytes) -> list[tuple[int, int, bytes]]:
    """[(offset, pdu type, body)] of a complete, gap-free UL byte stream (strict)."""
    out, off = [], 0
    while off < len(stream):
        if off + 6 > len(stream):
            raise LabError(f"truncated PDU header at {off}")
        ptype, length = stream[off], struct.unpack(">I", stream[off + 2:off + 6])[0]
        if ptype not in PDU_NAMES:
            raise LabError(f"unknown PDU type {ptype:#x} at {off}")
        body = stream[off + 6:off + 6 + length]
        if len(body) != length:
            raise LabError(f"truncated PDU at {off}: {len(body)} of {length}")
        out.append((off, ptype, body))
        off += 6 + length
    return out


@dataclass(frozen=True)
class PdvItem:
    """One presentation data value item of a P-DATA-TF (PS3.8 9.3.5.1, annex E.2), with the
    stream offsets of its PDU and of its own item header; ``is_command`` and ``is_last`` are
    bits 0 and 1 of its message control header."""
    pdu_offset: int
    pdu_end: int
    offset: int
    context_id: int
    control: int
    is_command: bool
    is_last: bool
    value: bytes
    value_offset: int


def pdv_items(stream: bytes) -> list[PdvItem]:
    """Every PDV item of a complete, gap-free UL byte stream, in order (the tests' one PDV walker)."""
    out = []
    for off, ptype, body in split_pdus(stream):
        if ptype != 4:
            continue
        pos = 0
        while pos + 6 <= len(body):
            ilen = struct.unpack(">I", body[pos:pos + 4])[0]
            mch = body[pos + 5]
            out.append(PdvItem(off, off + 6 + len(body), off + 6 + pos, body[pos + 4], mch, bool(mch & 1),
                               bool(mch & 2), body[pos + 6:pos + 4 + ilen], off + 12 + pos))
            pos += 4 + ilen
    return out


def pdata_messages(stream: bytes) -> list[dict]:
    """DIMSE messages in a UL stream: [{"context_id", "command": bool, "data": bytes, "pdvs": n}].

    PDV fragments (in P-DATA-TF PDUs) are joined per context and kind until
    the fragment flagged last; a command and its data set are separate items.
    """
    pending: dict[tuple[int, bool], list[bytes]] = {}
    out = []
    for item in pdv_items(stream):
        key = (item.context_id, item.is_command)
        pending.setdefault(key, []).append(item.value)
        if item.is_last:
            parts = pending.pop(key)
            out.append({"context_id": item.context_id, "command": key[1], "data": b"".join(parts),
                        "pdvs": len(parts)})
    return out


def accepted_transfer_syntaxes(server_stream: bytes) -> dict[int, str]:
    """Presentation context id -> accepted transfer syntax UID, from the A-ASSOCIATE-AC."""
    for _off, ptype, body in split_pdus(server_stream):
        if ptype != 2:
            continue
        out = {}
        pos = 68  # protocol version .. application context, after the fixed fields
        while pos + 4 <= len(body):
            itype, ilen = body[pos], struct.unpack(">H", body[pos + 2:pos + 4])[0]
            item = body[pos + 4:pos + 4 + ilen]
            if itype == 0x21:
                ctx, result = item[0], item[2]
                sub = item[4:]
                if result == 0 and len(sub) >= 4 and sub[0] == 0x40:
                    slen = struct.unpack(">H", sub[2:4])[0]
                    out[ctx] = sub[4:4 + slen].rstrip(b"\0 ").decode("ascii")
            pos += 4 + ilen
        return out
    return {}


def read_dataset_bytes(data: bytes, transfer_syntax: str):
    """Parse a data set (no meta group) as sent on the wire with the given transfer syntax."""
    import io
    from pydicom.filereader import read_dataset
    implicit = transfer_syntax == IMPLICIT_VR_LE
    little = transfer_syntax != "1.2.840.10008.1.2.2"
    return read_dataset(io.BytesIO(data), is_implicit_VR=implicit, is_little_endian=little)


def stored_datasets(client_stream: bytes, server_stream: bytes) -> list:
    """The data sets of the C-STORE requests in one association, parsed with pydicom."""
    ts = accepted_transfer_syntaxes(server_stream)
    return [read_dataset_bytes(m["data"], ts[m["context_id"]])
            for m in pdata_messages(client_stream) if not m["command"]]


def same_instance(a, b) -> bool:
    """Two data sets hold the same object: same SOP instance UID and pixel data."""
    return (str(a.SOPInstanceUID) == str(b.SOPInstanceUID)
            and bytes(a.PixelData) == bytes(b.PixelData))


# --------------------------------------------------------------------------
# the CLI under test
# --------------------------------------------------------------------------

def dicomtrace_cmd() -> list[str]:
    exe = shutil.which("dicomtrace")
    return [exe] if exe else [sys.executable, "-m", "dicomtrace"]


def dicomtrace_available(subcommand: str = "conversations") -> bool:
    """True when `dicomtrace SUBCOMMAND --help` runs (the CLI exists and has it)."""
    try:
        res = run(dicomtrace_cmd() + [subcommand, "--help"], timeout=60, check=False, cwd=REPO_ROOT)
    except LabError:
        return False
    return res.returncode == 0


def run_dicomtrace(*args, input: bytes | None = None, timeout: float = 300,
                   check: bool = True) -> subprocess.CompletedProcess:
    return run(dicomtrace_cmd() + [str(a) for a in args], input=input, timeout=timeout, check=check,
               cwd=REPO_ROOT)


def shared_captures() -> list[Path]:
    if not SHARED_CAPTURES.is_dir():
        return []
    return sorted(p for p in SHARED_CAPTURES.iterdir()
                  if p.is_file() and any(p.name.endswith(s) for s in CAPTURE_SUFFIXES))


# --------------------------------------------------------------------------
# checks of `dicomtrace conversations` against tshark (used by several test files)
# --------------------------------------------------------------------------

DIRECTION_KEYS = ("packets", "bytes", "payload_bytes", "retransmitted_segments", "retransmitted_bytes",
                  "out_of_order_segments", "missing_bytes", "gaps", "duplicate_acks", "zero_window_events",
                  "resets", "mss", "window_scale")
CONNECTION_KEYS = ("id", "client", "server", "oriented_by", "start_time", "end_time", "first_frame",
                   "last_frame", "state", "handshake_rtt", "client_to_server", "server_to_client")


def connection_stream(conn: dict, ref: TsharkReference) -> int:
    """The tshark tcp.stream of a dicomtrace connection (same first frame)."""
    return ref.stream_starting_at(conn["first_frame"])


def check_conversations(doc: dict, ref: TsharkReference, *, fmt: str | None = None,
                        path: str | None = None) -> None:
    """Connections, packets and bytes each way agree with tshark's conv,tcp.

    Also: the document's shape, ids 1..n in order of first packet, each
    connection's first/last frame equal to tshark's tcp.stream, client = SYN
    sender (oriented_by "syn") when the SYN was captured, capture.packets
    equal to capinfos.
    """
    assert doc["tool"]["name"] == "dicomtrace" and doc["tool"]["version"]
    cap = doc["capture"]
    for k in ("path", "format", "packets", "bytes", "first_time", "last_time", "problems"):
        assert k in cap, f"capture.{k} missing"
    if fmt is not None:
        assert cap["format"] == fmt
    if path is not None:
        assert cap["path"] == path
    assert cap["packets"] == int(ref.capinfos["Number of packets"])
    conns = doc["connections"]
    assert len(conns) == len(ref.streams), \
        f"{len(conns)} connections, tshark has {len(ref.streams)} tcp streams"
    assert len(conns) == len(ref.convs), f"{len(conns)} connections, tshark conv,tcp lists {len(ref.convs)}"
    assert [c["id"] for c in conns] == list(range(1, len(conns) + 1))
    firsts = [c["first_frame"] for c in conns]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts), "ids not in order of first packet"
    for c in conns:
        for k in CONNECTION_KEYS:
            assert k in c, f"connection {c.get('id')}: {k} missing"
        for side in ("client_to_server", "server_to_client"):
            for k in DIRECTION_KEYS:
                assert k in c[side], f"connection {c['id']} {side}.{k} missing"
        s = ref.streams[connection_stream(c, ref)]
        client, server = normalize_endpoint(c["client"]), normalize_endpoint(c["server"])
        assert {client, server} == {normalize_endpoint(s["first_src"]), normalize_endpoint(s["first_dst"])}
        assert c["last_frame"] == s["last_frame"], f"connection {c['id']}: last frame"
        if s["syn_client"] is not None:
            assert client == normalize_endpoint(s["syn_client"]), f"connection {c['id']}: client is not the SYN sender"
            assert c["oriented_by"] == "syn"
        else:
            assert c["oriented_by"] in ("port", "first-packet")
        d = conv_directions(ref.conv_for(client, server), client)
        got = {"c2s_packets": c["client_to_server"]["packets"], "c2s_bytes": c["client_to_server"]["bytes"],
               "s2c_packets": c["server_to_client"]["packets"], "s2c_bytes": c["server_to_client"]["bytes"]}
        assert got == d, f"connection {c['id']} {client}->{server}: dicomtrace {got} vs tshark conv,tcp {d}"


def check_dumps(dump_dir, doc: dict, ref: TsharkReference) -> dict[int, tuple[bytes, bytes]]:
    """conn-<id>-client.bin / -server.bin equal tshark's follow,tcp,raw (gap markers removed),
    and missing_bytes/gaps equal tshark's gap reports. Returns {id: (client bytes, server bytes)}."""
    dump_dir = Path(dump_dir)
    out = {}
    for c in doc["connections"]:
        stream = connection_stream(c, ref)
        f = ref.follow(stream)
        client = normalize_endpoint(c["client"])
        if normalize_endpoint(f.node0) == client:
            c2s, s2c, cg, sg = f.data0, f.data1, f.gaps0, f.gaps1
        elif normalize_endpoint(f.node1) == client:
            c2s, s2c, cg, sg = f.data1, f.data0, f.gaps1, f.gaps0
        else:
            raise AssertionError(f"connection {c['id']}: client {client} not in tshark stream {stream}")
        got = []
        for who, want, gaps in (("client", c2s, cg), ("server", s2c, sg)):
            p = dump_dir / f"conn-{c['id']}-{who}.bin"
            data = p.read_bytes() if p.exists() else None
            if data is None:
                assert want == b"", f"{p.name} not written, tshark follow has {len(want)} bytes"
                data = b""
            if data != want:
                i = next((i for i, (x, y) in enumerate(zip(data, want)) if x != y), min(len(data), len(want)))
                raise AssertionError(f"{p.name}: {len(data)} bytes, tshark follow {len(want)}; first difference "
                                     f"at offset {i}")
            side = c["client_to_server" if who == "client" else "server_to_client"]
            assert side["missing_bytes"] == sum(n for _, n in gaps), f"{p.name}: missing_bytes vs tshark {gaps}"
            assert side["gaps"] == len(gaps), f"{p.name}: gaps vs tshark {gaps}"
            got.append(data)
        out[c["id"]] = (got[0], got[1])
    return out


def run_conversations(capture, *, dump_dir=None, stdin: bytes | None = None) -> dict:
    """`dicomtrace conversations CAPTURE --format json [--dump-streams DIR]` -> parsed JSON (exit 0 checked)."""
    args = ["conversations", "-" if stdin is not None else capture, "--format", "json"]
    if dump_dir is not None:
        args += ["--dump-streams", dump_dir]
    res = run_dicomtrace(*args, input=stdin)
    return json.loads(res.stdout)
