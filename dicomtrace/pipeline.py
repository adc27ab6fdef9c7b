"""Wires the stages: capture -> packets -> TCP streams (-> DICOM, in analysis).

Nothing here decides anything; each stage is fed the previous stage's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from dicomtrace.capture import CaptureProblem, open_capture
from dicomtrace.capture.reader import CaptureReader
from dicomtrace.net import NetStats, decode_batch
from dicomtrace.tcp import TcpEvent, TcpReassembler


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


def tcp_event_batches(reader: CaptureReader, reassembler: TcpReassembler,
                      net: NetStats) -> Iterator[list[TcpEvent]]:
    """Yield the TCP events of each batch of frames, then those of the end."""
    for batch in reader.batches():
        yield reassembler.feed(decode_batch(batch, net))
    yield reassembler.finish()


def summarize(reader: CaptureReader, net: NetStats, path: str) -> CaptureSummary:
    problems = list(reader.problems)
    problems += [CaptureProblem("warning", msg) for msg in net.problems()]
    return CaptureSummary(path=path, format=reader.format, packets=net.frames, bytes=net.bytes,
                          first_time=reader.first_time, last_time=reader.last_time,
                          compressed=reader.compressed, linktypes=sorted(reader.linktypes),
                          problems=problems, files=list(getattr(reader, "files", ())))


def read_connections(source, server_ports=(), on_events=None, progress=None):
    """Read a whole capture (a path, or an open reader) through TCP reassembly.

    ``on_events`` (optional) is called with each list of TCP events; ``progress`` with
    (bytes read, packets, connections) after each batch.
    Returns (connections, CaptureSummary).
    """
    reader = open_capture(source) if isinstance(source, str) else source
    net = NetStats()
    tcp = TcpReassembler(server_ports)
    try:
        for events in tcp_event_batches(reader, tcp, net):
            if on_events is not None:
                on_events(events)
            if progress is not None:
                progress(reader.read_bytes, net.frames, len(tcp.connections))
    except KeyboardInterrupt:
        if reader.format != "live":
            raise
        if on_events is not None:
            on_events(tcp.finish())
    finally:
        if progress is not None:
            progress.close()
        if isinstance(source, str):
            reader.close()
    return tcp.connections, summarize(reader, net, reader.path)
