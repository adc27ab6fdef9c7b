"""Parquet tables of an analysis (``analyze --tables DIR``), for DuckDB, pandas, Spark.

The tables are built from the analysis document (the JSON contract,
``analysis.schema.json``), never from rendered text: connections, associations,
presentation_contexts, operations, findings, objects.  Every row carries its
``sensor`` (capture point), the ``capture_file`` that holds its first frame and that
frame's number within the file (``file_frame``), and times in seconds since the
epoch (UTC).  Column names and types are fixed here and documented in docs/tables.md;
a table with no rows still has all its columns.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from typing import Any, Callable

TABLE_NAMES = ("connections", "associations", "presentation_contexts", "operations", "findings",
               "objects")


def _types():
    import pyarrow as pa

    return {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
            "ints": pa.list_(pa.int64()), "strs": pa.list_(pa.string())}


# (column, type, value from the row's context).  Contexts are plain dicts made below.
Column = tuple[str, str, Callable[[dict], Any]]

_WHERE: list[Column] = [
    ("sensor", "str", lambda r: r["sensor"]),
    ("capture_file", "str", lambda r: r["where"][0]),
    ("file_frame", "int", lambda r: r["where"][1]),
]


def _get(ctx: str, name: str, kind: str, key: str | None = None) -> Column:
    """Column ``name`` from ``key`` (default: the same name; ``a.b`` for nested keys) of
    the row's ``ctx`` dict; None where a key is missing."""
    path = (key or name).split(".")

    def get(r):
        v = r[ctx]
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        return v
    return name, kind, get


def _cols(ctx: str, spec: str) -> list[Column]:
    """Columns from ``"name:kind[=json_key] ..."`` of the row's ``ctx`` dict."""
    cols = []
    for item in spec.split():
        name, _, rest = item.partition(":")
        kind, _, key = rest.partition("=")
        cols.append(_get(ctx, name, kind, key or None))
    return cols


def _half(prefix: str, key: str) -> list[Column]:
    fields = ("packets", "bytes", "payload_bytes", "retransmitted_segments", "retransmitted_bytes",
              "out_of_order_segments", "missing_bytes", "gaps", "duplicate_acks",
              "zero_window_events", "resets")
    return _cols("tcp", " ".join(f"{prefix}_{f}:int={key}.{f}" for f in fields))


COLUMNS: dict[str, list[Column]] = {
    "connections": _WHERE + [
        _get("tcp", "connection", "int", "id"),
        _get("a", "association", "int", "id"),
        *_cols("tcp", "client_ip:str=client.ip client_port:int=client.port"
                      " server_ip:str=server.ip server_port:int=server.port"),
        *_cols("tcp", "start_time:float end_time:float duration:float"
                 " first_frame:int last_frame:int state:str handshake_rtt:float"),
    ] + _half("c2s", "client_to_server") + _half("s2c", "server_to_client"),
    "associations": _WHERE + [
        *_cols("a", "association:int=id connection:int=tcp_connection"),
        *_cols("a", "requestor_ip:str=requestor.ip requestor_port:int=requestor.port"
                    " acceptor_ip:str=acceptor.ip acceptor_port:int=acceptor.port"),
        *_cols("a", "calling_ae:str called_ae:str start_time:float end_time:float"),
        ("duration", "float", lambda r: r["a"]["end_time"] - r["a"]["start_time"]),
        *_cols("a", "outcome:str request_frame:int setup_time:float"),
        *_cols("a", "reject_result:int=reject.result reject_source:int=reject.source"
                    " reject_reason:int=reject.reason abort_source:int=abort.source"
                    " abort_reason:int=abort.reason capture_started_midstream:bool"),
        ("operations", "int", lambda r: len(r["a"]["operations"])),
        ("failed_operations", "int", lambda r: sum(op.get("status_category") == "failure"
                                                   for op in r["a"]["operations"])),
        *_cols("a", "bytes_requestor:int=metrics.bytes_requestor"
                    " bytes_acceptor:int=metrics.bytes_acceptor throughput:float=metrics.throughput"),
    ],
    "presentation_contexts": _WHERE + [
        _get("a", "association", "int", "id"),
        *_cols("pc", "context_id:int=id abstract_syntax:str"
                 " abstract_syntax_name:str proposed_transfer_syntaxes:strs"
                 " result:int result_text:str transfer_syntax:str"
                 " transfer_syntax_name:str"),
    ],
    "operations": _WHERE + [
        *_cols("a", "association:int=id calling_ae:str called_ae:str"),
        *_cols("op", "message_id:int command:str"
                 " context_id:int=presentation_context_id sop_class_uid:str"
                 " sop_class_name:str sop_instance_uid:str move_destination:str"
                 " request_frame:int request_last_frame:int response_frame:int"
                 " response_last_frame:int request_time:float"
                 " response_time:float latency:float response_delay:float"
                 " transfer_time:float dataset_bytes:int throughput:float"
                 " status:int"),
        ("status_category", "str", lambda r: r["op"].get("status_category") or "unanswered"),
        _get("op", "status_text", "str"),
        ("responses", "int", lambda r: len(r["op"]["responses"])),
    ],
    "findings": _WHERE + [
        ("finding", "int", lambda r: r["f"].get("id", r["index"])),
        *_cols("f", "code:str severity:str association:int"),
        ("time", "float", lambda r: r["time"]),
        ("first_frame", "int", lambda r: min(r["f"].get("frames") or [None], key=lambda x: x or 0)),
        ("frames", "ints", lambda r: r["f"].get("frames") or []),
        *_cols("f", "message:str hint:str caused_by:int"),
    ],
    "objects": _WHERE + [
        *_cols("o", "association:int message_id:int sop_class_uid:str"
                 " sop_instance_uid:str transfer_syntax:str bytes:int"
                 " complete:bool"),
        *_cols("op", "request_time:float status:int"),
        _get("o", "file", "str"),
    ],
}


class _Frames:
    """Frame number -> (capture file, frame within it), per sensor (``capture.files``)."""

    def __init__(self, doc: dict):
        self.single = doc["capture"]["path"]
        self.by_sensor: dict[str | None, list[dict]] = {}
        for f in doc["capture"].get("files", []):
            self.by_sensor.setdefault(f["sensor"], []).append(f)

    def where(self, sensor, frame) -> tuple[str | None, int | None]:
        files = self.by_sensor.get(sensor)
        if frame is None:
            return (None, None) if files else (self.single, None)
        if not files:
            return self.single, frame
        i = bisect_right([f["first_frame"] for f in files], frame) - 1
        if i < 0 or frame >= files[i]["first_frame"] + files[i]["frames"]:
            return None, None
        return files[i]["path"], frame - files[i]["first_frame"] + 1


def rows(doc: dict, default_sensor: str | None = None) -> dict[str, list[dict]]:
    """The row contexts of every table, from the analysis document."""
    frames = _Frames(doc)
    out: dict[str, list[dict]] = {name: [] for name in TABLE_NAMES}
    by_id = {a["id"]: a for a in doc["associations"]}
    op_of = {}
    frame_time: dict[tuple, float] = {}

    def ctx(sensor, frame, **kw):
        return {"sensor": sensor, "where": frames.where(sensor, frame), **kw}

    for a in doc["associations"]:
        sensor = a.get("sensor", default_sensor)
        tcp = a.get("tcp")
        if tcp:
            out["connections"].append(ctx(sensor, tcp.get("first_frame"), a=a, tcp=tcp))
        out["associations"].append(ctx(sensor, a.get("request_frame") or (tcp or {}).get("first_frame"),
                                       a=a))
        for pc in a["presentation_contexts"]:
            out["presentation_contexts"].append(ctx(sensor, a.get("request_frame"), a=a, pc=pc))
        for op in a["operations"]:
            out["operations"].append(ctx(sensor, op.get("request_frame"), a=a, op=op))
            op_of[(a["id"], op["message_id"], op.get("sop_instance_uid"))] = op
            for frame, time in [(op.get("request_frame"), op["request_time"])] + \
                    [(r.get("frame"), r["time"]) for r in op["responses"]]:
                if frame is not None:
                    frame_time.setdefault((a["id"], frame), time)
    for i, f in enumerate(doc["findings"], 1):
        a = by_id.get(f.get("association"))
        sensor = a.get("sensor", default_sensor) if a else default_sensor
        first = min(f.get("frames") or [None], key=lambda x: x or 0)
        time = frame_time.get((f.get("association"), first))
        if time is None:
            time = a["start_time"] if a else doc["capture"].get("first_time")
        out["findings"].append(ctx(sensor, first, f=f, index=i, time=time))
    for o in doc.get("objects", []):
        a = by_id.get(o["association"])
        op = op_of.get((o["association"], o["message_id"], o["sop_instance_uid"] or None))
        sensor = a.get("sensor", default_sensor) if a else default_sensor
        out["objects"].append(ctx(sensor, (op or {}).get("request_frame"), o=o, op=op))
    return out


def tables(doc: dict, default_sensor: str | None = None) -> dict:
    """pyarrow Tables by name, with the fixed columns of :data:`COLUMNS`."""
    import pyarrow as pa

    types = _types()
    made = {}
    for name, contexts in rows(doc, default_sensor).items():
        cols = COLUMNS[name]
        schema = pa.schema([(c, types[t]) for c, t, _ in cols])
        data = {c: [get(r) for r in contexts] for c, _, get in cols}
        made[name] = pa.Table.from_pydict(data, schema=schema)
    return made


def write_tables(doc: dict, directory: str, default_sensor: str | None = None) -> list[str]:
    """Write DIR/<table>.parquet for every table; returns the paths."""
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, table in tables(doc, default_sensor).items():
        path = os.path.join(directory, f"{name}.parquet")
        pq.write_table(table, path)
        paths.append(path)
    return paths
