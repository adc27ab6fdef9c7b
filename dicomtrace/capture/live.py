"""Live capture: tcpdump writes pcap to a pipe that the ordinary reader consumes.

tcpdump (libpcap) is the capture engine every Linux and macOS system has, kept up to
date by the OS, with BPF filters compiled in the kernel; through a pipe, dicomtrace has
no compiled capture binding and the same reader for files and live traffic.  Why
tcpdump and not a Python binding: docs/capture.md, "Live capture".

The bytes of the pipe can be written to disk at the same time (``-w``, rotating like
``tcpdump -C/-W``): the files hold exactly the records the analysis read, split at record
boundaries.  Kernel and interface drops are the counters tcpdump prints on exit
(libpcap's ``pcap_stats``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

from dicomtrace.capture.frames import CaptureError
from dicomtrace.capture.reader import CHUNK_SIZE, PcapReader, _peek_source, _Source

PCAP_HEADER = 24
RECORD_HEADER = 16
START_TIMEOUT = 15.0
BLOCK_TIMEOUT = 1.2  # tcpdump's packet buffer timeout (1000 ms) and a margin


@dataclass
class CaptureStats:
    """pcap_stats as tcpdump reports them when it exits (None: not reported)."""

    captured: int | None = None
    received: int | None = None  # by the filter
    dropped_kernel: int | None = None
    dropped_interface: int | None = None

    @property
    def dropped(self) -> int:
        return (self.dropped_kernel or 0) + (self.dropped_interface or 0)

    def to_json(self) -> dict:
        return {"captured": self.captured, "received_by_filter": self.received,
                "dropped_by_kernel": self.dropped_kernel,
                "dropped_by_interface": self.dropped_interface}


STAT_LINES = {"captured": r"(\d+) packets? captured", "received": r"(\d+) packets? received by filter",
              "dropped_kernel": r"(\d+) packets? dropped by kernel",
              "dropped_interface": r"(\d+) packets? dropped by interface"}


def parse_stats(text: str) -> CaptureStats:
    """The last counters in tcpdump's standard error (it prints them on exit, and on SIGUSR1
    while it runs)."""
    st = CaptureStats()
    for name, pattern in STAT_LINES.items():
        found = re.findall(pattern, text)
        if found:
            setattr(st, name, int(found[-1]))
    return st


def explain_failure(interface: str, stderr: str, bpf: str = "") -> str:
    """tcpdump's complaint as one line that says what to do."""
    low = stderr.lower()
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()),
                "tcpdump produced no data")
    if "no such device" in low or "doesn't exist" in low or "no such interface" in low:
        return (f"no interface {interface!r}: list the interfaces with `ip link` "
                "(or `tcpdump -D`) and give one with -i")
    if "permission" in low or "operation not permitted" in low:
        return (f"no permission to capture on {interface}: run as root, or give tcpdump the "
                "right once: sudo setcap cap_net_raw,cap_net_admin=eip $(command -v tcpdump)")
    if bpf and "listening on" not in low:  # tcpdump compiles the filter before it listens
        return f"the capture filter {bpf!r} was rejected: {last.removeprefix('tcpdump: ')}"
    return f"live capture on {interface} failed: {last.removeprefix('tcpdump: ')}"


class RingWriter:
    """Writes the pcap byte stream to FILE, or to FILE0, FILE1, ... of at most ``size`` bytes
    each, reusing the oldest after ``files`` like ``tcpdump -C SIZE -W FILES``.  Splits only
    at record boundaries and repeats the global header in each file, so every file is a valid
    capture and the files in order hold each record exactly once."""

    def __init__(self, path: str, size: int | None = None, files: int | None = None):
        self.path = path
        self.size = size
        self.files = files or 0
        self.header = b""
        self.pending = b""
        self.endian = "<"
        self.index = 0
        self.rotations = 0
        self.written: list[str] = []
        self.f = None
        self.records = 0

    def name(self, i: int) -> str:
        if self.size is None:
            return self.path
        width = len(str(self.files - 1)) if self.files > 1 else 1
        return f"{self.path}{i:0{width}d}"

    def _open(self) -> None:
        name = self.name(self.index)
        self.f = open(name, "wb")
        self.f.write(self.header)
        self.f_size = len(self.header)
        if name not in self.written:
            self.written.append(name)

    def feed(self, data: bytes) -> None:
        buf = self.pending + bytes(data)
        pos = 0
        if not self.header:
            if len(buf) < PCAP_HEADER:
                self.pending = buf
                return
            self.header = buf[:PCAP_HEADER]
            self.endian = "<" if self.header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            pos = PCAP_HEADER
            self._open()
        cap = struct.Struct(self.endian + "I")
        out = []
        while pos + RECORD_HEADER <= len(buf):
            stop = pos + RECORD_HEADER + cap.unpack_from(buf, pos + 8)[0]
            if stop > len(buf):
                break
            rec = buf[pos:stop]
            if self.size is not None and self.f_size + len(rec) > self.size and \
                    self.f_size > len(self.header):
                self.f.write(b"".join(out))
                out = []
                self._rotate()
            out.append(rec)
            self.f_size += len(rec)
            self.records += 1
            pos = stop
        if out:
            self.f.write(b"".join(out))
            self.f.flush()  # a valid capture file at every moment
        self.pending = buf[pos:]

    def _rotate(self) -> None:
        self.f.close()
        self.rotations += 1
        self.index = self.index + 1
        if self.files:
            self.index %= self.files
        self._open()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


class _TeeSource(_Source):
    """The pipe's bytes, also handed to a RingWriter as they are read."""

    def __init__(self, src: _Source, writer: RingWriter):
        self._src = src
        self.writer = writer

    def read(self, n: int) -> bytes:
        data = self._src.read(n)
        if data:
            self.writer.feed(data)
        return data

    def readinto(self, view: memoryview) -> int:
        n = self._src.readinto(view)
        if n:
            self.writer.feed(view[:n])
        return n

    def close(self) -> None:
        self._src.close()


PIPE_SIZE = 1 << 20


def _widen_pipe(pipe) -> None:
    """A 1 MiB pipe instead of 64 KiB: tcpdump writes each packet at once (-U), and while
    Python is busy a small pipe fills, tcpdump blocks and the kernel drops (measured:
    docs/capture.md, "Live capture")."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe


class LiveCapture:
    """``with LiveCapture("eth0", "port 104") as reader: ...`` — tcpdump until the count,
    the duration, :meth:`stop` or the pipe's end; then :attr:`stats` holds its counters."""

    def __init__(self, interface: str, bpf: str = "", *, count: int | None = None,
                 duration: float | None = None, snaplen: int = 0, buffer_kib: int = 32768,
                 write: RingWriter | None = None, immediate: bool = False):
        self.interface = interface
        self.bpf = bpf
        self.count = count
        self.duration = duration
        self.snaplen = snaplen
        self.buffer_kib = buffer_kib
        self.writer = write
        self.immediate = immediate
        self.proc: subprocess.Popen | None = None
        self.stats = CaptureStats()
        self._stderr: list[str] = []
        self._listening = threading.Event()
        self._stderr_done = threading.Event()
        self._timer: threading.Timer | None = None
        self._stopping = threading.Event()

    def command(self) -> list[str]:
        tcpdump = shutil.which("tcpdump") or "/usr/sbin/tcpdump"
        if not os.access(tcpdump, os.X_OK):
            raise CaptureError("tcpdump is not installed: install it (e.g. apt-get install "
                               "tcpdump) for live capture")
        cmd = [tcpdump, "-i", self.interface, "-U", "-n", "-s", str(self.snaplen),
               "-B", str(self.buffer_kib), "-w", "-"]
        if self.immediate:
            cmd.insert(3, "--immediate-mode")
        if self.count:
            cmd += ["-c", str(self.count)]
        if self.bpf:
            cmd.append(self.bpf)
        return cmd

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self._stderr.append(line)
            if "listening on" in line:
                self._listening.set()
        self._stderr_done.set()
        self._listening.set()

    def __enter__(self) -> PcapReader:
        try:
            # its own session: a terminal's Ctrl-C reaches us, and we stop tcpdump cleanly
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as e:
            raise CaptureError(f"cannot start tcpdump for live capture: {e}") from None
        _widen_pipe(self.proc.stdout)
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._listening.wait(START_TIMEOUT)
        if self.duration:
            self._timer = threading.Timer(self.duration, self.stop)
            self._timer.daemon = True
            self._timer.start()
        head, src = _peek_source(self.proc.stdout, 4)
        if len(head) < 4:
            self.proc.wait()
            self._stderr_done.wait(5)
            if self._timer is not None:
                self._timer.cancel()
            text = "".join(self._stderr)
            if "listening on" in text:  # stopped before any packet: an empty capture
                raise CaptureError(f"live capture on {self.interface} ended before any packet "
                                   "arrived")
            raise CaptureError(explain_failure(self.interface, text, self.bpf))
        if self.writer is not None:
            src = _TeeSource(src, self.writer)
        reader = PcapReader(src, f"live:{self.interface}", head, CHUNK_SIZE // 16, False)
        reader.format = "live"
        return reader

    def request_stats(self) -> None:
        """Ask tcpdump for its counters now (SIGUSR1); :meth:`current_stats` has them when
        its answer has arrived on standard error."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)
            except (ProcessLookupError, PermissionError):
                pass

    def current_stats(self) -> CaptureStats:
        return parse_stats("".join(self._stderr[-20:]))

    def stop(self) -> None:
        """Ask tcpdump to finish (from any thread or a signal handler; returns at once).

        libpcap hands packets over in blocks (TPACKET_V3) that the kernel retires when full
        or after tcpdump's timeout of 1 s; a block not yet retired when tcpdump gets SIGINT is
        lost.  So: wait out the block timeout, then SIGINT; tcpdump writes what it has,
        prints its counters and closes the pipe."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        threading.Thread(target=self._stop_after_block, daemon=True).start()

    def _stop_after_block(self) -> None:
        if not self.immediate:
            time.sleep(BLOCK_TIMEOUT)
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.proc is None:
            return
        self.stop()
        try:
            self.proc.wait(timeout=10 + BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr_done.wait(5)
        self.stats = parse_stats("".join(self._stderr))
        if self.writer is not None:
            self.writer.close()
