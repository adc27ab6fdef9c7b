"""JSON output of `dicomtrace analyze` (../shared/contract/analysis.schema.json).

The contract's required keys are kept as they are; everything else is added
beside them.
"""

from __future__ import annotations

from typing import Any

from dicomtrace import __version__
from dataclasses import asdict

from dicomtrace.model.association import Association, Operation, Response
from dicomtrace.dimse.commands import is_defined
from dicomtrace.model.metrics import (association_metrics, group_metrics, limitation, operation_timing,
                                       store_counts, store_outcome)
from dicomtrace.output.conversations import capture_json, connection_json
from dicomtrace.output.tls import association_tls, tls_connections_json
from dicomtrace.ul.pdu import PC_RESULTS
from dicomtrace.uids import uid_name


def response_json(r: Response) -> dict[str, Any]:
    out = {
        "frame": r.frame,
        "last_frame": r.last_frame,
        "time": r.time,
        "end_time": r.end_time,
        "status": r.status,
        "status_category": r.info.category,
        "status_text": r.info.meaning,
        "remaining": r.remaining,
        "completed": r.completed,
        "failed": r.failed,
        "warning": r.warning,
    }
    if r.error_comment:
        out["error_comment"] = r.error_comment
    if r.offending_elements:
        out["offending_elements"] = r.offending_elements
    if r.error_id is not None:
        out["error_id"] = r.error_id
    if r.identifier is not None:
        out["identifier"] = r.identifier
    return out


def operation_json(op: Operation) -> dict[str, Any]:
    f = op.final
    timing = operation_timing(op)
    out = {
        "message_id": op.message_id,
        "command": op.service if is_defined(op.command_field) else None,
        "command_field": op.command_field,
        "presentation_context_id": op.context_id,
        "sender": op.sender,
        "sop_class_uid": op.sop_class_uid,
        "sop_class_name": uid_name(op.sop_class_uid),
        "sop_instance_uid": op.sop_instance_uid,
        "move_destination": op.move_destination,
        "request_frame": op.request_frame,
        "request_last_frame": op.request_last_frame,
        "request_time": op.request_time,
        "request_end_time": op.request_end_time,
        "response_frame": f.frame if f else None,
        "response_last_frame": f.last_frame if f else None,
        "response_time": f.time if f else None,
        "response_end_time": f.end_time if f else None,
        "latency": op.latency,
        "response_delay": op.response_delay,
        "request_transfer": op.request_transfer,
        "response_transfer": op.response_transfer,
        "transfer_time": timing.transfer,
        "throughput": timing.throughput,
        "status": f.status if f else None,
        "status_category": f.info.category if f else None,
        "status_text": f.info.meaning if f else None,
        "dataset_bytes": op.dataset_bytes,
        "dataset_complete": op.dataset_complete if op.has_data_set else None,
        "responses": [response_json(r) for r in op.responses],
    }
    if op.priority is not None:
        out["priority"] = op.priority
    if op.move_originator_ae is not None:
        out["move_originator_ae"] = op.move_originator_ae
        out["move_originator_message_id"] = op.move_originator_id
    if op.cancel_frame is not None:
        out["cancel_frame"] = op.cancel_frame
    if op.dataset is not None:
        out["dataset"] = {"transfer_syntax": op.dataset.transfer_syntax,
                          "transfer_syntax_inferred": op.dataset.inferred,
                          "attributes": op.dataset.attributes}
    if op.service == "C-FIND":
        out["matches"] = op.matches
    if op.sub_associations:
        out["sub_associations"] = op.sub_associations
    if op.sub_operations:
        out["sub_operations"] = [{"message_id": s.message_id, "sop_instance_uid": s.sop_instance_uid,
                                  "status": s.final.status if s.final else None}
                                 for s in op.sub_operations]
    return out


def association_json(a: Association) -> dict[str, Any]:
    out = {
        "id": a.id,
        "requestor": {"ip": a.requestor.ip, "port": a.requestor.port},
        "acceptor": {"ip": a.acceptor.ip, "port": a.acceptor.port},
        "calling_ae": a.calling_ae,
        "called_ae": a.called_ae,
        "start_time": a.start_time,
        "end_time": a.end_time,
        # the contract's "reset" covers a TCP close without release; closed_by says which
        "outcome": "reset" if a.outcome == "closed" else a.outcome,
        "reject": None if a.reject is None else {
            "result": a.reject.result, "source": a.reject.source, "reason": a.reject.reason,
            "text": a.reject.text, "frame": a.reject.frame},
        "abort": None if a.abort is None else {
            "source": a.abort.source, "reason": a.abort.reason, "text": a.abort.text,
            "sent_by": a.abort.sent_by, "frame": a.abort.frame},
        "max_pdu_length": dict(a.max_pdu),
        "implementation": a.implementation,
        "presentation_contexts": [{
            "id": pc.id,
            "abstract_syntax": pc.abstract_syntax or "",
            "abstract_syntax_name": uid_name(pc.abstract_syntax),
            "proposed_transfer_syntaxes": pc.proposed_transfer_syntaxes,
            "result": pc.result,
            "result_text": PC_RESULTS.get(pc.result) if pc.result is not None else None,
            "transfer_syntax": pc.transfer_syntax,
            "transfer_syntax_name": uid_name(pc.transfer_syntax),
        } for pc in a.presentation_contexts],
        "operations": [operation_json(op) for op in a.operations],
        "detected_by": a.detected_by,
        "sub_association_of": None if a.move_parent is None else {
            "association": a.move_parent[0], "message_id": a.move_parent[1]},
        "capture_started_midstream": a.midstream,
        "tcp_connection": a.conn.id,
        "request_frame": a.request_frame,
        "accept_frame": a.accept_frame,
        "setup_time": (a.accept_time - a.request_time
                       if a.accept_time is not None and a.request_time is not None else None),
        "release_requested_by": a.release_request_by,
        "closed_by": a.closed_by,
        "application_context": a.application_context,
        "asynchronous_operations_window": {k: list(v) if v else None for k, v in a.async_ops.items()},
        "role_selection": a.roles,
        "extended_negotiation": a.extended_negotiation,
        "user_identity": a.user_identity,
        "pdus": a.pdus,
        "metrics": asdict(association_metrics(a)),
        "limitation": asdict(limitation(a)),
        "tcp": connection_json(a.conn),
    }
    if a.sensor is not None:
        out["sensor"] = a.sensor
    if a.calling_ae_raw is not None:
        out["calling_ae_raw"] = a.calling_ae_raw.decode("latin-1")
        out["called_ae_raw"] = a.called_ae_raw.decode("latin-1")
    if a.log_lines:
        out["log_lines"] = [x.to_json() for x in a.log_lines]
    return out


def object_json(a: Association, op: Operation, files: dict | None = None) -> dict[str, Any]:
    ds = op.dataset
    return {
        "association": a.id,
        "message_id": op.message_id,
        "sop_class_uid": op.sop_class_uid or "",
        "sop_instance_uid": op.sop_instance_uid or "",
        "transfer_syntax": (ds.transfer_syntax if ds else None) or "",
        "bytes": op.dataset_bytes or 0,
        "complete": op.dataset_complete,
        "file": (files or {}).get(op),
        "outcome": store_outcome(op),
    }


def analysis_json(analysis, findings: list[dict], files: dict | None = None) -> dict[str, Any]:
    """The JSON contract; ``files``: operation -> exported file (export only)."""
    assocs = analysis.associations
    tls = association_tls(analysis)
    return {
        "tool": {"name": "dicomtrace", "version": __version__},
        "capture": capture_json(analysis.capture),
        "associations": [dict(association_json(a), tls=tls.get(a.conn.id)) for a in assocs],
        "findings": findings,
        "objects": [object_json(a, op, files) for a in assocs for op in a.operations
                    if op.service == "C-STORE" and op.has_data_set],
        # C-STOREs by what the receiver confirmed: stored (success or warning) and the rest
        "object_counts": store_counts(assocs),
        "studies": [group_json(g) for g in group_metrics(assocs, "StudyInstanceUID")],
        "series": [group_json(g) for g in group_metrics(assocs, "SeriesInstanceUID")],
        "tls_connections": tls_connections_json(analysis),
    }


def group_json(g) -> dict[str, Any]:
    return {"uid": g.uid, "objects": g.objects, "bytes": g.bytes, "start_time": g.start,
            "end_time": g.end, "duration": g.duration, "throughput": g.throughput,
            "failures": g.failures}


def result_json(result) -> dict[str, Any]:
    """The contract's document for an :class:`~dicomtrace.output.AnalysisResult`."""
    # the exporter says what it wrote; the model does not carry file names
    files = {o.operation: str(o.file) for o in result.exported or ()
             if o.kind == "store" and o.operation is not None}
    doc = analysis_json(result.analysis, [f.to_json() for f in result.findings], files)
    if result.filters:
        doc["filters"] = result.filters
    for section in result.sections:
        doc[section.key] = section.json
    return doc


def write_analysis(result, console) -> None:
    from dicomtrace.output import write_json

    write_json(result_json(result), console)
