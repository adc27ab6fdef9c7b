"""Issue #3: property tests of the Upper Layer parser (dicomtrace.ul.stream.PduStream).

Inputs:

* random bytes (synced and unsynced parsers);
* real PDU streams: the reassembled client and server byte streams of real
  captures (`dicomtrace conversations CAP --dump-streams DIR`, from
  /work/shared/captures/store_multi.pcap, move_ok.pcap and, when present,
  assoc_reject_called_ae.pcap), cut into PDUs; a run of consecutive PDUs is
  taken and big P-DATA-TF PDUs are shortened (every PDV value cut to a few
  hundred bytes, item and PDU lengths fixed up) so that feeding one byte at a
  time stays fast; then, for the mutation tests, byte flips, insertions,
  deletions and truncation.

Properties:

* no exception ever escapes feed() or gap();
* the events do not depend on how the bytes are split into feed() calls
  (one piece, one byte at a time, random splits).  PdvChunk events
  legitimately follow the pieces, so per PDV the chunk data is joined before
  comparing; every other event is compared exactly, minus frame/time fields
  (the pieces are fed with different frame numbers);
* offsets add up: after each call the parser's ``offset`` is the number of
  bytes fed plus the gap sizes; chunk sizes never exceed their PDV's length;
* an unmutated real stream parses without violations, in the same PDU types
  and with the same PDV values as the stream itself.

Hypothesis runs derandomized and without an example database, so CI sees the
same examples every time (max 200 examples per test, no deadline); set
DICOMTRACE_FUZZ_EXAMPLES=N and DICOMTRACE_FUZZ_RANDOM=1 for a longer random hunt.
"""

from __future__ import annotations

import dataclasses
import os
import random
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import lab
from dicomtrace.ul.pdu import Violation
from dicomtrace.ul.stream import ControlPdu, PduHeader, PduStream, PdvChunk, Resync, SyncLost

SOURCES = ("store_multi.pcap", "move_ok.pcap", "assoc_reject_called_ae.pcap")
REQUIRED = ("store_multi.pcap", "move_ok.pcap")
SHRINK_PDV = 300  # PDV values longer than this are cut (keeps command sets whole)

# DICOMTRACE_FUZZ_EXAMPLES=5000 DICOMTRACE_FUZZ_RANDOM=1 for a longer, randomised local hunt
FUZZ = settings(max_examples=int(os.environ.get("DICOMTRACE_FUZZ_EXAMPLES", "200")), deadline=None,
                derandomize=not os.environ.get("DICOMTRACE_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


# --------------------------------------------------------------------------
# real streams
# --------------------------------------------------------------------------

def split_pdus(stream: bytes) -> list[bytes]:
    """The whole PDUs (header included) of a gap-free UL stream."""
    return [stream[off:off + 6 + len(body)] for off, _t, body in lab.split_pdus(stream)]


def shrink_pdu(pdu: bytes, limit: int = SHRINK_PDV) -> bytes:
    """A P-DATA-TF with every PDV value cut to ``limit`` bytes (lengths fixed up); others unchanged."""
    if pdu[0] != 4:
        return pdu
    out = b"".join(struct.pack(">IBB", len(it.value[:limit]) + 2, it.context_id, it.control) + it.value[:limit]
                   for it in lab.pdv_items(pdu))
    return struct.pack(">BBI", 4, pdu[1], len(out)) + out


@pytest.fixture(scope="module")
def corpus(dicomtrace_cli, tmp_path_factory) -> dict[str, list[bytes]]:
    """{"store_multi.pcap conn-1-client": [pdu, ...], ...} from the real captures."""
    out: dict[str, list[bytes]] = {}
    for name in SOURCES:
        cap = lab.SHARED_CAPTURES / name
        if not cap.is_file():
            if name in REQUIRED:
                pytest.skip(f"{cap} not available")
            continue
        d = tmp_path_factory.mktemp("streams")
        lab.run_dicomtrace("conversations", cap, "--dump-streams", d)
        for f in sorted(d.glob("conn-*.bin")):
            pdus = split_pdus(f.read_bytes())
            if pdus:
                out[f"{name} {f.stem}"] = pdus
    assert out
    return out


# --------------------------------------------------------------------------
# feeding and normalising
# --------------------------------------------------------------------------

NO_TIME = {"frame", "time", "first_frame", "start_time"}


def _plain(ev) -> tuple:
    return (type(ev).__name__,) + tuple(getattr(ev, f.name) for f in dataclasses.fields(ev)
                                        if f.name not in NO_TIME)


def normalise(events: list) -> list:
    """Events with frame/time removed and each PDV's chunks joined into one entry:
    ("PDV", context, control, length, offset, [pieces...], first, last) where the
    pieces are joined bytes runs and ("gap", n) runs."""
    out: list = []
    open_pdv = None  # (key, entry) of the PDV whose chunks are being joined
    for ev in events:
        if type(ev) is PdvChunk:
            p = ev.pdv
            key = (p.context_id, p.control, p.length, p.offset)
            if open_pdv is None or open_pdv[0] != key or ev.first:
                entry = ["PDV", *key, [], ev.first, ev.last]
                out.append(entry)
                open_pdv = (key, entry)
            entry = open_pdv[1]
            pieces = entry[5]
            if ev.data is None:
                if pieces and isinstance(pieces[-1], tuple):
                    pieces[-1] = ("gap", pieces[-1][1] + ev.size)
                else:
                    pieces.append(("gap", ev.size))
            else:
                data = bytes(ev.data)
                if pieces and isinstance(pieces[-1], bytes):
                    pieces[-1] += data
                else:
                    pieces.append(data)
            entry[7] = ev.last
            if ev.last:
                open_pdv = None
            continue
        open_pdv = None
        out.append(_plain(ev))
    # drop empty byte runs (a zero-length PDV comes as one chunk of b"")
    for e in out:
        if isinstance(e, list):
            e[5] = [x for x in e[5] if x != b""]
    return out


def check_events(events: list) -> None:
    """Sanity of individual events."""
    for ev in events:
        assert type(ev) in (PduHeader, ControlPdu, PdvChunk, SyncLost, Resync, Violation), type(ev)
        if type(ev) is PdvChunk:
            assert ev.size >= 0 and ev.size <= ev.pdv.length
            if ev.data is not None:
                assert len(ev.data) == ev.size
        elif type(ev) is Resync:
            assert ev.skipped >= 0


def feed_pieces(data: bytes, cuts, *, synced: bool = True) -> list:
    """Feed data cut at the given positions; check the offset after each call."""
    s = PduStream(synced=synced)
    events: list = []
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    view = memoryview(data)
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        evs = s.feed(view[a:b], frame=i + 1, time=float(i))
        check_events(evs)
        events += evs
        assert s.offset == b, f"after feeding {b} bytes the parser says offset {s.offset}"
    return events


def all_ways(data: bytes, cuts, *, synced: bool = True) -> list:
    """Events of one piece, one byte at a time and the given cuts: all the same once normalised."""
    whole = normalise(feed_pieces(data, [], synced=synced))
    by_byte = normalise(feed_pieces(data, range(len(data)), synced=synced))
    assert by_byte == whole, "one byte at a time differs from one piece"
    split = normalise(feed_pieces(data, cuts, synced=synced))
    assert split == whole, f"split at {sorted(set(cuts))[:20]} differs from one piece"
    for kind in sorted({e[0] for e in whole}):
        event(f"events include {kind}")  # coverage, shown by --hypothesis-show-statistics
    event(f"input size {'<100' if len(data) < 100 else '<2000' if len(data) < 2000 else '>=2000'}")
    return whole


# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------

def cut_list(n: int):
    return st.lists(st.integers(0, max(n, 1)), max_size=24)


@st.composite
def real_stream(draw, corpus: dict) -> bytes:
    """A run of 1-8 consecutive real PDUs of one direction, big P-DATA-TF PDUs shortened."""
    key = draw(st.sampled_from(sorted(corpus)))
    pdus = corpus[key]
    start = draw(st.integers(0, len(pdus) - 1))
    count = draw(st.integers(1, 8) | st.integers(4, 12))
    limit = draw(st.sampled_from([0, 1, 17, 64, SHRINK_PDV]))
    return b"".join(shrink_pdu(p, limit) for p in pdus[start:start + count])


@st.composite
def mutated(draw, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "flip", "set", "insert", "delete", "truncate"]))
        if not buf:
            kind = "insert"
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip":
            buf[pos] ^= draw(st.integers(1, 255))
        elif kind == "set":  # header-ish values: types, lengths, flags
            buf[pos] = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 0x10, 0x20, 0x50, 0xFF]))
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[pos:pos + draw(st.integers(1, 16))]
        else:
            del buf[pos:]
    return bytes(buf)


# --------------------------------------------------------------------------
# (a) random bytes
# --------------------------------------------------------------------------

@FUZZ
@given(data=st.one_of(st.binary(max_size=64), st.binary(min_size=64, max_size=3000)),
       synced=st.booleans(), cuts=cut_list(3000))
def test_random_bytes(data, synced, cuts):
    all_ways(data, cuts, synced=synced)


@FUZZ
@given(data=st.lists(st.sampled_from([b"\x04\x00", b"\x01\x00", b"\x00\x00\x00\x06", b"\x00\x00\x00\x04",
                                      b"\x01\x03", b"\x00", b"\xff", b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"]),
                     min_size=1, max_size=400).map(b"".join),
       synced=st.booleans(), cuts=cut_list(1000))
def test_random_header_like_bytes(data, synced, cuts):
    """Random bytes rich in things that look like PDU and PDV headers (the scanner's candidates)."""
    all_ways(data, cuts, synced=synced)


# --------------------------------------------------------------------------
# (b) real streams
# --------------------------------------------------------------------------

def expected_parse(data: bytes) -> list:
    """What a conforming stream must give: per PDU its type, and per PDV (ctx, control, value)."""
    out = []
    for off, ptype, body in lab.split_pdus(data):
        out.append(("PDU", ptype, len(body), off))
        if ptype == 4:
            pos = 0
            while pos < len(body):
                ilen = struct.unpack_from(">I", body, pos)[0]
                out.append(("PDV", body[pos + 4], body[pos + 5], body[pos + 6:pos + 4 + ilen]))
                pos += 4 + ilen
    return out


def observed_parse(events: list) -> list:
    out = []
    for e in events:
        if e[0] == "PduHeader":
            out.append(("PDU", e[1], e[2], e[3]))
        elif e[0] == "PDV":
            out.append(("PDV", e[1], e[2], b"".join(e[5])))
    return out


def test_whole_real_streams_parse_cleanly(corpus):
    """Each dumped stream, whole and unshortened, fed in one piece and in random 1-4096-byte
    pieces: the same events, no violation, the PDUs and PDV values of the stream."""
    rnd = random.Random(1234)
    for key, pdus in corpus.items():
        data = b"".join(pdus)
        cuts, p = [], 0
        while p < len(data):
            p += rnd.randint(1, 4096)
            cuts.append(p)
        whole = normalise(feed_pieces(data, []))
        assert normalise(feed_pieces(data, cuts)) == whole, key
        bad = [e for e in whole if e[0] in ("Violation", "SyncLost", "Resync")]
        assert not bad, f"{key}: {bad[:3]}"
        assert observed_parse(whole) == expected_parse(data), key
        assert sum(1 for e in whole if e[0] == "ControlPdu") == sum(1 for p in pdus if p[0] != 4)


@FUZZ
@given(data=st.data())
def test_real_streams_any_split(corpus, data):
    """Unmutated (shortened) real PDUs: split-invariant and parsed exactly."""
    stream = data.draw(real_stream(corpus))
    cuts = data.draw(cut_list(len(stream)))
    events = all_ways(stream, cuts)
    bad = [e for e in events if e[0] in ("Violation", "SyncLost", "Resync")]
    assert not bad, bad[:3]
    assert observed_parse(events) == expected_parse(stream)


@FUZZ
@given(data=st.data())
def test_mutated_real_streams(corpus, data):
    """Real PDUs with flips, insertions, deletions, truncation: nothing raises, and the
    events are the same however the bytes are split."""
    stream = data.draw(mutated(data.draw(real_stream(corpus))))
    cuts = data.draw(cut_list(len(stream)))
    synced = data.draw(st.sampled_from([True, True, False]))
    all_ways(stream, cuts, synced=synced)


# --------------------------------------------------------------------------
# gaps
# --------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_gaps_at_random_points(corpus, data):
    """gap() anywhere (in headers, in PDV values, while scanning, several in a row, huge
    ones) never raises, keeps the offset arithmetic right, and reports the missing
    bytes of a PDV value as data=None chunks."""
    stream = data.draw(real_stream(corpus))
    if data.draw(st.booleans()):
        stream = data.draw(mutated(stream))
    points = sorted(data.draw(st.lists(st.integers(0, len(stream)), min_size=1, max_size=8)))
    sizes = st.one_of(st.integers(1, 64), st.integers(1, 5000), st.sampled_from([1 << 20, (1 << 31) - 1]))
    s = PduStream(synced=data.draw(st.booleans()))
    pos, expected_offset = 0, 0
    for i, p in enumerate(points + [len(stream)]):
        if p > pos:
            evs = s.feed(memoryview(stream)[pos:p], frame=2 * i + 1, time=0.0)
            check_events(evs)
            expected_offset += p - pos
            pos = p
            assert s.offset == expected_offset
        if i < len(points):
            size = data.draw(sizes)
            evs = s.gap(size, frame=2 * i + 2, time=0.0)
            check_events(evs)
            expected_offset += size
            assert s.offset == expected_offset, f"after a gap of {size} the offset is {s.offset}, " \
                                                f"expected {expected_offset}"
            for ev in evs:
                assert type(ev) in (PdvChunk, SyncLost), f"gap() produced {type(ev).__name__}"
                if type(ev) is PdvChunk:
                    assert ev.data is None and ev.size > 0


@FUZZ
@given(data=st.data())
def test_gap_then_same_bytes_resyncs_like_a_fresh_scanner(corpus, data):
    """After a gap over a PDU header the parser scans; feeding it the rest of a real stream
    must find the next whole PDU again (a Resync at a PDU boundary), never raise."""
    pdus_key = data.draw(st.sampled_from(sorted(corpus)))
    pdus = [shrink_pdu(p, 64) for p in corpus[pdus_key]]
    if len(pdus) < 2:
        return
    start = data.draw(st.integers(0, len(pdus) - 2))
    first = pdus[start]
    rest = b"".join(pdus[start + 1:start + 6])
    cut = data.draw(st.integers(0, min(5, len(first) - 1)))  # inside the first PDU's header
    s = PduStream()
    s.feed(first[:cut], frame=1, time=0.0)
    s.gap(len(first) - cut, frame=2, time=0.0)
    events = normalise(s.feed(rest, frame=3, time=0.0))
    if events and events[0][0] == "Resync":
        assert events[0][1] == len(first), f"resynced at {events[0][1]}, the next PDU is at {len(first)}"
    heads = [e for e in events if e[0] == "PduHeader"]
    assert heads, "nothing parsed after the gap"
    assert heads[0][3] == len(first), "first PDU after the gap found at the wrong offset"


def feed_runs(data: bytes, cuts, runs, *, synced: bool = True) -> list:
    """Data cut at ``cuts`` into pieces, fed as TCP runs of pieces (``feed_pieces``, whose
    pieces inside a PDV value are taken at once), ``runs`` pieces per call in turn."""
    s = PduStream(synced=synced)
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    view = memoryview(data)
    pieces = [view[a:b] for a, b in zip(bounds, bounds[1:])]
    events: list = []
    i = k = 0
    while i < len(pieces):
        run = pieces[i:i + runs[k % len(runs)]]
        evs = s.feed_pieces(run, list(range(i + 1, i + len(run) + 1)), [float(i)] * len(run))
        check_events(evs)
        events += evs
        i += len(run)
        k += 1
    assert s.offset == len(data)
    return events


@FUZZ
@given(data=st.data())
def test_real_and_mutated_streams_fed_as_runs_of_pieces(corpus, data):
    """feed_pieces over runs of segments gives what feeding the bytes in one piece gives."""
    stream = data.draw(real_stream(corpus))
    if data.draw(st.booleans()):
        stream = data.draw(mutated(stream))
    cuts = data.draw(st.lists(st.integers(0, max(len(stream), 1)), max_size=200))
    runs = data.draw(st.lists(st.integers(1, 60), min_size=1, max_size=8))
    synced = data.draw(st.booleans())
    assert normalise(feed_runs(stream, cuts, runs, synced=synced)) == \
        normalise(feed_pieces(stream, [], synced=synced))
