"""The record walk in strides (capture/walk.py) finds exactly the records of the plain walk,
and pcapng's enhanced packet blocks taken in strides are those taken one block at a time.

Synthetic pcaps (both byte orders) of repeating lengths, alternating lengths, periods of
a run and an ACK, lengths that differ from a run's only in a high byte, random lengths;
damaged headers right inside a stride (a captured length over the limit, zeroed, a bad
fraction, a zeroed time); buffers cut at every kind of place.  Compared three ways: the walk
functions on buffers, the reader's batches and problems (small chunks, so that strides cross
chunk ends, and the 4 MiB memory-map chunks), and the count pass (dicomtrace.parallel
.count_records, whose windows are 8 MiB), each with DICOMTRACE_WALK_PATH=stride and =record.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from dicomtrace.capture import open_capture
from dicomtrace.capture.walk import record_walk, walk_plain, walk_strides
from dicomtrace.parallel import count_records

T0 = 1_700_000_000


def pcap(caps, endian: str = "<", snaplen: int = 262144, seed: int | None = 0) -> bytearray:
    """A pcap file (Ethernet) whose records have the captured lengths ``caps`` (their
    original lengths the same, every tenth one longer) and random data (zeros without a
    ``seed``)."""
    out = bytearray(struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
    data = bytes(int(sum(caps))) if seed is None else \
        np.random.default_rng(seed).integers(0, 256, int(sum(caps)), dtype=np.uint8).tobytes()
    at = 0
    for i, cap in enumerate(caps):
        orig = cap + 100 if i % 10 == 9 else cap
        out += struct.pack(endian + "IIII", T0 + i // 1000, (i * 997) % 1_000_000, cap, orig)
        out += data[at:at + cap]
        at += cap
    return out


def offsets(data) -> list[int]:
    """Offsets of the record headers of an undamaged pcap made by :func:`pcap`."""
    e = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    offs, pos = [], 24
    while pos + 16 <= len(data):
        offs.append(pos)
        pos += 16 + struct.unpack_from(e + "I", data, pos + 8)[0]
    return offs


def patterns() -> dict[str, list[int]]:
    rng = np.random.default_rng(7)
    runs = []
    for _ in range(150):
        runs += [int(rng.integers(0, 3000))] * int(rng.integers(1, 120))
    return {
        "repeating": [1514] * 3000,
        "run-and-ack": ([1514] * 45 + [66]) * 80,
        "run-ack-tail": ([1514] * 11 + [66, 522]) * 200 + [1514] * 500,
        "alternating": [100, 200] * 800,
        "high-byte": ([1514] * 30 + [1514 + 256] * 2 + [1514 + 65536]) * 60,
        "random": [int(c) for c in rng.integers(0, 2000, 2500)],
        "random-runs": runs,
        "empty-records": [0] * 500 + [60] * 3 + [0] * 200,
    }


def same_walk(buf, pos, end, limit, e, last=None):
    a = walk_strides(buf, pos, end, limit, e, last)
    b = walk_plain(buf, pos, end, limit, e, last)
    assert a[0].dtype == b[0].dtype == np.int64
    assert (a[0].tolist(), a[1], a[2]) == (b[0].tolist(), b[1], b[2]), (pos, end, last)
    return b


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("name", sorted(patterns()))
def test_strides_find_the_records_of_the_plain_walk(name, endian):
    caps = patterns()[name]
    data = bytes(pcap(caps, endian))
    offs = offsets(pcap(caps, "<"))
    got = same_walk(data, 24, len(data), 262144, endian)
    assert got[0].tolist() == offs and got[1] == len(data) and not got[2]
    rng = np.random.default_rng(len(caps))
    # buffers cut anywhere (inside a header, inside data, at a record's end), walks from
    # any record, and a bound on where records may start (the count pass's stretches)
    for end in [int(x) for x in rng.integers(24, len(data), 12)] + [offs[-1], offs[-1] + 15]:
        start = offs[int(rng.integers(0, len(offs) // 2))]
        same_walk(data, start, end, 262144, endian)
        same_walk(data, start, len(data), 262144, endian, end)
        same_walk(data, start, len(data), 262144, endian, end - 1)
    # a limit below some of the lengths: the walk stops there, broken
    same_walk(data, 24, len(data), 1000, endian)


@pytest.mark.parametrize("name", ["repeating", "run-and-ack", "run-ack-tail", "alternating"])
def test_a_guess_broken_at_its_last_record(name):
    """The record that breaks a stride or a period is the last one in the buffer (or the
    one the buffer ends inside, or the last that may start): at every place of the pattern."""
    base = patterns()[name][:400]
    for b in range(2, len(base) - 1):
        caps = base[:b] + [base[b] + 256 if b % 2 else base[b] + 1] + base[b + 1:b + 2]
        data = bytes(pcap(caps, seed=None))
        ends = offsets(data)
        same_walk(data, 24, ends[-1], 262144, "<")
        same_walk(data, 24, len(data) - 1, 262144, "<")
        same_walk(data, 24, len(data), 262144, "<", ends[-1])


@pytest.mark.parametrize("how", ["over-limit", "zeroed", "short", "garbage"])
def test_a_damaged_length_inside_a_stride(how):
    caps = ([1514] * 45 + [66]) * 40
    offs = offsets(pcap(caps))
    for k in (5, 44, 45, 46, 200, 1000):
        data = pcap(caps)
        value = {"over-limit": 0xFFFF0000, "zeroed": 0, "short": 1500, "garbage": 70000}[how]
        struct.pack_into("<I", data, offs[k] + 8, value)
        data = bytes(data)
        got = same_walk(data, 24, len(data), 65535, "<")
        assert got[0].tolist()[:k] == offs[:k]
        if how == "over-limit":
            assert got[2] and got[1] == offs[k]


def batches(path, chunk_size, walk, monkeypatch):
    monkeypatch.setenv("DICOMTRACE_WALK_PATH", walk)
    reader = open_capture(str(path), chunk_size=chunk_size)
    got = [(b.first_frame, b.offsets.tolist(), b.caplens.tolist(), b.origlens.tolist(),
            b.times.tolist(), bytes(b.data[b.offsets[0]:b.offsets[-1] + b.caplens[-1]]))
           for b in reader.batches() if len(b)]
    reader.close()
    return got, reader.problems, reader.frames


def damaged(caps, how: str, k: int) -> bytearray:
    data = pcap(caps)
    at = offsets(data)[k]
    if how == "caplen-zero":
        struct.pack_into("<I", data, at + 8, 0)
    elif how == "caplen-huge":
        struct.pack_into("<I", data, at + 8, 0x7FFFFFFF)
    elif how == "bad-fraction":
        struct.pack_into("<I", data, at + 4, 0xFFFFFFF0)
    elif how == "time-zero":
        struct.pack_into("<I", data, at, 0)
    elif how == "cut-in-data":
        del data[at + 100:]
    elif how == "cut-in-header":
        del data[at + 9:]
    return data


DAMAGE = ["intact", "caplen-zero", "caplen-huge", "bad-fraction", "time-zero", "cut-in-data",
          "cut-in-header"]


@pytest.mark.parametrize("how", DAMAGE)
def test_reader_gives_the_same_frames_and_problems(tmp_path, monkeypatch, how):
    caps = ([1514] * 45 + [66]) * 30 + [1514] * 300 + [200, 1514] * 100
    path = tmp_path / "cap.pcap"
    path.write_bytes(damaged(caps, how, 700))
    # chunks of 64 KiB (a stride crosses an end every chunk), odd sizes, the default 4 MiB
    for chunk_size in (1 << 16, 40_009, 4 << 20):
        stride = batches(path, chunk_size, "stride", monkeypatch)
        plain = batches(path, chunk_size, "record", monkeypatch)
        assert stride == plain, (how, chunk_size)
    assert (plain[1] == []) == (how == "intact")


def test_strides_across_the_memory_map_chunks(tmp_path, monkeypatch):
    """A file of 9 MB: strides run into the end of each 4 MiB chunk of the reader and each
    8 MiB window of the count pass; damage sits right at a chunk end."""
    caps = ([1514] * 45 + [66]) * 130
    data = pcap(caps)
    offs = offsets(data)
    path = tmp_path / "big.pcap"
    path.write_bytes(data)
    stride = batches(path, 4 << 20, "stride", monkeypatch)
    assert stride == batches(path, 4 << 20, "record", monkeypatch)
    assert stride[1] == [] and stride[2] == len(caps) and len(stride[0]) == 3
    near = next(i for i, o in enumerate(offs) if o > 4 << 20) - 1  # the record across 4 MiB
    for k in (near, near + 1):
        path.write_bytes(damaged(caps, "bad-fraction", k))
        stride = batches(path, 4 << 20, "stride", monkeypatch)
        assert stride == batches(path, 4 << 20, "record", monkeypatch)
        assert len(stride[1]) == 1 and stride[2] == len(caps) - 1


def counts(path, start, stop, monkeypatch):
    got = []
    for walk in ("stride", "record"):
        monkeypatch.setenv("DICOMTRACE_WALK_PATH", walk)
        got.append(count_records(str(path), start, stop))
    assert got[0] == got[1], (start, stop)
    return got[0]


@pytest.mark.parametrize("how", DAMAGE)
def test_count_pass_is_the_same(tmp_path, monkeypatch, how):
    caps = ([1514] * 45 + [66]) * 130 + [300, 1514] * 50
    data = damaged(caps, how, 5000)
    path = tmp_path / "cap.pcap"
    path.write_bytes(data)
    offs = offsets(pcap(caps))
    whole = counts(path, 24, len(data), monkeypatch)
    if how == "intact":
        assert whole == (len(caps), len(data), T0, T0 + (len(caps) - 1) // 1000)
    elif how in ("caplen-huge", "bad-fraction", "time-zero"):
        assert whole is None
    rng = np.random.default_rng(3)
    for _ in range(6):
        start = offs[int(rng.integers(0, 3000))]
        stop = int(rng.integers(start, len(data) + 1))
        counts(path, start, stop, monkeypatch)
        counts(path, start, offs[int(rng.integers(3000, len(offs)))], monkeypatch)


def test_an_unknown_walk_is_refused(monkeypatch):
    monkeypatch.setenv("DICOMTRACE_WALK_PATH", "fast")
    with pytest.raises(ValueError, match="stride or record"):
        record_walk()
    assert record_walk("record") is walk_plain and record_walk("stride") is walk_strides


# -- pcapng: enhanced packet blocks of one length taken in strides ------------------------

def block(e: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(e: str) -> bytes:
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(e: str, tsresol: int | None = None, tsoffset: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(e + "HH", 9, 1) + bytes([tsresol, 0, 0, 0])
    if tsoffset is not None:
        opts += struct.pack(e + "HHq", 14, 8, tsoffset)
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return block(e, 1, struct.pack(e + "HHI", 1, 0, 262144) + opts)


def epb(e: str, ifc: int, i: int, cap: int, claim: int | None = None) -> bytes:
    ts = 1_700_000_000_000_000 + i * 1234567  # also beyond 2**53 at nanosecond resolution
    if ifc == 1:
        ts *= 1000
    body = struct.pack(e + "IIIII", ifc, ts >> 32, ts & 0xFFFFFFFF,
                       cap if claim is None else claim, cap + (i % 7 == 3) * 50)
    return block(e, 6, body + bytes([i % 251]) * cap)


def pcapng(caps, e: str = "<", damage: dict | None = None) -> bytes:
    """Two interfaces (microseconds; nanoseconds with an offset) and EPBs of the captured
    lengths ``caps``, 500 on one, then 500 on the other, every 300th on the other one; a
    simple packet block, a late interface and a second section in the other byte order on
    the way; ``damage``: record index -> what to do there."""
    damage = damage or {}
    out = [shb(e), idb(e), idb(e, tsresol=9, tsoffset=-5)]
    for i, cap in enumerate(caps):
        how = damage.get(i)
        if i == len(caps) // 2:
            other = ">" if e == "<" else "<"
            out += [shb(other), idb(other), idb(other, tsresol=9, tsoffset=7)]
            e = other
        if i == 700:
            out.append(block(e, 3, struct.pack(e + "I", 60) + bytes(60)))  # SPB
        if i == 900:
            out.append(idb(e, tsresol=3))
        ifc = (i // 500) % 2 ^ (i % 300 == 299)
        if how == "unknown-interface":
            ifc = 7
        raw = epb(e, ifc, i, cap, claim=cap + 5 if how == "caplen-over-block" else None)
        if how == "impossible-length":
            raw = raw[:4] + struct.pack(e + "I", 13) + raw[8:]
        out.append(raw)
    return b"".join(out)


PCAPNG_DAMAGE = ["intact", "unknown-interface", "caplen-over-block", "impossible-length", "cut"]


@pytest.mark.parametrize("how", PCAPNG_DAMAGE)
@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_epbs_in_strides_read_as_one_at_a_time(tmp_path, monkeypatch, how, endian):
    caps = (([1514] * 45 + [66]) * 20 + [1514] * 200 + [200, 1514] * 100) * 2
    damage = {k: how for k in (5, 46, 47, 400, 1301)} if how not in ("intact", "cut") else {}
    data = pcapng(caps, endian, damage)
    if how == "cut":
        data = data[:len(data) - 700]
    path = tmp_path / "cap.pcapng"
    path.write_bytes(data)
    for chunk_size in (1 << 16, 40_009, 4 << 20):
        stride = batches(path, chunk_size, "stride", monkeypatch)
        plain = batches(path, chunk_size, "record", monkeypatch)
        assert stride == plain, (how, chunk_size)
    frames = plain[2]
    assert frames == len(caps) + 1 - (how == "cut") - len(damage)  # the SPB is a frame too
    assert (plain[1] == []) == (how == "intact")
