"""Issue #10: every frame's TCP class (retransmission, fast, spurious, out-of-order, duplicate
ACK) is tshark's, on both TCP paths, for the rare cases: a capture made to order
(tests/lab/synthetic.py, fixed seeds) with repeated SYNs and SYN/ACKs, keep-alives and their
answers, duplicate ACKs, resends at exactly one initial round trip and at 20 ms after the last
ACK, at microsecond times that float seconds do not hold exactly (a CI run once counted 9
retransmissions where tshark flagged 10, and one more out-of-order segment: such a boundary,
compared in 100 ns steps). tshark 4.0 is the referee; run in process (~3 s).
"""

from __future__ import annotations

import pytest

import lab

SEEDS = range(60)

# tshark's flags and the counter of a direction each one must equal
FLAGS = {
    "tcp.analysis.retransmission": "retransmitted_segments",
    "tcp.analysis.fast_retransmission": "fast_retransmissions",
    "tcp.analysis.spurious_retransmission": "spurious_retransmissions",
    "tcp.analysis.out_of_order": "out_of_order_segments",
    "tcp.analysis.duplicate_ack": "duplicate_acks",
}


@pytest.fixture(scope="module")
def made_to_order(tmp_path_factory):
    path = tmp_path_factory.mktemp("tcp_rules") / "tcp_rules.pcap"
    frames = lab.tcp_rules_capture(path, SEEDS)
    out = lab.tshark("-r", str(path), "-Y", " || ".join(FLAGS), "-T", "fields", "-e", "frame.number",
                     *(x for f in FLAGS for x in ("-e", f)))
    ref = {}
    for line in out.splitlines():
        number, *marks = line.split("\t")
        ref[int(number)] = {f for f, m in zip(FLAGS, marks) if m}
    return path, frames, ref


def _segments(path):
    from dicomtrace.capture import open_capture
    from dicomtrace.net import NetStats, decode_batch
    reader = open_capture(str(path))
    try:
        return [decode_batch(b, NetStats()) for b in reader.batches()]
    finally:
        reader.close()


def _counters(tcp) -> dict:
    return {(c.id, d): {f: getattr(c.half[d], k) for f, k in FLAGS.items()}
            for c in tcp.connections for d in (0, 1)}


def test_every_frame_classified_as_tshark(made_to_order):
    """Fed one segment at a time, the counters that move at each frame are the flags tshark sets
    on it."""
    from dicomtrace.tcp import TcpReassembler
    path, frames, ref = made_to_order
    tcp = TcpReassembler([lab.synthetic._SERVER_PORT])
    got = {}
    for segs in _segments(path):
        for i in range(len(segs)):
            before = _counters(tcp)
            tcp.feed(segs.subset([i]))
            after = _counters(tcp)
            moved = {f for key, c in after.items() for f, n in c.items()
                     if n != before.get(key, {}).get(f, 0)}
            if moved:
                got[int(segs.frame[i])] = moved
    assert len(tcp.connections) == len(SEEDS) + lab.synthetic.BOUNDARY_CONNECTIONS
    assert sum(len(x) for x in ref.values()) > 5 * len(SEEDS), "the capture exercises too little"
    wrong = {f: (sorted(ref.get(f, ())), sorted(got.get(f, ()))) for f in sorted(set(ref) | set(got))
             if ref.get(f, set()) != got.get(f, set())}
    assert not wrong, f"frame: (tshark, dicomtrace) of {frames} frames: {wrong}"


@pytest.mark.parametrize("tcp_path", ["batch", "segment"])
def test_counts_equal_tshark_on_both_paths(made_to_order, tcp_path):
    """Whole batches, as the commands feed them: every direction's counters equal the frames
    tshark flags, on the batch path and on the per-segment one."""
    from dicomtrace.tcp import TcpReassembler
    path, _frames, ref = made_to_order
    tcp = TcpReassembler([lab.synthetic._SERVER_PORT], path=tcp_path)
    for segs in _segments(path):
        tcp.feed(segs)
    tcp.finish()
    totals = {f: 0 for f in FLAGS}
    for counters in _counters(tcp).values():
        for f, n in counters.items():
            totals[f] += n
    want = {f: sum(f in marks for marks in ref.values()) for f in FLAGS}
    assert totals == want
