"""dicomtrace.tcp.TcpReassembler: segments -> ordered stream events (RFC 9293), in-process."""

from __future__ import annotations

from dicomtrace.net import Segments
from dicomtrace.net.decode import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN
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


def window_filling_transfer(client: int, client_port: int, rounds: int = 20) -> Segments:
    """A client sends four full segments per round into a server's window of exactly four, and
    the server acknowledges each round: the fourth segment of every round fills the window."""
    import numpy as np

    c, s, mss, window = (client, client_port), (0x0A000002, 104), 1460, 4 * 1460
    rows, data = [], bytearray()

    def seg(frm, to, seq, ack, flags, win, size=0):
        rows.append((len(rows) + 1, 1.0 + len(rows) / 1000, frm[0], to[0], frm[1], to[1], seq, ack,
                     flags, win, len(data), size))
        data.extend(bytes(size))

    seg(c, s, ISN_C, 0, TCP_SYN, 65535)
    seg(s, c, ISN_S, ISN_C + 1, TCP_SYN | TCP_ACK, window)
    seg(c, s, ISN_C + 1, ISN_S + 1, TCP_ACK, 65535)
    sent = 0
    for _ in range(rounds):
        for _ in range(4):
            seg(c, s, ISN_C + 1 + sent, ISN_S + 1, TCP_ACK, 65535, mss)
            sent += mss
        seg(s, c, ISN_S + 1, ISN_C + 1 + sent, TCP_ACK, window)
    cols = [np.asarray(col, dtype=np.float64 if i == 1 else np.int64) for i, col in enumerate(zip(*rows))]
    return Segments(bytes(data), *cols, np.zeros(len(rows), dtype=np.int64), cols[11] + 54, {})


def test_window_limited_segments_counted_the_same_in_runs():
    """The window a data segment is sent into is the receiver's last ACK before it, also for
    the first segments of a run when the receiver's ACKs of the same run are applied first
    (the flows of a run are taken in the order of a hash of their addresses: a client's
    address below and above the server's gives both orders)."""
    for client, port in [(a, p) for a in (0x0A000001, 0x0A000003) for p in range(50000, 50004)]:
        counts = {}
        for path in ("batch", "segment"):
            tcp = TcpReassembler([104], path=path)
            tcp.feed(window_filling_transfer(client, port))
            counts[path] = tcp.connections[0].half[0].window_limited
            if path == "batch":
                assert tcp.segments_in_runs > 50
        assert counts["batch"] == counts["segment"] == 20, (hex(client), port)


def test_flows_of_a_window_and_hash_collisions():
    """One flow, two flows and more are found alike; a flow whose hash equals another's is
    never taken as that one (its segments are marked not ok)."""
    import numpy as np

    from dicomtrace.tcp.reassembly import _flows

    a1, a2 = (0x0A000001 << 16) | 50000, (0x0A000002 << 16) | 104
    b1 = (0x0A000003 << 16) | 50001
    wrap = np.array([a1, b1], dtype=np.int64) * 0x9E3779B1  # (as the hash does, modulo 2**64)
    b2 = int(wrap[0] ^ a2 ^ wrap[1])  # so that b1 * C ^ b2 == a1 * C ^ a2
    for k1, k2, flows, bad in [
        ([a1] * 4, [a2] * 4, [[0, 1, 2, 3]], []),
        ([a1, a2, a1, a2], [a2, a1, a2, a1], [[0, 2], [1, 3]], []),
        ([a1, a2, b1, a1], [a2, a1, a2, a2], [[0, 3], [1], [2]], []),
        ([a1, b1, a1], [a2, b2, a2], [[0, 1, 2]], [1]),  # b's hash is a's
        ([a2, a1, b1], [a1, a2, b2], [[0], [1, 2]], [2]),
        ([a1, a2, a2, a1], [a2, a1, b1, a2], [[0, 3], [1], [2]], []),  # the server to another
        ([a1, a2, a1], [a1, a1, a1], [[0, 2], [1]], []),  # (from a port to itself)
    ]:
        k1, k2 = np.array(k1, dtype=np.int64), np.array(k2, dtype=np.int64)
        ok = np.ones(len(k1), dtype=bool)
        first, inv, members = _flows(k1, k2, ok)
        assert sorted(m.tolist() for m in members) == sorted(flows)
        assert [int(m[0]) for m in members] == list(first)
        for j, m in enumerate(members):
            assert (inv[m] == j).all()
        assert np.flatnonzero(~ok).tolist() == bad



def stalling_transfer(ack_delay: float, server_data: str, ports=(50000,), client=C[0]) -> Segments:
    """A client writes a 12-byte header alone, the server acknowledges it after ``ack_delay``
    (a delayed ACK: 40 ms is a stall, 1 ms is none), and the client sends the rest of the
    message in full segments that the server acknowledges every other one; three such
    messages (the stall rule's first data after a small one).  The server sends data of its
    own ``"after"`` its ACK (no stall: the client waited for that), ``"before"`` the header
    (a stall still) or not at all.  With several client ports, their connections go on
    side by side."""
    import numpy as np

    s = (0x0A000002, 104)
    rows = []  # (time, src, dst, sport, dport, seq, ack, flags, payload size)
    for n, port in enumerate(ports):
        c = (client, port)
        isn = {c: ISN_C, s: ISN_S}
        sent = {c: 0, s: 0}
        t = 1.0 + n * 1e-6
        rows += [(t, client, S[0], port, 104, ISN_C, 0, TCP_SYN, 0),
                 (t + 1e-4, S[0], client, 104, port, ISN_S, ISN_C + 1, TCP_SYN | TCP_ACK, 0),
                 (t + 2e-4, client, S[0], port, 104, ISN_C + 1, ISN_S + 1, TCP_ACK, 0)]
        t += 2e-4

        def seg(frm, size=0, dt=0.0001):
            nonlocal t
            t += dt
            to = s if frm == c else c
            rows.append((t, frm[0], to[0], frm[1], to[1], isn[frm] + 1 + sent[frm],
                         isn[to] + 1 + sent[to], TCP_ACK, size))
            sent[frm] += size

        for _ in range(3):
            if server_data == "before":
                seg(s, 100)
            seg(c, 12)
            seg(s, dt=ack_delay)
            if server_data == "after":
                seg(s, 100)
            for i in range(40):
                seg(c, 1000)
                if i % 2:
                    seg(s)
    rows.sort()
    sizes = np.array([r[-1] for r in rows], dtype=np.int64)
    poff = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    cols = [np.arange(1, len(rows) + 1)] + [np.asarray(col, dtype=np.float64 if i == 0 else np.int64)
                                            for i, col in enumerate(list(zip(*rows))[:8])]
    data = b"".join(bytes([i & 0xFF]) * n for i, n in enumerate(sizes.tolist()))
    return Segments(data, *cols, np.full(len(rows), 65535), poff, sizes, np.zeros(len(rows), dtype=np.int64),
                    sizes + 54, {})


def test_stall_rule_the_same_in_runs():
    """A small segment and the full one after it are judged by the stall rule (tcp/stalls.py)
    inside a run as the per-segment path judges them: the peer's last ACK and data before
    each come from the run or, when the batch is cut right after the small segment or after
    the ACK, from before the run; and with other connections in the run, whatever order
    their flows are applied in."""
    import dataclasses

    import numpy as np

    # (flows of more than two are applied in the order of a hash of their addresses: the
    # server's ACK flows come after the clients' for one client address, before for the other)
    for delay, server_data, ports, client, stalls in [
            (0.04, "", (50000,), C[0], 3), (0.001, "", (50000,), C[0], 0),
            (0.04, "after", (50000,), C[0], 0), (0.04, "before", (50000,), C[0], 3),
            (0.04, "", (50000, 50001, 50002), C[0], 3),
            (0.04, "", (50000, 50001, 50002), 0x0A000003, 3),
            (0.04, "after", (50003, 50004), 0x0A000003, 0),
            (0.04, "before", (50003, 50004), 0x0A000003, 3)]:
        segs = stalling_transfer(delay, server_data, ports, client)
        small = [i for i, p in enumerate(segs.plen.tolist()) if p == 12]
        halves = {}
        second = small[len(ports)]  # the first small segment of the second messages
        for cut in [None] + list(range(second + 1, second + 2 * len(ports) + 3)):
            for path in ("batch", "segment"):
                tcp = TcpReassembler([104], path=path)
                parts = [segs] if cut is None else [segs.subset(np.arange(cut)),
                                                    segs.subset(np.arange(cut, len(segs)))]
                for part in parts:
                    tcp.feed(part)
                halves[cut, path] = [dataclasses.astuple(h) for conn in tcp.connections
                                     for h in conn.half]
                if path == "batch":
                    assert tcp.segments_in_runs > 170 * len(ports), (delay, server_data, cut)
            assert halves[cut, "batch"] == halves[cut, "segment"], (delay, server_data, ports, cut)
        assert [conn.half[0].stalls for conn in tcp.connections] == [stalls] * len(ports)


def eventful_transfer() -> Segments:
    """A transfer that leaves and rejoins the fast path: full data one way, ACKs the other
    with a window that fills (window-limited segments, also in a stretch without ACKs),
    duplicate ACKs, zero windows and their end, the server's own data between its ACKs,
    segments never captured (holes the ACKs then cover, one of a single byte), a second
    connection beside it, and a third seen from the middle whose receiver had sent no ACK."""
    import numpy as np

    rows = []  # (time, src, dst, sport, dport, seq, ack, flags, window, payload size)
    s = (0x0A000002, 104)
    t = [1.0]

    def connection(port, handshake=True):
        c = (0x0A000001, port)
        state = {"c": ISN_C + 1, "s": ISN_S + 1}

        def seg(frm, size=0, win=8000, skip=False, flags=TCP_ACK, dt=0.0001):
            t[0] += dt
            me, peer = ("c", "s") if frm == "c" else ("s", "c")
            a, b = (c, s) if frm == "c" else (s, c)
            if not skip:
                rows.append((t[0], a[0], b[0], a[1], b[1], state[me], state[peer], flags, win, size))
            state[me] += size
        if not handshake:
            return seg
        rows.append((t[0], c[0], s[0], port, 104, ISN_C, 0, TCP_SYN, 65535, 0))
        rows.append((t[0] + 1e-5, s[0], c[0], 104, port, ISN_S, ISN_C + 1, TCP_SYN | TCP_ACK, 8000, 0))
        rows.append((t[0] + 2e-5, c[0], s[0], port, 104, ISN_C + 1, ISN_S + 1, TCP_ACK, 65535, 0))
        t[0] += 3e-5
        return seg

    a = connection(50000)
    for i in range(60):  # plain bulk: data, every other one acknowledged
        a("c", 1000)
        if i % 2:
            a("s", win=2000 if 20 <= i < 30 else 8000)  # a full window for a while
    for _ in range(3):
        a("s")  # duplicate ACKs
    for i in range(40):
        a("c", 1000)
        if i % 4 == 3:
            a("s", win=0 if 10 <= i < 20 else 8000)  # zero windows, then open again
    b = connection(50001)
    for i in range(30):  # two connections side by side
        a("c", 1000)
        b("c", 1000)
        if i % 2:
            a("s")
            b("s", 300)  # the server's data with its ACK
    a("s", 1)  # (one byte of data: no run goes through it)
    a("c", 1, skip=True)  # a byte lost, acknowledged first thing in a run of two connections
    a("s")
    for i in range(20):
        b("s", 1000)
        if i % 2:
            b("c")
    for i in range(20):  # the server's data to one client, the other's data to it
        a("c", 1000)
        b("s", 1000)
        if i % 2:
            a("s")
    b("c")
    for i in range(40):
        a("c", 1000, skip=i == 5)  # a segment the capture lost
        if i % 2:
            a("s")
    a("s", 1)
    a("c", 1, skip=True)  # a byte the capture lost, acknowledged before what follows it
    for i in range(20):
        a("s", win=8000 - 100 * i)  # (window updates: no duplicate ACKs)
    a("s", 1)
    for i in range(20):  # no ACK for a while: the bytes in flight fill the window
        a("c", 1000)
    a("s", 1)
    for i in range(30):  # small segments in runs: the stall rule's
        a("c", 12 if i % 10 in (0, 1, 9) else 1000)
        if i % 10 == 1 or i % 3 == 2:
            a("s", dt=0.03 if i % 10 == 1 else 0.0001)  # a delayed ACK of the small ones
    for i in range(20):
        a("c", 1000)
        if i % 2:
            a("s")
    m = connection(50002, handshake=False)  # seen from the middle: no ACK from its server yet
    m("s", 100, flags=TCP_PSH)
    for i in range(40):
        b("c", 1000)
        b("s")
        m("c", 1000)
        if i % 8 == 7:
            m("s", win=4000)
    rows.sort()
    n = len(rows)
    sizes = np.array([r[-1] for r in rows], dtype=np.int64)
    poff = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    cols = [np.asarray(col, dtype=np.float64 if i == 0 else np.int64) for i, col in enumerate(zip(*rows))]
    data = b"".join(bytes([i & 0xFF]) * k for i, k in enumerate(sizes.tolist()))
    return Segments(data, np.arange(1, n + 1), *cols[:9], poff, sizes, np.zeros(n, dtype=np.int64),
                    sizes + 54, {})


def test_runs_cut_anywhere_give_the_per_segment_figures():
    """Wherever a batch ends (so wherever a run starts), the batch path's figures and
    events are the per-segment path's: duplicate ACKs, zero windows, full windows, a hole
    and two connections fall at every boundary once."""
    import dataclasses

    import numpy as np

    segs = eventful_transfer()
    n = len(segs)

    def run(path, cut):
        tcp = TcpReassembler([104], path=path)
        events = []
        for part in ([segs] if cut is None else [segs.subset(np.arange(cut)),
                                                 segs.subset(np.arange(cut, n))]):
            events += tcp.feed(part)
        events += tcp.finish()
        halves = [dataclasses.astuple(h) for conn in tcp.connections for h in conn.half]
        data = {(e.conn.id, e.direction): b"" for e in events if type(e) is StreamData}
        for e in events:
            if type(e) is StreamData:
                data[e.conn.id, e.direction] += e.data
        gaps = [(e.conn.id, e.direction, e.offset, e.size) for e in events if type(e) is StreamGap]
        return (halves, data, gaps), tcp

    reference, tcp = run("segment", None)
    half = tcp.connections[0].half
    assert (half[1].duplicate_acks, half[1].zero_window_events, len(reference[2])) == (3, 3, 3)
    assert half[0].window_limited > 0 and half[0].stalls == 3 and len(tcp.connections) == 3
    whole, tcp = run("batch", None)
    assert tcp.segments_in_runs > n * 0.7
    assert whole == reference
    for cut in range(1, n, 2):
        assert run("batch", cut)[0] == reference, cut
