"""Time series of each TCP direction for the report's graphs, recorded as the TCP stage runs.

The TCP stage (:class:`~dicomtrace.tcp.TcpReassembler`) only says what happened — data
sent up to a stream offset, an acknowledgement and the window edge it opens, a
retransmission — one segment at a time or a whole run at once (numpy columns); this
recorder keeps bounded series of it on each direction (``sent``, ``acked``,
``retransmitted_at``), which output/html.py draws (plots.time_sequence).
"""

from __future__ import annotations

RETRANS_POINTS = 200  # retransmissions marked per direction


class Series:
    """A bounded time series: when it fills up, every other point is dropped and from then
    on only every other point is kept (memory stays flat, shape is kept)."""

    __slots__ = ("points", "stride", "skip", "limit")

    def __init__(self, limit: int = 8192):
        self.points: list[tuple] = []
        self.stride = 1
        self.skip = 0
        self.limit = limit

    def add(self, point: tuple) -> None:
        self.skip += 1
        if self.skip < self.stride:
            return
        self.skip = 0
        self.points.append(point)
        if len(self.points) >= self.limit:
            del self.points[1::2]
            self.stride *= 2

    def extend(self, *columns) -> None:
        """``add`` for every row of the numpy ``columns`` (the same points, at once)."""
        m = len(columns[0])
        i = 0
        while i < m:
            j = i + self.stride - self.skip - 1  # the next row kept
            if j >= m:
                self.skip += m - i
                return
            room = self.limit - len(self.points)
            stop = min(m, j + room * self.stride)
            rows = [c[j:stop:self.stride].tolist() for c in columns]
            self.points += zip(*rows)
            last = j + (len(rows[0]) - 1) * self.stride
            self.skip = 0
            if len(self.points) >= self.limit:
                del self.points[1::2]
                self.stride *= 2
            else:
                self.skip = m - last - 1
                return
            i = last + 1


class SeriesRecorder:
    """Receives the TCP stage's series calls and keeps them on each direction (``h``):
    ``h.sent`` (time, stream offset after the segment), ``h.acked`` (time, offset the peer
    acknowledged, window edge it opened), ``h.retransmitted_at`` (time, offset)."""

    def open(self, h) -> None:
        h.sent, h.acked = Series(), Series()

    def sent(self, h, t: float, end: int) -> None:
        h.sent.add((t, end))

    def sent_run(self, h, times, ends) -> None:
        h.sent.extend(times, ends)

    def acked(self, h, t: float, offset: int, edge: int) -> None:
        h.acked.add((t, offset, edge))

    def acked_run(self, h, times, offsets, edges) -> None:
        h.acked.extend(times, offsets, edges)

    def retransmitted(self, h, t: float, offset: int) -> None:
        if len(h.retransmitted_at) < RETRANS_POINTS:
            h.retransmitted_at.append((t, offset))
