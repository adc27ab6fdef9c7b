"""Plots for the HTML report, written directly as inline SVG from the series arrays.

Lines and point sets are thinned to the pixel grid with numpy before they are written: a
line keeps, in each pixel column, its first, lowest, highest and last value; a point set
keeps one point per occupied pixel. A graph is a few thousand SVG vertices at most,
whatever the size of the capture, and still shows every excursion a pixel can show (a
retransmission, a stall). Every function returns an ``<svg>`` string (no files, no
network) or "" when there is nothing to draw.
"""

from __future__ import annotations

import itertools
import math
from html import escape

import numpy as np

STATUS_COLOURS = {"success": "#2e7d32", "warning": "#f9a825", "failure": "#c62828",
                  "cancel": "#6a1b9a", "pending": "#1565c0", None: "#9e9e9e"}
OUTCOME_COLOURS = {"released": "#90caf9", "aborted": "#ef9a9a", "rejected": "#ef5350",
                   "reset": "#ffab91", "closed": "#ffcc80", "incomplete": "#e0e0e0"}
LINE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf")
WIDTH = 900  # px of every graph (the page scales it down to fit)
_clip_ids = itertools.count(1)  # clipPath ids, unique within the page


def label_text(text: str) -> str:
    """A label as the fonts can draw it: control and other unprintable characters (an AE
    title with control bytes) as \\xNN, so no glyph is missing."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def nice_ticks(lo: float, hi: float, n: int = 6) -> tuple[list[float], int]:
    """At most about ``n`` round tick values (1, 2, 2.5 or 5 × 10^k apart) in [lo, hi], and
    the decimals their labels need."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if (hi - lo) / step <= n:
            break
    decimals = max(0, -math.floor(math.log10(step) + 1e-9) + (1 if m == 2.5 else 0))
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [k * step for k in range(first, last + 1)], decimals


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades in [lo, hi] (with 2 and 5 between them when there are fewer than three)."""
    k0, k1 = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    ticks = [10.0 ** k for k in range(k0, k1 + 1)]
    if len(ticks) < 3:
        ticks = sorted(m * 10.0 ** k for k in range(k0 - 1, k1 + 1) for m in (1, 2, 5)
                       if lo <= m * 10.0 ** k <= hi)
    return ticks


def thin_line(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A polyline in pixels reduced to its first, lowest, highest and last vertex in each
    run of one pixel column: the same picture, a few vertices per column."""
    n = len(px)
    if n <= 8:
        return px, py
    col = np.floor(px).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    if len(starts) * 4 >= n:
        return px, py
    ends = np.r_[starts[1:], n] - 1
    lo, hi = np.minimum.reduceat(py, starts), np.maximum.reduceat(py, starts)
    x = np.column_stack([px[starts], px[starts], px[starts], px[ends]]).ravel()
    y = np.column_stack([py[starts], lo, hi, py[ends]]).ravel()
    keep = np.r_[True, (x[1:] != x[:-1]) | (y[1:] != y[:-1])]
    return x[keep], y[keep]


def thin_points(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points in pixels, one per occupied pixel (in the order they came)."""
    if len(px) <= 1:
        return px, py
    rx, ry = np.rint(px).astype(np.int64), np.rint(py).astype(np.int64)
    _, first = np.unique(rx * 1_000_003 + ry, return_index=True)
    first.sort()
    return rx[first], ry[first]


def _coords(x, y) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(np.asarray(x).tolist(), np.asarray(y).tolist()))


class Chart:
    """One x-y graph: axes with round ticks and a grid, a title, axis labels, a legend, and
    the data drawn inside a clip of the plot area (the y axis linear or logarithmic)."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xlim, ylim, *, height: int = 300,
                 ylog: bool = False, left: int = 64, width: int = WIDTH, yticks=None):
        self.yticks = yticks  # [(value, label)] instead of round numbers
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.width, self.height, self.ylog = width, height, ylog
        self.left, self.right, self.top, self.bottom = left, 16, 28, 44
        self.pw, self.ph = width - self.left - self.right, height - self.top - self.bottom
        x0, x1 = float(xlim[0]), float(xlim[1])
        if not x1 > x0:
            x0, x1 = x0 - 0.5, x0 + 0.5
        self.xlim = (x0, x1)
        y0, y1 = float(ylim[0]), float(ylim[1])
        if not y1 > y0:
            y1 = y0 + (abs(y0) or 1.0)
        self.ylim = (y0, y1)
        self.data: list[str] = []
        self.legend: list[tuple[str, str, str]] = []  # (kind, colour, text)
        self.clip = f"plotclip{next(_clip_ids)}"

    def px(self, xs) -> np.ndarray:
        x0, x1 = self.xlim
        return self.left + (np.asarray(xs, dtype=float) - x0) / (x1 - x0) * self.pw

    def py(self, ys) -> np.ndarray:
        ys = np.asarray(ys, dtype=float)
        y0, y1 = self.ylim
        if self.ylog:
            ys, y0, y1 = np.log10(np.maximum(ys, 1e-300)), math.log10(y0), math.log10(y1)
        return self.top + self.ph - (ys - y0) / (y1 - y0) * self.ph

    def line(self, xs, ys, colour: str, *, width: float = 1.0, step: bool = False,
             label: str | None = None) -> None:
        """A polyline (``step``: each value held until the next x, as a step plot 'post')."""
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        if len(xs) == 0:
            return
        if step and len(xs) > 1:
            xs, ys = np.repeat(xs, 2)[1:], np.repeat(ys, 2)[:-1]
        x, y = thin_line(self.px(xs), self.py(ys))
        self.data.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" '
                         f'stroke-linejoin="round" points="{_coords(x, y)}"/>')
        if label:
            self.legend.append(("line", colour, label))

    def _marks(self, kind: str, xs, ys, colour: str, mark, style: str, label) -> None:
        """One path of a mark (``mark(x, y)``: its path data) at every pixel the points fall on."""
        if len(xs) == 0:
            return
        x, y = thin_points(self.px(xs), self.py(ys))
        d = "".join(mark(a, b) for a, b in zip(x.tolist(), y.tolist()))
        self.data.append(f'<path fill="none" stroke="{colour}" {style} d="{d}"/>')
        if label:
            self.legend.append((kind, colour, label))

    def dots(self, xs, ys, colour: str, *, size: float = 2.5, label: str | None = None) -> None:
        """Round markers of diameter ``size`` px."""
        self._marks("dot", xs, ys, colour, lambda a, b: f"M{a},{b}h0",
                    f'stroke-width="{size}" stroke-linecap="round"', label)

    def crosses(self, xs, ys, colour: str, *, size: float = 4.0, label: str | None = None) -> None:
        """× markers ``size`` px wide."""
        s = size / 2
        self._marks("cross", xs, ys, colour,
                    lambda a, b: f"M{a - s},{b - s}l{size},{size}M{a - s},{b + s}l{size},{-size}",
                    'stroke-width="1.3"', label)

    def _axes(self) -> list[str]:
        l, t, pw, ph = self.left, self.top, self.pw, self.ph
        out = [f'<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="#fff" stroke="none"/>']
        xt, xd = nice_ticks(*self.xlim, n=max(4, pw // 90))
        for v in xt:
            x = float(self.px(v))
            out.append(f'<line x1="{x:.1f}" y1="{t}" x2="{x:.1f}" y2="{t + ph}" stroke="#e4e4e4"/>')
            out.append(f'<line x1="{x:.1f}" y1="{t + ph}" x2="{x:.1f}" y2="{t + ph + 4}" stroke="#333"/>')
            out.append(f'<text x="{x:.1f}" y="{t + ph + 16}" text-anchor="middle">{v:.{xd}f}</text>')
        if self.yticks is not None:
            yt = self.yticks
        elif self.ylog:
            yt = [(v, f"{v:g}") for v in log_ticks(*self.ylim)]
        else:
            ticks, yd = nice_ticks(*self.ylim, n=max(3, ph // 45))
            yt = [(v, f"{v:.{yd}f}") for v in ticks]
        for v, text in yt:
            y = float(self.py(v))
            out.append(f'<line x1="{l}" y1="{y:.1f}" x2="{l + pw}" y2="{y:.1f}" stroke="#e4e4e4"/>')
            out.append(f'<line x1="{l - 4}" y1="{y:.1f}" x2="{l}" y2="{y:.1f}" stroke="#333"/>')
            out.append(f'<text x="{l - 7}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>')
        out.append(f'<text x="{l + pw / 2}" y="{self.height - 8}" text-anchor="middle">'
                   f'{escape(self.xlabel)}</text>')
        if self.ylabel:
            out.append(f'<text transform="translate(14,{t + ph / 2}) rotate(-90)" '
                       f'text-anchor="middle">{escape(self.ylabel)}</text>')
        return out

    def _legend(self, corner: str) -> list[str]:
        if not self.legend:
            return []
        w = 40 + 6.4 * max(len(text) for _, _, text in self.legend)
        x = self.left + 8 if corner == "left" else self.left + self.pw - w - 8
        y = self.top + 8
        out = [f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{8 + 15 * len(self.legend)}" '
               'fill="#fff" fill-opacity="0.85" stroke="#ccc"/>']
        for i, (kind, colour, text) in enumerate(self.legend):
            cy = y + 11 + 15 * i
            if kind == "line":
                out.append(f'<line x1="{x + 6:.1f}" y1="{cy}" x2="{x + 24:.1f}" y2="{cy}" '
                           f'stroke="{colour}" stroke-width="1.5"/>')
            elif kind == "dot":
                out.append(f'<circle cx="{x + 15:.1f}" cy="{cy}" r="2.5" fill="{colour}"/>')
            else:
                out.append(f'<path d="M{x + 12:.1f},{cy - 3}l6,6M{x + 12:.1f},{cy + 3}l6,-6" '
                           f'stroke="{colour}" stroke-width="1.3"/>')
            out.append(f'<text x="{x + 30:.1f}" y="{cy + 4}" font-size="10">{escape(text)}</text>')
        return out

    def svg(self, legend: str = "right") -> str:
        l, t, pw, ph = self.left, self.top, self.pw, self.ph
        return "\n".join(
            [f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
             f'viewBox="0 0 {self.width} {self.height}" font-family="system-ui,-apple-system,'
             f'Segoe UI,Helvetica,Arial,sans-serif" font-size="11" fill="#222">',
             f'<defs><clipPath id="{self.clip}"><rect x="{l}" y="{t}" width="{pw}" height="{ph}"/>'
             "</clipPath></defs>",
             f'<text x="{l + pw / 2}" y="17" text-anchor="middle" font-size="12.5">{escape(self.title)}</text>']
            + self._axes()
            + [f'<g clip-path="url(#{self.clip})">'] + self.data + ["</g>",
               f'<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>']
            + self._legend(legend) + ["</svg>"])


def _padded(lo: float, hi: float, least: float = 0.05) -> tuple[float, float]:
    """An x range with 2 % room each side (``least`` when it is a single instant)."""
    pad = (hi - lo) * 0.02 or least
    return lo - pad, hi + pad


def timeline(rows, t0: float) -> str:
    """rows: (label, start, end, outcome, [(time, status category)], indent) per association."""
    if not rows:
        return ""
    n = len(rows)
    labels = [("    ↳ " if r[5] else "") + label_text(r[0]) for r in rows]
    left = int(min(420, 24 + 7.4 * max(len(x) for x in labels)))
    start = min(r[1] for r in rows) - t0
    end = max(r[2] for r in rows) - t0
    chart = Chart("Associations (bars: outcome colour; ticks: operations by final status)",
                  "seconds since the first packet", "", _padded(start, end), (0, n),
                  height=max(130, 28 + 44 + 26 * n), left=left, width=WIDTH + max(0, left - 200),
                  yticks=[(n - i - 0.5, x) for i, x in enumerate(labels)])
    half = 0.3 * chart.ph / n  # bars 0.6 of a row high
    for i, (_label, a_start, a_end, outcome, ops, _indent) in enumerate(rows):
        yc = float(chart.py(n - i - 0.5))
        x0, x1 = float(chart.px(a_start - t0)), float(chart.px(a_end - t0))
        chart.data.append(f'<rect x="{x0:.1f}" y="{yc - half:.1f}" width="{max(x1 - x0, 1.0):.1f}" '
                          f'height="{2 * half:.1f}" fill="{OUTCOME_COLOURS.get(outcome, "#e0e0e0")}" '
                          'stroke="#555" stroke-width="0.5"/>')
        by_cat: dict = {}
        for t, cat in ops:
            by_cat.setdefault(cat, []).append(t - t0)
        for cat in sorted(by_cat, key=str):
            xs = np.unique(np.rint(chart.px(by_cat[cat])))  # one tick per pixel
            d = "".join(f"M{x:g},{yc - half:.1f}v{2 * half:.1f}" for x in xs.tolist())
            chart.data.append(f'<path stroke="{STATUS_COLOURS.get(cat, "#9e9e9e")}" '
                              f'stroke-width="0.8" d="{d}"/>')
    return chart.svg()


def binned_rate(pts, edges):
    """Mbit/s in each bin between ``edges`` from (time, stream offset after a segment) points.
    A retransmission ends below the highest byte sent before it: the stream's progress is
    the running maximum, so a resend never makes the rate negative."""
    arr = np.asarray(pts, dtype=float).reshape(-1, 2)
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    ts, sent = arr[:, 0], np.maximum.accumulate(arr[:, 1])
    at = np.interp(edges, ts, sent, left=sent[0], right=sent[-1])
    width = edges[1] - edges[0] if len(edges) > 1 else 1.0
    return np.diff(at) * 8 / width / 1e6


def throughput(series, t0: float) -> str:
    """series: (label, [(time, bytes so far)]) per association; drawn as Mbit/s in time bins
    (zero where nothing was sent), so idle stretches show as idle."""
    series = [(label, pts) for label, pts in series if len(pts) >= 2]
    if not series:
        return ""
    start = min(p[0][0] for _, p in series)
    end = max(p[-1][0] for _, p in series)
    width = max((end - start) / 200, 0.005)
    edges = np.arange(start, end + width, width)
    rates = [binned_rate(pts, edges) for _, pts in series]
    top = max(float(r.max()) for r in rates) if len(edges) > 1 else 0.0
    chart = Chart(f"Throughput over time ({width * 1000:.0f} ms bins, data direction of each association)",
                  "seconds since the first packet", "Mbit/s", _padded(start - t0, edges[-1] - t0),
                  (0, top * 1.08 or 1.0), height=320)
    for i, ((label, _pts), rate) in enumerate(zip(series, rates)):
        xs = edges - t0
        chart.line(xs, np.r_[rate, rate[-1:]], LINE_COLOURS[i % len(LINE_COLOURS)], step=True,
                   label=label_text(label) if len(series) <= 12 else None)
    return chart.svg()


def time_sequence(label, sent, acked, retrans, t0: float) -> str:
    """The classic TCP time-sequence graph: data sent, acknowledged, and the receive window."""
    if len(sent) < 2:
        return ""
    s = np.asarray(sent, dtype=float).reshape(-1, 2)
    a = np.asarray(acked, dtype=float).reshape(-1, 3)
    r = np.asarray(retrans, dtype=float).reshape(-1, 2)
    top = s[:, 1].max() / 1e6
    window_top = (a[:, 2].max() if len(a) else 0) / 1e6
    ymax = max(top * 1.05, min(window_top * 1.02, top * 1.5)) if top else 1
    times = np.concatenate([s[:, 0], a[:, 0], r[:, 0]]) - t0
    chart = Chart(f"TCP time-sequence: {label_text(label)}", "seconds since the first packet",
                  "MB into the stream", _padded(times.min(), times.max()), (0, ymax), height=320)
    chart.dots(s[:, 0] - t0, s[:, 1] / 1e6, "#1565c0", size=2.5, label="data sent (end of segment)")
    if len(a):
        chart.line(a[:, 0] - t0, a[:, 1] / 1e6, "#2e7d32", step=True, label="acknowledged")
        chart.line(a[:, 0] - t0, a[:, 2] / 1e6, "#9e9e9e", width=0.8, step=True,
                   label="receive window edge")
    if len(r):
        chart.crosses(r[:, 0] - t0, r[:, 1] / 1e6, "#c62828", size=5, label="retransmission")
    return chart.svg(legend="left")


LATENCY_ORDER = ("success", "warning", "pending", "cancel", "failure", None)


def latency(points, t0: float) -> str:
    """points: (request time, latency s, service, status category)."""
    if not points:
        return ""
    values = [p[1] * 1000 for p in points if p[1] is not None and p[1] > 0]
    times = [p[0] - t0 for p in points]
    log = bool(values) and max(values) > 50 * min(values)  # a wide range: log scale, plain numbers
    if log:
        ylim = (min(values) / 1.6, max(values) * 1.6)
    else:
        ylim = (0, max(values, default=1) * 1.05)
    chart = Chart("Latency of each operation (request to final response)",
                  "request time, seconds since the first packet", "latency, ms",
                  _padded(min(times), max(times), 0.5), ylim, ylog=log, height=300)
    cats = sorted({p[3] for p in points},
                  key=lambda c: LATENCY_ORDER.index(c) if c in LATENCY_ORDER else len(LATENCY_ORDER))
    for cat in cats:
        pts = [p for p in points if p[3] == cat and p[1] is not None and (p[1] > 0 or not log)]
        chart.dots([p[0] - t0 for p in pts], [p[1] * 1000 for p in pts],
                   STATUS_COLOURS.get(cat, "#9e9e9e"), size=5, label=cat or "no response")
    return chart.svg()
