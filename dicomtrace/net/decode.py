"""Link layer, IPv4/IPv6 and TCP header decoding over a whole batch at once.

The fixed-offset fields of every frame are gathered with numpy fancy indexing
(one vector operation per field for the whole batch); only the rare frames that
need a walk (IPv6 extension headers, SYN options) get per-frame Python.  The
payload is never copied: a segment is an (offset, length) into the batch's
buffer.

Link types (https://www.tcpdump.org/linktypes.html): 0 BSD null, 1 Ethernet
(802.1Q / 802.1ad tags), 12/14/101/228/229 raw IP, 108 OpenBSD loopback,
113 Linux cooked v1, 276 Linux cooked v2.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

import numpy as np

from dicomtrace.capture.frames import FrameBatch

V6_FLAG = 1 << 128  # marks an IPv6 address in the integer representation

LINK_NULL, LINK_ETHERNET, LINK_LOOP = 0, 1, 108
LINK_SLL, LINK_SLL2 = 113, 276
LINK_RAW = {12, 14, 101, 228, 229}
LINK_NAMES = {0: "BSD loopback", 1: "Ethernet", 12: "raw IP", 14: "raw IP", 101: "raw IP",
              108: "OpenBSD loopback", 113: "Linux cooked v1", 228: "raw IPv4", 229: "raw IPv6",
              276: "Linux cooked v2"}
SUPPORTED_LINKS = set(LINK_NAMES)
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
IPV6_EXT = {0, 43, 60, 135, 139, 140}

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def format_ip(addr: int) -> str:
    """Text form of an address from :func:`decode_batch` (IPv6 carries V6_FLAG)."""
    if addr & V6_FLAG:
        return str(ipaddress.IPv6Address(addr ^ V6_FLAG))
    return str(ipaddress.IPv4Address(addr))


SEGMENT_FIELDS = ("frame", "time", "src", "dst", "sport", "dport", "seq", "ack", "flags", "window",
                  "poff", "plen", "missing", "wirelen")


@dataclass(slots=True)
class Segments:
    """TCP segments of one batch, as parallel numpy arrays (struct of arrays).

    Addresses are integers (int64; an object array of Python ints when the batch holds IPv6,
    whose addresses carry :data:`V6_FLAG`); the payload of segment ``i`` is
    ``data[poff[i]:poff[i] + plen[i]]``; ``missing[i]`` counts payload bytes the frame
    claimed but the capture cut (snap length).  The TCP stage classifies whole runs of
    segments with vector operations over these arrays and walks the rest one by one
    (:meth:`columns` gives Python lists of a range for that).
    """

    data: bytes
    frame: np.ndarray
    time: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    seq: np.ndarray
    ack: np.ndarray
    flags: np.ndarray
    window: np.ndarray
    poff: np.ndarray
    plen: np.ndarray
    missing: np.ndarray
    wirelen: np.ndarray
    syn_options: dict[int, tuple[int | None, int | None]]  # index -> (MSS, window scale)
    toff: np.ndarray | None = None  # offset of each TCP header in data (options: toff+20..poff)
    noff: np.ndarray | None = None  # offset of each IP header in data (IPv4 identification: noff+4)
    view: memoryview | None = None  # of data, made once: payload views are slices of it

    def __post_init__(self) -> None:
        if self.view is None:
            self.view = memoryview(self.data)

    def __len__(self) -> int:
        return len(self.frame)

    def columns(self, start: int = 0, stop: int | None = None) -> list[list]:
        """Python lists of every field (in SEGMENT_FIELDS order) for segments [start, stop)."""
        return [getattr(self, f)[start:stop].tolist() for f in SEGMENT_FIELDS]

    def subset(self, keep) -> "Segments":
        """Only the segments at the indexes in ``keep`` (in order)."""
        if len(keep) == len(self.frame):
            return self
        keep = np.asarray(keep, dtype=np.int64)
        where = {old: new for new, old in enumerate(keep.tolist())}
        return Segments(self.data, *(getattr(self, f)[keep] for f in SEGMENT_FIELDS),
                        {where[i]: v for i, v in self.syn_options.items() if i in where},
                        None if self.toff is None else self.toff[keep],
                        None if self.noff is None else self.noff[keep])


@dataclass
class NetStats:
    """What the network stage saw besides TCP segments."""

    frames: int = 0
    bytes: int = 0
    tcp_segments: int = 0
    non_ip: int = 0
    non_tcp: int = 0
    ipv4_fragments: int = 0
    first_fragment_frame: int | None = None
    malformed: int = 0
    first_malformed_frame: int | None = None
    unsupported_links: dict[int, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        for lt, count in sorted(self.unsupported_links.items()):
            out.append(f"{count} frames of unsupported link type {lt} were skipped")
        if self.ipv4_fragments:
            out.append(f"{self.ipv4_fragments} IPv4 fragments (first in frame "
                       f"{self.first_fragment_frame}) were not reassembled")
        if self.malformed:
            out.append(f"{self.malformed} frames had malformed IP/TCP headers (first: frame "
                       f"{self.first_malformed_frame}) and were skipped")
        return out


def _u8(b: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return b[idx].astype(np.int64)


def _be16(b: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return (b[idx].astype(np.int64) << 8) | b[idx + 1]


class _HeaderBlock:
    """The first 20 bytes of a header (IPv4's, TCP's) of every frame, gathered at once into
    an (n, 20) array, read as bytes and as big-endian 16- and 32-bit words (every field
    decoded here is aligned so in both headers: RFC 791 3.1, RFC 9293 3.1).  One gather
    instead of one to four per field."""

    __slots__ = ("u8", "u16", "u32")

    def __init__(self, block: np.ndarray):
        self.u8 = block
        self.u16 = block.view(">u2")
        self.u32 = block.view(">u4")

    def rows(self, keep: np.ndarray) -> "_HeaderBlock":
        return _HeaderBlock(self.u8[keep])


def _link_layer(b, off, cap, lt, stats: NetStats, frames0: int):
    """Network-layer offset and ethertype of every frame (-1 where none)."""
    n = len(off)
    l3 = np.full(n, -1, dtype=np.int64)
    et = np.zeros(n, dtype=np.int64)
    kinds = np.unique(lt, return_counts=True)[0]  # (counts: numpy 2's plain unique imports numpy.ma)
    for kind in kinds.tolist():
        m = np.ones(n, dtype=bool) if len(kinds) == 1 else lt == kind
        if kind == LINK_ETHERNET:
            m &= cap >= 14
            o = off[m]
            t = _be16(b, o + 12)
            p = o + 14
            for _ in range(3):  # 802.1Q / 802.1ad, up to three tags
                v = (t == 0x8100) | (t == 0x88A8) | (t == 0x9100)
                if not v.any():
                    break
                t[v] = _be16(b, p[v] + 2)
                p[v] += 4
            et[m], l3[m] = t, p
        elif kind == LINK_SLL:
            m &= cap >= 16
            et[m], l3[m] = _be16(b, off[m] + 14), off[m] + 16
        elif kind == LINK_SLL2:
            m &= cap >= 20
            et[m], l3[m] = _be16(b, off[m]), off[m] + 20
        elif kind in LINK_RAW or kind in (LINK_NULL, LINK_LOOP):
            skip = 0 if kind in LINK_RAW else 4
            m &= cap >= skip + 1
            p = off[m] + skip
            ver = _u8(b, p) >> 4
            et[m] = np.where(ver == 4, 0x0800, np.where(ver == 6, 0x86DD, 0))
            l3[m] = p
        else:
            count = int(m.sum())
            stats.unsupported_links[kind] = stats.unsupported_links.get(kind, 0) + count
    return l3, et


def _ipv6_walk(data: bytes, l3: int, end: int):
    """Follow IPv6 extension headers: (upper protocol, its offset, is_fragment)."""
    nh = data[l3 + 6]
    p = l3 + 40
    frag = False
    while nh in IPV6_EXT or nh in (44, 51):
        if p + 8 > end:
            return None, p, frag
        if nh == 44:
            fo = struct.unpack_from(">H", data, p + 2)[0]
            if fo & 0xFFF9:
                frag = True
            nh, p = data[p], p + 8
        elif nh == 51:
            nh, p = data[p], p + (data[p + 1] + 2) * 4
        else:
            nh, p = data[p], p + (data[p + 1] + 1) * 8
    return nh, p, frag


def _syn_options(data: bytes, start: int, stop: int) -> tuple[int | None, int | None]:
    mss = ws = None
    p = start
    while p < stop:
        kind = data[p]
        if kind == 0:
            break
        if kind == 1:
            p += 1
            continue
        if p + 1 >= stop:
            break
        ln = data[p + 1]
        if ln < 2 or p + ln > stop:
            break
        if kind == 2 and ln == 4:
            mss = struct.unpack_from(">H", data, p + 2)[0]
        elif kind == 3 and ln == 3:
            ws = data[p + 2]
        p += ln
    return mss, ws


def decode_batch(batch: FrameBatch, stats: NetStats) -> Segments:
    """Decode the TCP segments of a batch; count everything else in ``stats``.

    Bulk traffic (Ethernet, IPv4 without options, TCP) is read from one gather of each
    frame's first 54 bytes (:func:`_plain_ethernet`); the frames that are anything else go
    the general way (:func:`_decode_frames`), which gives the same for the plain ones."""
    n = len(batch)
    stats.frames += n
    stats.bytes += int(batch.origlens.sum())
    if n:
        segs = _plain_ethernet(batch, stats)
        if segs is not None:
            return segs
    return _decode_frames(batch, stats)


# The first 54 bytes of a frame of bulk traffic, by name: Ethernet II (the type at byte 12),
# IPv4 without options (RFC 791 3.1) from byte 14, TCP's fixed header (RFC 9293 3.1) from
# byte 34.  "l2": the type, version and IHL, TOS; "frag": flags and fragment offset, TTL,
# protocol; "hl": data offset, reserved, NS (RFC 3540) and the eight flags.
PLAIN_ROW = np.dtype({
    "names": ["l2", "tot", "frag", "src", "dst", "sport", "dport", "seq", "ack", "hl", "window"],
    "formats": [">u4", ">u2", ">u4", ">u4", ">u4", ">u2", ">u2", ">u4", ">u4", ">u2", ">u2"],
    "offsets": [12, 16, 20, 26, 30, 34, 36, 38, 42, 46, 48],
    "itemsize": 54})
# what "l2" and "frag" hold, masked, in a plain frame: the type IPv4, version 4 and a
# 20-byte header; neither More Fragments nor a fragment offset, protocol TCP
L2_MASK, L2_PLAIN = 0xFFFFFF00, 0x08004500
FRAG_MASK, FRAG_PLAIN = 0x3FFF00FF, 0x00000006
PLAIN_SHARE = 4  # when fewer than 1/PLAIN_SHARE of its frames are plain a batch goes the general way whole


def _plain_ethernet(batch: FrameBatch, stats: NetStats) -> Segments | None:
    """The segments of a batch whose frames are mostly plain (Ethernet, IPv4 without options
    or fragmentation, TCP with a whole 20-byte header), or None to have the whole batch
    decoded the general way.  Every field comes from one gather of :data:`PLAIN_ROW` rows
    (fewer numpy calls per field than the general way, and each frame's header bytes are
    brought into the cache once); the frames that are not plain (another link type, a VLAN
    tag, IPv6, IP options, a fragment, not TCP, cut short, a malformed TCP header) are
    decoded the general way and put in their place."""
    data = batch.data
    n = len(batch)
    off = batch.offsets
    cap = batch.caplens
    lt = batch.linktypes
    size = PLAIN_ROW.itemsize
    top = len(data) - size  # the last offset a row can be gathered from
    if top < 0 or not (lt[0] == LINK_ETHERNET or (lt == LINK_ETHERNET).any()):
        return None
    short = cap < size
    cut = short.any()
    # the buffer as 54-byte rows at every byte offset: the gather copies whole rows as
    # opaque bytes (a memcpy each; a gather of the structured type itself is 15 times
    # slower), then they are read by name
    rows = np.ndarray((top + 1,), f"V{size}", data, 0, (1,))
    h = rows[np.minimum(off, top) if cut else off].view(PLAIN_ROW)
    fend = off + cap
    noff = off + 14
    toff = off + 34
    tot = h["tot"].astype(np.int64)
    ipend = np.where(tot == 0, fend, noff + tot)  # TSO: length 0 on the wire copy
    hl = h["hl"]
    doff = (hl >> 12).astype(np.int64) << 2
    poff = toff + doff
    declared = ipend - poff
    ok = ((h["l2"] & L2_MASK) == L2_PLAIN) & ((h["frag"] & FRAG_MASK) == FRAG_PLAIN) \
        & (doff >= 20) & (declared >= 0)
    if cut or not ok.all() or not (lt[-1] == LINK_ETHERNET and (lt == LINK_ETHERNET).all()):
        ok &= ~short & (lt == LINK_ETHERNET)
        others = np.flatnonzero(~ok)
        if len(others) * PLAIN_SHARE > n * (PLAIN_SHARE - 1):
            return None
    else:
        ok = None
    captured = np.minimum(ipend, fend) - poff
    np.maximum(captured, 0, out=captured)
    segs = Segments(
        data=data,
        frame=np.arange(batch.first_frame, batch.first_frame + n, dtype=np.int64),
        time=batch.times,
        src=h["src"].astype(np.int64),
        dst=h["dst"].astype(np.int64),
        sport=h["sport"].astype(np.int64),
        dport=h["dport"].astype(np.int64),
        seq=h["seq"].astype(np.int64),
        ack=h["ack"].astype(np.int64),
        flags=(hl & 0x01FF).astype(np.int64),
        window=h["window"].astype(np.int64),
        poff=poff,
        plen=captured,
        missing=declared - captured,
        wirelen=batch.origlens,
        syn_options={},
        toff=toff,
        noff=noff,
    )
    if ok is None:
        stats.tcp_segments += n
    else:
        segs = _with_others(segs, batch, stats, ok, others)
        fend = fend[segs.frame - batch.first_frame]
    for k in np.flatnonzero(segs.flags & TCP_SYN).tolist():
        if k not in segs.syn_options:
            t = int(segs.toff[k])
            segs.syn_options[k] = _syn_options(data, t + 20, min(int(segs.poff[k]), int(fend[k])))
    return segs


def _with_others(segs: Segments, batch: FrameBatch, stats: NetStats, ok: np.ndarray,
                 others: np.ndarray) -> Segments:
    """``segs``, read as if every frame of ``batch`` were plain, with the frames at
    ``others`` (those that are not: ``ok`` False) decoded the general way instead: their
    segments in their place, the frames that hold none left out."""
    sub = FrameBatch(batch.data, batch.offsets[others], batch.caplens[others],
                     batch.origlens[others], batch.times[others], batch.linktypes[others],
                     batch.first_frame)
    them = _decode_frames(sub, stats, frames=others + batch.first_frame)
    stats.tcp_segments += len(segs) - len(others)
    at = them.frame - batch.first_frame  # where their segments go
    keep = ok.copy()
    keep[at] = True
    cols = {}
    for f in SEGMENT_FIELDS[1:] + ("toff", "noff"):
        col = getattr(segs, f)
        if f == "time" or f == "wirelen":
            col = col.copy()  # (the batch's own arrays)
        new = getattr(them, f)
        if new.dtype == object:  # IPv6 addresses
            col = col.astype(object)
        col[at] = new
        cols[f] = col[keep]
    pos = np.cumsum(keep) - 1  # a frame's place among the segments kept
    syn = {int(pos[at[i]]): v for i, v in them.syn_options.items()}
    return Segments(segs.data, segs.frame[keep], **cols, syn_options=syn)


def _decode_frames(batch: FrameBatch, stats: NetStats, frames: np.ndarray | None = None) -> Segments:
    """The general way: every link type, VLAN tags, IPv4 with options and fragments, IPv6
    with extension headers, malformed headers.  ``frames``: the frame number of each frame
    of the batch (default: consecutive from ``batch.first_frame``); counts everything but
    frames and bytes in ``stats``."""
    data = batch.data
    n = len(batch)
    if frames is None:
        frames = np.arange(batch.first_frame, batch.first_frame + n, dtype=np.int64)
    b = np.frombuffer(data, dtype=np.uint8)
    off = batch.offsets
    cap = batch.caplens
    fend = off + cap
    limit = len(b)
    if n and int(fend[-1]) + 80 > limit:
        # pad (a copy of the buffer) only when the last frame ends near the buffer's end, so
        # that gathers a few bytes past a truncated last frame stay in bounds; otherwise the
        # bytes after the frames already make room, and offsets past the frames are clamped
        b = np.concatenate([b, np.zeros(80, dtype=np.uint8)])
    else:
        limit -= 80
    l3, et = _link_layer(b, np.minimum(off, limit), cap, batch.linktypes, stats, batch.first_frame)
    # the buffer as overlapping 20-byte rows, so that a header gather copies whole rows
    # (twice as fast as a 2-D index of the bytes)
    rows = np.lib.stride_tricks.sliding_window_view(b, 20)
    is4 = (et == 0x0800) & (l3 >= 0) & (l3 + 20 <= fend)
    is6 = (et == 0x86DD) & (l3 >= 0) & (l3 + 40 <= fend)
    stats.non_ip += int(n - is4.sum() - is6.sum())

    l4 = np.full(n, -1, dtype=np.int64)
    ipend = np.zeros(n, dtype=np.int64)
    proto = np.zeros(n, dtype=np.int64)
    src = np.zeros(n, dtype=object) if is6.any() else np.zeros(n, dtype=np.int64)
    dst = np.zeros(n, dtype=src.dtype)
    bad = np.zeros(n, dtype=bool)

    if is4.any():
        p = np.minimum(l3[is4], limit)
        h4 = _HeaderBlock(rows[p])
        ver = h4.u8[:, 0] >> 4
        ihl = (h4.u8[:, 0] & 15) * 4
        tot = h4.u16[:, 1].astype(np.int64)
        frag = (h4.u16[:, 3] & 0x3FFF) != 0
        pr = h4.u8[:, 9].astype(np.int64)
        tot = np.where(tot == 0, fend[is4] - p, tot)  # TSO: length 0 on the wire copy
        malformed = (ver != 4) | (ihl < 20) | (tot < ihl)
        l4[is4] = np.where(malformed | frag, -1, p + ihl)
        ipend[is4] = p + tot
        proto[is4] = np.where(frag, -1, pr)
        src[is4] = h4.u32[:, 3].astype(np.int64)
        dst[is4] = h4.u32[:, 4].astype(np.int64)
        bad[is4] = malformed
        nfrag = int((frag & (pr == 6)).sum())
        if nfrag:
            if stats.first_fragment_frame is None:
                stats.first_fragment_frame = int(frames[np.flatnonzero(is4)[np.flatnonzero(frag & (pr == 6))[0]]])
            stats.ipv4_fragments += nfrag
    if is6.any():
        for i in np.flatnonzero(is6).tolist():
            p = int(l3[i])
            plen = struct.unpack_from(">H", data, p + 4)[0]
            end = p + 40 + plen if plen else int(fend[i])
            nh, up, frag = (data[p + 6], p + 40, False)
            if nh != 6:
                nh, up, frag = _ipv6_walk(data, p, min(end, int(fend[i])))
            if frag:
                stats.ipv4_fragments += 1  # counted together: "IP fragments"
                if stats.first_fragment_frame is None:
                    stats.first_fragment_frame = int(frames[i])
                continue
            proto[i] = nh if nh is not None else -1
            l4[i] = up
            ipend[i] = end
            src[i] = int.from_bytes(data[p + 8:p + 24], "big") | V6_FLAG
            dst[i] = int.from_bytes(data[p + 24:p + 40], "big") | V6_FLAG

    tcp = (proto == 6) & (l4 >= 0)
    stats.non_tcp += int((is4 | is6).sum() - tcp.sum())
    idx = np.flatnonzero(tcp)
    q = np.minimum(l4[idx], limit)
    short = q + 20 > fend[idx]
    th = _HeaderBlock(rows[q])
    doff = (th.u8[:, 12] >> 4).astype(np.int64) * 4
    pstart = q + doff
    dend = ipend[idx]
    declared = dend - pstart
    malformed = short | (doff < 20) | (declared < 0) | bad[idx]
    if malformed.any():
        stats.malformed += int(malformed.sum())
        if stats.first_malformed_frame is None:
            stats.first_malformed_frame = int(frames[idx[np.flatnonzero(malformed)[0]]])
        keep = ~malformed
        idx, q, doff, pstart, dend, declared = (idx[keep], q[keep], doff[keep], pstart[keep],
                                                dend[keep], declared[keep])
        th = th.rows(keep)
    captured = np.clip(np.minimum(dend, fend[idx]) - pstart, 0, None)
    flags = th.u8[:, 13].astype(np.int64) | ((th.u8[:, 12].astype(np.int64) & 1) << 8)
    stats.tcp_segments += len(idx)

    syn_opts = {}
    for k in np.flatnonzero(flags & TCP_SYN).tolist():
        qq = int(q[k])
        syn_opts[k] = _syn_options(data, qq + 20, min(qq + int(doff[k]), int(fend[idx[k]])))

    return Segments(
        data=data,
        frame=frames[idx],
        time=batch.times[idx],
        src=src[idx],
        dst=dst[idx],
        sport=th.u16[:, 0].astype(np.int64),
        dport=th.u16[:, 1].astype(np.int64),
        seq=th.u32[:, 1].astype(np.int64),
        ack=th.u32[:, 2].astype(np.int64),
        flags=flags,
        window=th.u16[:, 7].astype(np.int64),
        poff=pstart,
        plen=captured,
        missing=declared - captured,
        wirelen=batch.origlens[idx],
        syn_options=syn_opts,
        toff=q,
        noff=l3[idx],
    )
