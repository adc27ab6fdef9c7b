"""object-incomplete: a capture with data segments truly missing (editcap) names the C-STOREs
hit; the intact capture of the same transfer has none."""

from __future__ import annotations

import json

import lab


def _findings(pcap):
    doc = json.loads(lab.run_dicomtrace("analyze", str(pcap), "--format", "json",
                                        "--port", "1-65535").stdout)
    return doc, [f for f in doc["findings"] if f["code"] == "object-incomplete"]


def test_missing_bytes_make_objects_incomplete(holes_capture):
    doc, found = _findings(holes_capture.pcap)
    hit = {(a["id"], op["message_id"]) for a in doc["associations"] for op in a["operations"]
           if op["command"] == "C-STORE" and op["dataset_complete"] is False}
    assert hit, "the deleted frames hit at least one data set"
    named = {(f["association"], m) for f in found for m in f.get("message_ids", [])}
    assert named == hit
    assert all(f["severity"] == "warning" for f in found)


def test_intact_capture_has_no_incomplete_object(store_capture):
    _doc, found = _findings(store_capture.pcap)
    assert found == []
