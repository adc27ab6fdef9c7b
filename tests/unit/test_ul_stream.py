"""dicomtrace.ul.stream.PduStream: bytes of one direction -> Upper Layer events (PS3.8 9.3)."""

from __future__ import annotations

import struct

import numpy as np

from unit import wire

from dicomtrace.tcp import StreamData

from dicomtrace.ul.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from dicomtrace.ul.stream import ControlPdu, PduCut, PduHeader, PduStream, PdvChunk, PdvRun, Resync, SyncLost

STREAM = wire.associate() + wire.echo_rq() + wire.store_rq(2, bytes(range(256)) * 40) + wire.release_rq()


def kinds(events):
    return [type(e).__name__ for e in events]


def summary(events):
    """What must not depend on how the bytes were cut: PDUs, and each PDV's bytes."""
    out, pdv, data = [], None, b""
    for e in events:
        if type(e) is PduHeader:
            out.append(("pdu", e.pdu_type, e.length, e.offset))
        elif type(e) is ControlPdu:
            out.append(("control", e.pdu_type, e.offset))
        elif type(e) is PdvChunk:
            data += e.data
            if e.last:
                out.append(("pdv", e.pdv.context_id, e.pdv.control, e.pdv.offset, data))
                data = b""
    return out


def test_whole_stream():
    events = PduStream().feed(STREAM, 1, 0.0)
    s = summary(events)
    assert [x[1] for x in s if x[0] == "control"] == [A_ASSOCIATE_RQ, 5]
    pdvs = [x for x in s if x[0] == "pdv"]
    assert [p[2] for p in pdvs] == [3, 3, 2]  # echo command, store command, store data set (last)
    assert pdvs[2][4] == bytes(range(256)) * 40


def test_every_split_point_gives_the_same_events():
    whole = summary(PduStream().feed(STREAM, 1, 0.0))
    for cut in range(1, len(STREAM), 7):
        s = PduStream()
        events = s.feed(memoryview(STREAM)[:cut], 1, 0.0) + s.feed(memoryview(STREAM)[cut:], 2, 1.0)
        assert summary(events) == whole, cut


def test_frames_of_a_pdv_are_those_its_pieces_came_in():
    data = wire.store_rq(1, b"\x01" * 3000)
    s = PduStream()
    events = s.feed_pieces([data[:1000], data[1000:2000], data[2000:]], [7, 8, 9], [0.1, 0.2, 0.3])
    last = [e for e in events if type(e) is PdvChunk][-1]
    assert last.last and last.frame == 9 and last.time == 0.3 and last.pdv.frame <= 8


def test_finish_reports_a_pdu_cut_off_by_the_end():
    data = wire.store_rq(1, b"\x01" * 3000)
    s = PduStream()
    s.feed(data[:-100], 1, 0.0)
    assert s.in_pdu
    cut = s.finish(2, 1.0)
    assert kinds(cut) == ["PduCut"]
    assert cut[0].pdu_type == P_DATA_TF and cut[0].missing == 100 and cut[0].frame == 2
    assert s.finish(3, 2.0) == []  # once


def test_finish_after_a_partial_header_and_after_a_whole_pdu():
    s = PduStream()
    s.feed(wire.release_rq()[:3], 1, 0.0)
    assert not s.in_pdu  # a header is not read yet
    assert s.finish(1, 0.0) == [PduCut(None, 0, 3, 1, 0.0)]
    s = PduStream()
    s.feed(wire.release_rq(), 1, 0.0)
    assert s.finish(1, 0.0) == []


def test_gap_inside_a_pdv_value_keeps_the_parser_in_step():
    data = wire.store_rq(1, b"\x02" * 5000) + wire.release_rq()
    s = PduStream()
    events = s.feed(data[:2000], 1, 0.0) + s.gap(1000, 2, 1.0) + s.feed(data[3000:], 3, 2.0)
    lost = [e for e in events if type(e) is PdvChunk and e.pieces is None]
    assert sum(e.size for e in lost) == 1000
    assert not any(type(e) in (SyncLost, Resync) for e in events)
    assert [e.pdu_type for e in events if type(e) is ControlPdu] == [5]


def test_gap_over_a_header_loses_sync_and_finds_the_next_pdu():
    data = wire.echo_rq() + wire.echo_rq(2) + wire.release_rq()
    s = PduStream()
    events = s.feed(data[:3], 1, 0.0) + s.gap(10, 2, 1.0) + s.feed(data[13:], 3, 2.0)
    assert "SyncLost" in kinds(events) and "Resync" in kinds(events)
    assert [e.pdu_type for e in events if type(e) is ControlPdu] == [5]


def test_unsynced_stream_scans_for_a_header():
    data = b"\x99" * 50 + wire.echo_rq() + wire.echo_rq(2)
    events = PduStream(synced=False).feed(data, 1, 0.0)
    resync = [e for e in events if type(e) is Resync]
    assert resync and resync[0].offset == 50 and resync[0].skipped == 50


def _detailed(events):
    """Every field the consumers read, with runs expanded to the PDUs they stand for."""
    out = []
    for e in events:
        if type(e) is PdvRun:
            out += _detailed(e.expand())
        elif type(e) is PduHeader:
            out.append(("pdu", e.pdu_type, e.length, e.offset, e.frame, e.time))
        elif type(e) is PdvChunk:
            p = e.pdv
            out.append(("pdv", p.context_id, p.control, p.length, p.offset, p.frame, p.time,
                        e.data, e.size, e.first, e.last, e.frame, e.time))
        else:
            out.append(repr(e))
    return out


def _merged(detail):
    """Chunks of one PDV merged (how a PDV's value is cut into chunks depends on the calls)."""
    out = []
    for x in detail:
        if out and x[0] == "pdv" and out[-1][0] == "pdv" and out[-1][1:7] == x[1:7] and not out[-1][10]:
            prev = out[-1]
            out[-1] = prev[:7] + (prev[7] + x[7], prev[8] + x[8], prev[9], x[10], x[11], x[12])
        else:
            out.append(x)
    return out


def test_runs_of_bulk_pdus_say_what_each_pdu_would():
    """PS3.8 9.3.5: a data set of many P-DATA-TF PDUs, cut into segments at random points,
    gives the same PDUs and PDVs (offsets, frames, bytes) with runs as one PDU at a time."""
    import random
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(5000)) * 8
    stream = (wire.store_rq(1, data, max_pdu=1024) + wire.store_rq(2, data[:3000], context_id=3, max_pdu=700)
              + wire.release_rq())
    for trial in range(30):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randrange(5, 120)))
        pieces = [memoryview(stream)[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        frames = list(range(1, len(pieces) + 1))
        times = [f / 10 for f in frames]
        split = rng.randrange(len(pieces))  # two calls, the second starting anywhere
        # the same pieces as spans of one buffer, with other bytes between them (TCP runs)
        buf, starts, ends = bytearray(), [], []
        for p in pieces:
            buf += b"\xee" * rng.randrange(0, 60)
            starts.append(len(buf))
            buf += p
            ends.append(len(buf))
        view = memoryview(bytes(buf))

        def spanned(a, b, arrays):
            # (the batch path hands its spans on as numpy arrays, the per-segment one as lists)
            s0, e0 = (np.array(starts[a:b]), np.array(ends[a:b])) if arrays else (starts[a:b], ends[a:b])
            return StreamData.spanned(None, 0, 0, view, s0, e0, frames[a:b],
                                      times[a:b], sum(map(len, pieces[a:b])))
        results = []
        for runs, as_spans in ((False, False), (True, False), (True, "lists"), (True, "arrays")):
            s = PduStream(runs=runs)
            if as_spans:
                arrays = as_spans == "arrays"
                ev = (s.feed_data(spanned(0, split, arrays))
                      + s.feed_data(spanned(split, len(pieces), arrays)))
            else:
                ev = s.feed_pieces(pieces[:split], frames[:split], times[:split])
                ev += s.feed_pieces(pieces[split:], frames[split:], times[split:])
            results.append((_merged(_detailed(ev)), s.offset, s.pdus))
            if runs:
                assert any(type(e) is PdvRun for e in ev) or len(pieces) - split < 4
        assert results[0] == results[1] == results[2] == results[3], trial


def test_runs_of_pdus_whose_size_changes_read_as_one_at_a_time():
    """PS3.8 9.3.5: a sender may change its PDU size within a data set; the PDUs of each
    size are checked at once (their boundaries known in advance) and the run still says
    what each PDU would, also where a header is cut between segments or one PDU is not
    like the others (another presentation context ends the run)."""
    import random
    rng = random.Random(11)

    def pdata(value: bytes, context_id: int = 1, control: int = 0) -> bytes:
        pdv = struct.pack(">IBB", len(value) + 2, context_id, control) + value
        return struct.pack(">BBI", P_DATA_TF, 0, len(pdv)) + pdv

    sizes = [300] * 7 + [120] * 4 + [300] * 3 + [57] + [300] * 5
    stream = b"".join(pdata(bytes(rng.randrange(256) for _ in range(n))) for n in sizes)
    stream += pdata(b"\x01" * 40, context_id=3) + pdata(b"\x02" * 30, control=2)
    for trial in range(40):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randrange(3, 60)))
        bounds = list(zip([0, *cuts], [*cuts, len(stream)]))
        buf, starts, ends = bytearray(), [], []
        for a, b in bounds:
            buf += b"\xee" * rng.randrange(0, 40)
            starts.append(len(buf))
            buf += stream[a:b]
            ends.append(len(buf))
        view = memoryview(bytes(buf))
        frames = list(range(1, len(bounds) + 1))
        times = [f / 10 for f in frames]
        results = []
        for runs in (False, True):
            s = PduStream(runs=runs)
            # (the batch path hands on its spans, frames and times as numpy arrays)
            ev = s.feed_data(StreamData.spanned(None, 0, 0, view, np.array(starts), np.array(ends),
                                                np.array(frames), np.array(times), len(stream)))
            numbers = {type(v) for x in _detailed(ev) if type(x) is tuple for v in x[1:]
                       if isinstance(v, (int, float)) and type(v) is not bool}
            assert numbers <= {int, float}, numbers  # no numpy number reaches the model
            if runs:
                got = [e for e in ev if type(e) is PdvRun]
                assert got and sum(r.count for r in got) >= 10, trial
                for r in got:  # the spans an exporter writes are the values' bytes
                    x = r.expand()
                    assert (r.first_frame, r.frame, r.time) == (x[1].pdv.frame, x[-1].frame, x[-1].time)
                    assert r.size == sum(c.size for c in x[1::2])
                    # (no numpy number leaks into what the model records)
                    assert {type(v) for h in x[::2] for v in (h.length, h.offset, h.frame)} == {int}
                    assert type(r.frame) is int and type(r.first_time) is float
                    b0, s0, e0 = r.spans()
                    whole = b"".join(bytes(p) for p in r.pieces)
                    assert b"".join(b0[x:y] for x, y in zip(s0.tolist(), e0.tolist())) == whole
                    for n in (1, 299, 300, 301, 1000, len(whole), len(whole) + 5):
                        assert r.prefix(n) == whole[:n], (trial, n)
            results.append((_merged(_detailed(ev)), s.offset, s.pdus))
        assert results[0] == results[1], trial
