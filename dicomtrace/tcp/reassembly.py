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
from typing import Iterable

from dicomtrace.net.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Segments
from dicomtrace.tcp.stalls import STALL_SMALL, note_segment

OOO_LIMIT = 8 << 20  # bytes held waiting for a hole to fill before it is declared a gap
MAX_GAP = 1 << 30  # an ACK further ahead than this is nonsense, not a gap
DEFAULT_OOO_THRESHOLD = 0.003  # s; Wireshark's out-of-order window when no RTT is known
RETRANS_SAMPLES = 200  # retransmitted frames remembered per direction (the rest are counted)

CLIENT_TO_SERVER, SERVER_TO_CLIENT = 0, 1


class Series:
    """A bounded time series: when it fills up, every other point is dropped and from then
    on only every other point is kept (memory stays flat, shape is kept)."""

    __slots__ = ("points", "stride", "skip", "limit")

    def __init__(self, limit: int = 8192):
        self.points: list[tuple] = []
        self.stride = 1
        self.skip = 0
        self.limit = limit

    def add(self, point: tuple) -> None:
        self.skip += 1
        if self.skip < self.stride:
            return
        self.skip = 0
        self.points.append(point)
        if len(self.points) >= self.limit:
            del self.points[1::2]
            self.stride *= 2


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
    sent: Series | None = None
    acked: Series | None = None
    retransmitted_at: list = field(default_factory=list)  # (time, offset) of the first ones
    # reassembly state
    base: int | None = None  # absolute sequence number of stream offset 0
    delivered: int = 0  # stream offset of the next byte to deliver
    max_end: int | None = None  # highest stream offset seen (Wireshark's nextseq)
    fin_offset: int | None = None
    max_time: float = 0.0  # when max_end last advanced (Wireshark's nextseqtime)
    last_ack: int | None = None
    peer_ack: int | None = None  # stream offset of this direction the peer last acknowledged
    last_class: str = ""  # how _classify judged the last segment it saw
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

    __slots__ = ("conn", "direction", "offset", "size", "pieces", "frames", "times")

    def __init__(self, conn, direction: int, offset: int, data, frame: int, time: float):
        self.conn = conn
        self.direction = direction  # CLIENT_TO_SERVER or SERVER_TO_CLIENT (as oriented at open)
        self.offset = offset
        self.size = len(data)
        self.pieces = [data]
        self.frames = [frame]
        self.times = [time]

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
        return self.frames[-1]

    @property
    def time(self) -> float:
        return self.times[-1]

    def __repr__(self) -> str:
        return (f"StreamData(conn={self.conn.id}, direction={self.direction}, offset={self.offset}, "
                f"size={self.size}, pieces={len(self.pieces)})")


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


class TcpReassembler:
    """Tracks every TCP connection of a capture and reassembles both directions."""

    def __init__(self, server_ports: Iterable[int] = (), record_series: bool = False):
        self.server_ports = frozenset(server_ports)
        self.record_series = record_series
        self.connections: list[Connection] = []
        self._table: dict[tuple, tuple[Connection, int]] = {}

    # -- public API -------------------------------------------------------
    def feed(self, segs: Segments) -> list[TcpEvent]:
        """Process a batch of segments; return the events they cause, in order."""
        out: list[TcpEvent] = []
        data = segs.data
        mv = memoryview(data)
        table = self._table
        syn_options = segs.syn_options
        for i, (frame, t, src, dst, sport, dport, seq, ack, flags, win, poff, plen, missing,
                wire) in enumerate(zip(segs.frame, segs.time, segs.src, segs.dst, segs.sport,
                                       segs.dport, segs.seq, segs.ack, segs.flags, segs.window,
                                       segs.poff, segs.plen, segs.missing, segs.wirelen)):
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
                if h.isn is not None and seq == h.isn:
                    h.retransmitted_segments += 1
                else:
                    h.isn = seq
                    h.peer_ack = None
                    h.base = (seq + 1) & 0xFFFFFFFF
                    h.delivered = 0
                    h.max_end = 0
                    h.max_time = t
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
                    h.max_time = t
                off = (seq - h.base - h.delivered) & 0xFFFFFFFF  # h.offset(seq), inlined
                if off >= 0x80000000:
                    off -= 0x100000000
                off += h.delivered
                fin = flags & TCP_FIN
                # -- health analysis, Wireshark's way (packet-tcp.c 4.0,
                # tcp_analyze_sequence_number: keep-alive, spurious, fast, out-of-order,
                # retransmission, in that order) -----------------------------------
                if seglen or fin:
                    end = off + seglen + (1 if fin else 0)
                    mx = h.max_end
                    pa = h.peer_ack
                    if ((off < mx or (pa is not None and seglen and off + seglen <= pa))
                            and not (seglen <= 1 and off == mx - 1 and not flags & (TCP_FIN | TCP_RST))):
                        self._classify(conn, h, r, off, seglen, end, seq, t)
                        if len(h.retransmissions) < RETRANS_SAMPLES and h.last_class != "ooo":
                            h.retransmissions.append((frame, t))
                    if end > h.max_end:
                        if seglen and (seglen <= STALL_SMALL or h.stall_probe is not None):
                            note_segment(h, r, frame, t, end, seglen)
                        h.max_end = end
                        h.max_time = t
                    if seglen:
                        h.data_segments += 1
                        if h.sent is not None:
                            h.sent.add((t, end))
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
                                    last.pieces.append(mv[poff + skip:poff + plen])  # last.add()
                                    last.frames.append(frame)
                                    last.times.append(t)
                                    last.size += plen - skip
                                else:
                                    out.append(StreamData(conn, d, dl, mv[poff + skip:poff + plen],
                                                          frame, t))
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
            # -- acknowledgements and windows (from this side, about the other) --
            if flags & TCP_ACK and not flags & (TCP_SYN | TCP_FIN | TCP_RST):
                if seglen == 0 and win and win == h.last_window and ack == h.last_ack:
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
            if flags & TCP_ACK:
                h.last_ack_time = t  # Wireshark's lastacktime: duplicate ACKs count too
                h.last_ack = ack
                h.last_window = win
                if r.base is not None:
                    aoff = r.offset(ack)
                    r.peer_ack = aoff
                    if r.acked is not None and not flags & TCP_SYN:  # scaled by the acker's shift
                        shift = h.window_scale if (h.window_scale is not None
                                                   and r.window_scale is not None) else 0
                        r.acked.add((t, aoff, aoff + (win << shift)))
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
        return out

    def finish(self) -> list[TcpEvent]:
        """The capture ended: flush what is held and report open connections."""
        out: list[TcpEvent] = []
        for conn in self.connections:
            if not conn.closed_reported:
                self._close(conn, "end", conn.last_frame, conn.end_time, out)
        return out

    # -- internals --------------------------------------------------------
    @staticmethod
    def _classify(conn, h, r, off, seglen, end, seq, t) -> None:
        """A segment that does not advance the stream (or resends acknowledged bytes):
        spurious retransmission, fast retransmission, out-of-order or retransmission,
        tested in that order as packet-tcp.c (Wireshark 4.0) does; ``h.last_class``
        says which.  Spurious ones count as retransmissions (tshark flags them
        tcp.analysis.retransmission too) and also in ``spurious_retransmissions``."""
        mx = h.max_end
        advanced = not off < mx or (seglen > 1 and off == mx - 1)
        pa = h.peer_ack
        if seglen and pa is not None and off + seglen <= pa:
            kind = "spurious"
            h.spurious_retransmissions += 1
        elif advanced:
            h.last_class = "ooo"  # nothing to count: the caller skips the sample too
            return
        elif (r.dupacks >= 2 and r.last_ack == seq and t - r.last_ack_time < 0.02):
            kind = "fast"
            h.fast_retransmissions += 1
        elif (round((t - h.max_time) * 1e7) < round((conn.handshake_rtt or DEFAULT_OOO_THRESHOLD) * 1e7)
              and mx != end):
            h.out_of_order_segments += 1
            h.last_class = "ooo"
            return
        else:
            kind = "retransmission"
        h.last_class = kind
        h.retransmission_wait += t - h.max_time
        if h.sent is not None and len(h.retransmitted_at) < RETRANS_SAMPLES:
            h.retransmitted_at.append((t, off))
        h.retransmitted_segments += 1
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
        if self.record_series:
            for h in conn.half:
                h.sent, h.acked = Series(), Series()
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
