"""The model's recorder: turns the events of the layers below into the dataclasses of
:mod:`dicomtrace.model.association`, and nothing else.

One :class:`AssociationRecorder` per association.  It is told what the Upper Layer
state machine (:mod:`dicomtrace.ul.association`), the PDU parser, the DIMSE assembler
and the operation pairing (:mod:`dicomtrace.dimse.operations`) saw, and writes it
down; the engine (:mod:`dicomtrace.engine`) does the wiring.
"""

from __future__ import annotations

from dicomtrace.config import AnalysisConfig
from dicomtrace.dimse.assembler import DimseMessage
from dicomtrace.dimse.commands import (
    C_FIND, C_GET, C_MOVE, C_STORE, COMMAND_NAMES, is_defined, is_response, service_name,
)
from dicomtrace.dimse.dataset import attributes, decode_prefix
from dicomtrace.dimse.plain import store_summary
from dicomtrace.dimse.operations import PENDING, other
from dicomtrace.dimse.status import describe_status
from dicomtrace.model.association import (
    ACCEPTOR, REQUESTOR, Abort, Association, DataSetSummary, Endpoint, IdleGap, Operation, PduRecord,
    PresentationContext, ProtocolIssue, Reject, Response,
)
from dicomtrace.net import format_ip
from dicomtrace.tcp import Connection, ConnectionClosed
from dicomtrace.ul.pdu import P_DATA_TF, AssociatePdu
from dicomtrace.ul.stream import ControlPdu, PduHeader, PdvChunk, PdvRun

__all__ = ["AnalysisConfig", "AssociationRecorder", "number_associations", "op_command"]

MAX_ISSUES = 500
MAX_KEPT_MATCHES = 200  # C-FIND identifiers kept per operation (the rest are counted)
MAX_IDLE_GAPS = 100
STORE_KEYS = ("SOPClassUID", "SOPInstanceUID", "PatientName", "PatientID", "PatientBirthDate",
              "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "StudyDate",
              "StudyDescription", "SeriesDescription", "Modality", "InstanceNumber",
              "SpecificCharacterSet", "Rows", "Columns", "NumberOfFrames")


class AssociationRecorder:
    """Writes down what happened on one association."""

    def __init__(self, conn: Connection, detected_by: str):
        self.assoc = Association(conn, Endpoint(format_ip(conn.client_ip), conn.client_port),
                                 Endpoint(format_ip(conn.server_ip), conn.server_port), detected_by,
                                 start_time=conn.start_time, end_time=conn.end_time)
        self.oversize: dict[str, list] = {}

    def issue(self, code: str, message: str, side: str, frame, offset=None) -> None:
        if len(self.assoc.issues) < MAX_ISSUES:
            self.assoc.issues.append(ProtocolIssue(code, message, side, frame, offset))

    def swap_roles(self) -> None:
        """The TCP server sent the A-ASSOCIATE-RQ: roles follow the request."""
        a = self.assoc
        a.requestor, a.acceptor = a.acceptor, a.requestor

    def joined_midstream(self) -> None:
        self.assoc.midstream = True

    def idle_gap(self, start: float, end: float, frame: int, waiting: str, ids: list[int]) -> None:
        if len(self.assoc.idle_gaps) < MAX_IDLE_GAPS:
            self.assoc.idle_gaps.append(IdleGap(start, end, frame, waiting, ids))

    @property
    def idle_gaps_full(self) -> bool:
        return len(self.assoc.idle_gaps) >= MAX_IDLE_GAPS

    def lost(self, side: str, size: int) -> None:
        self.assoc.lost_bytes[side] += size

    def skipped(self, side: str, size: int) -> None:
        self.assoc.skipped_bytes[side] += size

    # -- the end of the connection -----------------------------------------
    def closed(self, ev: ConnectionClosed) -> None:
        a = self.assoc
        a.end_time = a.conn.end_time
        a.closed_by = ev.reason
        a.close_frame = ev.frame

    def outcome(self, reason: str) -> None:
        """After the last messages were flushed: how the association ended."""
        a = self.assoc
        if a.reject is not None:
            a.outcome = "rejected"
        elif a.abort is not None:
            a.outcome = "aborted"
        elif a.release_response_frame is not None:
            a.outcome = "released"
        elif reason == "end":
            a.outcome = "incomplete"
        elif reason == "reset":
            a.outcome = "reset"  # a TCP RST ended it
        else:
            a.outcome = "closed"  # FIN (or the ports reused) with no A-RELEASE or A-ABORT
        for side, (count, frame, length, limit) in self.oversize.items():
            self.issue("pdu-exceeds-max-length",
                       f"{count} P-DATA-TF PDU(s) from the {side} exceed the maximum length of "
                       f"{limit} bytes the {other(side)} announced (largest {length} bytes)",
                       side, frame)

    # -- Upper Layer ---------------------------------------------------------
    def pdu_header(self, side: str, ev: PduHeader) -> None:
        a = self.assoc
        a.pdus[side] += 1
        if ev.pdu_type == P_DATA_TF:
            a.pdata_bytes[side] += ev.length
            limit = a.max_pdu.get(other(side))
            if limit and ev.length > limit:
                o = self.oversize.get(side)
                self.oversize[side] = ([1, ev.frame, ev.length, limit] if o is None
                                       else [o[0] + 1, o[1], max(o[2], ev.length), limit])

    def pdata_run(self, side: str, ev: PdvRun) -> bool:
        """What :meth:`pdu_header` records for each PDU of a run, at once.  False (and
        nothing recorded) when one of them is larger than the peer's maximum: those are
        recorded one by one."""
        a = self.assoc
        limit = a.max_pdu.get(other(side))
        if limit and ev.max_length > limit:
            return False
        a.pdus[side] += ev.count
        a.pdata_bytes[side] += ev.pdu_bytes
        return True

    def rejected(self, side: str, ev: ControlPdu) -> None:
        pdu = ev.pdu
        self.assoc.reject = Reject(pdu.result, pdu.source, pdu.reason, pdu.text, ev.frame, ev.time)
        self.assoc.ladder.append(PduRecord(ev.time, ev.frame, side, "A-ASSOCIATE-RJ", pdu.text))

    def release_requested(self, side: str, ev: ControlPdu) -> None:
        a = self.assoc
        if a.release_request_frame is None:
            a.release_request_frame, a.release_request_by = ev.frame, side
        a.ladder.append(PduRecord(ev.time, ev.frame, side, "A-RELEASE-RQ"))

    def released(self, side: str, ev: ControlPdu) -> None:
        a = self.assoc
        a.release_response_frame, a.release_time = ev.frame, ev.time
        a.ladder.append(PduRecord(ev.time, ev.frame, side, "A-RELEASE-RP"))

    def aborted(self, side: str, ev: ControlPdu) -> None:
        a = self.assoc
        pdu = ev.pdu
        if a.abort is None:
            a.abort = Abort(pdu.source, pdu.reason, pdu.text, side, ev.frame, ev.time)
        a.ladder.append(PduRecord(ev.time, ev.frame, side, "A-ABORT", pdu.text))

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

    def requested(self, pdu: AssociatePdu, ev: ControlPdu) -> None:
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

    def accepted(self, pdu: AssociatePdu, ev: ControlPdu) -> None:
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

    def pdv_checks(self, side: str, ev: PdvChunk) -> None:
        pcid = ev.pdv.context_id
        if pcid % 2 == 0:
            self.issue("invalid-presentation-context-id", f"PDV on presentation context ID {pcid}, "
                       "an even number (IDs must be odd)", side, ev.frame, ev.pdv.offset)

    # -- DIMSE ------------------------------------------------------------------
    def message_started(self, side: str, msg: DimseMessage) -> None:
        """A command set was decoded: the ladder shows every message."""
        cmd = msg.command
        cf = cmd.command_field
        name = COMMAND_NAMES.get(cf, f"command 0x{cf:04X}")
        detail = f"msg {cmd.message_id if not is_response(cf) else cmd.responded_to}"
        if cmd.status is not None:
            detail += f" status 0x{cmd.status:04X}"
        # the frame that completes the command (where Wireshark shows the message)
        self.assoc.ladder.append(PduRecord(msg.command_time, msg.command_frame, side, name, detail))
        if not is_defined(cf):
            self.issue("unknown-command-field", f"{'response' if is_response(cf) else 'message'} "
                       f"{cmd.responded_to if is_response(cf) else cmd.message_id} has Command Field "
                       f"0x{cf:04X}, which PS3.7 does not define", side, msg.command_frame)

    def request(self, side: str, msg: DimseMessage) -> Operation:
        """A request began (not a response, not a C-CANCEL): its operation."""
        a = self.assoc
        cmd = msg.command
        cf = cmd.command_field
        name = COMMAND_NAMES.get(cf, f"command 0x{cf:04X}")
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
                       has_data_set=msg.has_data_set, command_field=cf)
        a.operations.append(op)
        return op

    def request_paired(self, side: str, msg: DimseMessage, op: Operation, reused: Operation | None,
                       parent: Operation | None) -> None:
        """What the pairing said of a new request: a reused message ID, the C-GET it serves."""
        if reused is not None:
            name = COMMAND_NAMES.get(msg.command.command_field, "")
            self.issue("message-id-reused", f"{name} reuses message ID {op.message_id} while the "
                       f"{reused.service} with that ID (frame {reused.request_frame}) is still "
                       "unanswered", side, msg.first_frame)
        if parent is not None:
            parent.sub_operations.append(op)

    def cancelled(self, op: Operation, msg: DimseMessage) -> None:
        op.cancel_frame, op.cancel_time = msg.first_frame, msg.start_time

    def request_complete(self, side: str, op: Operation, msg: DimseMessage) -> None:
        op.request_last_frame, op.request_end_time = msg.last_frame, msg.end_time
        if msg.has_data_set:
            op.dataset_bytes = msg.dataset_bytes
            op.dataset_lost = msg.dataset_lost
            op.dataset_complete = msg.dataset_whole
            base = msg.command.command_field & 0x7FFF
            op.dataset = self._decode(msg, want_all=base != C_STORE)
            if (base == C_STORE and op.dataset and op.sop_class_uid
                    and op.dataset.attributes.get("SOPClassUID") not in (None, op.sop_class_uid)):
                self.issue("context-misuse", f"C-STORE (message {op.message_id}) data set has SOP "
                           f"class {op.dataset.attributes['SOPClassUID']}, but the command says "
                           f"{op.sop_class_uid}", side, msg.first_frame)

    def orphan_response(self, msg: DimseMessage) -> None:
        cmd = msg.command
        self.assoc.orphan_responses.append((service_name(cmd.command_field), cmd.responded_to,
                                            msg.first_frame, msg.start_time))

    def response(self, op: Operation, msg: DimseMessage) -> Response:
        cmd = msg.command
        cf = cmd.command_field
        status = cmd.status if cmd.status is not None else -1
        resp = Response(msg.first_frame, msg.start_time, status,
                        describe_status(status & 0xFFFF, op_command(op), op.sop_class_uid),
                        cmd.remaining, cmd.completed, cmd.failed, cmd.warning, cmd.error_comment,
                        cmd.offending_elements, cmd.error_id, sop_instance_uid=cmd.sop_instance_uid,
                        last_frame=msg.last_frame, end_time=msg.end_time)
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
        return resp

    def _decode(self, msg, want_all: bool) -> DataSetSummary | None:
        pc = self.assoc.context(msg.context_id)
        ts = pc.transfer_syntax if pc is not None and pc.result == 0 else None
        if not want_all:  # a stored object's summary: read without pydicom when plain
            plain = store_summary(msg.dataset_prefix, ts, msg.dataset_whole, STORE_KEYS)
            if plain is not None:
                return DataSetSummary(*plain)
        dec = decode_prefix(msg.dataset_prefix, ts, msg.dataset_whole)
        if dec is None:
            return None
        attrs = attributes(dec, None if want_all else STORE_KEYS)
        return DataSetSummary(dec.transfer_syntax, dec.inferred, attrs, dec.truncated, dec.problems)



def op_command(op: Operation) -> int:
    return {"C-STORE": C_STORE, "C-FIND": C_FIND, "C-MOVE": C_MOVE, "C-GET": C_GET}.get(
        op.service, next((k for k, v in COMMAND_NAMES.items() if v == op.service + "-RQ"), 0))



def number_associations(assocs: list[Association]) -> list[Association]:
    """Number the associations in the order their connections began.  Connections on a
    DICOM port that never carried a PDU are not associations (they stay in the TCP
    connection list, where findings about failed connection attempts look)."""
    kept = sorted((a for a in assocs if a.pdus[REQUESTOR] or a.pdus[ACCEPTOR]), key=lambda a: a.conn.id)
    for i, a in enumerate(kept, 1):
        a.id = i
    return kept
