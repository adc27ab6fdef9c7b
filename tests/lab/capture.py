"""Captures (tcpdump, dumpcap) and capture-file conversions (editcap and hand-made)."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Sequence

from lab.base import LabError, _stop, netns_prefix, run, skip, wait_for

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
