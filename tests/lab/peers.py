"""DICOM peers in the background: dcmtk tools and pynetdicom, ended on exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Sequence

from lab.base import LabError, _stop, free_port, netns_prefix, run, skip, wait_listening

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
