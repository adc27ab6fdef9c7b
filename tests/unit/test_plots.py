"""output/plots.py: the graphs are written as SVG from the series, thinned to the pixel grid
without losing what a pixel can show (issue #12: report within 1.5 × analyze, 100 MB)."""

import re

import numpy as np

from dicomtrace.output import plots


def test_thin_line_keeps_every_column_extent():
    rnd = np.random.default_rng(7)
    px = np.sort(rnd.uniform(60, 860, 100_000))
    py = np.cumsum(rnd.normal(0, 1, 100_000))
    x, y = plots.thin_line(px, py)
    assert len(x) <= 4 * 801
    col, tcol = np.floor(px).astype(int), np.floor(x).astype(int)
    for c in np.unique(col)[::37]:
        assert y[tcol == c].min() == py[col == c].min() and y[tcol == c].max() == py[col == c].max()
    assert (x[0], y[0], x[-1], y[-1]) == (px[0], py[0], px[-1], py[-1])


def test_time_sequence_of_a_long_transfer_is_small_and_shows_a_retransmission():
    t = np.linspace(0.0, 60.0, 8192)
    sent = np.column_stack([t, np.arange(1, 8193) * 1448.0 * 100])
    acked = np.column_stack([t + 0.001, sent[:, 1] - 2896, sent[:, 1] + 65535])
    retrans = [(30.0, 4096 * 1448.0 * 50)]  # far below the line: must still be drawn
    svg = plots.time_sequence("association 1", sent, acked, retrans, 0.0)
    assert len(svg) < 120_000, len(svg)
    (cross,) = re.findall(r'<path fill="none" stroke="#c62828"[^>]*d="([^"]*)"', svg)
    assert cross.count("M") == 2  # one × (two strokes)
    dots = re.findall(r'<path fill="none" stroke="#1565c0"[^>]*d="([^"]*)"', svg)[0]
    assert 300 < dots.count("M") < 2000  # one dot per pixel of the line, not per point
    assert "retransmission" in svg and "receive window edge" in svg


def test_labels_are_escaped_and_printable():
    svg = plots.timeline([("1 CTRL\x01AE→<PACS>", 0.0, 1.0, "released", [(0.5, "success")], False)],
                         0.0)
    assert "CTRL\\x01AE→&lt;PACS&gt;" in svg and "\x01" not in svg and "<PACS>" not in svg
