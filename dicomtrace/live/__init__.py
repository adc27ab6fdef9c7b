"""Live analysis: the stages driven while packets arrive, with taps for what ended."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from dicomtrace.findings import evaluate
from dicomtrace.model.association import Analysis, Association
from dicomtrace.config import AnalysisConfig
from dicomtrace.engine import Engine
from dicomtrace.model.builder import number_associations
from dicomtrace.model.links import link_operations
from dicomtrace.net import NetStats, decode_batch
from dicomtrace.pipeline import summarize
from dicomtrace.tcp import ConnectionClosed, TcpReassembler


@dataclass
class Tap:
    """What a live view wants to hear of (each callable optional)."""

    association_ended: object = None  # (Association, provisional id) -> None
    finding: object = None  # (Finding) -> None
    batch: object = None  # (LiveAnalysis) -> None, after each batch of frames


@dataclass
class LiveAnalysis:
    """``analyze``'s stages over a live reader.  When a DICOM connection closes, its
    association is final: it is handed to the taps with the findings its evidence supports
    (the rules of :mod:`dicomtrace.findings` over that association alone); connections to a
    DICOM port that never carried a PDU give their connection findings then too."""

    config: AnalysisConfig
    taps: list[Tap] = field(default_factory=list)
    observer: object = None

    def __post_init__(self):
        self.net = NetStats()
        self.tcp = TcpReassembler(self.config.ports)
        # the engine's stages, fed here batch by batch (this loop also watches the closes)
        taps = [self.observer] if self.observer is not None else []
        self.engine = Engine(self.config, taps + [_Early(self)])
        self.ended: list[Association] = []
        self.reader = None
        self._told: set[tuple] = set()  # findings handed to the taps early: (code, frames)
        # held while a batch goes through the stages: another thread (a dashboard's timer)
        # may look at them only while the analysis waits for the next packets
        self.busy = threading.Lock()

    def open_associations(self) -> list[Association]:
        ended = {id(a) for a in self.ended}
        return [a for a in self.engine.associations
                if id(a) not in ended and any(a.pdus.values())]

    def provisional_id(self, a: Association) -> int:
        """The id ``analyze`` of the same capture gives, as far as is known now."""
        return 1 + sum(1 for b in self.engine.associations
                       if b.conn.id < a.conn.id and any(b.pdus.values()))

    def run(self, reader) -> Analysis:
        self.reader = reader
        try:
            for batch in reader.batches():
                with self.busy:
                    events = self.tcp.feed(decode_batch(batch, self.net))
                    self.engine.feed(events)
                    for ev in events:
                        if type(ev) is ConnectionClosed:
                            self._closed(ev.conn)
                    for tap in self.taps:
                        if tap.batch is not None:
                            tap.batch(self)
        except KeyboardInterrupt:
            pass  # the capture stopped: analyse what arrived
        self.engine.feed(self.tcp.finish())
        assocs = number_associations(self.engine.associations)
        link_operations(assocs)
        return Analysis(assocs, self.tcp.connections, summarize(reader, self.net, reader.path),
                        self.config.ports)

    def _closed(self, conn) -> None:
        flow = self.engine.flows.get(conn.id)
        a = flow.assoc if flow is not None else None
        if a is not None and not any(a.pdus.values()):
            a = None
        if a is not None:
            self.ended.append(a)
        summary = summarize(self.reader, self.net, self.reader.path)
        one = Analysis([a] if a else [], [conn], summary, self.config.ports)
        if a is not None:
            a.id = self.provisional_id(a)
        found = [f for f in evaluate(one) if (f.code, tuple(f.frames)) not in self._told]
        for tap in self.taps:
            if a is not None and tap.association_ended is not None:
                tap.association_ended(a)
            if tap.finding is not None:
                for f in found:
                    tap.finding(f)

    def early(self, finding) -> None:
        """A finding whose evidence is complete before its association ends (a failure
        status, a rejection, an abort): to the taps now, and not again at the end."""
        self._told.add((finding.code, tuple(finding.frames)))
        for tap in self.taps:
            if tap.finding is not None:
                tap.finding(finding)


class _Early:
    """The engine's tap: numbers an association as it opens (so that early findings name it
    as ``analyze`` will) and passes on the findings judged as soon as their evidence is
    complete (:data:`dicomtrace.engine.IMMEDIATE_CODES`)."""

    def __init__(self, live: LiveAnalysis):
        self.live = live

    def association_opened(self, assoc: Association) -> None:
        assoc.id = self.live.provisional_id(assoc)

    def finding(self, assoc: Association, finding) -> None:
        self.live.early(finding)
