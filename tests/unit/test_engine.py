"""dicomtrace.engine: the one loop, its taps, the stream-transform seam; dicomtrace.parallel."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from dicomtrace.capture import open_capture
from dicomtrace.config import AnalysisConfig
from dicomtrace.engine import IMMEDIATE_CODES, Engine
from dicomtrace.findings import evaluate
from dicomtrace.output.json_report import analysis_json, operation_json
from dicomtrace.parallel import merge_parts, plan_parts, run_part
from dicomtrace.tcp import StreamData

SAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "sample.pcap")
CONFIG = AnalysisConfig(frozenset({104, 11112}))


def run(*taps, **options):
    reader = open_capture(SAMPLE)
    try:
        return Engine(CONFIG, taps, **options).run(reader)
    finally:
        reader.close()


def as_json(analysis):
    doc = analysis_json(analysis, [f.to_json() for f in evaluate(analysis)])
    doc["capture"].pop("path")
    return json.dumps(doc, sort_keys=True, default=str)


class Recorder:
    def __init__(self):
        self.log = []

    def association_opened(self, assoc):
        self.log.append(("opened", id(assoc)))

    def message_started(self, assoc, side, msg, op):
        self.log.append(("started", id(assoc), msg.command.command_field))

    def message_complete(self, assoc, side, msg, op, incomplete):
        self.log.append(("complete", id(assoc), msg.command.command_field))

    def finding(self, assoc, finding):
        self.log.append(("finding", id(assoc), finding.code))

    def association_ended(self, assoc):
        self.log.append(("ended", id(assoc)))


def test_taps_see_events_as_they_happen():
    tap = Recorder()
    reads = []

    class Progress:
        def __call__(self, read, packets, found):
            reads.append((read, packets, found))

        def close(self):
            reads.append("closed")

    analysis = run(tap, progress=Progress())
    assert reads[-1] == "closed" and reads[-2][2] == len(analysis.associations) and reads[-2][1] == 91
    for a in analysis.associations:
        mine = [e for e in tap.log if e[1] == id(a)]
        assert mine[0][0] == "opened" and mine[-1][0] == "ended"
        assert sum(1 for e in mine if e[0] == "started") == sum(1 for e in mine if e[0] == "complete")


def test_immediate_findings_reach_a_tap_before_their_association_ends():
    tap = Recorder()
    analysis = run(tap)
    early = [e for e in tap.log if e[0] == "finding"]
    codes = {e[2] for e in early}
    assert {"association-rejected", "dimse-failure"} <= codes <= IMMEDIATE_CODES
    for e in early:
        assert tap.log.index(e) < tap.log.index(("ended", e[1]))
    # the same findings come out of the final judgement
    final = {(f.code) for f in evaluate(analysis) if f.code in IMMEDIATE_CODES}
    assert codes == final


def test_taps_do_not_change_the_analysis():
    assert as_json(run(Recorder())) == as_json(run())


class Rechunk:
    """A stream transform that hands every piece on in two halves (what a decrypting
    transform does: other pieces, the same bytes, the frames they came in)."""

    def __init__(self):
        self.seen = 0

    def feed(self, ev):
        if type(ev) is not StreamData:
            return [ev]
        self.seen += ev.size
        out = None
        for piece, frame, t in zip(ev.pieces, ev.frames, ev.times):
            for half in (piece[:len(piece) // 2], piece[len(piece) // 2:]):
                if not len(half):
                    continue
                if out is None:
                    out = StreamData(ev.conn, ev.direction, ev.offset, half, frame, t)
                else:
                    out.add(half, frame, t)
        return [out] if out is not None else []

    def finish(self):
        return []


def test_stream_transform_seam():
    made = []

    def factory(conn, first):
        made.append(Rechunk())
        return made[-1]

    analysis = run(transforms=factory)
    assert made and sum(t.seen for t in made) > 0
    assert as_json(analysis) == as_json(run())
    assert as_json(run(transforms=lambda conn, first: None)) == as_json(run())


def test_tcp_only():
    seen = []

    class Tcp:
        def tcp_events(self, events):
            seen.extend(events)

    analysis = run(Tcp(), dicom=False)
    assert analysis.associations == [] and analysis.connections and seen


def test_parts_merge_to_the_serial_analysis():
    """sample.pcap cut into three parts by position: each task skips the connection open at
    its start and the one before follows it on; the merge is the serial analysis."""
    [plan] = plan_parts([str(SAMPLE)], 3, lambda tasks: [fn(*a) for fn, a in tasks], min_part=1)
    assert len(plan.parts) == 3 and plan.parts[1].pieces[0].start  # cut inside the file
    parts = [run_part(plan, k, CONFIG) for k in range(3)]
    parts = pickle.loads(pickle.dumps(parts))  # what crosses between processes or machines
    assert all(r.objects is None for r in parts)
    [(_first, last)] = parts[1].skipped.values()  # stitched: the task before read on that far
    assert parts[0].stop_frame is None or parts[0].stop_frame >= last
    merged, objects, needs = merge_parts(plan, parts, CONFIG.ports)
    assert not needs and objects is None
    assert as_json(merged) == as_json(run())


# -- the model's timing and command fields (issue #10), on hand-made streams ---------------

def feed_association(client_messages, server_messages, patch=None):
    """RQ/AC, then each (direction, bytes, time) piece, release, close: the Engine's analysis."""
    from unit import wire

    from dicomtrace.model.builder import number_associations
    from dicomtrace.tcp import ConnectionClosed, ConnectionOpened

    conn = wire.connection(server_port=104)
    s = wire.Stream(conn)
    events = [ConnectionOpened(conn), s.data(0, wire.associate(), 0.0), s.data(1, wire.associate(True), 0.001)]
    events += [s.data(d, data, t) for d, data, t in client_messages + server_messages]
    events += [s.data(0, wire.release_rq(), 9.0), s.data(1, wire.release_rp(), 9.001),
               ConnectionClosed(conn, "fin", s.frame + 1, 9.002)]
    engine = Engine(CONFIG)
    engine.feed(events)
    return number_associations(engine.associations)[0]


def test_latency_runs_from_the_requests_last_byte_to_the_responses_last_byte():
    from unit import wire

    rq, rsp = wire.echo_rq(1), wire.echo_rsp(1)
    # dcmtk's way: PDU + PDV headers (12 bytes) in a segment of their own, then the rest
    a = feed_association([(0, rq[:12], 1.0), (0, rq[12:], 1.2)], [(1, rsp[:12], 1.3), (1, rsp[12:], 1.7)])
    op = a.operations[0]
    assert (op.request_frame, op.request_last_frame) == (3, 4)
    assert (op.final.frame, op.final.last_frame) == (5, 6)
    assert abs(op.latency - 0.5) < 1e-9  # 1.2 -> 1.7, not 1.0 -> 1.3
    assert abs(op.response_delay - 0.1) < 1e-9  # 1.2 -> first byte of the response at 1.3
    assert abs(op.request_transfer - 0.2) < 1e-9 and abs(op.response_transfer - 0.4) < 1e-9
    doc = operation_json(op)
    assert (doc["request_frame"], doc["request_last_frame"], doc["response_frame"],
            doc["response_last_frame"]) == (3, 4, 5, 6)
    ladder = [r for r in a.ladder if r.what.startswith("C-ECHO")]
    assert [r.frame for r in ladder] == [4, 6]  # the frames that complete the messages


def test_unknown_command_field():
    from unit import wire

    rq = wire.echo_rq(1)
    field = b"\x00\x00\x00\x01\x02\x00\x00\x00\x30\x00"  # (0000,0100) US 0x0030, implicit VR
    assert rq.count(field) == 1
    a = feed_association([(0, rq.replace(field, field[:8] + b"\x24\x00"), 1.0)], [])
    op = a.operations[0]
    assert op.command_field == 0x0024
    assert [i.code for i in a.issues] == ["unknown-command-field"]
    doc = operation_json(op)
    assert doc["command"] is None and doc["command_field"] == 0x0024
