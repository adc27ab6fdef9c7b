"""What `dicomtrace export` wrote: a table, or the analysis JSON with ``exported``."""

from __future__ import annotations

from typing import Any



def exported_json(o) -> dict[str, Any]:
    return {"file": str(o.file), "association": o.association.id, "message_id": o.message_id,
            "kind": o.kind, "command": o.command, "sop_class_uid": o.sop_class_uid,
            "sop_instance_uid": o.sop_instance_uid, "transfer_syntax": o.transfer_syntax,
            "bytes": o.bytes, "complete": o.complete, "incomplete_reason": o.incomplete_reason}


def write_json(result, console) -> None:
    from dicomtrace.output import write_json as dump
    from dicomtrace.output.json_report import result_json

    doc = result_json(result)
    doc["exported"] = [exported_json(o) for o in result.exported]
    dump(doc, console)


def write_text(result, console) -> None:
    written = result.exported
    from dicomtrace.output.text import print_table

    if written:
        print_table(console, [(col, col in ("assoc", "msg", "bytes"),
                               "fold" if col == "file" else "ellipsis")
                              for col in ("assoc", "msg", "bytes", "complete", "file")],
                    [(str(o.association.id), str(o.message_id), str(o.bytes),
                      "yes" if o.complete else f"no: {o.incomplete_reason}", str(o.file))
                     for o in written])
    partial = sum(1 for o in written if not o.complete)
    console.print(f"{len(written)} file(s) written to {result.options.get('output_dir', '.')}"
                  + (f", {partial} partial (suffix .partial)" if partial else ""), markup=False)
