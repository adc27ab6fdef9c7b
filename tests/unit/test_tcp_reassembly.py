"""dicomtrace.tcp.TcpReassembler: segments -> ordered stream events (RFC 9293), in-process."""

from __future__ import annotations

from dicomtrace.net import Segments
from dicomtrace.net.decode import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN
from dicomtrace.tcp import ConnectionClosed, ConnectionOpened, StreamData, StreamGap, TcpReassembler

C, S = (0x0A000001, 50000), (0x0A000002, 104)
ISN_C, ISN_S = 1000, 5000


class Wire:
    """Segments of one connection, built in order (frame numbers count from 1)."""

    def __init__(self):
        self.rows = []
        self.data = bytearray()

    def seg(self, frm, to, seq, ack, flags, payload=b"", t=None):
        off = len(self.data)
        self.data += payload
        n = len(self.rows) + 1
        self.rows.append((n, float(n) / 100 if t is None else t, frm[0], to[0], frm[1], to[1], seq, ack, flags,
                          65535, off, len(payload)))
        return self

    def segments(self, rows=None) -> Segments:
        import numpy as np

        rows = self.rows if rows is None else rows
        cols = [np.asarray(c, dtype=np.float64 if i == 1 else np.int64) for i, c in enumerate(zip(*rows))]
        return Segments(bytes(self.data), *cols, np.zeros(len(rows), dtype=np.int64), cols[11] + 54, {})


def handshake() -> Wire:
    return (Wire().seg(C, S, ISN_C, 0, TCP_SYN).seg(S, C, ISN_S, ISN_C + 1, TCP_SYN | TCP_ACK)
            .seg(C, S, ISN_C + 1, ISN_S + 1, TCP_ACK))


def stream_bytes(events, direction):
    return b"".join(e.data for e in events if type(e) is StreamData and e.direction == direction)


def test_in_order_stream_and_close():
    w = handshake()
    w.seg(C, S, ISN_C + 1, ISN_S + 1, TCP_ACK, b"hello ").seg(C, S, ISN_C + 7, ISN_S + 1, TCP_ACK, b"world")
    w.seg(S, C, ISN_S + 1, ISN_C + 12, TCP_ACK, b"ok")
    w.seg(C, S, ISN_C + 12, ISN_S + 3, TCP_FIN | TCP_ACK).seg(S, C, ISN_S + 3, ISN_C + 13, TCP_FIN | TCP_ACK)
    r = TcpReassembler({104})
    events = r.feed(w.segments()) + r.finish()
    assert type(events[0]) is ConnectionOpened
    assert stream_bytes(events, 0) == b"hello world" and stream_bytes(events, 1) == b"ok"
    closed = [e for e in events if type(e) is ConnectionClosed]
    assert len(closed) == 1 and closed[0].reason == "fin"
    conn = r.connections[0]
    assert (conn.client_port, conn.server_port, conn.oriented_by) == (50000, 104, "syn")
    data = [e for e in events if type(e) is StreamData and e.direction == 0]
    assert data[0].frames == [4, 5]  # each piece keeps the frame it came in


def test_out_of_order_segment_is_held_until_the_hole_fills():
    w = handshake()
    w.seg(C, S, ISN_C + 7, ISN_S + 1, TCP_ACK, b"world").seg(C, S, ISN_C + 1, ISN_S + 1, TCP_ACK, b"hello ")
    r = TcpReassembler({104})
    events = r.feed(w.segments()) + r.finish()
    assert stream_bytes(events, 0) == b"hello world"
    assert not [e for e in events if type(e) is StreamGap]
    assert r.connections[0].client_to_server.out_of_order_segments == 1


def test_retransmission_is_counted_once_and_delivered_once():
    w = handshake()
    w.seg(C, S, ISN_C + 1, ISN_S + 1, TCP_ACK, b"abc").seg(C, S, ISN_C + 1, ISN_S + 1, TCP_ACK, b"abc", t=0.5)
    r = TcpReassembler({104})
    events = r.feed(w.segments()) + r.finish()
    assert stream_bytes(events, 0) == b"abc"
    assert r.connections[0].client_to_server.retransmitted_segments == 1


def test_bytes_never_captured_become_a_gap():
    w = handshake()
    w.seg(C, S, ISN_C + 1, ISN_S + 1, TCP_ACK, b"abc").seg(C, S, ISN_C + 104, ISN_S + 1, TCP_ACK, b"xyz")
    w.seg(S, C, ISN_S + 1, ISN_C + 107, TCP_ACK)  # the receiver acknowledges what we never saw
    r = TcpReassembler({104})
    events = r.feed(w.segments()) + r.finish()
    gaps = [e for e in events if type(e) is StreamGap]
    assert [(g.offset, g.size) for g in gaps] == [(3, 100)]
    assert stream_bytes(events, 0) == b"abcxyz"


def test_reset_closes_the_connection():
    w = handshake().seg(C, S, ISN_C + 1, ISN_S + 1, TCP_RST | TCP_ACK)
    r = TcpReassembler({104})
    events = r.feed(w.segments()) + r.finish()
    assert [e.reason for e in events if type(e) is ConnectionClosed] == ["reset"]
