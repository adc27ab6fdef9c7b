"""The typed interface of the capture stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class CaptureError(Exception):
    """The capture cannot be read at all (not a capture, unreadable, no data).

    The message is one line meant for the user.
    """


@dataclass(slots=True, frozen=True)
class CaptureProblem:
    """Something wrong in the capture that was skipped or worked around."""

    severity: str  # "warning" or "error"
    message: str
    frame: int | None = None  # frame number (1-based) the problem concerns
    offset: int | None = None  # byte offset in the (decompressed) capture file

    def __str__(self) -> str:
        where = []
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return (f"{', '.join(where)}: " if where else "") + self.message


@dataclass(slots=True)
class FrameBatch:
    """Consecutive frames read from one chunk of the capture.

    ``data`` is an immutable buffer; frame ``i`` is
    ``data[offsets[i]:offsets[i] + caplens[i]]``.  Arrays are numpy arrays so
    that the next stage can decode fixed-offset header fields of every frame
    at once.
    """

    data: bytes
    offsets: np.ndarray  # int64
    caplens: np.ndarray  # int64: bytes captured
    origlens: np.ndarray  # int64: bytes on the wire
    times: np.ndarray  # float64: seconds since the epoch
    linktypes: np.ndarray  # int32: LINKTYPE_* of each frame's interface
    first_frame: int  # frame number of frame 0 (1-based)

    def __len__(self) -> int:
        return len(self.offsets)
