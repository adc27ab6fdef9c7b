"""TCP connection tracking and stream reassembly, as a pure state machine.

:class:`TcpReassembler` is fed decoded segments (:class:`~dicomtrace.net.Segments`)
and returns events: a connection opened, ordered stream data for one direction
(each chunk with the frame and time of the segment it came from), a gap marker
where bytes were never captured, a connection closed.  It never reads a file.

Sequence analysis follows RFC 9293 and, for the health counters, the rules
Wireshark's TCP analysis uses, so that the figures can be compared with
tshark's (``tcp.analysis.retransmission``, ``out_of_order``, ``duplicate_ack``,
``zero_window``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import numpy as np

from dicomtrace.net.decode import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Segments
from dicomtrace.settings import CHOICES, choice
from dicomtrace.tcp.stalls import STALL_SMALL, note_segment

OOO_LIMIT = 8 << 20  # bytes held waiting for a hole to fill before it is declared a gap
MAX_GAP = 1 << 30  # an ACK further ahead than this is nonsense, not a gap
DEFAULT_OOO_THRESHOLD = 0.003  # s; Wireshark's out-of-order window when no RTT is known
FAST_WINDOW = 20_000  # us: a fast retransmission follows the last ACK within this
RETRANS_SAMPLES = 200  # retransmitted frames remembered per direction (the rest are counted)

BATCH_MIN = 16  # shorter runs go the per-segment way (vector set-up costs more than it saves)
BATCH_WINDOW = 1024  # segments tried as a run after an exceptional one (grows x4 on success)
SEGMENT_STRETCH = 16  # segments taken one by one after a short run (loss comes in clusters)
M32 = 0xFFFFFFFF

CLIENT_TO_SERVER, SERVER_TO_CLIENT = 0, 1


@dataclass(slots=True)
class HalfConnection:
    """One direction of a connection: its statistics and reassembly state."""

    packets: int = 0
    bytes: int = 0  # frame bytes on the wire, as tshark's conversation table counts them
    payload_bytes: int = 0
    retransmitted_segments: int = 0  # all of them, as tshark's tcp.analysis.retransmission
    spurious_retransmissions: int = 0  # of those, bytes the receiver had acknowledged (no loss)
    fast_retransmissions: int = 0  # of those, after duplicate ACKs (tcp.analysis.fast_retransmission)
    retransmitted_bytes: int = 0
    out_of_order_segments: int = 0
    missing_bytes: int = 0
    gaps: int = 0
    duplicate_acks: int = 0
    zero_window_events: int = 0
    resets: int = 0
    mss: int | None = None
    window_scale: int | None = None
    isn: int | None = None
    fin_frame: int | None = None
    reset_frame: int | None = None
    reset_time: float | None = None
    zero_window_time: float = 0.0  # seconds this side advertised a zero window
    zero_window_start: float | None = None
    retransmissions: list = field(default_factory=list)  # first RETRANS_SAMPLES (frame, time)
    gap_frames: list = field(default_factory=list)  # frames that revealed the first gaps
    zero_window_frames: list = field(default_factory=list)  # first zero-window advertisements
    data_segments: int = 0  # segments carrying payload
    window_limited: int = 0  # data segments sent with the peer's window (nearly) full
    retransmission_wait: float = 0.0  # s between the stream stalling and each retransmission
    stalls: int = 0  # Nagle / delayed-ACK stalls of this direction (tcp/stalls.py)
    stall_time: float = 0.0  # s they cost in all
    stall_samples: list = field(default_factory=list)  # the first ones, as stalls.Stall
    stall_probe: tuple | None = None  # the last small data segment, while it may stall
    # graphs (only when recording): (time, stream offset after the segment), and the
    # other side's acknowledgements of this stream: (time, acked offset, window edge)
    # (filled by a series recorder, output/series.py, when the TCP stage has one)
    sent: object | None = None
    acked: object | None = None
    retransmitted_at: list = field(default_factory=list)  # (time, offset) of the first ones
    # reassembly state
    base: int | None = None  # absolute sequence number of stream offset 0
    delivered: int = 0  # stream offset of the next byte to deliver
    max_end: int | None = None  # highest stream offset seen (Wireshark's nextseq)
    fin_offset: int | None = None
    max_time: float = 0.0  # when max_end last advanced (Wireshark's nextseqtime)
    data_time: float = 0.0  # when data (or a SYN/FIN) last moved this stream on
    last_ack: int | None = None
    peer_ack: int | None = None  # stream offset of this direction the peer last acknowledged
    last_class: str = ""  # how _classify judged the last segment it saw
    last_keepalive: bool = False  # this direction's last segment was a keep-alive (probe)
    last_ack_time: float = 0.0
    last_window: int | None = None
    dupacks: int = 0
    ooo: dict = field(default_factory=dict)  # offset -> (bytes, missing, frame, time)
    ooo_bytes: int = 0

    def offset(self, seq: int) -> int:
        """Stream offset of an absolute sequence number, unwrapped near ``delivered``."""
        d = (seq - self.base - self.delivered) & 0xFFFFFFFF
        if d >= 0x80000000:
            d -= 0x100000000
        return self.delivered + d


@dataclass(slots=True, eq=False)
class Connection:
    """A TCP connection: the client is the side that sent the SYN (or guessed)."""

    id: int
    client_ip: int
    client_port: int
    server_ip: int
    server_port: int
    oriented_by: str  # "syn", "port" (a configured DICOM port), "lower-port"
    start_time: float
    first_frame: int
    end_time: float = 0.0
    last_frame: int = 0
    state: str = "open"  # "open", "closed" (FIN both ways), "reset"
    syn_time: float | None = None
    synack_time: float | None = None
    mru_syn_time: float | None = None  # the most recent SYN (Wireshark's ts_mru_syn)
    handshake_rtt: float | None = None  # that SYN to the first ACK (Wireshark's initial RTT)
    half: tuple[HalfConnection, HalfConnection] = field(
        default_factory=lambda: (HalfConnection(), HalfConnection()))
    closed_reported: bool = False

    @property
    def client_to_server(self) -> HalfConnection:
        return self.half[CLIENT_TO_SERVER]

    @property
    def server_to_client(self) -> HalfConnection:
        return self.half[SERVER_TO_CLIENT]

    def swap(self) -> None:
        """Swap client and server (a later layer knows better who opened it)."""
        self.client_ip, self.server_ip = self.server_ip, self.client_ip
        self.client_port, self.server_port = self.server_port, self.client_port
        self.half = (self.half[1], self.half[0])


@dataclass(slots=True, frozen=True)
class ConnectionOpened:
    conn: Connection


class StreamData:
    """Bytes ``[offset, offset + size)`` of one direction, in order.

    Consecutive segments of the same direction are merged into one event, as a
    list of pieces (views of the capture's buffers, never copies) with the frame
    and time each piece came from, so the layers above pay per batch, not per
    packet.
    """

    __slots__ = ("conn", "direction", "offset", "size", "_pieces", "_frames", "_times", "spans")

    def __init__(self, conn, direction: int, offset: int, data, frame: int, time: float):
        self.conn = conn
        self.direction = direction  # CLIENT_TO_SERVER or SERVER_TO_CLIENT (as oriented at open)
        self.offset = offset
        self.size = len(data)
        self._pieces = [data]
        self._frames = [frame]
        self._times = [time]
        self.spans = None

    @classmethod
    def spanned(cls, conn, direction: int, offset: int, buf, starts, ends,
                frames, times, size: int) -> "StreamData":
        """A run whose pieces are ``buf[starts[i]:ends[i]]`` of one buffer: the views are
        made only when someone asks for :attr:`pieces` (the Upper Layer reads bulk data
        through ``spans`` without them).  The spans and the pieces' ``frames`` and
        ``times`` are lists or, from the batch path, numpy arrays (no Python number per
        segment): :attr:`frames` and :attr:`times` are lists when asked for, and
        :meth:`columns` gives them as they are."""
        ev = cls.__new__(cls)
        ev.conn, ev.direction, ev.offset, ev.size = conn, direction, offset, size
        ev._pieces, ev._frames, ev._times, ev.spans = None, frames, times, (buf, starts, ends)
        return ev

    @property
    def frames(self) -> list:
        """The frame each piece came from."""
        if type(self._frames) is not list:
            self._frames = self._frames.tolist()
        return self._frames

    @property
    def times(self) -> list:
        """The capture time of each piece."""
        if type(self._times) is not list:
            self._times = self._times.tolist()
        return self._times

    def columns(self) -> tuple:
        """(frames, times) as they are held: lists, or numpy arrays (index them with
        ``int()``/``float()`` around)."""
        return self._frames, self._times

    @property
    def pieces(self) -> list:
        """The bytes, as views of the capture's buffers, one per segment."""
        if self._pieces is None:
            buf, starts, ends = self.spans
            self._pieces = [buf[a:b] for a, b in zip(_ints(starts), _ints(ends))]
            self.spans = None
        return self._pieces

    def extend(self, other: "StreamData") -> None:
        """Append ``other``, the bytes that follow in the same direction."""
        if (self.spans is not None and other.spans is not None
                and self.spans[0] is other.spans[0]):
            buf, starts, ends = self.spans
            self.spans = (buf, _joined(starts, other.spans[1]), _joined(ends, other.spans[2]))
        else:
            self.pieces.extend(other.pieces)
        self._frames = _joined(self._frames, other._frames)
        self._times = _joined(self._times, other._times)
        self.size += other.size

    def add_span(self, buf, start: int, end: int, frame: int, time: float) -> None:
        """Append ``buf[start:end]`` (as a span when this event is spans of ``buf``)."""
        if self.spans is not None and self.spans[0] is buf:
            _buf, starts, ends = self.spans
            if type(starts) is not list:  # (a batch run's arrays, then segments one by one)
                starts, ends = starts.tolist(), ends.tolist()
                self.spans = (buf, starts, ends)
            starts.append(start)
            ends.append(end)
        else:
            self.pieces.append(buf[start:end])
        self.frames.append(frame)
        self.times.append(time)
        self.size += end - start

    def copied(self) -> "StreamData":
        """The same event holding copies of its bytes, for a stage that keeps events back
        (the capture's buffers are reused)."""
        ev = StreamData(self.conn, self.direction, self.offset, bytes(self.pieces[0]),
                        self.frames[0], self.times[0])
        for piece, frame, t in zip(self.pieces[1:], self.frames[1:], self.times[1:]):
            ev.add(bytes(piece), frame, t)
        return ev

    def add(self, data, frame: int, time: float) -> None:
        self.pieces.append(data)
        self.frames.append(frame)
        self.times.append(time)
        self.size += len(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)

    @property
    def frame(self) -> int:
        return int(self._frames[-1])

    @property
    def time(self) -> float:
        return float(self._times[-1])

    def __repr__(self) -> str:
        return (f"StreamData(conn={self.conn.id}, direction={self.direction}, offset={self.offset}, "
                f"size={self.size}, pieces={len(self.pieces)})")


def _ints(xs) -> list:
    """Span positions as a list of Python ints."""
    return xs if type(xs) is list else xs.tolist()


def _joined(a, b):
    """Span positions (or frames, times) ``a`` followed by ``b``: lists or numpy arrays."""
    if type(a) is list and type(b) is list:
        a.extend(b)
        return a
    return np.concatenate((a, b))


@dataclass(slots=True, frozen=True)
class StreamGap:
    """Bytes ``[offset, offset + size)`` of one direction were never captured."""

    conn: Connection
    direction: int
    offset: int
    size: int
    frame: int
    time: float


@dataclass(slots=True, frozen=True)
class ConnectionClosed:
    conn: Connection
    reason: str  # "fin", "reset", "reused" (a new SYN on the same ports), "end" (capture ended)
    frame: int
    time: float


TcpEvent = ConnectionOpened | StreamData | StreamGap | ConnectionClosed


class _PeerAt(NamedTuple):
    """What :func:`~dicomtrace.tcp.stalls.note_segment` reads of the peer's half, as it was
    at one segment of a run (the run's figures are applied a flow at a time)."""

    last_ack: int | None
    last_ack_time: float
    data_time: float


def _flows(k1: np.ndarray, k2: np.ndarray, ok: np.ndarray):
    """The flows (directions of connections) of a window of segments, from each one's
    (source, port) and (destination, port) keys: the first segment of each flow, each
    segment's flow number, and each flow's segments in order.  A window of a transfer holds
    one connection's data one way and its ACKs the other (or only one of them): a segment is
    of that connection exactly when its source is one of the two ends and the sum of its
    keys is theirs, a few comparisons.  Any other mix goes through a sort of a hash of the
    keys; segments of a flow whose hash collides with another's are marked not ``ok``."""
    s, d = k1[0], k2[0]
    if s != d:
        m1 = k1 == d
        m0 = k1 == s
        if ((m0 | m1) & (k1 + k2 == s + d)).all():
            i1 = np.flatnonzero(m1)
            if not len(i1):
                return [0], np.zeros(len(k1), dtype=np.intp), [np.arange(len(k1))]
            return [0, int(i1[0])], m1.astype(np.intp), [np.flatnonzero(m0), i1]
    h = k1 * 0x9E3779B1 ^ k2
    uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    ok &= (k1[first][inv] == k1) & (k2[first][inv] == k2)  # a hash collision: not here
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1)).tolist()
    return first.tolist(), inv, [order[bounds[j]:bounds[j + 1]] for j in range(len(uniq))]


class TcpReassembler:
    """Tracks every TCP connection of a capture and reassembles both directions."""

    def __init__(self, server_ports: Iterable[int] = (), series=None, path: str | None = None):
        self.server_ports = frozenset(server_ports)
        # what the report's graphs are built from goes to ``series`` (output/series.py's
        # SeriesRecorder: open/sent/sent_run/acked/acked_run/retransmitted), when given
        self.series = series
        if path is None:
            path = choice("DICOMTRACE_TCP_PATH")
        elif path not in CHOICES["DICOMTRACE_TCP_PATH"]:
            raise ValueError(f"TCP path {path!r}: batch or segment")
        self.batch_path = path == "batch"  # DICOMTRACE_TCP_PATH=segment: never in runs
        self.segments_in_runs = 0  # how many segments the batch path took (tests, bench)
        self.connections: list[Connection] = []
        self._table: dict[tuple, tuple[Connection, int]] = {}

    # -- public API -------------------------------------------------------
    def feed(self, segs: Segments) -> list[TcpEvent]:
        """Process a batch of segments; return the events they cause, in order.

        Runs of ordinary segments (in-order data without flags, pure ACKs that neither
        repeat nor close a window) are taken a run at a time with vector operations
        (:meth:`_batch_run`); everything else, one segment at a time (:meth:`_segments`),
        with exactly the same figures and events either way."""
        out: list[TcpEvent] = []
        n = len(segs)
        if not self.batch_path or n < BATCH_MIN or segs.src.dtype == object:
            self._segments(segs, 0, n, out)
            return out
        # segments no run can take whatever the connection's state (flags, cut by the snap
        # length, one byte of data: a keep-alive or a zero-window probe, whose rules move
        # the stream differently): runs end before them, and a stretch too short to pay a
        # run's vector set-up (~60 numpy calls) goes segment by segment through the next one
        plain = ((segs.flags & ~TCP_PSH) == TCP_ACK) & (segs.missing == 0) & (segs.plen != 1)
        hard = np.flatnonzero(~plain).tolist()
        hard.append(n)
        k = 0
        pos = 0
        window = n
        while pos < n:
            while hard[k] < pos:
                k += 1
            nxt = hard[k]
            if nxt - pos < BATCH_MIN:
                end = min(n, nxt + 1)
                # (the window stays: these segments were known from the pre-scan, they say
                # nothing about loss, so the next run may be as long as the last one was)
                self._segments(segs, pos, end, out)
                pos = end
                continue
            stop = min(pos + window, nxt)
            x = self._batch_run(segs, pos, stop, out)
            if x >= stop:
                pos = stop
                window = min(n, window * 4)
                continue
            # an exceptional segment at x: the per-segment path takes it (and, when the
            # runs are short, a stretch after it), then runs are tried again, in small
            # windows first
            end = min(n, x + 1 if x > pos else x + SEGMENT_STRETCH)
            self._segments(segs, x, end, out)
            pos = end
            window = BATCH_WINDOW
        return out

    def _segments(self, segs: Segments, start: int, stop: int, out: list) -> None:
        """The per-segment path, for segments [start, stop) of the batch."""
        mv = segs.view
        table = self._table
        syn_options = segs.syn_options
        for i, (frame, t, src, dst, sport, dport, seq, ack, flags, win, poff, plen, missing,
                wire) in enumerate(zip(*segs.columns(start, stop)), start):
            entry = table.get((src, sport, dst, dport))
            if entry is None or (flags & (TCP_SYN | TCP_ACK) == TCP_SYN
                                 and self._is_new_syn(entry, seq)):
                if entry is not None:
                    self._close(entry[0], "reused", frame, t, out)
                entry = self._open(src, sport, dst, dport, flags, frame, t, out)
            conn, d = entry
            h = conn.half[d]
            r = conn.half[1 - d]
            h.packets += 1
            h.bytes += wire
            conn.end_time = t
            conn.last_frame = frame
            seglen = plen + missing

            if flags & TCP_SYN:
                if i in syn_options:
                    h.mss, h.window_scale = syn_options[i]
                h.last_keepalive = False
                if h.isn is not None and seq == h.isn:
                    # the SYN again: the same rules as data, at stream offset -1 (Wireshark:
                    # a retransmission, or out-of-order when it comes within a round trip
                    # of data that moved the stream on)
                    self._classify(conn, h, r, -1, seglen, seglen, seq, t, syn=True)
                else:
                    h.isn = seq
                    h.peer_ack = None
                    h.base = (seq + 1) & 0xFFFFFFFF
                    h.delivered = 0
                    h.max_end = 0
                    h.max_time = h.data_time = t
                if flags & TCP_ACK:
                    if conn.synack_time is None:
                        conn.synack_time = t
                else:
                    if conn.syn_time is None:
                        conn.syn_time = t
                    conn.mru_syn_time = t  # Wireshark's ts_mru_syn: the most recent SYN
            else:
                if h.base is None:  # first segment of a direction seen mid-connection
                    h.base = seq
                    h.max_end = 0
                    h.max_time = h.data_time = t
                off = (seq - h.base - h.delivered) & 0xFFFFFFFF  # h.offset(seq), inlined
                if off >= 0x80000000:
                    off -= 0x100000000
                off += h.delivered
                fin = flags & TCP_FIN
                # -- health analysis, Wireshark's way (packet-tcp.c 4.0,
                # tcp_analyze_sequence_number: keep-alive, spurious, fast, out-of-order,
                # retransmission, in that order) -----------------------------------
                mx = h.max_end
                # a keep-alive (or Linux's zero-window probe): 0 or 1 byte one before the next
                # sequence number; it is never a retransmission, and the peer's answer to it
                # is no duplicate ACK
                keepalive = seglen <= 1 and off == mx - 1 and not flags & (TCP_FIN | TCP_RST)
                if seglen or fin:
                    end = off + seglen + (1 if fin else 0)
                    pa = h.peer_ack
                    if (off < mx or (pa is not None and seglen and off + seglen <= pa)) and not keepalive:
                        self._classify(conn, h, r, off, seglen, end, seq, t)
                        if len(h.retransmissions) < RETRANS_SAMPLES and h.last_class != "ooo":
                            h.retransmissions.append((frame, t))
                    if end > mx:
                        if seglen and (seglen <= STALL_SMALL or h.stall_probe is not None):
                            note_segment(h, r, frame, t, end, seglen)
                        h.data_time = t
                        # a zero-window probe (one byte at the next sequence number into a
                        # zero window) does not move Wireshark's nextseq: it may be refused
                        if not (seglen == 1 and off == mx and r.last_window == 0):
                            h.max_end = end
                            h.max_time = t
                    if seglen:
                        h.data_segments += 1
                        if self.series is not None:
                            self.series.sent(h, t, end)
                        if r.last_window is not None and r.last_ack is not None:
                            # bytes in flight against the window the receiver advertised
                            ws = r.window_scale if (h.window_scale is not None
                                                    and r.window_scale is not None) else 0
                            acked = (r.last_ack - h.base - h.delivered) & 0xFFFFFFFF
                            if acked >= 0x80000000:
                                acked -= 0x100000000
                            if end - (h.delivered + acked) >= 0.9 * (r.last_window << ws):
                                h.window_limited += 1
                    h.payload_bytes += plen
                elif off > mx:
                    # no data, yet beyond the data seen (a segment was not captured): Wireshark's
                    # nextseq moves on with any segment
                    h.max_end = off
                    h.max_time = t
                # -- delivery --------------------------------------------------
                if seglen:
                    dl = h.delivered
                    if off <= dl:
                        if off + seglen > dl:
                            skip = dl - off
                            if skip < plen:
                                last = out[-1] if out else None
                                if (type(last) is StreamData and last.conn is conn
                                        and last.direction == d and last.offset + last.size == dl):
                                    last.add_span(mv, poff + skip, poff + plen, frame, t)
                                else:
                                    out.append(StreamData.spanned(conn, d, dl, mv, [poff + skip],
                                                                  [poff + plen], [frame], [t],
                                                                  plen - skip))
                                dl = off + plen
                            if missing:
                                self._gap(conn, d, h, dl, off + seglen - dl, frame, t, out)
                                dl = off + seglen
                            h.delivered = dl
                            if h.ooo:
                                self._drain(conn, d, h, out)
                    else:
                        prev = h.ooo.get(off)
                        if prev is None or len(prev[0]) + prev[1] < seglen:
                            if prev is not None:
                                h.ooo_bytes -= len(prev[0])
                            h.ooo[off] = (bytes(mv[poff:poff + plen]), missing, frame, t)
                            h.ooo_bytes += plen
                            if h.ooo_bytes > OOO_LIMIT:
                                self._skip_to(conn, d, h, min(h.ooo), frame, t, out)
                if fin:
                    h.fin_offset = off + seglen
                    h.fin_frame = frame
                h.last_keepalive = keepalive
            # -- acknowledgements and windows (from this side, about the other) --
            if flags & TCP_ACK and not flags & (TCP_SYN | TCP_FIN | TCP_RST):
                # a duplicate ACK repeats window and ACK at the next sequence number, and does
                # not answer a keep-alive (Wireshark: "keep-alive ACK")
                if (seglen == 0 and win and win == h.last_window and ack == h.last_ack
                        and off == mx and not r.last_keepalive):
                    h.dupacks += 1
                    h.duplicate_acks += 1
                elif ack != h.last_ack:
                    h.dupacks = 0
                if win == 0:
                    h.zero_window_events += 1
                    if len(h.zero_window_frames) < RETRANS_SAMPLES:
                        h.zero_window_frames.append(frame)
                    if h.zero_window_start is None:
                        h.zero_window_start = t
                elif h.zero_window_start is not None:
                    h.zero_window_time += t - h.zero_window_start
                    h.zero_window_start = None
            elif flags & TCP_ACK and ack != h.last_ack:
                h.dupacks = 0
            if flags & TCP_ACK:
                h.last_ack_time = t  # Wireshark's lastacktime: duplicate ACKs count too
                h.last_ack = ack
                h.last_window = win
                if r.base is not None:
                    aoff = r.offset(ack)
                    r.peer_ack = aoff
                    if self.series is not None and not flags & TCP_SYN:  # scaled by the acker's shift
                        shift = h.window_scale if (h.window_scale is not None
                                                   and r.window_scale is not None) else 0
                        self.series.acked(r, t, aoff, aoff + (win << shift))
                    if aoff > r.delivered and aoff - r.delivered < MAX_GAP:
                        stop = aoff
                        if r.fin_offset is not None and r.fin_offset < stop:
                            stop = r.fin_offset
                        if r.ooo:
                            stop = min(stop, min(r.ooo))
                        if stop > r.delivered:
                            self._skip_to(conn, 1 - d, r, stop, frame, t, out)
            if (flags & (TCP_SYN | TCP_ACK) == TCP_ACK and not conn.handshake_rtt
                    and conn.mru_syn_time is not None):
                # Wireshark's initial RTT (ts_first_rtt): the first segment with ACK and
                # without SYN, either way, after the most recent SYN; a retransmitted SYN
                # restarts it, so the RTO is not part of it
                conn.handshake_rtt = t - conn.mru_syn_time
            if flags & TCP_RST:
                h.resets += 1
                if h.reset_frame is None:
                    h.reset_frame, h.reset_time = frame, t
                if conn.state != "reset":
                    conn.state = "reset"
                    self._close(conn, "reset", frame, t, out)
            elif (conn.state == "open" and h.fin_offset is not None and r.fin_offset is not None
                  and h.delivered >= h.fin_offset and r.delivered >= r.fin_offset):
                conn.state = "closed"
                self._close(conn, "fin", frame, t, out)

    def finish(self) -> list[TcpEvent]:
        """The capture ended: flush what is held and report open connections."""
        out: list[TcpEvent] = []
        for conn in self.connections:
            if not conn.closed_reported:
                self._close(conn, "end", conn.last_frame, conn.end_time, out)
        return out

    # -- the batch path ---------------------------------------------------
    def _flow_ready(self, conn, h, r) -> bool:
        """Whether a direction's segments can be taken as a run: the connection is open,
        both directions are anchored, nothing is held back or pending (no hole, no FIN),
        and the initial RTT is settled."""
        return (conn.state == "open" and not conn.closed_reported and h.base is not None
                and r.base is not None and h.delivered == h.max_end and not h.ooo
                and h.fin_offset is None and r.fin_offset is None
                and (h.peer_ack is None or h.peer_ack <= h.max_end)
                and (conn.handshake_rtt or conn.mru_syn_time is None))

    def _batch_run(self, segs: Segments, a: int, b: int, out: list) -> int:
        """Take segments [a, x) of the batch at once, where x is the first exceptional one
        (or b); return x.  [a, b) holds none of :meth:`feed`'s pre-scanned segments: each
        has ACK (and PSH) and no other flag, nothing cut by the snap length, not one byte
        of data (small data is the stall rule's, applied here in order, :meth:`_stall_rule`).
        Ordinary besides means: data exactly where its direction's stream goes on, a pure
        ACK that does not repeat the last one (no duplicate-ACK candidate), an
        acknowledgement no further than the data seen.  For those the per-segment rules
        come down to sums and last values, computed here with numpy over the batch's
        header arrays; the payload goes up as views of the batch buffer."""
        plen = segs.plen[a:b]
        win = segs.window[a:b]
        seq = segs.seq[a:b]
        ack = segs.ack[a:b]
        w = b - a
        ok = np.ones(w, dtype=bool)
        k1 = (segs.src[a:b] << 16) | segs.sport[a:b]
        k2 = (segs.dst[a:b] << 16) | segs.dport[a:b]
        first, inv, members = _flows(k1, k2, ok)
        x = w if ok.all() else int(np.argmin(ok))  # (a hash collision)
        table = self._table
        flows = []  # per flow: (conn, d, h, r, window-relative indexes in order)
        where = {}
        src, sport, dst, dport = segs.src, segs.sport, segs.dst, segs.dport
        for j, idx in enumerate(members):
            f = a + first[j]
            entry = table.get((int(src[f]), int(sport[f]), int(dst[f]), int(dport[f])))
            if entry is not None:
                conn, d = entry
                h, r = conn.half[d], conn.half[1 - d]
                if self._flow_ready(conn, h, r):
                    flows.append((conn, d, h, r, idx))
                    where[(conn.id, d)] = j
                    continue
            x = min(x, first[j])
            flows.append(None)
        # each flow's columns, gathered once in flow order (a window of one flow needs no
        # gather): payload length, stream bytes up to each segment, ACK and window; then
        # per flow the first segment that breaks the rules
        offs = np.zeros(w, dtype=np.int64)  # stream offset of each data segment's bytes
        cols = []
        checked = [None] * len(flows)  # per flow: its data segments, ACK distances, r.delivered
        # (a window of both directions of one connection and nothing else, the common one:
        # what one way sent before each segment of the other is a cumulative sum of the
        # window less the other's own, no search)
        pair = len(where) == 2 == len(flows) and flows[0][0] is flows[1][0]
        total = np.cumsum(plen) if pair else None
        for fl in flows:
            if fl is None:
                cols.append(None)
                continue
            idx = fl[4]
            if len(idx) == w:
                cols.append((plen, np.cumsum(plen), ack, win, seq))
            else:
                pl = plen[idx]
                cols.append((pl, np.cumsum(pl), ack[idx], win[idx], seq[idx]))
        for j, fl in enumerate(flows):
            if fl is None:
                continue
            conn, d, h, r, idx = fl
            pl, sent, ak, wn, sq = cols[j]
            nd = int(np.count_nonzero(pl))  # data segments of the flow in the window
            if nd:
                o = sent - pl
                o += h.max_end
                if len(idx) == w:
                    offs = o
                else:
                    offs[idx] = o
                bad = sq != ((o + h.base) & M32)  # data exactly where the stream goes on
            else:
                bad = sq != ((h.max_end + h.base) & M32)
            if nd < len(pl):
                # a duplicate-ACK candidate: a pure ACK with a non-zero window that repeats
                # the previous ACK and window of its direction (keep-alives, a pure ACK one
                # before the next sequence number, failed the test above)
                same = np.empty(len(pl), dtype=bool)
                same[0] = (h.last_ack is not None and ak[0] == h.last_ack
                           and wn[0] == h.last_window)
                np.logical_and(ak[1:] == ak[:-1], wn[1:] == wn[:-1], out=same[1:])
                same &= wn != 0
                if nd:
                    same &= pl == 0
                bad |= same
            # the acknowledgement against what was delivered of the other way (bytes
            # acknowledged beyond it and never captured are a gap, the per-segment path's):
            # the signed distance from the other way's delivered offset (negative from
            # 2**31 on), at most that way's data in the run before this segment
            dd = (ak - (r.base + r.delivered)) & M32
            jr = where.get((conn.id, 1 - d))
            if jr is None or not cols[jr][1][-1]:
                seen = 0
            elif pair:
                seen = total[idx] - sent
            else:
                seen = np.concatenate(([0], cols[jr][1]))[np.searchsorted(flows[jr][4], idx)]
            bad |= (dd > seen) & (dd < 0x80000000)
            k = int(np.argmax(bad))
            if bad[k]:
                x = min(x, int(idx[k]))
            checked[j] = (nd, dd, r.delivered)
        if x < BATCH_MIN and x < w:
            return a  # too short a run to pay: the caller goes segment by segment
        # -- the run [a, a + x): apply it --------------------------------
        self.segments_in_runs += x
        times = segs.time[a:b]
        wire = segs.wirelen[a:b]
        last_of_conn = {}
        # each direction's last ACK, window, ACK time and data time before the run: a data
        # segment before the first ACK of the run was sent into those, whichever flow is
        # applied first
        before = {id(fl[2]): (fl[2].last_ack, fl[2].last_window, fl[2].last_ack_time,
                              fl[2].data_time) for fl in flows if fl is not None}
        for j, fl in enumerate(flows):
            if fl is None:
                continue
            conn, d, h, r, idx = fl
            pl, sent, ak, wn, _sq = cols[j]
            nd, dd, r_delivered = checked[j]
            c = len(idx) if x >= w else int(np.searchsorted(idx, x))
            if not c:
                continue
            if c < len(idx):
                idx, pl, sent, ak, wn, dd = idx[:c], pl[:c], sent[:c], ak[:c], wn[:c], dd[:c]
                nd = int(np.count_nonzero(pl)) if nd else 0
            h.packets += c
            h.bytes += int((wire if c == w else wire[idx]).sum())
            h.last_keepalive = False
            if nd:
                if nd == c:
                    data, ends, dl = idx, sent, pl
                    nth = np.arange(c) if pair else None
                else:
                    has = pl > 0
                    data, ends, dl = idx[has], sent[has], pl[has]
                    nth = np.flatnonzero(has) if pair else None
                ends = ends + h.max_end
                r_before = before.get(id(r)) or (r.last_ack, r.last_window, r.last_ack_time,
                                                 r.data_time)
                jr = where.get((conn.id, 1 - d))
                # (the receiver's segments before each data segment: of a pair, the window
                # positions before it less this flow's)
                receiver = None if jr is None else (flows[jr][4], cols[jr][2], cols[jr][3],
                                                    None if nth is None else data - nth)
                self._window_limited(h, r, r_before, data, ends, receiver)
                small = dl <= STALL_SMALL
                if h.stall_probe is not None or small.any():
                    self._stall_rule(h, r_before, data, ends, dl, small,
                                     None if jr is None else (flows[jr][4], cols[jr][1]), ack,
                                     times, segs.frame[a:b])
                h.payload_bytes += int(sent[-1])
                h.data_segments += nd
                end = int(ends[-1])
                h.max_end = h.delivered = end
                h.max_time = h.data_time = float(times[data[-1]])
                if self.series is not None:
                    self.series.sent_run(h, times[data], ends)
            last = int(idx[-1])
            prev = h.last_ack
            if prev is None or (ak != prev).any():
                h.dupacks = 0
            zero = wn == 0
            if zero.any() or h.zero_window_start is not None:
                self._zero_windows(h, zero, times[idx], segs.frame[a:b][idx])
            h.last_ack_time = float(times[last])
            h.last_ack = int(ak[-1])
            h.last_window = int(wn[-1])
            dd_last = int(dd[-1])
            r.peer_ack = r_delivered + (dd_last - (1 << 32) if dd_last >= 1 << 31 else dd_last)
            if self.series is not None:
                shift = h.window_scale if (h.window_scale is not None
                                           and r.window_scale is not None) else 0
                ao = r_delivered + np.where(dd >= 0x80000000, dd - 0x100000000, dd)
                self.series.acked_run(r, times[idx], ao, ao + (wn << shift))
            if last_of_conn.get(conn, -1) < last:
                last_of_conn[conn] = last
        for conn, last in last_of_conn.items():
            conn.end_time = float(times[last])
            conn.last_frame = int(segs.frame[a + last])
        # -- stream data, in capture order, one event per run of a direction --
        di = np.flatnonzero(plen[:x] > 0)
        if len(di):
            fl_of = inv[di]
            cut = np.flatnonzero(np.diff(fl_of)) + 1
            starts = np.concatenate(([0], cut)).tolist()
            stops = np.concatenate((cut, [len(di)])).tolist()
            mv = segs.view
            poff = segs.poff[a:b]
            frame = segs.frame[a:b]
            for s0, s1 in zip(starts, stops):
                sel = di[s0:s1]
                conn, d, h, _r, _idx = flows[int(fl_of[s0])]
                p0 = poff[sel]
                off = int(offs[sel[0]])
                size = int(plen[sel].sum())
                ev = StreamData.spanned(conn, d, off, mv, p0, p0 + plen[sel],
                                        frame[sel], times[sel], size)
                last_ev = out[-1] if out else None
                if (type(last_ev) is StreamData and last_ev.conn is conn and last_ev.direction == d
                        and last_ev.offset + last_ev.size == off):
                    last_ev.extend(ev)
                else:
                    out.append(ev)
        return a + x

    @staticmethod
    def _zero_windows(h, zero, times, frames) -> None:
        """The zero-window rules for a run of one direction's ACKs: each zero window is an
        event; the time from the first zero window to the next non-zero one is counted."""
        n0 = int(zero.sum())
        if n0:
            h.zero_window_events += n0
            room = RETRANS_SAMPLES - len(h.zero_window_frames)
            if room > 0:
                h.zero_window_frames += frames[zero][:room].tolist()
        before = np.empty(len(zero), dtype=bool)
        before[0] = h.zero_window_start is not None
        before[1:] = zero[:-1]
        rises = times[zero & ~before].tolist()
        falls = times[~zero & before].tolist()
        if h.zero_window_start is not None:
            rises.insert(0, h.zero_window_start)
        for t0, t1 in zip(rises, falls):  # in order, as the per-segment sums go
            h.zero_window_time += t1 - t0
        h.zero_window_start = rises[-1] if len(rises) > len(falls) else None

    @staticmethod
    def _stall_rule(h, r_before, data, ends, dl, small, receiver, ack, times, frames) -> None:
        """The stall rule (tcp/stalls.py) for a run's data segments of ``h`` (window indexes
        ``data``, stream ends ``ends``, lengths ``dl``) that are small or follow a small one:
        in order, each with the peer's last ACK, its time and the peer's last data time
        just before it, from the run (``receiver``: the peer's segments and its stream bytes
        up to each) or from before it (``r_before``), and ``h.delivered`` where the segment
        starts (the caller sets it after the run)."""
        calls = small.copy()
        calls[1:] |= small[:-1]
        if h.stall_probe is not None:
            calls[0] = True
        ps = np.flatnonzero(calls).tolist()
        at = data[ps]
        last_ack, _w, last_ack_time, data_time = r_before
        k = [0] * len(ps)
        if receiver is not None:
            ridx, rsent = receiver
            k = np.searchsorted(ridx, at).tolist()  # the peer's segments before each
        for p, i, kk in zip(ps, at.tolist(), k):
            peer = _PeerAt(last_ack, last_ack_time, data_time)
            if kk:
                # its last data segment: where its stream bytes first reached their count
                sent = int(rsent[kk - 1])
                sent_at = ridx[int(np.searchsorted(rsent, sent))] if sent else None
                peer = _PeerAt(int(ack[ridx[kk - 1]]), float(times[ridx[kk - 1]]),
                               data_time if sent_at is None else float(times[sent_at]))
            end, size = int(ends[p]), int(dl[p])
            h.delivered = end - size
            note_segment(h, peer, int(frames[i]), float(times[i]), end, size)

    @staticmethod
    def _window_limited(h, r, r_before, data, ends, receiver) -> None:
        """Count the data segments sent with the receiver's window (nearly) full: the last
        ACK and window the receiver sent before each, from the run (``receiver``: its
        segments, ACKs and windows in the run, and how many of them come before each data
        segment when known) or from before it (``r_before``: the receiver's last ACK and
        window before the run)."""
        last_ack, last_window = r_before[0], r_before[1]
        ws = r.window_scale if (h.window_scale is not None and r.window_scale is not None) else 0
        base = h.base + h.delivered
        if receiver is None:
            if last_ack is None or last_window is None:
                return
            dd = (last_ack - base) & M32
            acked = h.delivered + (dd - 0x100000000 if dd >= 0x80000000 else dd)
            h.window_limited += int(np.count_nonzero(ends - acked >= 0.9 * (last_window << ws)))
            return
        ridx, rak, rwn, k = receiver
        if k is None:
            k = np.searchsorted(ridx, data)  # the receiver's segments before each (0: none)
        la = np.concatenate(([-1 if last_ack is None else last_ack], rak))[k]
        lw = np.concatenate(([-1 if last_window is None else last_window], rwn))[k]
        dd = (la - base) & M32
        acked = h.delivered + np.where(dd >= 0x80000000, dd - 0x100000000, dd)
        limited = ends - acked >= 0.9 * (lw << ws)
        if last_ack is None or last_window is None:
            limited &= k > 0
        h.window_limited += int(np.count_nonzero(limited))

    # -- internals --------------------------------------------------------
    def _classify(self, conn, h, r, off, seglen, end, seq, t, syn: bool = False) -> None:
        """A segment that does not advance the stream (or resends acknowledged bytes):
        spurious retransmission, fast retransmission, out-of-order or retransmission,
        tested in that order as packet-tcp.c (Wireshark 4.0) does; ``h.last_class``
        says which.  Spurious ones count as retransmissions (tshark flags them
        tcp.analysis.retransmission too) and also in ``spurious_retransmissions``.
        A repeated SYN (``syn``) is only counted: no resent bytes, no wait for them.
        Times are compared in whole microseconds, where Wireshark compares nanoseconds: a
        capture time as float seconds is exact to about 0.24 us only (at today's epoch), so
        the difference of two is rounded to the resolution of most captures."""
        mx = h.max_end
        advanced = not off < mx or (seglen > 1 and off == mx - 1)
        pa = h.peer_ack
        if seglen and pa is not None and off + seglen <= pa:
            kind = "spurious"
            h.spurious_retransmissions += 1
        elif advanced:
            h.last_class = "ooo"  # nothing to count: the caller skips the sample too
            return
        elif r.dupacks >= 2 and r.last_ack == seq and round((t - r.last_ack_time) * 1e6) < FAST_WINDOW:
            kind = "fast"
            h.fast_retransmissions += 1
        elif (round((t - h.max_time) * 1e6) < round((conn.handshake_rtt or DEFAULT_OOO_THRESHOLD) * 1e6)
              and mx != end):
            h.out_of_order_segments += 1
            h.last_class = "ooo"
            return
        else:
            kind = "retransmission"
        h.last_class = kind
        h.retransmitted_segments += 1
        if syn:
            return
        h.retransmission_wait += t - h.data_time
        if self.series is not None:
            self.series.retransmitted(h, t, off)
        h.retransmitted_bytes += seglen

    def _is_new_syn(self, entry, seq: int) -> bool:
        conn, d = entry
        h = conn.half[d]
        return h.isn is None or seq != h.isn

    def _open(self, src, sport, dst, dport, flags, frame, t, out) -> tuple[Connection, int]:
        ports = self.server_ports
        if flags & TCP_SYN:
            client_is_src = not flags & TCP_ACK
            how = "syn"
        elif (dport in ports) != (sport in ports):
            client_is_src = dport in ports
            how = "port"
        else:
            client_is_src = sport >= dport
            how = "lower-port"
        if client_is_src:
            conn = Connection(len(self.connections) + 1, src, sport, dst, dport, how, t, frame)
        else:
            conn = Connection(len(self.connections) + 1, dst, dport, src, sport, how, t, frame)
        if self.series is not None:
            for h in conn.half:
                self.series.open(h)
        self.connections.append(conn)
        fwd = (conn, CLIENT_TO_SERVER if client_is_src else SERVER_TO_CLIENT)
        rev = (conn, SERVER_TO_CLIENT if client_is_src else CLIENT_TO_SERVER)
        self._table[(src, sport, dst, dport)] = fwd
        self._table[(dst, dport, src, sport)] = rev
        out.append(ConnectionOpened(conn))
        return fwd

    def _gap(self, conn, d, h, offset, size, frame, t, out) -> None:
        h.gaps += 1
        if len(h.gap_frames) < RETRANS_SAMPLES:
            h.gap_frames.append(frame)
        h.missing_bytes += size
        out.append(StreamGap(conn, d, offset, size, frame, t))

    def _drain(self, conn, d, h, out) -> None:
        """Deliver held segments that now continue the stream."""
        ooo = h.ooo
        while ooo:
            off = min(ooo)
            if off > h.delivered:
                return
            data, missing, frame, t = ooo.pop(off)
            h.ooo_bytes -= len(data)
            dl = h.delivered
            plen = len(data)
            if off + plen > dl:
                piece = memoryview(data)[dl - off:]
                last = out[-1] if out else None
                if (type(last) is StreamData and last.conn is conn and last.direction == d
                        and last.offset + last.size == dl):
                    last.add(piece, frame, t)
                else:
                    out.append(StreamData(conn, d, dl, piece, frame, t))
                dl = off + plen
            if missing and off + plen + missing > dl:
                self._gap(conn, d, h, dl, off + plen + missing - dl, frame, t, out)
                dl = off + plen + missing
            h.delivered = max(h.delivered, dl)

    def _skip_to(self, conn, d, h, offset, frame, t, out) -> None:
        """Declare ``[delivered, offset)`` missing and continue after it."""
        if offset > h.delivered:
            self._gap(conn, d, h, h.delivered, offset - h.delivered, frame, t, out)
            h.delivered = offset
        self._drain(conn, d, h, out)

    def _close(self, conn, reason, frame, t, out) -> None:
        for d in (CLIENT_TO_SERVER, SERVER_TO_CLIENT):
            h = conn.half[d]
            if h.zero_window_start is not None:
                h.zero_window_time += t - h.zero_window_start
                h.zero_window_start = None
            while h.ooo:
                self._skip_to(conn, d, h, min(h.ooo), frame, t, out)
        if not conn.closed_reported:
            conn.closed_reported = True
            out.append(ConnectionClosed(conn, reason, frame, t))
