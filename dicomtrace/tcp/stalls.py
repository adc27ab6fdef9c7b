"""Nagle / delayed-ACK stalls, seen from one direction's segments and the peer's ACKs.

A sender with Nagle's algorithm on (RFC 896; RFC 9293 3.7.4) that has a small
segment unacknowledged holds back the next small write until that segment is
acknowledged; a receiver that delays its ACKs (RFC 9293 3.8.6.3: up to 500 ms,
40 ms on Linux, 200 ms on Windows) then makes the sender wait for nothing.
Many DICOM implementations write the 6-byte PDU header and 6-byte PDV header of
a message separately, so the first 12 bytes leave at once and the rest of the
message waits for the delayed ACK.

The record, per direction (:class:`~dicomtrace.tcp.reassembly.HalfConnection`):
``stalls`` (how many), ``stall_time`` (seconds lost in all) and ``stall_samples``
(the first :data:`STALL_SAMPLES`, each a :class:`Stall`).  The reassembler calls
:func:`note_segment` for each new data segment that is small or follows a small one.
"""

from __future__ import annotations

from typing import NamedTuple

STALL_SMALL = 64  # bytes: a segment this small is a header or a tail, not a full write
STALL_MIN = 0.02  # s the ACK of it must have taken: delayed ACKs take 40-500 ms
STALL_SAMPLES = 200


class Stall(NamedTuple):
    """A small segment, the peer's (late) ACK of it, and the rest sent just after."""

    frame: int  # the small segment
    time: float
    size: int
    ack_time: float
    resume_frame: int  # the segment that the ACK released
    resume_time: float

    @property
    def cost(self) -> float:
        return self.resume_time - self.time


def note_segment(h, r, frame: int, t: float, end: int, size: int) -> None:
    """A data segment of ``h`` that advanced the stream to ``end``; ``r`` is the peer's half
    (whose ``last_ack``/``last_ack_time`` are its latest ACK of ``h``, and ``data_time`` the
    last time it sent data)."""
    p = h.stall_probe
    h.stall_probe = None
    if p is not None:
        p_frame, p_time, p_end, p_size, p_retrans = p
        ack_t = r.last_ack_time
        wait = ack_t - p_time
        if (wait >= STALL_MIN and r.last_ack is not None and r.data_time <= p_time
                and h.retransmitted_segments == p_retrans and 0 <= t - ack_t <= wait
                and h.offset(r.last_ack) >= p_end):
            h.stalls += 1
            h.stall_time += t - p_time
            if len(h.stall_samples) < STALL_SAMPLES:
                h.stall_samples.append(Stall(p_frame, p_time, p_size, ack_t, frame, t))
    if size <= STALL_SMALL:
        h.stall_probe = (frame, t, end, size, h.retransmitted_segments)
