"""What the capture and network stages saw, summarised for the model and the reports
(the loop that feeds the stages is :mod:`dicomtrace.engine`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from dicomtrace.capture import CaptureProblem
from dicomtrace.capture.reader import CaptureReader
from dicomtrace.net import NetStats


@dataclass
class CaptureSummary:
    """What the capture and network stages saw, for reports."""

    path: str
    format: str
    packets: int = 0
    bytes: int = 0
    first_time: float | None = None
    last_time: float | None = None
    compressed: bool = False
    linktypes: list[int] = field(default_factory=list)
    problems: list[CaptureProblem] = field(default_factory=list)
    files: list = field(default_factory=list)  # capture.multi.CaptureFile of a multi-file capture


def summarize(reader: CaptureReader, net: NetStats, path: str) -> CaptureSummary:
    problems = list(reader.problems)
    problems += [CaptureProblem("warning", msg) for msg in net.problems()]
    return CaptureSummary(path=path, format=reader.format, packets=net.frames, bytes=net.bytes,
                          first_time=reader.first_time, last_time=reader.last_time,
                          compressed=reader.compressed, linktypes=sorted(reader.linktypes),
                          problems=problems, files=list(getattr(reader, "files", ())))
