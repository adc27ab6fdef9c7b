"""Plots for the HTML report, drawn with matplotlib and returned as inline SVG text.

Every function returns an ``<svg>`` string (no files, no network) or "" when there is
nothing to draw.
"""

from __future__ import annotations

import io

STATUS_COLOURS = {"success": "#2e7d32", "warning": "#f9a825", "failure": "#c62828",
                  "cancel": "#6a1b9a", "pending": "#1565c0", None: "#9e9e9e"}
OUTCOME_COLOURS = {"released": "#90caf9", "aborted": "#ef9a9a", "rejected": "#ef5350",
                   "reset": "#ffab91", "closed": "#ffcc80", "incomplete": "#e0e0e0"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3})
    return plt


def label_text(text: str) -> str:
    """A label as the fonts can draw it: control and other unprintable characters (an AE
    title with control bytes) as \\xNN, so no glyph is missing."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _svg(fig) -> str:
    import warnings

    buf = io.StringIO()
    with warnings.catch_warnings():  # font fallback notes are not the user's business
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="svg", bbox_inches="tight")
    _plt().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def timeline(rows, t0: float) -> str:
    """rows: (label, start, end, outcome, [(time, status category)], indent) per association."""
    if not rows:
        return ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.2))
    for i, (label, start, end, outcome, ops, indent) in enumerate(rows):
        y = len(rows) - 1 - i
        ax.barh(y, max(end - start, 1e-4), left=start - t0, height=0.6,
                color=OUTCOME_COLOURS.get(outcome, "#e0e0e0"), edgecolor="#555", linewidth=0.5)
        for t, cat in ops:
            ax.plot([t - t0, t - t0], [y - 0.3, y + 0.3], color=STATUS_COLOURS.get(cat, "#9e9e9e"),
                    linewidth=1.2)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([("    ↳ " if r[5] else "") + label_text(r[0]) for r in reversed(rows)])
    ax.set_xlabel("seconds since the first packet")
    ax.set_title("Associations (bars: outcome colour; ticks: operations by final status)")
    return _svg(fig)


def binned_rate(pts, edges):
    """Mbit/s in each bin between ``edges`` from (time, stream offset after a segment) points.
    A retransmission ends below the highest byte sent before it: the stream's progress is
    the running maximum, so a resend never makes the rate negative."""
    import numpy as np

    order = sorted(pts)
    ts = np.array([p[0] for p in order])
    sent = np.maximum.accumulate(np.array([p[1] for p in order], dtype=float))
    at = np.interp(edges, ts, sent, left=sent[0], right=sent[-1])
    width = edges[1] - edges[0] if len(edges) > 1 else 1.0
    return np.diff(at) * 8 / width / 1e6


def throughput(series, t0: float) -> str:
    """series: (label, [(time, bytes so far)]) per association; drawn as Mbit/s in time bins
    (zero where nothing was sent), so idle stretches show as idle."""
    import numpy as np

    series = [(label, pts) for label, pts in series if len(pts) >= 2]
    if not series:
        return ""
    start = min(p[0][0] for _, p in series)
    end = max(p[-1][0] for _, p in series)
    width = max((end - start) / 200, 0.005)
    edges = np.arange(start, end + width, width)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for label, pts in series:
        rate = binned_rate(pts, edges)
        ax.step(edges[:-1] - t0, rate, where="post", label=label_text(label), linewidth=1)
    ax.set_xlabel("seconds since the first packet")
    ax.set_ylabel("Mbit/s")
    ax.set_title(f"Throughput over time ({width * 1000:.0f} ms bins, data direction of each association)")
    if len(series) <= 12:
        ax.legend(fontsize=7, loc="upper right")
    return _svg(fig)


def time_sequence(label, sent, acked, retrans, t0: float) -> str:
    """The classic TCP time-sequence graph: data sent, acknowledged, and the receive window."""
    if len(sent) < 2:
        return ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.plot([t - t0 for t, _ in sent], [s / 1e6 for _, s in sent], ".", markersize=2,
            color="#1565c0", label="data sent (end of segment)")
    if acked:
        ax.step([t - t0 for t, _, _ in acked], [a / 1e6 for _, a, _ in acked], where="post",
                color="#2e7d32", linewidth=1, label="acknowledged")
        ax.step([t - t0 for t, _, _ in acked], [w / 1e6 for _, _, w in acked], where="post",
                color="#9e9e9e", linewidth=0.8, label="receive window edge")
    if retrans:
        ax.plot([t - t0 for t, _ in retrans], [s / 1e6 for _, s in retrans], "x", color="#c62828",
                markersize=5, label="retransmission")
    top = max(s for _, s in sent) / 1e6
    window_top = max((w for _, _, w in acked), default=0) / 1e6
    ax.set_ylim(0, max(top * 1.05, min(window_top * 1.02, top * 1.5)) if top else 1)
    ax.set_xlabel("seconds since the first packet")
    ax.set_ylabel("MB into the stream")
    ax.set_title(f"TCP time-sequence: {label_text(label)}")
    ax.legend(fontsize=7, loc="upper left")
    return _svg(fig)


def latency(points, t0: float) -> str:
    """points: (request time, latency s, service, status category)."""
    if not points:
        return ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3))
    for cat in {p[3] for p in points}:
        pts = [p for p in points if p[3] == cat]
        ax.plot([p[0] - t0 for p in pts], [p[1] * 1000 for p in pts], "o", markersize=3,
                color=STATUS_COLOURS.get(cat, "#9e9e9e"), label=cat or "no response")
    ax.set_xlabel("request time, seconds since the first packet")
    ax.set_ylabel("latency, ms")
    values = [p[1] * 1000 for p in points if p[1] is not None and p[1] > 0]
    if values and max(values) > 50 * min(values):  # a wide range: log scale, plain numbers
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    else:
        ax.set_ylim(bottom=0)
    ax.set_title("Latency of each operation (request to final response)")
    ax.legend(fontsize=7)
    return _svg(fig)
