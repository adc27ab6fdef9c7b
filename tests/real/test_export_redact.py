"""export --redact / --redact-uids: the files are de-identified (issue #6), readable, and hold
none of the patient values or instance UIDs the generator put in them."""

from __future__ import annotations

import json

import pytest

import lab

SHARED = lab.SHARED_ROOT / "captures"


def _objects() -> list[dict]:
    truth = json.loads((SHARED / "store_multi.truth.json").read_text())
    return truth["objects_assoc1"] + truth["objects_assoc2"]


@pytest.mark.skipif(not (SHARED / "store_multi.pcap").exists(), reason="shared captures not present")
def test_redacted_export_hides_patient_values(tmp_path):
    objects = _objects()
    secrets = set()
    for o in objects:
        for k in ("patient_name", "patient_id", "sop_instance", "study_instance"):
            if o.get(k):
                secrets.add(o[k])
    assert secrets
    out = tmp_path / "out"
    lab.run_dicomtrace("export", str(SHARED / "store_multi.pcap"), "-o", str(out), "--redact",
                       "--redact-uids")
    files = sorted(out.glob("*.dcm"))
    assert len(files) == len(objects)
    from pydicom import dcmread
    for f in files:
        raw = f.read_bytes()
        for s in secrets:
            assert s.encode() not in raw, f"{s} left in {f.name}"
            assert s not in f.name
        ds = dcmread(f)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert str(ds.SOPInstanceUID).startswith("2.25.")


@pytest.mark.skipif(not (SHARED / "store_multi.pcap").exists(), reason="shared captures not present")
def test_plain_export_keeps_them(tmp_path):
    """The counterpart: without --redact the same values are there (the test above can fail)."""
    out = tmp_path / "out"
    lab.run_dicomtrace("export", str(SHARED / "store_multi.pcap"), "-o", str(out))
    blob = b"".join(f.read_bytes() for f in out.glob("*.dcm"))
    assert all(o["patient_id"].encode() in blob for o in _objects())
