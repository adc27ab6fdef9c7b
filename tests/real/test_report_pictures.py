"""Issue #10: the report's pictures tell the truth, on real captures.

* throughput never negative: the lossy netns transfer kept in tests/golden/captures
  (storescu -> storescp with 4 % / 2 % of the packets dropped: retransmissions end below
  bytes already sent) -- its raw per-segment offsets go backwards, the binned rate does not;
* the latency axis reads in plain milliseconds (no 10^n labels) on a wide range too;
* the ladder draws long waits as gaps with their duration and a C-MOVE's unanswered or
  refused SYNs to the move destination: tests/real/test_findings_network.py (the dcmqrscp
  C-MOVEs between two namespaces), next to the findings of the same captures.
"""

from __future__ import annotations

import re

import numpy as np

import lab
from dicomtrace.engine import analyze_capture
from dicomtrace.model.builder import AnalysisConfig
from dicomtrace.output import plots

LOSSY = lab.REPO_ROOT / "tests" / "golden" / "captures" / "lossy.pcap"


def test_throughput_of_a_lossy_transfer_is_never_negative():
    analysis = analyze_capture(str(LOSSY), AnalysisConfig(frozenset({11112, 104})), series=True)
    (a,) = analysis.associations
    h = max(a.conn.half, key=lambda h: h.payload_bytes)
    pts = h.sent.points
    assert h.retransmitted_segments
    # the precondition: retransmitted segments end below what was sent before them
    assert any(later[1] < earlier[1] for earlier, later in zip(pts, pts[1:]))
    edges = np.arange(pts[0][0], pts[-1][0] + 0.005, 0.005)
    rate = plots.binned_rate(pts, edges)
    assert rate.min() >= 0
    # and nothing is lost: the bins add up to the bytes of the stream
    total = max(p[1] for p in pts) - pts[0][1]
    assert abs(rate.sum() * (edges[1] - edges[0]) * 1e6 / 8 - total) <= total * 1e-3
    svg = plots.throughput([("assoc 1", pts)], pts[0][0])
    assert "<svg" in svg


def _tick_labels(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_latency_axis_in_plain_milliseconds():
    wide = [(0.0, 0.0004, "C-ECHO", "success"), (1.0, 0.05, "C-STORE", "success"),
            (2.0, 2.5, "C-MOVE", "failure")]
    svg = plots.latency(wide, 0.0)
    assert "mathdefault" not in svg and "10^" not in svg
    labels = _tick_labels(svg)
    assert "latency, ms" in labels
    assert {"1", "10", "100", "1000"} <= set(labels), labels
    narrow = [(0.0, 0.010, "C-STORE", "success"), (1.0, 0.020, "C-STORE", "success")]
    svg = plots.latency(narrow, 0.0)
    assert "mathdefault" not in svg and "10^" not in svg
    assert {"0", "20"} <= set(_tick_labels(svg)) or {"0.0", "20.0"} <= set(_tick_labels(svg))
