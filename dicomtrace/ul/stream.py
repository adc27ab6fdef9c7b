"""Streaming Upper Layer parser for one direction of a connection (sans-I/O).

:class:`PduStream` is fed the reassembled bytes of one direction (and gap
markers) and returns events.  Control PDUs are collected whole and decoded;
P-DATA-TF PDUs are streamed: each PDV's value is handed on in the pieces it
arrived in (views, never copies), so a 2 GB object costs no memory here.

A gap inside a PDV value keeps the parser in step (the lengths say where the
next header is); a gap over a header, garbage, or a capture that starts in the
middle of a PDU switches to scanning for the next plausible PDU header
(PS3.8 9.3.1 header layout) and reports how much was skipped.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, islice

import numpy as np

from dicomtrace.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
    AbortPdu,
    AssociatePdu,
    AssociateRjPdu,
    ReleasePdu,
    PDU_NAMES,
    Violation,
    decode_associate,
    decode_control,
)

MAX_CONTROL_PDU = 1 << 20  # an association PDU larger than this is not believed
MAX_PDATA_PDU = 1 << 28
SCAN_KEEP = 1 << 16

ST_HEADER, ST_BODY, ST_PDV_HEADER, ST_PDV_VALUE, ST_SKIP, ST_SCAN = range(6)

_CANDIDATE = re.compile(rb"[\x01-\x07]\x00")


@dataclass(slots=True, frozen=True)
class PduHeader:
    """A PDU header was read (every PDU type)."""

    pdu_type: int
    length: int
    offset: int
    frame: int
    time: float


@dataclass(slots=True, frozen=True)
class ControlPdu:
    """A whole non-P-DATA PDU, decoded (``pdu`` is from :mod:`dicomtrace.ul.pdu`)."""

    pdu_type: int
    pdu: AssociatePdu | AssociateRjPdu | ReleasePdu | AbortPdu
    length: int
    offset: int
    first_frame: int
    frame: int  # the frame that completed it
    start_time: float
    time: float


@dataclass(slots=True, frozen=True)
class Pdv:
    """A presentation data value item header (PS3.8 9.3.5.1, annex E.2)."""

    context_id: int
    control: int  # message control header: bit 0 command, bit 1 last fragment
    length: int  # value length (item length - 2)
    offset: int
    frame: int
    time: float

    @property
    def is_command(self) -> bool:
        return bool(self.control & 1)

    @property
    def is_last(self) -> bool:
        return bool(self.control & 2)


class PdvChunk:
    """Part of a PDV's value, as the pieces it arrived in (views, never copies).

    ``pieces`` is None when these ``size`` bytes were never captured.  Pieces that
    arrive in one call for the same PDV are merged into one chunk; ``first`` and
    ``last`` say whether it holds the start and the end of the PDV's value, and
    ``frame``/``time`` are those of its last piece.
    """

    __slots__ = ("pdv", "pieces", "size", "first", "last", "frame", "time")

    def __init__(self, pdv: Pdv, data, size: int, first: bool, last: bool, frame: int,
                 time: float):
        self.pdv = pdv
        self.pieces = None if data is None else [data]
        self.size = size
        self.first = first
        self.last = last
        self.frame = frame
        self.time = time

    @property
    def data(self) -> bytes | None:
        return None if self.pieces is None else b"".join(self.pieces)

    def __repr__(self) -> str:
        return (f"PdvChunk(context={self.pdv.context_id}, control={self.pdv.control}, "
                f"size={self.size}, first={self.first}, last={self.last}, "
                f"lost={self.pieces is None})")


@dataclass(slots=True, frozen=True)
class SyncLost:
    """The parser lost its place (a gap over a header, or a header that makes no sense).
    ``lost``: bytes of the stream it will not parse before the next header it finds (the
    gap, or the rest of a P-DATA-TF whose PDV structure is lost); a :class:`Resync` then
    counts what the scan skipped."""

    offset: int
    frame: int
    time: float
    lost: int = 0


@dataclass(slots=True, frozen=True)
class Resync:
    """A plausible PDU header was found after ``skipped`` unparseable bytes."""

    offset: int
    skipped: int
    frame: int
    time: float


@dataclass(slots=True, frozen=True)
class PduCut:
    """The stream ended inside a PDU (PS3.8 9.3.1): ``pdu_type`` (None when only part of a
    header arrived) began at ``offset`` and ``missing`` of its bytes never came."""

    pdu_type: int | None
    offset: int
    missing: int
    frame: int
    time: float


class _Pieces:
    """Consecutive pieces of a stream as a list of views; ``cum[i]`` is where piece ``i``
    begins (``cum[-1]``: where the last one ends), counted from the first piece's start."""

    __slots__ = ("pieces", "cum")

    def __init__(self, pieces):
        self.pieces = pieces
        self.cum = [0, *accumulate(map(len, pieces))]

    def view(self, i: int, lo: int = 0, hi: int | None = None):
        p = self.pieces[i]
        return p if not lo and hi is None else p[lo:hi]

    def many(self, a: int, b: int) -> list:
        return self.pieces[a:b]

    def unpack(self, st: struct.Struct, i: int, off: int):
        return st.unpack_from(self.pieces[i], off)

    def chain(self, g: int, stride: int, count: int, header: bytes) -> int:
        """Views of many buffers are not read at once: one PDU at a time."""
        return 1

    def positions(self) -> np.ndarray:
        return np.array(self.cum, dtype=np.int64)


class _Spans:
    """Consecutive pieces of a stream as ``buf[starts[i]:ends[i]]`` of one buffer (a TCP
    run), the spans as numpy arrays: a view is made only for what is handed on, and whole
    PDUs that follow one another are read at once (:meth:`chain`)."""

    __slots__ = ("buf", "starts", "ends", "cum", "_cum")

    def __init__(self, buf, starts, ends):
        self.buf = buf
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)
        cum = np.zeros(len(self.starts) + 1, dtype=np.int64)
        np.cumsum(self.ends - self.starts, out=cum[1:])
        self._cum = cum
        self.cum = cum.tolist()  # (bisect and the per-piece steps want Python ints)

    def view(self, i: int, lo: int = 0, hi: int | None = None):
        s = int(self.starts[i])
        return self.buf[s + lo:int(self.ends[i]) if hi is None else s + hi]

    def many(self, a: int, b: int) -> list:
        buf = self.buf
        return [buf[s:e] for s, e in zip(self.starts[a:b].tolist(), self.ends[a:b].tolist())]

    def unpack(self, st: struct.Struct, i: int, off: int):
        return st.unpack_from(self.buf, int(self.starts[i]) + off)

    def chain(self, g: int, stride: int, count: int, header: bytes) -> int:
        """How many of the ``count`` stream positions ``g``, ``g + stride``, ... in a row hold
        the 12 bytes ``header`` (a P-DATA-TF header and its PDV's, PS3.8 9.3.5): a sender
        fills its PDUs to one size, so a transfer's PDU boundaries are known in advance and
        checked in one gather, not found one after the other."""
        cum = self._cum
        pos = g + stride * np.arange(count, dtype=np.int64)
        p = np.searchsorted(cum, pos, side="right") - 1
        o = pos - cum[p]
        inside = o + 12 <= cum[p + 1] - cum[p]
        at = (self.starts[p] + o)[inside]
        rows = np.frombuffer(self.buf, dtype=np.uint8)[at[:, None] + _TWELVE]
        same = np.zeros(count, dtype=bool)
        same[inside] = (rows == np.frombuffer(header, dtype=np.uint8)).all(axis=1)
        for m in np.flatnonzero(~inside).tolist():  # a header cut between two segments
            same[m] = _read(self, self.cum, int(p[m]), int(pos[m]), 12) == header
        bad = np.flatnonzero(~same)
        return int(bad[0]) if len(bad) else count

    def positions(self) -> np.ndarray:
        return self._cum


_TWELVE = np.arange(12)


def _read(src, cum: list, i: int, g: int, n: int) -> bytes:
    """``n`` bytes of the stream from position ``g`` on, ``g`` in piece ``i``."""
    out = bytearray(src.view(i, g - cum[i], min(cum[i + 1], g + n) - cum[i]))
    while len(out) < n:
        i += 1
        out += src.view(i, 0, min(n - len(out), cum[i + 1] - cum[i]))
    return bytes(out)


class PdvRun:
    """Whole P-DATA-TF PDUs in a row, each holding one PDV that fills it: a data set
    fragment, not the last one, on one odd presentation context (PS3.8 9.3.5, annex E.2).

    This is the bulk of every large transfer; one event stands for the
    :class:`PduHeader` and :class:`PdvChunk` events that each of its ``count`` PDUs would
    give, and :meth:`expand` gives those events when a consumer needs them one by one.
    :attr:`pieces` are the PDV values in order, as views of the pieces fed, made when
    asked for (pixel data that nobody exports is counted, never sliced).
    ``frame``/``time``: the last value byte's; ``first_frame``/``first_time``: where the
    first PDV's header was completed."""

    __slots__ = ("context_id", "count", "pdu_bytes", "max_length", "size", "frame", "time",
                 "first_frame", "first_time", "_src", "_frames", "_times", "_pieces",
                 "_offsets", "_lengths", "_a", "_lo", "_b", "_hi", "_fh", "_fv")

    def __init__(self, context_id: int, src, frames, times, base: int, starts, lengths):
        """The PDUs that begin at ``starts`` (positions in ``src``; the stream offset is
        ``base`` + position) with the PDU lengths ``lengths`` (numpy arrays)."""
        self.context_id = context_id
        self._src, self._frames, self._times = src, frames, times
        self._pieces = None
        cum = src.positions()
        ends = starts + 6 + lengths
        # per PDU: the pieces completing its PDU header and its PDV header, and the pieces
        # holding its value's first and last byte with the offsets in them
        self._fh = np.searchsorted(cum, starts + 5, side="right") - 1
        self._fv = np.searchsorted(cum, starts + 11, side="right") - 1
        self._a = np.searchsorted(cum, starts + 12, side="right") - 1
        self._b = np.searchsorted(cum, ends - 1, side="right") - 1
        self._lo = starts + 12 - cum[self._a]
        self._hi = ends - cum[self._b]
        self._offsets = starts + base
        self._lengths = lengths
        self.count = len(starts)
        self.pdu_bytes = int(lengths.sum())
        self.max_length = int(lengths.max())
        self.size = self.pdu_bytes - 6 * self.count
        last, first = int(self._b[-1]), int(self._fv[0])
        self.frame, self.time = int(frames[last]), float(times[last])
        self.first_frame, self.first_time = int(frames[first]), float(times[first])

    @property
    def max_value(self) -> int:
        """The largest PDV value length of the run."""
        return self.max_length - 6

    def _values(self, a: int, lo: int, b: int, hi: int) -> list:
        """One PDU's value: from byte ``lo`` of piece ``a`` to byte ``hi`` of piece ``b``."""
        src = self._src
        if a == b:
            return [src.view(a, lo, hi)]
        first = src.view(a, lo) if lo else src.view(a)
        last = src.view(b) if hi == src.cum[b + 1] - src.cum[b] else src.view(b, 0, hi)
        return [first, *src.many(a + 1, b), last]

    def _each(self):
        """Each PDU's (a, lo, b, hi), as Python ints."""
        return zip(self._a.tolist(), self._lo.tolist(), self._b.tolist(), self._hi.tolist())

    def _views(self, pdus: int | None = None) -> list:
        """The PDV values of the first ``pdus`` PDUs (all: None) as views, in order."""
        spans = self.spans(pdus)
        if spans is not None:
            buf, starts, ends = spans
            return [buf[s:e] for s, e in zip(starts.tolist(), ends.tolist())]
        out: list = []
        for pdu in islice(self._each(), pdus):
            out += self._values(*pdu)
        return out

    @property
    def pieces(self) -> list:
        if self._pieces is None:
            self._pieces = self._views()
        return self._pieces

    def spans(self, pdus: int | None = None):
        """The PDV values (of the first ``pdus`` PDUs) as ``(buffer, starts, ends)`` (numpy
        arrays): ``buffer[starts[i]:ends[i]]`` in order, when the run was read from the spans
        of one buffer (a TCP run's); else None.  Nothing is sliced: an exporter hands these
        to the system as they are."""
        src = self._src
        if type(src) is not _Spans:
            return None
        a, b = self._a[:pdus], self._b[:pdus]
        counts = b - a + 1  # pieces of each PDU's value
        last = np.cumsum(counts) - 1  # where each PDU's last piece goes
        first = last - counts + 1
        idx = np.arange(int(last[-1]) + 1) - np.repeat(first - a, counts)
        starts = src.starts[idx]
        ends = src.ends[idx]
        starts[first] += self._lo[:pdus]
        ends[last] = src.starts[b] + self._hi[:pdus]
        return src.buf, starts, ends

    @property
    def values(self) -> "RunValues":
        """:attr:`pieces` made only when indexed or iterated; :meth:`spans` for a writer."""
        return RunValues(self)

    def prefix(self, n: int) -> bytes:
        """The first ``n`` value bytes (or all, when fewer): one join of the values of the
        PDUs they are in."""
        data = b"".join(self._views(int(np.searchsorted(np.cumsum(self._lengths - 6), n)) + 1))
        return data if len(data) <= n else data[:n]

    def expand(self) -> list:
        """The :class:`PduHeader` and :class:`PdvChunk` events this run stands for."""
        out: list = []
        frames, times = self._frames, self._times
        for (a, lo, b, hi), offset, length, fh, fv in zip(
                self._each(), self._offsets.tolist(), self._lengths.tolist(),
                self._fh.tolist(), self._fv.tolist()):
            out.append(PduHeader(P_DATA_TF, length, offset, int(frames[fh]), float(times[fh])))
            pdv = Pdv(self.context_id, 0, length - 6, offset + 6, int(frames[fv]), float(times[fv]))
            chunk = PdvChunk(pdv, None, length - 6, True, True, int(frames[b]), float(times[b]))
            chunk.pieces = self._values(a, lo, b, hi)
            out.append(chunk)
        return out

    def __repr__(self) -> str:
        return f"PdvRun(context={self.context_id}, pdus={self.count}, size={self.size})"


class RunValues(Sequence):
    """The PDV values of a :class:`PdvRun` as a sequence of views (made when first asked
    for), with the run's :meth:`PdvRun.spans` for whoever can write spans directly."""

    __slots__ = ("run",)

    def __init__(self, run: PdvRun):
        self.run = run

    def __getitem__(self, i):
        return self.run.pieces[i]

    def __len__(self) -> int:
        return len(self.run.pieces)

    def __iter__(self):
        return iter(self.run.pieces)

    def spans(self):
        return self.run.spans()


UlEvent = PduHeader | ControlPdu | PdvChunk | PdvRun | SyncLost | Resync | Violation | PduCut
_RUN_HEADER = struct.Struct(">BBIIBB")  # PDU type, reserved, length; PDV length, context, control


def plausible_header(buf, i: int, strict: bool = False) -> bool | None:
    """Does a PDU plausibly start at ``buf[i]``?  None: not enough bytes to tell."""
    n = len(buf)
    if i + 6 > n:
        return None
    t, res = buf[i], buf[i + 1]
    if t < 1 or t > 7 or res != 0:
        return False
    length = struct.unpack_from(">I", buf, i + 2)[0]
    if t == P_DATA_TF:
        if length < 6 or length > MAX_PDATA_PDU:
            return False
        if i + 12 > n:
            return None
        il = struct.unpack_from(">I", buf, i + 6)[0]
        pcid, ctl = buf[i + 10], buf[i + 11]
        if il < 2 or il + 4 > length or not pcid & 1 or ctl > 3:
            return False
        if strict and il + 4 < length:
            j = i + 10 + il  # next PDV item in the same PDU
            if j + 6 > n:
                return None
            il2 = struct.unpack_from(">I", buf, j)[0]
            return il2 >= 2 and il + il2 + 8 <= length and buf[j + 4] & 1 == 1 and buf[j + 5] <= 3
        return True
    if t in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
        if length < 68 or length > MAX_CONTROL_PDU:
            return False
        if i + 42 > n:
            return None
        if buf[i + 6:i + 8] != b"\x00\x01":
            return False
        return all(32 <= c < 127 for c in buf[i + 10:i + 42])
    if length != 4:
        return False
    if i + 10 > n:
        return None
    body = buf[i + 6:i + 10]
    if t in (A_RELEASE_RQ, A_RELEASE_RP):
        return body == b"\x00\x00\x00\x00"
    if t == A_ABORT:
        return body[0] == 0 and body[1] == 0 and body[2] in (0, 2) and body[3] <= 6
    return body[0] == 0 and body[1] in (1, 2) and body[2] in (1, 2, 3)  # A-ASSOCIATE-RJ


class PduStream:
    """Upper Layer parser of one direction of one association."""

    def __init__(self, synced: bool = True, runs: bool = False):
        self.state = ST_HEADER if synced else ST_SCAN
        self.runs = runs  # give a PdvRun for whole bulk PDUs found in one feed_pieces call
        self.offset = 0  # stream offset of the next byte fed
        self.buf = bytearray()
        self.need = 6
        self.pdu_type = 0
        self.pdu_length = 0
        self.pdu_offset = 0
        self.pdu_frame = 0
        self.pdu_time = 0.0
        self.pdu_remaining = 0
        self.pdv: Pdv | None = None
        self.pdv_remaining = 0
        self.pdv_first = True
        self.skip_remaining = 0
        self.scan_start = 0  # stream offset of buf[0] while scanning
        self.scan_origin = 0  # where the current scan began
        self.pdus = 0
        self.scanned_bytes = 0

    # -- public -----------------------------------------------------------
    @property
    def in_pdu(self) -> bool:
        """A PDU's header has been read and the rest of it is still to come."""
        return self.state not in (ST_HEADER, ST_SCAN)

    def finish(self, frame: int, time: float) -> list[UlEvent]:
        """The end of the stream: a :class:`PduCut` when it ended inside a PDU."""
        st = self.state
        if st == ST_SCAN or (st == ST_HEADER and not self.buf):
            return []
        if st == ST_HEADER:
            cut = PduCut(None, self.offset - len(self.buf), 6 - len(self.buf), frame, time)
        elif st == ST_BODY:
            cut = PduCut(self.pdu_type, self.pdu_offset, self.need - len(self.buf), frame, time)
        elif st == ST_SKIP:
            cut = PduCut(self.pdu_type, self.pdu_offset, self.skip_remaining, frame, time)
        else:
            cut = PduCut(self.pdu_type, self.pdu_offset, self.pdu_remaining - len(self.buf), frame, time)
        self.state, self.need = ST_SCAN, 6
        self.buf = bytearray()
        return [cut]

    def feed(self, data, frame: int, time: float) -> list[UlEvent]:
        out: list[UlEvent] = []
        self._feed(data, frame, time, out)
        return out

    def feed_pieces(self, pieces, frames, times) -> list[UlEvent]:
        """Feed consecutive pieces of the stream (views) in one call."""
        return self._feed_all(_Pieces(pieces), frames, times)

    def feed_data(self, ev) -> list[UlEvent]:
        """Feed a TCP :class:`~dicomtrace.tcp.StreamData`: its pieces, or the spans of one
        buffer they are (the batch path's runs), without making a view per segment.

        A PDV value's bytes are sliced out of the pieces at once (a 16 KB PDV spans a dozen
        TCP segments, a C-STORE's pixel data thousands), and with ``runs`` the whole bulk
        PDUs that follow one another are read in one tight loop and given as a
        :class:`PdvRun`."""
        spans = ev.spans
        if spans is None:
            return self._feed_all(_Pieces(ev.pieces), ev.frames, ev.times)
        return self._feed_all(_Spans(*spans), *ev.columns())

    def _feed_all(self, src, frames, times) -> list[UlEvent]:
        """``frames``/``times``: of each piece, lists or numpy arrays (the batch path's),
        so every one taken into an event is made a Python number here."""
        out: list[UlEvent] = []
        feed = self._feed
        n = len(frames)
        cum = src.cum
        i, off = 0, 0  # position: byte ``off`` of piece ``i``
        tried = None  # the position where a run was last tried and found nothing
        while i < n:
            st = self.state
            if st == ST_PDV_VALUE:
                i, off = self._value(src, cum, i, off, frames, times, out)
                continue
            if st == ST_HEADER and self.runs and not self.buf and tried != (i, off):
                pos = self._run(src, cum, i, off, frames, times, out)
                if pos != (i, off):
                    i, off = pos
                    continue
                tried = pos
            feed(src.view(i, off) if off else src.view(i), int(frames[i]), float(times[i]), out)
            i, off = i + 1, 0
        return out

    def _value(self, src, cum, i, off, frames, times, out) -> tuple[int, int]:
        """The PDV value being read takes what it can of the pieces from (i, off) on."""
        g0 = cum[i] + off
        g1 = min(g0 + self.pdv_remaining, cum[-1])
        j = bisect_left(cum, g1, i + 1) - 1  # the piece holding the value's last byte
        whole_j = g1 == cum[j + 1]
        if j == i:
            views = [src.view(i) if not off and whole_j else src.view(i, off, g1 - cum[i])]
        else:
            views = [src.view(i, off) if off else src.view(i), *src.many(i + 1, j),
                     src.view(j) if whole_j else src.view(j, 0, g1 - cum[j])]
        self._pdv_take(views, g1 - g0, int(frames[j]), float(times[j]), out)
        return (j + 1, 0) if whole_j else (j, g1 - cum[j])

    def _run(self, src, cum, i, off, frames, times, out) -> tuple[int, int]:
        """Read the whole bulk PDUs from (i, off) on (see :class:`PdvRun`); returns the
        position after the last one (unchanged when the first is not one).

        Each header is checked here; after one, the PDUs of the same size that follow are
        checked at once (:meth:`_Spans.chain`), so the cost is per size change, not per PDU."""
        end = cum[-1]
        g = start = cum[i] + off
        context = None
        blocks: list[tuple[int, int, int]] = []  # (first PDU's position, PDU stride, PDUs)
        while g + 12 <= end:
            while cum[i + 1] <= g:
                i += 1
            off = g - cum[i]
            if off + 12 <= cum[i + 1] - cum[i]:
                head = src.unpack(_RUN_HEADER, i, off)
            else:
                head = _RUN_HEADER.unpack(_read(src, cum, i, g, 12))
            t, res, length, il, pcid, ctl = head
            stride = 6 + length
            room = (end - g) // stride  # whole PDUs of this size from here on
            if (t != P_DATA_TF or res or ctl or il != length - 4 or not pcid & 1 or length < 7
                    or length > MAX_PDATA_PDU or not room
                    or (context is not None and pcid != context)):
                break
            context = pcid
            k = src.chain(g, stride, room, _RUN_HEADER.pack(*head)) if room > 1 else 1
            blocks.append((g, stride, k))
            g += k * stride
            if k > 1:
                i = bisect_right(cum, g, i) - 1
        if not blocks:
            return i, off
        starts = np.concatenate([g0 + stride * np.arange(k, dtype=np.int64)
                                 for g0, stride, k in blocks])
        lengths = np.concatenate([np.full(k, stride - 6, dtype=np.int64)
                                  for _g0, stride, k in blocks])
        base = self.offset - start
        run = PdvRun(context, src, frames, times, base, starts, lengths)
        self.offset += g - start
        self.pdus += run.count
        fh = int(run._fh[-1])
        self.pdu_type, self.pdu_length = P_DATA_TF, int(lengths[-1])
        self.pdu_offset = int(starts[-1]) + base
        self.pdu_frame, self.pdu_time = int(frames[fh]), float(times[fh])
        out.append(run)
        i = int(run._b[-1])  # the piece holding the last value byte
        return (i + 1, 0) if g == cum[i + 1] else (i, g - cum[i])

    def gap(self, size: int, frame: int, time: float) -> list[UlEvent]:
        """``size`` bytes of the stream were never captured."""
        out: list[UlEvent] = []
        while size > 0:
            st = self.state
            if st == ST_PDV_VALUE:
                take = min(size, self.pdv_remaining)
                self._pdv_take(None, take, frame, time, out)
            elif st == ST_SKIP:
                take = min(size, self.skip_remaining)
                self.skip_remaining -= take
                self.offset += take
                if not self.skip_remaining:
                    self.state, self.need = ST_HEADER, 6
                    self.buf.clear()
            elif st == ST_PDV_HEADER:
                # the PDV structure of this PDU is lost, but its end is still known
                lost = self.pdu_remaining - len(self.buf)
                take = min(size, lost)
                self.buf.clear()
                self.offset += take
                self.pdu_remaining = lost - take
                out.append(SyncLost(self.offset, frame, time, lost))
                if self.pdu_remaining:
                    self.state, self.skip_remaining = ST_SKIP, self.pdu_remaining
                else:
                    self.state, self.need = ST_HEADER, 6
            else:
                if st != ST_SCAN:
                    out.append(SyncLost(self.offset, frame, time, size))
                self.state = ST_SCAN
                self.buf.clear()
                take = size
                self.offset += take
                self.scan_origin = self.scan_start = self.offset
            size -= take
        return out

    # -- internals --------------------------------------------------------
    def _feed(self, data, frame, time, out) -> None:
        pos, n = 0, len(data)
        if self.state == ST_PDV_VALUE and n < self.pdv_remaining and out:
            prev = out[-1]  # fast path: the whole piece continues the PDV value being read
            if type(prev) is PdvChunk and prev.pdv is self.pdv and prev.pieces is not None:
                prev.pieces.append(data)
                prev.size += n
                prev.frame = frame
                prev.time = time
                self.pdv_remaining -= n
                self.pdu_remaining -= n
                self.offset += n
                return
        while pos < n:
            st = self.state
            if st == ST_PDV_VALUE:
                take = min(self.pdv_remaining, n - pos)
                self._pdv_take(data[pos:pos + take], take, frame, time, out)
                pos += take
            elif st == ST_SKIP:
                take = min(self.skip_remaining, n - pos)
                self.skip_remaining -= take
                self.offset += take
                pos += take
                if not self.skip_remaining:
                    self.state, self.need = ST_HEADER, 6
            elif st == ST_SCAN:
                rest = self._scan(data[pos:], frame, time, out)
                if rest is None:
                    return
                data, pos, n = memoryview(rest), 0, len(rest)
            else:
                take = min(self.need - len(self.buf), n - pos)
                self.buf += data[pos:pos + take]
                pos += take
                self.offset += take
                if len(self.buf) == self.need:
                    if st == ST_HEADER:
                        self._header(frame, time, out)
                    elif st == ST_BODY:
                        self._body(frame, time, out)
                    else:
                        self._pdv_header(frame, time, out)

    def _header(self, frame, time, out) -> None:
        buf = self.buf
        t, res = buf[0], buf[1]
        length = struct.unpack_from(">I", buf, 2)[0]
        start = self.offset - 6
        if t not in PDU_NAMES or (t != P_DATA_TF and length > MAX_CONTROL_PDU) or length > MAX_PDATA_PDU:
            what = (f"unknown PDU type 0x{t:02X}" if t not in PDU_NAMES
                    else f"{PDU_NAMES[t]} claims an implausible length {length}")
            out.append(Violation("malformed-pdu", f"{what}; looking for the next valid PDU",
                                 start, frame))
            out.append(SyncLost(start, frame, time))
            # rescan from the byte after the bad header's first byte
            self.buf = bytearray(buf[1:])
            self.state = ST_SCAN
            self.scan_origin = self.scan_start = start + 1
            return
        if res:
            out.append(Violation("malformed-pdu", f"{PDU_NAMES[t]} reserved byte is 0x{res:02X}",
                                 start, frame))
        self.pdus += 1
        self.pdu_type, self.pdu_length, self.pdu_offset = t, length, start
        self.pdu_frame, self.pdu_time = frame, time
        out.append(PduHeader(t, length, start, frame, time))
        self.buf = bytearray()
        if t == P_DATA_TF:
            if length < 6:
                out.append(Violation("malformed-pdu", f"P-DATA-TF of length {length} cannot hold "
                                     "a PDV", start, frame))
            self.pdu_remaining = length
            self._next_in_pdata(frame, out)
        elif length == 0:
            self._body(frame, time, out)
        else:
            self.state, self.need = ST_BODY, length

    def _body(self, frame, time, out) -> None:
        t = self.pdu_type
        body = bytes(self.buf)
        self.buf = bytearray()
        if t in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
            pdu, v = decode_associate(t, body, self.pdu_offset + 6)
        else:
            pdu, v = decode_control(t, body, self.pdu_offset + 6)
        for x in v:
            out.append(Violation(x.code, x.message, x.offset, frame))
        out.append(ControlPdu(t, pdu, self.pdu_length, self.pdu_offset, self.pdu_frame, frame,
                              self.pdu_time, time))
        self.state, self.need = ST_HEADER, 6

    def _next_in_pdata(self, frame, out) -> None:
        rem = self.pdu_remaining
        if rem == 0:
            self.state, self.need = ST_HEADER, 6
        elif rem < 6:
            out.append(Violation("malformed-pdu", f"{rem} stray bytes at the end of a P-DATA-TF",
                                 self.offset, frame))
            self.state, self.skip_remaining = ST_SKIP, rem
        else:
            self.state, self.need = ST_PDV_HEADER, 6

    def _pdv_header(self, frame, time, out) -> None:
        buf = self.buf
        il = struct.unpack_from(">I", buf, 0)[0]
        pcid, ctl = buf[4], buf[5]
        start = self.offset - 6
        self.buf = bytearray()
        self.pdu_remaining -= 6
        vlen = il - 2
        if il < 2 or vlen > self.pdu_remaining:
            out.append(Violation("malformed-pdu", f"PDV item length {il} does not fit the "
                                 f"{self.pdu_remaining + 6} bytes left in its P-DATA-TF", start, frame))
            vlen = max(0, min(vlen, self.pdu_remaining))
        if ctl & 0xFC:
            out.append(Violation("invalid-pdv-flags", f"PDV message control header 0x{ctl:02X} has "
                                 "reserved bits set (only bits 0 and 1 may be used)", start, frame))
        self.pdv = Pdv(pcid, ctl & 3, vlen, start, frame, time)
        self.pdv_remaining = vlen
        self.pdv_first = True
        if vlen == 0:
            self._pdv_take(b"", 0, frame, time, out)
        else:
            self.state = ST_PDV_VALUE

    def _pdv_take(self, data, size, frame, time, out) -> None:
        """``size`` bytes of the PDV value: ``data`` (a view, a list of views, or None when
        they were never captured)."""
        self.pdv_remaining -= size
        self.pdu_remaining -= size
        self.offset += size
        last = self.pdv_remaining == 0
        prev = out[-1] if out else None
        if (data is not None and type(prev) is PdvChunk and prev.pdv is self.pdv
                and prev.pieces is not None):
            if type(data) is list:
                prev.pieces += data
            else:
                prev.pieces.append(data)
            prev.size += size
            prev.last = last
            prev.frame = frame
            prev.time = time
        elif type(data) is list:
            chunk = PdvChunk(self.pdv, None, size, self.pdv_first, last, frame, time)
            chunk.pieces = data
            out.append(chunk)
        else:
            out.append(PdvChunk(self.pdv, data, size, self.pdv_first, last, frame, time))
        self.pdv_first = False
        if last:
            self._next_in_pdata(frame, out)

    def _scan(self, data, frame, time, out):
        """Look for the next plausible PDU header in buffered + new bytes.

        Returns the bytes from that header on (to parse normally), or None
        when none was found yet."""
        buf = self.buf
        buf += data
        self.scanned_bytes += len(data)
        n = len(buf)
        found = None
        i = max(n - 1, 0)
        for m in _CANDIDATE.finditer(buf):
            ok = plausible_header(buf, m.start(), strict=True)
            if ok is None:
                i = m.start()  # wait for more bytes before judging this candidate
                break
            if ok:
                found = m.start()
                break
        if found is None:
            keep = buf[i:] if n - i <= SCAN_KEEP else buf[-SCAN_KEEP:]
            self.scan_start += n - len(keep)
            self.buf = bytearray(keep)
            self.offset = self.scan_start + len(self.buf)
            return None
        at = self.scan_start + found
        out.append(Resync(at, at - self.scan_origin, frame, time))
        rest = bytes(buf[found:])
        self.buf = bytearray()
        self.offset = at
        self.state, self.need = ST_HEADER, 6
        return rest
