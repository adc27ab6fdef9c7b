"""decode_batch's plain-frame path (one gather of 54-byte rows) gives exactly what the
general way (:func:`dicomtrace.net.decode._decode_frames`) gives: every field of every
segment with its dtype, the SYN options and the network counters (with the first fragment
and first malformed frame).

Frames are made by dpkt (another encoder) or by hand where dpkt will not make them
(malformed headers), and mixed into batches at random: all plain, one odd frame among
plain ones, half and half, mostly odd; with other link types in the same batch, frames cut
by the snap length anywhere, cut short at the very end of the buffer.  Then every shared
and golden capture, read in small chunks so that batches begin and end anywhere.
"""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from dicomtrace.capture import open_capture
from dicomtrace.capture.frames import FrameBatch
from dicomtrace.net import NetStats, decode_batch
from dicomtrace.net import decode as net_decode

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path("/work/shared/captures")


def _tcp(flags=0x10, data=b"", opts=b"", seq=1000, ack=2000, sport=40000, dport=11112):
    import dpkt
    t = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=512, data=data)
    if opts:
        t.opts = opts
        t.off = 5 + len(opts) // 4
    return t


def _ip(payload, p=6, opts=b"", mf=0, offset=0, src="10.0.0.1", dst="10.0.0.2"):
    import dpkt
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=p, ttl=64,
                    data=payload, mf=mf, offset=offset)
    if opts:
        ip.opts = opts
        ip.hl = 5 + len(opts) // 4
    ip.len = len(ip)
    return ip


def _eth(payload, etype=0x0800) -> bytes:
    import dpkt
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02\0\0\0\0\1", dst=b"\x02\0\0\0\0\2",
                                        type=etype, data=payload))


def _patched(frame: bytes, at: int, value: bytes) -> bytes:
    return frame[:at] + value + frame[at + len(value):]


def _frames() -> tuple[list[bytes], dict[str, bytes]]:
    """Plain frames (Ethernet, IPv4 without options, TCP) and the others, by name."""
    import dpkt
    syn_opts = b"\x02\x04\x05\xb4\x01\x03\x03\x07\x04\x02\x00\x00"
    ts = b"\x01\x01\x08\x0a" + bytes(8)
    plain = [
        _eth(_ip(_tcp())),  # a pure ACK
        _eth(_ip(_tcp(0x18, b"x" * 1448, seq=7))),  # data
        _eth(_ip(_tcp(0x18, b"y" * 100, opts=ts, seq=0xFFFFFFF0, ack=0xFFFFFFFF))),
        _eth(_ip(_tcp(0x02, opts=syn_opts))),  # SYN with MSS and window scale
        _eth(_ip(_tcp(0x12, opts=b"\x02\x04\x05\xb4"))),  # SYN/ACK
        _eth(_ip(_tcp(0x11))), _eth(_ip(_tcp(0x04))),  # FIN, RST
        _patched(_eth(_ip(_tcp(0x10, b"z" * 10))), 46, b"\x51"),  # NS set
        _patched(_eth(_ip(_tcp(0x10, b"t" * 3000))), 16, b"\0\0"),  # TSO: total length 0
        _eth(_ip(_tcp())) + bytes(6),  # Ethernet padding after the IP datagram
    ]
    v6 = dpkt.ip6.IP6(src=bytes(15) + b"\1", dst=bytes(15) + b"\2", nxt=6, hlim=64, data=_tcp())
    v6.plen = len(v6.data)
    hop = dpkt.ip6.IP6(src=bytes(15) + b"\1", dst=bytes(15) + b"\2", nxt=0, hlim=64)
    hop_data = b"\x06\x00" + bytes(6) + bytes(_tcp(0x18, b"h" * 20))
    hop.data, hop.plen = hop_data, len(hop_data)
    vlan = _eth(_ip(_tcp(0x18, b"v" * 40)))
    vlan = vlan[:12] + b"\x81\x00\x00\x05" + vlan[12:]
    udp = dpkt.udp.UDP(sport=53, dport=53, data=b"q" * 30)
    udp.ulen = len(udp)
    others = {
        "vlan": vlan,
        "qinq": vlan[:12] + b"\x88\xa8\x00\x07" + vlan[12:],
        "ip options": _eth(_ip(_tcp(0x18, b"o" * 20), opts=b"\x01\x01\x01\x00")),
        "fragment": _eth(_ip(_tcp(0x18, b"f" * 40), mf=1)),
        "later fragment": _eth(_ip(bytes(40), offset=5)),
        "udp": _eth(_ip(udp, p=17)),
        "udp fragment": _eth(_ip(udp, p=17, mf=1)),
        "arp": _eth(bytes(28), 0x0806),
        "ipv6": _eth(bytes(bytes(v6)), 0x86DD),
        "ipv6 hop-by-hop": _eth(bytes(hop), 0x86DD),
        "ip version 5": _patched(_eth(_ip(_tcp())), 14, b"\x55"),
        "ihl 4": _patched(_eth(_ip(_tcp())), 14, b"\x44"),
        "total length 30": _patched(_eth(_ip(_tcp(0x18, b"s" * 20))), 16, b"\x00\x1e"),
        "data offset 4": _patched(_eth(_ip(_tcp())), 46, b"\x40"),
        "data offset 15": _patched(_eth(_ip(_tcp(0x18, b"d" * 10))), 46, b"\xf0"),
        "total length past the frame": _patched(_eth(_ip(_tcp(0x18, b"l" * 20))), 16, b"\x05\xdc"),
        "tiny": _eth(_ip(_tcp()))[:10],
        "ip only": _eth(_ip(_tcp()))[:40],
        "tcp header cut": _eth(_ip(_tcp()))[:50],
    }
    return plain, others


def _batch(frames: list[bytes], caps: list[int], links: list[int], first: int = 7,
           pad: int = 0) -> FrameBatch:
    """A batch over one buffer (a 16-byte gap before each frame, as a pcap record header
    makes, and ``pad`` bytes after the last)."""
    data, offs = bytearray(), []
    for f in frames:
        data += bytes(16)
        offs.append(len(data))
        data += f
    data += bytes(pad)
    n = len(frames)
    return FrameBatch(bytes(data), np.array(offs, dtype=np.int64), np.array(caps, dtype=np.int64),
                      np.array([len(f) for f in frames], dtype=np.int64),
                      np.arange(n, dtype=np.float64) * 0.001 + 1.7e9,
                      np.array(links, dtype=np.int32), first)


def _same(batch: FrameBatch) -> net_decode.Segments:
    """decode_batch's segments, checked against the general way's."""
    fast, general = NetStats(), NetStats()
    got = decode_batch(batch, fast)
    general.frames, general.bytes = len(batch), int(batch.origlens.sum())
    want = net_decode._decode_frames(batch, general)
    for f in net_decode.SEGMENT_FIELDS + ("toff", "noff"):
        a, b = getattr(got, f), getattr(want, f)
        assert a.dtype == b.dtype, f
        assert a.tolist() == b.tolist(), f
    assert got.syn_options == want.syn_options
    assert fast == general
    return got


def test_plain_batch_takes_the_rows_path(monkeypatch):
    """No frame of an all-plain batch goes the general way (TSO's zero length included)."""
    plain, _ = _frames()
    frames = plain * 30
    batch = _batch(frames, [len(f) for f in frames], [1] * len(frames))

    def general(*args, **kwargs):
        raise AssertionError("a plain frame went the general way")

    with monkeypatch.context() as m:
        m.setattr(net_decode, "_decode_frames", general)
        assert net_decode._plain_ethernet(batch, NetStats()) is not None
    segs = _same(batch)
    assert len(segs) == len(frames)
    k = plain.index(_frames()[0][3])
    assert segs.syn_options[k] == (1460, 7)


@pytest.mark.parametrize("odd", sorted(_frames()[1]))
def test_one_odd_frame_among_plain_ones(odd):
    """The odd frame goes the general way in its place; at the start, middle and end."""
    plain, others = _frames()
    for at in (0, 11, 24):
        frames = plain * 2 + plain[:5]
        frames.insert(at, others[odd])
        batch = _batch(frames, [len(f) for f in frames], [1] * len(frames))
        assert net_decode._plain_ethernet(batch, NetStats()) is not None
        _same(batch)


def test_random_mixes():
    """Plain and odd frames mixed in every share, other link types among them, frames cut
    by the snap length anywhere (inside the options, inside the header, before the IP
    header ends), short frames at the very end of the buffer."""
    plain, others = _frames()
    odd = list(others.values())
    sll = b"\x00\x00\x00\x01\x00\x06" + bytes(8) + b"\x08\x00"  # Linux cooked v1 header
    raw_ip = [bytes(_ip(_tcp(0x18, b"r" * 30))),
              plain[1]]  # (an Ethernet frame read as raw IP: not IPv4, whatever it looks like)
    rnd = random.Random(12)
    taken = {True: 0, False: 0}
    for round_ in range(300):
        share = rnd.choice([0.0, 0.01, 0.1, 0.5, 0.8, 1.0])
        n = rnd.choice([1, 2, 5, 40, 200])
        frames, caps, links = [], [], []
        for _ in range(n):
            r = rnd.random()
            if r < share * 0.7:
                f, lt = rnd.choice(odd), 1
            elif r < share * 0.85:
                f, lt = sll + _eth(_ip(_tcp(0x18, b"c" * 9)))[14:], 113
            elif r < share:
                f, lt = rnd.choice(raw_ip), 101
            else:
                f, lt = rnd.choice(plain), 1
            cap = len(f)
            if rnd.random() < 0.15:
                cap = rnd.randrange(0, len(f) + 1)
            frames.append(f)
            caps.append(cap)
            links.append(lt)
        batch = _batch(frames, caps, links, first=rnd.randrange(1, 10_000),
                       pad=rnd.choice([0, 0, 3, 100]))
        taken[net_decode._plain_ethernet(batch, NetStats()) is not None] += 1
        _same(batch)
    assert taken[True] > 50 and taken[False] > 50  # both ways were tried


def test_buffer_shorter_than_a_row():
    plain, others = _frames()
    _same(_batch([others["tiny"]], [10], [1]))
    _same(_batch([others["ip only"]], [40], [1]))
    _same(_batch([plain[0]], [len(plain[0])], [1]))


def _captures() -> list[Path]:
    found = sorted((ROOT / "tests" / "golden" / "captures").glob("*.pcap*"))
    if SHARED.is_dir():
        found += sorted(p for p in SHARED.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    return found


@pytest.mark.parametrize("chunk", [2048, 65536, 4 << 20])
def test_captures(chunk):
    """Every golden and shared capture, batches cut anywhere."""
    from dicomtrace.capture.frames import CaptureError

    seen = 0
    for path in _captures():
        try:
            reader = open_capture(str(path), chunk_size=chunk)
            batches = list(reader.batches())
        except CaptureError:
            continue
        for batch in batches:
            seen += len(_same(batch))
        reader.close()
    assert seen
