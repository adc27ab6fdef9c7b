"""Live capture: tcpdump writes pcap to a pipe that the ordinary reader consumes.

tcpdump (libpcap) is the capture engine every Linux and macOS system has, kept
up to date by the OS, with BPF filters compiled in the kernel; using it through a
pipe keeps dicomtrace free of compiled capture bindings and the reader identical
for files and live traffic.
"""

from __future__ import annotations

import shutil
import subprocess

from dicomtrace.capture.frames import CaptureError
from dicomtrace.capture.reader import CHUNK_SIZE, CaptureReader, PcapReader, _peek_source


class LiveCapture:
    """``with LiveCapture("eth0", "port 104") as reader: ...`` — stops tcpdump on exit."""

    def __init__(self, interface: str, bpf: str = "", *, count: int | None = None,
                 duration: float | None = None, snaplen: int = 0):
        self.interface = interface
        self.bpf = bpf
        self.count = count
        self.duration = duration
        self.snaplen = snaplen
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        tcpdump = shutil.which("tcpdump") or "/usr/sbin/tcpdump"
        cmd = [tcpdump, "-i", self.interface, "-U", "--immediate-mode", "-s", str(self.snaplen),
               "-w", "-"]
        if self.count:
            cmd += ["-c", str(self.count)]
        if self.duration:
            cmd = ["timeout", "-s", "INT", str(self.duration)] + cmd
        if self.bpf:
            cmd.append(self.bpf)
        return cmd

    def __enter__(self) -> CaptureReader:
        try:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise CaptureError(f"cannot start tcpdump for live capture: {e}") from None
        head, src = _peek_source(self.proc.stdout, 4)
        if len(head) < 4:
            err = self.proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
            self.proc.wait()
            raise CaptureError(f"live capture on {self.interface} failed: "
                               + (err[-1] if err else "tcpdump produced no data"))
        reader = PcapReader(src, f"live:{self.interface}", head, CHUNK_SIZE // 16, False)
        reader.format = "live"
        return reader

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
