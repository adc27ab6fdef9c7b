"""`dicomtrace report`: a self-contained HTML file with every section (first checks; the
headless-Chromium checks of issue #5 build on these)."""

from __future__ import annotations

import re

import pytest

import lab

SHARED = lab.SHARED_ROOT / "captures"
SAMPLE = lab.REPO_ROOT / "examples" / "sample.pcap"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "sample.html"
    lab.run_dicomtrace("report", str(SAMPLE), "-o", str(out))
    return out.read_text(encoding="utf-8")


def test_every_section_is_there(report):
    for anchor in ("summary", "findings", "timeline", "throughput", "latency", "associations"):
        assert f'id="{anchor}"' in report
    assert report.count("<h3 id=\"a") == 4  # one block per association
    assert "association-rejected" in report and "dimse-failure" in report
    assert report.count("<svg") >= 3 + 4  # timeline, throughput, latency, ladders, time-sequence
    assert "Ladder" in report and "TCP time-sequence" in report and "Negotiation" in report


def test_self_contained(report):
    """Nothing is fetched when the file is opened (it is mailed to vendors)."""
    assert "<link" not in report
    assert not re.search(r'(src|href)="(https?:)?//', report)
    assert "@import" not in report and "url(http" not in report


@pytest.mark.skipif(not (SHARED / "move_ok.pcap").exists(), reason="shared captures not present")
def test_move_sub_association_drawn_under_its_move(tmp_path):
    out = tmp_path / "move.html"
    lab.run_dicomtrace("report", str(SHARED / "move_ok.pcap"), "-o", str(out))
    html = out.read_text(encoding="utf-8")
    assert "C-MOVE sub-association of association 1" in html
    assert html.index('id="a1"') < html.index('id="a2"')


IDENTIFYING_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")
UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def _patient_values(doc) -> set[str]:
    vals = set()
    for a in doc["associations"]:
        for op in a["operations"]:
            attrs = (op.get("dataset") or {}).get("attributes", {})
            vals |= {attrs[k] for k in IDENTIFYING_KEYS + UID_KEYS if attrs.get(k)}
            if op.get("sop_instance_uid"):
                vals.add(op["sop_instance_uid"])
            for r in op["responses"]:
                vals |= {v for k, v in (r.get("identifier") or {}).items()
                         if k in IDENTIFYING_KEYS + UID_KEYS and v}
    return {v for v in vals if len(v) >= 4}


@pytest.mark.parametrize("capture", [SAMPLE, SHARED / "find_study_pcapng.pcapng", SHARED / "move_ok.pcap"],
                         ids=lambda p: p.name)
def test_redacted_outputs_hold_no_patient_value(tmp_path, capture):
    """--redact --redact-uids: no patient name, ID, birth date, accession number or instance UID
    of the test data is left in the JSON or the HTML report."""
    if not capture.exists():
        pytest.skip("capture not present")
    import json
    plain = json.loads(lab.run_dicomtrace("analyze", str(capture), "--format", "json").stdout)
    values = _patient_values(plain)
    assert values, "the capture has patient data to hide"
    red_json = lab.run_dicomtrace("analyze", str(capture), "--format", "json", "--redact",
                                  "--redact-uids").stdout.decode()
    html = tmp_path / "r.html"
    lab.run_dicomtrace("report", str(capture), "-o", str(html), "--redact", "--redact-uids")
    red_html = html.read_text(encoding="utf-8")
    for v in values:
        assert v not in red_json, f"{v!r} left in the redacted JSON"
        assert v not in red_html, f"{v!r} left in the redacted report"
    # the structure is intact: same associations and operations
    red = json.loads(red_json)
    assert [len(a["operations"]) for a in red["associations"]] == \
           [len(a["operations"]) for a in plain["associations"]]
