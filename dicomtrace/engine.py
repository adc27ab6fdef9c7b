"""The one loop: capture -> net -> tcp -> stream transform -> ul -> dimse -> model.

:class:`Engine` reads a capture (a file or a live capture: anything with
``batches()``) and wires the sans-I/O stages together; none of them knows the
others.  What wants to see the analysis while it happens is a *tap*: an object
given to the engine with any of the methods of :class:`Tap` (export, a progress
display, a live view, a stream dump); taps read events, they never write into the
model.  Splitting the work over processes or machines is :mod:`dicomtrace.parallel`'s, not
this module's: it hands the engine a segment selector (the connections of a part of the
capture) and a continuation (the segments after the part of the connections still open).

Per TCP connection, the engine asks the *stream-transform factory* (if it was
given one) for a :class:`StreamTransform` when the connection's first stream
event arrives: that stage turns the TCP stream events into the stream events the
Upper Layer parses (identity for plain DICOM; TLS decryption will be one).
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol

from dicomtrace.capture import open_capture
from dicomtrace.capture.reader import CaptureReader
from dicomtrace.config import AnalysisConfig
from dicomtrace.dimse.assembler import DimseMessage, MessageAssembler, MessageComplete, MessageStarted
from dicomtrace.dimse.commands import C_CANCEL, is_response
from dicomtrace.dimse.operations import OperationPairing, other
from dicomtrace.model.association import ACCEPTOR, REQUESTOR, Analysis, Association, Operation
from dicomtrace.model.builder import AssociationRecorder, number_associations
from dicomtrace.model.links import link_operations
from dicomtrace.net import NetStats, Segments, decode_batch
from dicomtrace.output.series import SeriesRecorder
from dicomtrace.pipeline import summarize
from dicomtrace.settings import choice
from dicomtrace.tcp import Connection, ConnectionClosed, ConnectionOpened, StreamData, StreamGap, TcpEvent
from dicomtrace.tcp import TcpReassembler
from dicomtrace.tls import TlsLayer
from dicomtrace.ul import association as ula
from dicomtrace.ul.detect import BY_PORT, Detector, on_dicom_port
from dicomtrace.ul.pdu import P_DATA_TF, Violation
from dicomtrace.ul.stream import ControlPdu, PduHeader, PduStream, PdvChunk, PdvRun, Resync, SyncLost

IDLE_GAP = 2.0  # s of silence inside an operation worth reporting
# findings whose evidence is complete the moment it is seen: judged then, for the taps
PDATA_STATES = (ula.ESTABLISHED, ula.RELEASING)  # where P-DATA-TF is expected (PS3.8 Table 9-10)
IMMEDIATE_CODES = frozenset({"association-rejected", "association-aborted", "dimse-failure"})

StreamEvent = StreamData | StreamGap


class StreamTransform(Protocol):
    """A stage between TCP and the Upper Layer for one connection (both directions:
    TLS needs both to follow its handshake).  ``feed`` takes the connection's TCP
    stream events in order and returns the stream events the Upper Layer is to
    parse (plaintext ``StreamData`` with the frames and times of the records they
    came from; ``StreamGap`` for what cannot be recovered); ``finish`` is called when
    the connection closes."""

    def feed(self, ev: StreamEvent) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]: ...


# Given a connection and its first stream event, a transform, or None for plain bytes.
TransformFactory = Callable[[Connection, StreamEvent], "StreamTransform | None"]


class Progress(Protocol):
    """Told after each batch of frames: bytes read, packets, associations found (connections
    when the engine runs TCP only); closed when the reading ends (output/progress.py)."""

    def __call__(self, read: int, packets: int, found: int) -> None: ...

    def close(self) -> None: ...


class Tap(Protocol):
    """What an observer of the engine may implement (every method is optional).

    tcp_events(events)                 every list of TCP events, before the Upper Layer
    association_opened(assoc)          a connection was found to carry DICOM
    message_started(assoc, side, msg, op)   a command set was decoded (op: the operation
                                       a request opens or a response answers, or None)
    message_data(assoc, msg, pieces, size)  data set bytes (pieces None: never captured)
    message_complete(assoc, side, msg, op, incomplete)  a message ended (incomplete: why not whole)
    finding(assoc, finding)            a finding judged as soon as its evidence was complete
                                       (codes in IMMEDIATE_CODES; the rest come from
                                       findings.evaluate at the end)
    association_ended(assoc)           its connection closed (or the capture ended)
    """


class _Taps:
    """The taps' methods, looked up once."""

    NAMES = ("tcp_events", "association_opened", "message_started", "message_data",
             "message_complete", "finding", "association_ended")

    def __init__(self, taps: Iterable):
        taps = list(taps)
        for name in self.NAMES:
            setattr(self, name, [getattr(t, name) for t in taps if callable(getattr(t, name, None))])


class AssociationFlow:
    """One DICOM connection through ul -> dimse -> model."""

    def __init__(self, conn: Connection, detected_by: str, taps: _Taps, judge: Callable | None):
        self.conn = conn
        self.recorder = AssociationRecorder(conn, detected_by)
        self.assoc = self.recorder.assoc
        self.taps = taps
        self.judge = judge  # called with the association when immediate evidence is complete
        self.req_dir = 0
        self.streams: list[PduStream | None] = [None, None]
        hook = self._data_hook if taps.message_data else None
        self.assemblers = [MessageAssembler(hook), MessageAssembler(hook)]
        self.machine = ula.AssociationStateMachine()
        self.pairing: OperationPairing[Operation] = OperationPairing()
        self.last_time: float | None = None
        # bulk PDUs a run at a time (PdvRun); DICOMTRACE_UL_PATH=pdu: one PDU at a time
        self.runs = choice("DICOMTRACE_UL_PATH") == "run"
        for f in taps.association_opened:
            f(self.assoc)

    def _data_hook(self, msg, pieces, size) -> None:
        for f in self.taps.message_data:
            f(self.assoc, msg, pieces, size)

    def side(self, d: int) -> str:
        return REQUESTOR if d == self.req_dir else ACCEPTOR

    # -- stream events ----------------------------------------------------
    def _activity(self, t: float, frame: int) -> None:
        """A silence of IDLE_GAP or more while something was awaited becomes an IdleGap."""
        last = self.last_time
        self.last_time = t
        if last is None or t - last < IDLE_GAP or self.recorder.idle_gaps_full:
            return
        waiting = None
        for d in (0, 1):
            side = self.side(d)
            asm = self.assemblers[d]
            if asm.current is not None:
                waiting = f"the rest of a data set from the {side}"
                ids = [asm.current.command.message_id]
            elif asm.in_command or (self.streams[d] is not None and self.streams[d].in_pdu):
                waiting = f"the rest of a PDU from the {side}"
                ids = []
        if waiting is None:
            ops = [op for service, op in self.pairing.outstanding() if service != "C-MOVE"]
            if not ops:
                return
            waiting = f"a response from the {other(ops[0].sender)}"
            ids = [op.message_id for op in ops]
        self.recorder.idle_gap(last, t, frame, waiting, ids)

    def data(self, ev: StreamData) -> None:
        last = ev.time
        if self.last_time is not None and last - self.last_time < IDLE_GAP:
            self.last_time = last  # no silence inside this run either
        else:
            for t, frame in zip(ev.times, ev.frames):
                self._activity(t, frame)
        d = ev.direction
        stream = self.streams[d]
        if stream is None:
            stream = self._start_stream(d, ev.offset)
        self._ul(d, stream.feed_data(ev))

    def gap(self, ev: StreamGap) -> None:
        self._activity(ev.time, ev.frame)
        d = ev.direction
        stream = self.streams[d]
        if stream is None:
            stream = self._start_stream(d, ev.offset)
        self.recorder.lost(self.side(d), ev.size)
        self._ul(d, stream.gap(ev.size, ev.frame, ev.time))

    def _start_stream(self, d: int, offset: int) -> PduStream:
        synced = self.conn.half[d].isn is not None and offset == 0
        self.assemblers[d].orphans_expected = not synced
        if not synced and self.machine.state == ula.IDLE:
            self.machine.joined_midstream()
            self.recorder.joined_midstream()
        stream = self.streams[d] = PduStream(synced, runs=self.runs)
        return stream

    def closed(self, ev: ConnectionClosed) -> None:
        self.recorder.closed(ev)
        why = "the connection closed" if ev.reason != "end" else "the capture ended"
        for d in (0, 1):
            if self.streams[d] is not None:
                self._ul(d, self.streams[d].finish(ev.frame, ev.time))
            for dev in self.assemblers[d].flush(why):
                self._dimse(d, dev)
        self.recorder.outcome(ev.reason)
        for f in self.taps.association_ended:
            f(self.assoc)

    # -- Upper Layer events -----------------------------------------------
    def _ul(self, d: int, events) -> None:
        rec = self.recorder
        for ev in events:
            t = type(ev)
            if t is PdvRun:
                side = self.side(d)
                if (self.machine.state in PDATA_STATES and self.assemblers[d].takes_run()
                        and rec.pdata_run(side, ev)):
                    self.assemblers[d].run(ev)
                else:  # anything to say about its PDUs: one at a time
                    self._ul(d, ev.expand())
            elif t is PdvChunk:
                if ev.first:
                    rec.pdv_checks(self.side(d), ev)
                for dev in self.assemblers[d].feed(ev):
                    self._dimse(d, dev)
            elif t is PduHeader:
                side = self.side(d)
                rec.pdu_header(side, ev)
                if ev.pdu_type == P_DATA_TF:
                    for x in self.machine.receive(P_DATA_TF, side):
                        rec.issue("unexpected-pdu", x.message, side, ev.frame, ev.offset)
            elif t is ControlPdu:
                self._control(d, ev)
            elif t is Violation:
                rec.issue(ev.code, ev.message, self.side(d), ev.frame, ev.offset)
            elif t is SyncLost or t is Resync:
                if t is Resync:
                    rec.skipped(self.side(d), ev.skipped)
                for dev in self.assemblers[d].feed(ev):
                    self._dimse(d, dev)

    def _control(self, d: int, ev: ControlPdu) -> None:
        rec = self.recorder
        if ev.pdu_type == ula.A_ASSOCIATE_RQ and d != self.req_dir and self.machine.state == ula.IDLE:
            self.req_dir = d  # the TCP server sent the request: roles follow the request
            rec.swap_roles()
        side = self.side(d)
        for x in self.machine.receive(ev.pdu_type, side):
            t = type(x)
            if t is ula.UnexpectedPdu:
                rec.issue("unexpected-pdu", x.message, side, ev.frame, ev.offset if x.with_offset else None)
            elif t is ula.Requested:
                rec.requested(ev.pdu, ev)
            elif t is ula.Accepted:
                rec.accepted(ev.pdu, ev)
            elif t is ula.Rejected:
                rec.rejected(side, ev)
                self._evidence()
            elif t is ula.ReleaseRequested:
                rec.release_requested(side, ev)
            elif t is ula.Released:
                rec.released(side, ev)
            elif t is ula.Aborted:
                rec.aborted(side, ev)
                self._evidence()

    def _evidence(self) -> None:
        if self.judge is not None:
            self.judge(self.assoc)

    # -- DIMSE events -----------------------------------------------------
    def _dimse(self, d: int, ev) -> None:
        side = self.side(d)
        t = type(ev)
        if t is Violation:
            self.recorder.issue(ev.code, ev.message, side, ev.frame, ev.offset)
        elif t is MessageStarted:
            op = self._message_started(side, ev.message)
            for f in self.taps.message_started:
                f(self.assoc, side, ev.message, op)
        elif t is MessageComplete:
            op = self._message_complete(side, ev.message)
            for f in self.taps.message_complete:
                f(self.assoc, side, ev.message, op, ev.incomplete)

    def _message_started(self, side: str, msg: DimseMessage) -> Operation | None:
        cf = msg.command.command_field
        if cf is None:
            return None
        self.recorder.message_started(side, msg)
        if is_response(cf) or cf == C_CANCEL:
            return None
        op = self.recorder.request(side, msg)
        reused, parent = self.pairing.request(side, op.message_id, op.service, op)
        self.recorder.request_paired(side, msg, op, reused, parent)
        return op

    def _message_complete(self, side: str, msg: DimseMessage) -> Operation | None:
        cmd = msg.command
        cf = cmd.command_field
        if cf is None:
            return None
        if cf == C_CANCEL:
            op = self.pairing.cancelled(side, cmd.responded_to)
            if op is not None:
                self.recorder.cancelled(op, msg)
            return op
        if not is_response(cf):
            op = self.pairing.request_of(side, cmd.message_id if cmd.message_id is not None else -1)
            if op is not None:
                self.recorder.request_complete(side, op, msg)
            return op
        status = cmd.status if cmd.status is not None else -1
        op = self.pairing.response(side, cmd.responded_to, status)
        if op is None:
            self.recorder.orphan_response(msg)
            return None
        resp = self.recorder.response(op, msg)
        if op.final is resp and resp.info.category == "failure":
            self._evidence()
        return op


class Engine:
    """Runs one capture (or one shard of it) through every stage up to the model."""

    def __init__(self, config: AnalysisConfig, taps: Iterable = (), *, series: bool = False,
                 transforms: TransformFactory | None = None, dicom: bool = True,
                 select: Callable[[Segments], Segments] | None = None,
                 after: Callable[..., Iterable[Segments]] | None = None, link: bool = True,
                 progress: Progress | None = None):
        self.config = config
        self.taps = _Taps(taps)
        self.series = series  # record each TCP direction's bounded time series (graphs)
        self.transforms = transforms
        self.dicom = dicom  # False: TCP only (conversations)
        self.select = select  # keeps a part's segments (dicomtrace.parallel)
        # after(tcp, reader): the segments to feed once the reader is done (a part's
        # continuation, dicomtrace.parallel), given the TCP stage and the finished reader
        self.after = after
        self.net: NetStats | None = None  # what the network stage counted (after run)
        self.link = link  # link C-MOVEs to their sub-associations at the end
        self.progress = progress
        self.flows: dict[int, AssociationFlow] = {}
        self.detectors: dict[int, Detector] = {}
        self.not_dicom: set[int] = set()
        self.stages: dict[int, StreamTransform] = {}
        self.associations: list[Association] = []
        self._judged: set[tuple] = set()
        self.judge = self._judge if self.taps.finding else None

    # -- the loop ---------------------------------------------------------
    def run(self, reader: CaptureReader) -> Analysis:
        """Read everything.  An interrupt (Ctrl-C) ends the reading of a live capture,
        not the analysis."""
        net = NetStats()
        tcp = TcpReassembler(self.config.ports, series=SeriesRecorder() if self.series else None)
        select, feed, progress = self.select, self.feed, self.progress
        tls = None
        if self.transforms is None and self.dicom:
            # DICOM over TLS, decrypted or reported: tls/'s stream transform on every connection
            tls = TlsLayer.from_config(self.config)
            self.transforms = tls.factory
        try:
            for batch in reader.batches():
                segs = decode_batch(batch, net)
                if select is not None:
                    segs = select(segs)
                feed(tcp.feed(segs))
                if progress is not None:
                    found = (sum(1 for a in self.associations if a.pdus[REQUESTOR] or a.pdus[ACCEPTOR])
                             if self.dicom else len(tcp.connections))
                    progress(reader.read_bytes, net.frames, found)
            if self.after is not None:
                for segs in self.after(tcp, reader):
                    feed(tcp.feed(segs))
        except KeyboardInterrupt:
            if reader.format != "live":
                raise
        finally:
            if progress is not None:
                progress.close()
        feed(tcp.finish())
        self.net = net
        for a in self.associations:
            # the connection's last packet, whichever batch it came in (the final ACK after
            # a FIN may come in the next batch: the result must not depend on where the
            # reading's batches, or a part of the capture, end)
            a.end_time = a.conn.end_time
        assocs = number_associations(self.associations)
        if self.link:
            link_operations(assocs)
        analysis = Analysis(assocs, tcp.connections, summarize(reader, net, reader.path), self.config.ports)
        if tls is not None:
            tls.attach(analysis)
        return analysis

    def feed(self, events: list[TcpEvent]) -> None:
        """One list of TCP events (public so that tests can drive the engine directly)."""
        for f in self.taps.tcp_events:
            f(events)
        if not self.dicom:
            return
        flows, stages = self.flows, self.stages
        for ev in events:
            t = type(ev)
            if t is StreamData or t is StreamGap:
                cid = ev.conn.id
                if self.transforms is not None:
                    stage = stages.get(cid)
                    if stage is None:
                        stage = stages[cid] = self.transforms(ev.conn, ev) or _IDENTITY
                    for x in stage.feed(ev):
                        self._stream(x, flows.get(cid))
                else:
                    self._stream(ev, flows.get(cid))
            elif t is ConnectionOpened:
                if on_dicom_port(ev.conn, self.config.ports):
                    self._start(ev.conn, BY_PORT)
            elif t is ConnectionClosed:
                cid = ev.conn.id
                stage = stages.pop(cid, None)
                if stage is not None:
                    for x in stage.finish():
                        self._stream(x, flows.get(cid))
                flow = flows.get(cid)
                if flow is None and cid in self.detectors:
                    det = self.detectors.pop(cid)
                    verdict = det.at_close()
                    flow = self._start(ev.conn, verdict, det) if verdict else None
                    if flow is None:
                        self.not_dicom.add(cid)
                if flow is not None:
                    flow.closed(ev)

    def _stream(self, ev: StreamEvent, flow: AssociationFlow | None) -> None:
        if flow is not None:
            (flow.data if type(ev) is StreamData else flow.gap)(ev)
            return
        cid = ev.conn.id
        if cid in self.not_dicom:
            return
        det = self.detectors.get(cid)
        if det is None:
            if not self.config.heuristic:
                self.not_dicom.add(cid)
                return
            det = self.detectors[cid] = Detector()
        verdict = det.feed(ev)
        if verdict is None:
            return
        del self.detectors[cid]
        if verdict:
            self._start(ev.conn, verdict, det)
        else:
            self.not_dicom.add(cid)

    def _start(self, conn: Connection, how: str, replay: Detector | None = None) -> AssociationFlow:
        flow = self.flows[conn.id] = AssociationFlow(conn, how, self.taps, self.judge)
        self.associations.append(flow.assoc)
        if replay is not None:
            for e in replay.events:
                (flow.data if type(e) is StreamData else flow.gap)(e)
        return flow

    def _judge(self, assoc: Association) -> None:
        """Judge the findings whose evidence is complete now and hand them to the taps."""
        from dicomtrace.findings import evaluate

        for finding in evaluate(Analysis([assoc], [], None, self.config.ports)):
            key = (id(assoc), finding.code, tuple(finding.frames), finding.message)
            if finding.code in IMMEDIATE_CODES and key not in self._judged:
                self._judged.add(key)
                for f in self.taps.finding:
                    f(assoc, finding)


class _Identity:
    """The plain-DICOM stream transform: the TCP stream events as they are."""

    def feed(self, ev: StreamEvent) -> list[StreamEvent]:
        return [ev]

    def finish(self) -> list[StreamEvent]:
        return []


_IDENTITY = _Identity()


def analyze(reader: CaptureReader, config: AnalysisConfig, taps: Iterable = (), **options) -> Analysis:
    """The analysis of an open reader (see :class:`Engine` for the options)."""
    return Engine(config, taps, **options).run(reader)


def analyze_capture(path: str, config: AnalysisConfig, taps: Iterable = (), **options) -> Analysis:
    """The analysis of a capture file (or ``-``)."""
    reader = open_capture(path)
    try:
        return analyze(reader, config, taps, **options)
    finally:
        reader.close()
