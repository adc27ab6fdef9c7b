"""Builds the model (associations, operations) from TCP events.

For each TCP connection: decide whether it carries DICOM (configured port, or
heuristically a stream that starts with an A-ASSOCIATE-RQ, or one whose bytes
parse as consecutive P-DATA-TF PDUs), then run the Upper Layer parser and the
DIMSE assembler for each direction and follow the association's state
(PS3.8 section 9.2, the state machine of table 9-10, seen from outside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from dicomtrace.dimse.assembler import MessageAssembler, MessageComplete, MessageStarted
from dicomtrace.dimse.commands import (
    C_CANCEL, C_FIND, C_GET, C_MOVE, C_STORE, COMMAND_NAMES, is_response, service_name,
)
from dicomtrace.dimse.dataset import attributes, decode_prefix
from dicomtrace.dimse.status import describe_status
from dicomtrace.model.association import (
    ACCEPTOR, REQUESTOR, Abort, Association, DataSetSummary, Endpoint, IdleGap, Operation, PduRecord,
    PresentationContext, ProtocolIssue, Reject, Response,
)
from dicomtrace.net import format_ip
from dicomtrace.tcp import Connection, ConnectionClosed, ConnectionOpened, StreamData, StreamGap
from dicomtrace.ul.pdu import (
    A_ABORT, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, A_RELEASE_RP, A_RELEASE_RQ, P_DATA_TF,
    AssociatePdu, Violation,
)
from dicomtrace.ul.stream import (
    ControlPdu, PduHeader, PduStream, PdvChunk, Resync, SyncLost, plausible_header,
)

PENDING = (0xFF00, 0xFF01)
MAX_ISSUES = 500
MAX_KEPT_MATCHES = 200  # C-FIND identifiers kept per operation (the rest are counted)
HEURISTIC_LIMIT = 512 << 10  # bytes looked at before deciding a connection is not DICOM
PDATA_RUN = 3  # consecutive P-DATA-TF PDUs that make a mid-stream connection DICOM
IDLE_GAP = 2.0  # s of silence inside an operation worth reporting
MAX_IDLE_GAPS = 100
STORE_KEYS = ("SOPClassUID", "SOPInstanceUID", "PatientName", "PatientID", "PatientBirthDate",
              "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "StudyDate",
              "StudyDescription", "SeriesDescription", "Modality", "InstanceNumber",
              "SpecificCharacterSet", "Rows", "Columns", "NumberOfFrames")


class MessageObserver(Protocol):
    """Follows DIMSE messages as they cross the wire (the exporter is one).

    ``op`` is the operation a request belongs to or a response answers (None when
    unknown); ``pieces`` is a list of views of data set bytes, or None for bytes
    never captured."""

    def message_started(self, assoc: Association, side: str, msg, op: Operation | None) -> None: ...

    def message_data(self, assoc: Association, msg, pieces, size: int) -> None: ...

    def message_complete(self, assoc: Association, side: str, msg, op: Operation | None,
                         incomplete: str | None) -> None: ...


@dataclass(frozen=True)
class AnalysisConfig:
    ports: frozenset[int]
    heuristic: bool = True
    tls_ports: frozenset[int] = frozenset({2762})  # DICOM over TLS (PS3.15 B.1)
    tls_keylog: object = None  # tls.KeyLog: secrets to decrypt TLS with (--tls-keylog)


def other(side: str) -> str:
    return ACCEPTOR if side == REQUESTOR else REQUESTOR


class _Undecided:
    """Buffers a connection's first events until it is known to be DICOM or not."""

    def __init__(self):
        self.events: list = []
        self.bytes = 0
        self.heads = [bytearray(), bytearray()]
        self.trials: list[PduStream | None] = [None, None]
        self.pdata_run = [0, 0]


class AssociationTracker:
    """Follows one DICOM association over one TCP connection."""

    def __init__(self, conn: Connection, detected_by: str, observer: "MessageObserver | None" = None):
        self.conn = conn
        self.assoc = Association(conn, Endpoint(format_ip(conn.client_ip), conn.client_port),
                                 Endpoint(format_ip(conn.server_ip), conn.server_port), detected_by,
                                 start_time=conn.start_time, end_time=conn.end_time)
        self.req_dir = 0
        self.streams: list[PduStream | None] = [None, None]
        self.observer = observer
        hook = self._data_hook if observer is not None else None
        self.assemblers = [MessageAssembler(hook), MessageAssembler(hook)]
        self.state = "idle"
        self.synced = [False, False]
        # requests awaiting their final response; a list per (sender, message ID) because a
        # nonconforming sender may reuse an ID while it is outstanding (answered in order)
        self.outstanding: dict[tuple[str, int], list[Operation]] = {}
        self.by_id: dict[tuple[str, int], Operation] = {}
        self.oversize: dict[str, list] = {}
        self.last_time: float | None = None

    def _data_hook(self, msg, pieces, size) -> None:
        self.observer.message_data(self.assoc, msg, pieces, size)

    def side(self, d: int) -> str:
        return REQUESTOR if d == self.req_dir else ACCEPTOR

    def issue(self, code: str, message: str, side: str, frame, offset=None) -> None:
        if len(self.assoc.issues) < MAX_ISSUES:
            self.assoc.issues.append(ProtocolIssue(code, message, side, frame, offset))

    # -- TCP events -------------------------------------------------------
    def _activity(self, t: float, frame: int) -> None:
        last = self.last_time
        self.last_time = t
        if last is None or t - last < IDLE_GAP or len(self.assoc.idle_gaps) >= MAX_IDLE_GAPS:
            return
        waiting = None
        for d in (0, 1):
            side = self.side(d)
            asm = self.assemblers[d]
            if asm.current is not None:
                waiting = f"the rest of a data set from the {side}"
                ids = [asm.current.command.message_id]
            elif asm._cmd_first is not None or (self.streams[d] is not None
                                                and self.streams[d].state not in (0, 5)):
                waiting = f"the rest of a PDU from the {side}"
                ids = []
        if waiting is None:
            ops = [op for ops in self.outstanding.values() for op in ops if op.service != "C-MOVE"]
            if not ops:
                return
            waiting = f"a response from the {other(ops[0].sender)}"
            ids = [op.message_id for op in ops]
        self.assoc.idle_gaps.append(IdleGap(last, t, frame, waiting, ids))

    def data(self, ev: StreamData) -> None:
        times = ev.times
        if self.last_time is not None and times[-1] - self.last_time < IDLE_GAP:
            self.last_time = times[-1]  # no silence inside this run either
        else:
            for t, frame in zip(times, ev.frames):
                self._activity(t, frame)
        d = ev.direction
        stream = self.streams[d]
        if stream is None:
            stream = self._start_stream(d, ev.offset)
        self._ul(d, stream.feed_pieces(ev.pieces, ev.frames, times))

    def gap(self, ev: StreamGap) -> None:
        self._activity(ev.time, ev.frame)
        d = ev.direction
        stream = self.streams[d]
        if stream is None:
            stream = self._start_stream(d, ev.offset)
        self.assoc.lost_bytes[self.side(d)] += ev.size
        self._ul(d, stream.gap(ev.size, ev.frame, ev.time))

    def _start_stream(self, d: int, offset: int) -> PduStream:
        synced = self.conn.half[d].isn is not None and offset == 0
        self.synced[d] = synced
        self.assemblers[d].orphans_expected = not synced
        if not synced:
            self.assoc.midstream = self.assoc.midstream or self.state == "idle"
            if self.state == "idle":
                self.state = "established"
        stream = self.streams[d] = PduStream(synced)
        return stream

    def closed(self, ev: ConnectionClosed) -> None:
        a = self.assoc
        a.end_time = self.conn.end_time
        a.closed_by = ev.reason
        a.close_frame = ev.frame
        for d in (0, 1):
            for dev in self.assemblers[d].flush("the connection closed" if ev.reason != "end"
                                                else "the capture ended"):
                self._dimse(d, dev)
        if a.reject is not None:
            a.outcome = "rejected"
        elif a.abort is not None:
            a.outcome = "aborted"
        elif a.release_response_frame is not None:
            a.outcome = "released"
        elif ev.reason == "end":
            a.outcome = "incomplete"
        else:
            a.outcome = "reset"
        for side, (count, frame, length, limit) in self.oversize.items():
            self.issue("pdu-exceeds-max-length",
                       f"{count} P-DATA-TF PDU(s) from the {side} exceed the maximum length of "
                       f"{limit} bytes the {other(side)} announced (largest {length} bytes)",
                       side, frame)

    # -- Upper Layer events -----------------------------------------------
    def _ul(self, d: int, events) -> None:
        a = self.assoc
        for ev in events:
            t = type(ev)
            if t is PdvChunk:
                if ev.first:
                    self._pdv_checks(d, ev)
                for dev in self.assemblers[d].feed(ev):
                    self._dimse(d, dev)
            elif t is PduHeader:
                self._pdu_header(d, ev)
            elif t is ControlPdu:
                self._control(d, ev)
            elif t is Violation:
                self.issue(ev.code, ev.message, self.side(d), ev.frame, ev.offset)
            elif t is SyncLost:
                for dev in self.assemblers[d].feed(ev):
                    self._dimse(d, dev)
            elif t is Resync:
                a.skipped_bytes[self.side(d)] += ev.skipped

    def _pdu_header(self, d: int, ev: PduHeader) -> None:
        a = self.assoc
        side = self.side(d)
        a.pdus[side] += 1
        if ev.pdu_type == P_DATA_TF:
            a.pdata_bytes[side] += ev.length
            limit = a.max_pdu.get(other(side))
            if limit and ev.length > limit:
                o = self.oversize.get(side)
                self.oversize[side] = ([1, ev.frame, ev.length, limit] if o is None
                                       else [o[0] + 1, o[1], max(o[2], ev.length), limit])
            if self.state != "established" and self.state != "releasing":
                what = {"idle": "before any A-ASSOCIATE-RQ", "requested": "before the A-ASSOCIATE-AC",
                        "closed": "after the association ended"}.get(self.state, f"in state {self.state}")
                self.issue("unexpected-pdu", f"P-DATA-TF from the {side} {what}", side, ev.frame,
                           ev.offset)

    def _control(self, d: int, ev: ControlPdu) -> None:
        a = self.assoc
        t = ev.pdu_type
        pdu = ev.pdu
        if t == A_ASSOCIATE_RQ:
            if d != self.req_dir and self.state == "idle":
                self.req_dir = d  # the TCP server sent the request: roles follow the request
                a.requestor, a.acceptor = a.acceptor, a.requestor
            side = self.side(d)
            if self.state != "idle":
                self.issue("unexpected-pdu", f"A-ASSOCIATE-RQ from the {side} while the association "
                           f"is {self.state}", side, ev.frame, ev.offset)
                return
            self.state = "requested"
            self._request(pdu, ev)
        elif t == A_ASSOCIATE_AC:
            side = self.side(d)
            self._expect("requested", "A-ASSOCIATE-AC", side, ev)
            if side != ACCEPTOR:
                self.issue("unexpected-pdu", "A-ASSOCIATE-AC sent by the requestor", side, ev.frame)
            self.state = "established"
            self._accept(pdu, ev)
        elif t == A_ASSOCIATE_RJ:
            side = self.side(d)
            self._expect("requested", "A-ASSOCIATE-RJ", side, ev)
            self.state = "closed"
            a.reject = Reject(pdu.result, pdu.source, pdu.reason, pdu.text, ev.frame, ev.time)
            a.ladder.append(PduRecord(ev.time, ev.frame, side, "A-ASSOCIATE-RJ", pdu.text))
        elif t == A_RELEASE_RQ:
            side = self.side(d)
            if self.state not in ("established", "releasing"):
                self.issue("unexpected-pdu", f"A-RELEASE-RQ from the {side} while the association "
                           f"is {self.state}", side, ev.frame, ev.offset)
            self.state = "releasing"
            if a.release_request_frame is None:
                a.release_request_frame, a.release_request_by = ev.frame, side
            a.ladder.append(PduRecord(ev.time, ev.frame, side, "A-RELEASE-RQ"))
        elif t == A_RELEASE_RP:
            side = self.side(d)
            if self.state != "releasing":
                self.issue("unexpected-pdu", f"A-RELEASE-RP from the {side} with no release "
                           "requested", side, ev.frame, ev.offset)
            self.state = "closed"
            a.release_response_frame, a.release_time = ev.frame, ev.time
            a.ladder.append(PduRecord(ev.time, ev.frame, side, "A-RELEASE-RP"))
        elif t == A_ABORT:
            side = self.side(d)
            self.state = "closed"
            if a.abort is None:
                a.abort = Abort(pdu.source, pdu.reason, pdu.text, side, ev.frame, ev.time)
            a.ladder.append(PduRecord(ev.time, ev.frame, side, "A-ABORT", pdu.text))

    def _expect(self, state: str, name: str, side: str, ev) -> None:
        """A PDU that only ``state`` allows (PS3.8 table 9-10); unknown before a mid-stream start."""
        if self.state != state and not self.assoc.midstream:
            self.issue("unexpected-pdu", f"{name} from the {side} while the association is "
                       f"{self.state}", side, ev.frame, ev.offset)

    def _user_info(self, side: str, pdu: AssociatePdu) -> None:
        a = self.assoc
        ui = pdu.user_info
        a.max_pdu[side] = ui.max_length
        a.implementation[side] = {"class_uid": ui.implementation_class_uid,
                                  "version_name": ui.implementation_version_name}
        a.async_ops[side] = ui.async_ops
        a.roles[side] = [{"sop_class_uid": r.sop_class_uid, "scu_role": r.scu_role,
                          "scp_role": r.scp_role} for r in ui.roles]
        a.extended_negotiation[side] = ([{"sop_class_uid": u, "info": info.hex()}
                                         for u, info in ui.extended_negotiation]
                                        + ui.common_extended_negotiation)
        if ui.user_identity is not None:
            u = ui.user_identity
            a.user_identity[side] = {
                "type": u.identity_type,
                "positive_response_requested": u.positive_response_requested,
                "username": u.primary_field.decode("utf-8", "replace") if u.primary_field else None,
                "passcode_length": u.secondary_field_length,
                "server_response_length": len(u.server_response) if u.server_response is not None else None,
            }

    def _request(self, pdu: AssociatePdu, ev: ControlPdu) -> None:
        a = self.assoc
        side = REQUESTOR
        a.calling_ae, a.called_ae = pdu.calling_ae, pdu.called_ae
        a.calling_ae_raw, a.called_ae_raw = pdu.calling_ae_raw, pdu.called_ae_raw
        a.application_context = pdu.application_context
        a.protocol_version = pdu.protocol_version
        a.request_frame, a.request_time = ev.first_frame, ev.start_time
        self._user_info(side, pdu)
        seen = set()
        for item in pdu.presentation_contexts:
            if item.id % 2 == 0:
                self.issue("invalid-presentation-context-id", f"A-ASSOCIATE-RQ proposes presentation "
                           f"context ID {item.id}, an even number (IDs must be odd, 1-255)",
                           side, ev.frame, ev.offset)
            if item.id in seen:
                self.issue("invalid-presentation-context-id", f"A-ASSOCIATE-RQ proposes presentation "
                           f"context ID {item.id} twice", side, ev.frame, ev.offset)
            seen.add(item.id)
            a.presentation_contexts.append(PresentationContext(
                item.id, item.abstract_syntax, list(item.transfer_syntaxes)))
        a.ladder.append(PduRecord(ev.start_time, ev.first_frame, side, "A-ASSOCIATE-RQ",
                                  f"{pdu.calling_ae} -> {pdu.called_ae}, "
                                  f"{len(pdu.presentation_contexts)} presentation contexts"))

    def _accept(self, pdu: AssociatePdu, ev: ControlPdu) -> None:
        a = self.assoc
        side = ACCEPTOR
        a.accept_frame, a.accept_time = ev.frame, ev.time
        if a.calling_ae is None:  # the request was not captured
            a.calling_ae, a.called_ae = pdu.calling_ae, pdu.called_ae
        self._user_info(side, pdu)
        for item in pdu.presentation_contexts:
            pc = a.context(item.id)
            if pc is None:
                if a.request_frame is not None:
                    self.issue("invalid-presentation-context-id", f"A-ASSOCIATE-AC answers presentation "
                               f"context ID {item.id}, which was never proposed", side, ev.frame)
                pc = PresentationContext(item.id, None, proposed=False)
                a.presentation_contexts.append(pc)
            pc.result = item.result
            if item.result == 0:
                pc.transfer_syntax = item.transfer_syntaxes[0] if item.transfer_syntaxes else None
                if (pc.transfer_syntax and pc.proposed_transfer_syntaxes
                        and pc.transfer_syntax not in pc.proposed_transfer_syntaxes):
                    self.issue("malformed-pdu", f"presentation context {item.id} accepted with "
                               f"transfer syntax {pc.transfer_syntax}, which was not proposed",
                               side, ev.frame)
        accepted = sum(1 for pc in a.presentation_contexts if pc.result == 0)
        a.ladder.append(PduRecord(ev.time, ev.frame, side, "A-ASSOCIATE-AC",
                                  f"{accepted} of {len(a.presentation_contexts)} contexts accepted"))

    def _pdv_checks(self, d: int, ev: PdvChunk) -> None:
        pcid = ev.pdv.context_id
        if pcid % 2 == 0:
            self.issue("invalid-presentation-context-id", f"PDV on presentation context ID {pcid}, "
                       "an even number (IDs must be odd)", self.side(d), ev.frame, ev.pdv.offset)

    # -- DIMSE events -----------------------------------------------------
    def _dimse(self, d: int, ev) -> None:
        side = self.side(d)
        t = type(ev)
        if t is Violation:
            self.issue(ev.code, ev.message, side, ev.frame, ev.offset)
        elif t is MessageStarted:
            op = self._message_started(side, ev.message)
            if self.observer is not None:
                self.observer.message_started(self.assoc, side, ev.message, op)
        elif t is MessageComplete:
            op = self._message_complete(side, ev.message, ev.incomplete)
            if self.observer is not None:
                self.observer.message_complete(self.assoc, side, ev.message, op, ev.incomplete)

    def _message_started(self, side: str, msg) -> None:
        a = self.assoc
        cmd = msg.command
        cf = cmd.command_field
        if cf is None:
            return None
        name = COMMAND_NAMES.get(cf, f"command 0x{cf:04X}")
        detail = f"msg {cmd.message_id if not is_response(cf) else cmd.responded_to}"
        if cmd.status is not None:
            detail += f" status 0x{cmd.status:04X}"
        a.ladder.append(PduRecord(msg.start_time, msg.first_frame, side, name, detail))
        if is_response(cf) or cf == C_CANCEL:
            return None
        pc = a.context(msg.context_id)
        if a.negotiated and (pc is None or pc.result != 0):
            why = "was never negotiated" if pc is None else "was rejected"
            self.issue("context-misuse", f"{name} (message {cmd.message_id}) sent on presentation "
                       f"context {msg.context_id}, which {why}", side, msg.first_frame)
        elif pc is not None and pc.abstract_syntax and cmd.sop_class_uid and \
                cmd.sop_class_uid != pc.abstract_syntax:
            self.issue("context-misuse", f"{name} (message {cmd.message_id}) for SOP class "
                       f"{cmd.sop_class_uid} sent on presentation context {msg.context_id}, "
                       f"negotiated for {pc.abstract_syntax}", side, msg.first_frame)
        op = Operation(service_name(cf), cmd.message_id if cmd.message_id is not None else -1,
                       msg.context_id, side, cmd.sop_class_uid, cmd.sop_instance_uid,
                       msg.first_frame, msg.start_time, msg.command_frame, msg.command_time,
                       priority=cmd.priority, move_destination=cmd.move_destination,
                       move_originator_ae=cmd.move_originator_ae,
                       move_originator_id=cmd.move_originator_id,
                       event_type_id=cmd.event_type_id, action_type_id=cmd.action_type_id,
                       has_data_set=msg.has_data_set)
        key = (side, op.message_id)
        waiting = self.outstanding.setdefault(key, [])
        if waiting:
            prev = waiting[0]
            self.issue("message-id-reused", f"{name} reuses message ID {op.message_id} while the "
                       f"{prev.service} with that ID (frame {prev.request_frame}) is still "
                       "unanswered", side, msg.first_frame)
        waiting.append(op)
        self.by_id[key] = op
        a.operations.append(op)
        if op.service == "C-STORE" and side == ACCEPTOR:
            gets = [g for (s, _mid), ops in self.outstanding.items() if s == REQUESTOR
                    for g in ops if g.service == "C-GET"]
            if gets:
                gets[0].sub_operations.append(op)
        return op

    def _decode(self, msg, want_all: bool) -> DataSetSummary | None:
        pc = self.assoc.context(msg.context_id)
        ts = pc.transfer_syntax if pc is not None and pc.result == 0 else None
        dec = decode_prefix(msg.dataset_prefix, ts, msg.dataset_whole)
        if dec is None:
            return None
        attrs = attributes(dec, None if want_all else STORE_KEYS)
        return DataSetSummary(dec.transfer_syntax, dec.inferred, attrs, dec.truncated, dec.problems)

    def _message_complete(self, side: str, msg, incomplete: str | None) -> Operation | None:
        a = self.assoc
        cmd = msg.command
        cf = cmd.command_field
        if cf is None:
            return None
        if cf == C_CANCEL:
            ops = self.outstanding.get((side, cmd.responded_to))
            op = ops[0] if ops else None
            if op is not None:
                op.cancel_frame, op.cancel_time = msg.first_frame, msg.start_time
            return op
        if not is_response(cf):
            op = self.by_id.get((side, cmd.message_id if cmd.message_id is not None else -1))
            if op is None:
                return None
            op.request_last_frame, op.request_end_time = msg.last_frame, msg.end_time
            if msg.has_data_set:
                op.dataset_bytes = msg.dataset_bytes
                op.dataset_lost = msg.dataset_lost
                op.dataset_complete = msg.dataset_whole
                base = cf & 0x7FFF
                op.dataset = self._decode(msg, want_all=base != C_STORE)
                if (base == C_STORE and op.dataset and op.sop_class_uid
                        and op.dataset.attributes.get("SOPClassUID") not in (None, op.sop_class_uid)):
                    self.issue("context-misuse", f"C-STORE (message {op.message_id}) data set has SOP "
                               f"class {op.dataset.attributes['SOPClassUID']}, but the command says "
                               f"{op.sop_class_uid}", side, msg.first_frame)
            return op
        # a response: answered by the other side
        key = (other(side), cmd.responded_to)
        ops = self.outstanding.get(key)
        op = ops[0] if ops else None
        if op is None:
            done = self.by_id.get((other(side), cmd.responded_to))
            if done is None or (done.final is not None and cmd.status not in PENDING):
                a.orphan_responses.append((service_name(cf), cmd.responded_to, msg.first_frame,
                                           msg.start_time))
                return None
            op = done
        status = cmd.status if cmd.status is not None else -1
        resp = Response(msg.first_frame, msg.start_time, status,
                        describe_status(status & 0xFFFF, op_command(op), op.sop_class_uid),
                        cmd.remaining, cmd.completed, cmd.failed, cmd.warning, cmd.error_comment,
                        cmd.offending_elements, cmd.error_id, sop_instance_uid=cmd.sop_instance_uid)
        if msg.has_data_set and (cf & 0x7FFF) == C_FIND and status in PENDING:
            op.matches += 1
            if op.matches <= MAX_KEPT_MATCHES:
                dec = self._decode(msg, want_all=True)
                resp.identifier = dec.attributes if dec else None
            else:
                op.response_count_limit_hit = True
        op.responses.append(resp)
        if status not in PENDING:
            op.final = resp
            if ops:
                ops.pop(0)
                if not ops:
                    del self.outstanding[key]
        return op


def op_command(op: Operation) -> int:
    return {"C-STORE": C_STORE, "C-FIND": C_FIND, "C-MOVE": C_MOVE, "C-GET": C_GET}.get(
        op.service, next((k for k, v in COMMAND_NAMES.items() if v == op.service + "-RQ"), 0))


class AnalysisBuilder:
    """Feeds TCP events to one :class:`AssociationTracker` per DICOM connection."""

    def __init__(self, config: AnalysisConfig, observer: "MessageObserver | None" = None):
        self.config = config
        self.observer = observer
        self.trackers: dict[int, AssociationTracker] = {}
        self.undecided: dict[int, _Undecided] = {}
        self.other: set[int] = set()
        self.associations: list[Association] = []

    def feed(self, events: Iterable) -> None:
        trackers = self.trackers
        for ev in events:
            t = type(ev)
            if t is StreamData or t is StreamGap:
                tr = trackers.get(ev.conn.id)
                if tr is not None:
                    (tr.data if t is StreamData else tr.gap)(ev)
                elif ev.conn.id not in self.other:
                    self._undecided(ev)
            elif t is ConnectionOpened:
                c = ev.conn
                ports = self.config.ports
                if c.server_port in ports or c.client_port in ports:
                    self._start(c, "port")
            elif t is ConnectionClosed:
                tr = trackers.get(ev.conn.id)
                if tr is None and ev.conn.id in self.undecided:
                    tr = self._decide_at_close(ev.conn)
                if tr is not None:
                    tr.closed(ev)

    def _start(self, conn: Connection, how: str) -> AssociationTracker:
        tr = AssociationTracker(conn, how, self.observer)
        self.trackers[conn.id] = tr
        self.associations.append(tr.assoc)
        return tr

    def _undecided(self, ev) -> None:
        cid = ev.conn.id
        u = self.undecided.get(cid)
        if u is None:
            if not self.config.heuristic:
                self.other.add(cid)
                return
            u = self.undecided[cid] = _Undecided()
        if type(ev) is StreamGap:
            u.events.append(ev)
        else:  # the capture's buffers are reused: keep copies while undecided
            cp = StreamData(ev.conn, ev.direction, ev.offset, bytes(ev.pieces[0]), ev.frames[0],
                            ev.times[0])
            for piece, frame, t in zip(ev.pieces[1:], ev.frames[1:], ev.times[1:]):
                cp.add(bytes(piece), frame, t)
            u.events.append(cp)
        verdict = self._judge(u, ev)
        if verdict is None and u.bytes > HEURISTIC_LIMIT:
            verdict = False
        if verdict is None:
            return
        del self.undecided[cid]
        if verdict:
            tr = self._start(ev.conn, verdict)
            for e in u.events:
                (tr.data if type(e) is StreamData else tr.gap)(e)
        else:
            self.other.add(cid)

    def _judge(self, u: _Undecided, ev):
        """'associate-request' / 'p-data' when DICOM, False when not, None to wait."""
        if type(ev) is StreamGap:
            return None
        d = ev.direction
        u.bytes += ev.size
        half = ev.conn.half[d]
        from_start = half.isn is not None
        if from_start:
            head = u.heads[d]
            if len(head) < 64 and ev.offset == len(head):
                head += ev.pieces[0][:64 - len(head)]
                for piece in ev.pieces[1:]:
                    head += piece[:64 - len(head)]
            if not head:
                return None
            if head[0] != A_ASSOCIATE_RQ:
                # an acceptor's A-ASSOCIATE-AC/RJ may arrive in the other direction first only if
                # the request was lost; a stream that starts with anything else is not DICOM
                return False if u.heads[1 - d] or d == 0 or head[0] not in (2, 3) else None
            ok = plausible_header(head, 0, strict=True)
            if ok is None:
                return None
            return "associate-request" if ok else False
        trial = u.trials[d]
        if trial is None:
            trial = u.trials[d] = PduStream(synced=False)
        for x in trial.feed_pieces(ev.pieces, ev.frames, ev.times):
            tx = type(x)
            if tx is PduHeader:
                if x.pdu_type == P_DATA_TF:
                    u.pdata_run[d] += 1
                    if u.pdata_run[d] >= PDATA_RUN:
                        return "p-data"
                else:
                    u.pdata_run[d] = 0
            elif tx is Violation or tx is SyncLost:
                u.pdata_run[d] = 0
        return None

    def _decide_at_close(self, conn: Connection):
        u = self.undecided.pop(conn.id)
        for d in (0, 1):
            head = u.heads[d]
            if head and head[0] == A_ASSOCIATE_RQ and plausible_header(head, 0, strict=True) is not False:
                tr = self._start(conn, "associate-request")
                for e in u.events:
                    (tr.data if type(e) is StreamData else tr.gap)(e)
                return tr
        self.other.add(conn.id)
        return None

    def finish(self) -> list[Association]:
        """Number the associations in the order their connections began.  Connections on a
        DICOM port that never carried a PDU are not associations (they stay in the TCP
        connection list, where findings about failed connection attempts look)."""
        assocs = sorted((a for a in self.associations if a.pdus[REQUESTOR] or a.pdus[ACCEPTOR]),
                        key=lambda a: a.conn.id)
        for i, a in enumerate(assocs, 1):
            a.id = i
        return assocs
