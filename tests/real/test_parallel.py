"""The parallel path (--jobs 2: connections shared out between processes) gives exactly the
results of one process: the same JSON, the same exported files (issue #7)."""

from __future__ import annotations

import hashlib

import pytest

import lab

SHARED = lab.SHARED_ROOT / "captures"
CAPTURES = sorted(p for p in SHARED.glob("*.pcap*") if not p.name.endswith(".json")) + \
    [lab.REPO_ROOT / "examples" / "sample.pcap"]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_analyze_is_identical_with_two_jobs(capture):
    one = lab.run_dicomtrace("analyze", str(capture), "--format", "json", "--jobs", "1").stdout
    two = lab.run_dicomtrace("analyze", str(capture), "--format", "json", "--jobs", "2").stdout
    assert one == two


def test_lab_store_capture_identical_with_two_jobs(store_capture):
    one = lab.run_dicomtrace("analyze", str(store_capture.pcap), "--format", "json", "--jobs", "1").stdout
    two = lab.run_dicomtrace("analyze", str(store_capture.pcap), "--format", "json", "--jobs", "2").stdout
    assert one == two


def _tree(d):
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("capture", [SHARED / "store_multi.pcap", SHARED / "move_ok.pcap"],
                         ids=lambda p: p.name)
def test_export_is_identical_with_two_jobs(tmp_path, capture):
    if not capture.exists():
        pytest.skip("shared captures not present")
    for jobs in ("1", "2"):
        lab.run_dicomtrace("export", str(capture), "-o", str(tmp_path / jobs), "--jobs", jobs,
                           "--include", "stores,identifiers,commands")
    one, two = _tree(tmp_path / "1"), _tree(tmp_path / "2")
    assert one and one == two
