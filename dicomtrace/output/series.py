"""Time series of each TCP direction for the report's graphs, recorded as the TCP stage runs.

The TCP stage (:class:`~dicomtrace.tcp.TcpReassembler`) only says what happened — data
sent up to a stream offset, an acknowledgement and the window edge it opens, a
retransmission — one segment at a time or a whole run at once (numpy columns); this
recorder keeps bounded series of it on each direction (``sent``, ``acked``,
``retransmitted_at``), which output/html.py draws (plots.time_sequence).
"""

from __future__ import annotations

import numpy as np

RETRANS_POINTS = 200  # retransmissions marked per direction


class Series:
    """A bounded time series: when it fills up, every other point is dropped and from then
    on only every other point is kept (memory stays flat, shape is kept). The points are
    held in numpy columns (``dtypes``, one per field of a point) that grow as needed up to
    ``limit`` rows: 16 or 24 bytes a point rather than a tuple of Python numbers. ``last``
    is the last point given, kept or not (where the graph's line ends)."""

    __slots__ = ("columns", "n", "stride", "skip", "limit", "last")

    def __init__(self, limit: int = 8192, dtypes=("f8", "i8")):
        self.columns = [np.empty(min(64, limit), dtype=d) for d in dtypes]
        self.n = 0
        self.stride = 1
        self.skip = 0
        self.limit = limit
        self.last: tuple | None = None

    @property
    def points(self) -> list[tuple]:
        """The points kept, as tuples of Python numbers."""
        return list(zip(*(c[:self.n].tolist() for c in self.columns)))

    def array(self) -> np.ndarray:
        """The points kept, and the last point given if it was not, one row each, as floats."""
        rows = np.column_stack([c[:self.n] for c in self.columns]).astype(float)
        if self.last is not None and (self.n == 0 or tuple(rows[-1]) != self.last):
            rows = np.vstack([rows, np.asarray(self.last, dtype=float)])
        return rows

    def __len__(self) -> int:
        return self.n

    def _room(self, m: int) -> None:
        cap = len(self.columns[0])
        if self.n + m > cap:
            cap = min(self.limit, max(self.n + m, 2 * cap))
            self.columns = [np.resize(c, cap) for c in self.columns]

    def _full(self) -> None:
        if self.n >= self.limit:
            keep = (self.n + 1) // 2
            for c in self.columns:
                c[:keep] = c[0:self.n:2]
            self.n = keep
            self.stride *= 2

    def add(self, point: tuple) -> None:
        self.last = point
        self.skip += 1
        if self.skip < self.stride:
            return
        self.skip = 0
        self._room(1)
        for c, v in zip(self.columns, point):
            c[self.n] = v
        self.n += 1
        self._full()

    def extend(self, *columns) -> None:
        """``add`` for every row of the numpy ``columns`` (the same points, at once)."""
        m = len(columns[0])
        if m:
            self.last = tuple(c[m - 1].item() for c in columns)
        i = 0
        while i < m:
            j = i + self.stride - self.skip - 1  # the next row kept
            if j >= m:
                self.skip += m - i
                return
            room = self.limit - self.n
            stop = min(m, j + room * self.stride)
            rows = len(range(j, stop, self.stride))
            self._room(rows)
            for c, v in zip(self.columns, columns):
                c[self.n:self.n + rows] = v[j:stop:self.stride]
            self.n += rows
            last = j + (rows - 1) * self.stride
            self.skip = 0
            if self.n >= self.limit:
                self._full()
            else:
                self.skip = m - last - 1
                return
            i = last + 1


class SeriesRecorder:
    """Receives the TCP stage's series calls and keeps them on each direction (``h``):
    ``h.sent`` (time, stream offset after the segment), ``h.acked`` (time, offset the peer
    acknowledged, window edge it opened), ``h.retransmitted_at`` (time, offset).

    An acknowledgement that repeats the last one (same offset, same window edge: every data
    segment acknowledges the other direction again) changes nothing on the step graph, so
    only its time is kept (``Series.last``, where the line ends); both TCP paths give the
    same acknowledgements in the same order, so they keep the same points."""

    def open(self, h) -> None:
        h.sent, h.acked = Series(dtypes=("f8", "i8")), Series(dtypes=("f8", "i8", "i8"))

    def sent(self, h, t: float, end: int) -> None:
        h.sent.add((t, end))

    def sent_run(self, h, times, ends) -> None:
        h.sent.extend(times, ends)

    def acked(self, h, t: float, offset: int, edge: int) -> None:
        s = h.acked
        if s.last is None or s.last[1] != offset or s.last[2] != edge:
            s.add((t, offset, edge))
        else:
            s.last = (t, offset, edge)

    def acked_run(self, h, times, offsets, edges) -> None:
        m = len(times)
        if not m:
            return
        s = h.acked
        new = np.empty(m, dtype=bool)
        new[1:] = (offsets[1:] != offsets[:-1]) | (edges[1:] != edges[:-1])
        new[0] = s.last is None or s.last[1] != offsets[0] or s.last[2] != edges[0]
        idx = np.flatnonzero(new)
        if len(idx):
            s.extend(times[idx], offsets[idx], edges[idx])
        s.last = (times[-1].item(), offsets[-1].item(), edges[-1].item())

    def retransmitted(self, h, t: float, offset: int) -> None:
        if len(h.retransmitted_at) < RETRANS_POINTS:
            h.retransmitted_at.append((t, offset))
