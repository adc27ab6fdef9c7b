"""TCP conversations made to order (dpkt), for the cases real peers make only now and then.

:func:`tcp_rules_capture` writes one Ethernet pcap holding many short IPv4 connections, each
from its own seed: the handshake (SYNs and SYN/ACKs sent more than once), data from both sides
with losses the receiver does not see, resends (soon, after duplicate ACKs, much later),
keep-alives, zero and changing windows, duplicate and repeated ACKs, a FIN sent twice. Times
are whole microseconds from an epoch in 2023, with gaps of exactly one initial round trip and
of 20 ms among them, so that the boundaries of Wireshark's rules (out-of-order within the
initial RTT, fast retransmission within 20 ms of the last ACK) are hit where float seconds are
not exact. tshark is the referee for such a capture; nothing here knows what it should say.
"""

from __future__ import annotations

import random
import socket
import struct

_CLIENT, _SERVER = "10.0.0.1", "10.0.0.2"
_SERVER_PORT = 11112
_EPOCH_US = 1_700_000_000_000_000  # 2023-11-14, in microseconds
_MSS_OPTION = b"\x02\x04\x05\xb4"
BOUNDARY_CONNECTIONS = 16  # connections tcp_rules_capture adds for the out-of-order boundary


def _frame(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, win: int,
           data: bytes = b"", opts: bytes = b"") -> bytes:
    import dpkt
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
                       flags=flags, win=win, data=data)
    if opts:
        tcp.opts = opts
        tcp.off = 5 + len(opts) // 4
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=64, data=tcp)
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(src=b"\x02\0\0\0\0\1", dst=b"\x02\0\0\0\0\2", type=0x0800, data=ip)
    return bytes(eth)


class _Conversation:
    """One connection's frames, in time order (us), as a client and a server would send them."""

    def __init__(self, rnd: random.Random, sport: int, start_us: int):
        import dpkt
        self.rnd, self.sport, self.t = rnd, sport, start_us
        self.frames: list[tuple[int, bytes]] = []
        self.F = dpkt.tcp
        self.rtt = rnd.choice([14, 40, 250, 3000])  # us: the initial round trip
        self.gaps = [1, 2, self.rtt - 1, self.rtt, self.rtt + 1, 20_000, 19_999, 20_001, 50, 700,
                     5_000, 300_000]
        self.cseq = rnd.getrandbits(32)
        self.sseq = rnd.getrandbits(32)
        self.cwin, self.swin = 502, rnd.choice([502, 1000, 3000])

    def send(self, from_client: bool, seq: int, ack: int, flags: int, win: int,
             data: bytes = b"", opts: bytes = b"", gap: int | None = None) -> None:
        self.t += self.rnd.choice(self.gaps) if gap is None else gap
        src, dst = (_CLIENT, _SERVER) if from_client else (_SERVER, _CLIENT)
        sp, dp = (self.sport, _SERVER_PORT) if from_client else (_SERVER_PORT, self.sport)
        self.frames.append((self.t, _frame(src, dst, sp, dp, seq, ack, flags, win, data, opts)))

    def run(self) -> None:
        rnd, F = self.rnd, self.F
        A, P = F.TH_ACK, F.TH_PUSH
        isn = self.cseq
        for i in range(rnd.choice([1, 1, 2, 3])):  # the SYN, resent after a timeout
            self.send(True, isn, 0, F.TH_SYN, 64240, opts=_MSS_OPTION, gap=1_000_000 if i else 1)
        synack = self.rtt // 2
        for i in range(rnd.choice([1, 1, 2])):
            self.send(False, self.sseq, isn + 1, F.TH_SYN | A, 65160, opts=_MSS_OPTION,
                      gap=synack if not i else rnd.choice([1, 3]))
        cnxt, snxt = isn + 1, self.sseq + 1
        self.send(True, cnxt, snxt, A, self.cwin, gap=self.rtt - synack)
        sent: list[tuple[int, int]] = []  # client segments (seq, length)
        got: dict[int, int] = {}  # what reached the server: seq -> length
        rcv = cnxt  # the server's cumulative acknowledgement
        swin = self.swin
        loss = rnd.choice([0.0, 0.1, 0.3])
        # Not made here, as tshark 4.0 follows rules for them that dicomtrace does not: bytes
        # acknowledged that the capture never showed (a missed segment, or a one-byte
        # zero-window probe, which does not move tshark's nextseq on: "ACKed unseen segment"
        # then makes the next resend the other way a fast retransmission), and a SYN once data
        # flowed (tshark starts that direction's analysis over)

        def server_ack(n: int = 1, win: int | None = None) -> None:
            nonlocal rcv
            while rcv in got:
                rcv += got[rcv]
            for _ in range(n):
                self.send(False, snxt, rcv, A, swin if win is None else win)

        for step in range(rnd.randint(30, 160)):
            a = rnd.random()
            if a < 0.35:  # new data (a loss: it never reaches the server)
                n = rnd.choice([1448, 1448, 1448, 100, 12, 6, 2])  # (1 byte into a zero window: a probe)
                self.send(True, cnxt, snxt, A | P, self.cwin, b"x" * n)
                sent.append((cnxt, n))
                if rnd.random() >= loss:
                    got[cnxt] = n
                cnxt += n
            elif a < 0.47 and sent:  # a resend of something not (or already) acknowledged
                pending = [s for s in sent if s[0] >= rcv]
                seq, n = rnd.choice(pending[:3]) if pending and rnd.random() < 0.8 else rnd.choice(sent)
                self.send(True, seq, snxt, A | P, self.cwin, b"x" * n)
                if rnd.random() >= loss:
                    got[seq] = n
            elif a < 0.75:  # the server acknowledges, now and then more than once, or a window
                r = rnd.random()
                win = 0 if r < 0.15 else swin + 1 if r < 0.2 else None
                server_ack(rnd.choice([1, 1, 1, 2, 3]), win)
            elif a < 0.8:  # keep-alive (Linux's zero-window probe has this form too)
                self.send(True, cnxt - 1, snxt, A, self.cwin)
            elif a < 0.95:  # the server sends data (sometimes twice), the client acknowledges
                n = rnd.choice([1, 12, 100, 1448])
                for _ in range(rnd.choice([1, 1, 2])):
                    self.send(False, snxt, rcv, A | P, swin, b"y" * n)
                snxt += n
                if rnd.random() < 0.7:
                    self.send(True, cnxt, snxt, A, self.cwin)
            else:  # the server's window changes
                swin = rnd.choice([502, 1000, 3000])
                server_ack()
        if rnd.random() < 0.8:
            for _ in range(rnd.choice([1, 1, 2])):
                self.send(True, cnxt, snxt, F.TH_FIN | A, self.cwin)
            self.send(False, snxt, cnxt + 1, F.TH_FIN | A, swin)
            self.send(True, cnxt + 1, snxt + 1, A, self.cwin)


class _Boundary(_Conversation):
    """A 14 us handshake, then resends exactly one initial RTT after the stream last moved on
    (a retransmission: Wireshark's out-of-order window is open below it) and one microsecond
    sooner (out-of-order): float seconds near 1.7e9 are exact to 0.24 us only."""

    def run(self) -> None:
        F = self.F
        A = F.TH_ACK
        c, s = self.cseq, self.sseq
        self.send(True, c, 0, F.TH_SYN, 64240, opts=_MSS_OPTION, gap=1)
        self.send(False, s, c + 1, F.TH_SYN | A, 65160, opts=_MSS_OPTION, gap=5)
        self.send(True, c + 1, s + 1, A, 502, gap=9)
        seq = c + 1
        for k in range(6):
            self.send(True, seq, s + 1, A, 502, b"a" * 100, gap=300)  # an old one
            self.send(True, seq + 100, s + 1, A, 502, b"b" * 100, gap=1)  # the stream moves on
            self.send(True, seq, s + 1, A, 502, b"a" * 100, gap=14 - k % 2)
            seq += 200
            self.send(False, s + 1, seq, A, 1000, gap=300)


def tcp_rules_capture(path, seeds) -> int:
    """Write one pcap with a connection per seed (client ports 20000 + i, one after another,
    a second apart), then a few made for the out-of-order boundary (client ports 30000 + k,
    starting at successive microseconds); return the number of frames."""
    frames: list[tuple[int, bytes]] = []
    start = _EPOCH_US
    for i, seed in enumerate(seeds):
        conv = _Conversation(random.Random(seed), 20000 + i, start)
        conv.run()
        frames += conv.frames
        start = conv.t + 1_000_000
    for k in range(BOUNDARY_CONNECTIONS):
        conv = _Boundary(random.Random(k), 30000 + k, start + k)
        conv.run()
        frames += conv.frames
        start = conv.t + 1_000_000
    with open(path, "wb") as fh:  # whole microseconds, as written (no float on the way)
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, f in frames:
            fh.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(f), len(f)) + f)
    return len(frames)
