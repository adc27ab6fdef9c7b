"""`dicomtrace report`: a self-contained HTML file with every section (first checks; the
headless-Chromium checks of issue #5 build on these)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lab

SHARED = lab.REPO_ROOT.parent / "shared" / "captures"
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
