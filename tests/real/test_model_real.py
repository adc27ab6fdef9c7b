"""Issue #10, the model's items, on real traffic: message timing and frames as tshark's DICOM
decode shows them, and a capture gap over PDU headers that no longer ends the message in
flight.  Captures: the public ones in ../shared/captures/public (skipped where absent) and the
lab's own in tests/golden/captures (dcmtk and pynetdicom peers, see make_captures.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

import lab

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "captures"
PUBLIC = lab.SHARED_CAPTURES / "public"
ECHOSCU = PUBLIC / "DICOM_C-ECHO-echoscu.pcap"


def analyze(pcap, *args) -> dict:
    return json.loads(lab.run_dicomtrace("analyze", pcap, "--format", "json", *args).stdout)


def tshark_pdus(pcap, ports) -> dict[int, tuple[float, list[str]]]:
    """frame -> (time, DICOM PDU types tshark shows completed in that frame)."""
    decode = [x for p in sorted(ports) for x in ("-d", f"tcp.port=={p},dicom")]
    out = {}
    for line in lab.tshark("-r", str(pcap), *decode, "-T", "fields", "-e", "frame.number",
                           "-e", "frame.time_epoch", "-e", "dicom.pdu.type").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2]:
            out[int(parts[0])] = (float(parts[1]), parts[2].split(","))
    return out


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not here (../shared absent)")
    return path


def test_echoscu_latency_is_request_complete_to_response_complete():
    """The Wireshark wiki's echoscu sample: the C-ECHO-RQ completes in frame 11, the RSP in 15."""
    doc = analyze(_need(ECHOSCU), "--port", "4242")
    op = doc["associations"][0]["operations"][0]
    assert (op["request_last_frame"], op["response_last_frame"]) == (11, 15)
    assert (op["request_frame"], op["response_frame"]) == (9, 13)  # the 12-byte header segments
    pdus = tshark_pdus(ECHOSCU, [4242])
    assert op["latency"] == pytest.approx(pdus[15][0] - pdus[11][0], abs=2e-6)
    assert op["latency"] == pytest.approx(0.0439, abs=0.0001)  # not the 0.46 ms of before
    assert op["response_delay"] < 0.001  # the responder started answering at once ...
    assert op["response_transfer"] == pytest.approx(0.0436, abs=0.0001)  # ... then stalled


CAPTURES = [("lab/echo.pcap", GOLDEN / "echo.pcap"), ("lab/store.pcap", GOLDEN / "store.pcap"),
            ("lab/qr.pcap", GOLDEN / "qr.pcap"), ("lab/status.pcap", GOLDEN / "status.pcap"),
            ("public/DICOM_C-ECHO-echoscu.pcap", ECHOSCU),
            ("public/Figure10_(a).pcapng", PUBLIC / "Figure10_(a).pcapng"),
            ("public/Figure16_captured_packet.pcapng", PUBLIC / "Figure16_captured_packet.pcapng")]


@pytest.mark.parametrize("name,pcap", CAPTURES, ids=[c[0] for c in CAPTURES])
def test_every_message_is_timed_at_the_frames_tshark_shows_it(name, pcap):
    """Each request and final response ends in a frame where tshark's DICOM dissector shows a
    P-DATA-TF completed; latency is the time between those two frames."""
    doc = analyze(_need(pcap), "--port", "104,4242,11112,40404,1-65535")
    ports = {a["acceptor"]["port"] for a in doc["associations"]}
    pdus = tshark_pdus(pcap, ports)
    checked = defaultdict(int)
    for a in doc["associations"]:
        for op in a["operations"]:
            assert "0x04" in pdus.get(op["request_last_frame"], (0, []))[1], (a["id"], op["message_id"])
            if op["response_last_frame"] is None:
                continue
            assert "0x04" in pdus[op["response_last_frame"]][1], (a["id"], op["message_id"])
            assert op["response_frame"] <= op["response_last_frame"]
            assert op["request_frame"] <= op["request_last_frame"] < op["response_last_frame"]
            want = pdus[op["response_last_frame"]][0] - pdus[op["request_last_frame"]][0]
            assert op["latency"] == pytest.approx(want, abs=2e-6)
            assert op["latency"] >= op["response_delay"] - 1e-9
            checked[op["command"]] += 1
    assert checked, "no answered operation: the test proves nothing"


def test_gap_over_pdu_headers_keeps_the_object_open(tmp_path):
    """storescp with 4096-byte PDUs: one 64 KB loopback segment in the middle of the largest
    object deleted (editcap), so PDU headers are lost with it.  Everything captured of the
    object is still counted and exported into its .partial, at the right place from the end."""
    pcap = GOLDEN / "store.pcap"
    rows = [tuple(map(int, r.split("\t"))) for r in lab.tshark(
        "-r", str(pcap), "-Y", "tcp.len > 60000", "-T", "fields", "-e", "frame.number", "-e", "tcp.len").splitlines()]
    frame = rows[len(rows) // 2 - 2][0]  # in the middle of the 700 KB object's data set
    holed = lab.editcap(pcap, tmp_path / "holed.pcap", "-F", "pcap", frames=[frame])
    whole_dir, holed_dir = tmp_path / "whole", tmp_path / "holed"
    whole = json.loads(lab.run_dicomtrace("export", pcap, "-o", whole_dir, "--format", "json").stdout)
    cut = json.loads(lab.run_dicomtrace("export", holed, "-o", holed_dir, "--format", "json", check=False).stdout)
    partial = [o for o in cut["exported"] if not o["complete"]]
    assert len(partial) == 1, cut["exported"]
    p = partial[0]
    w = next(o for o in whole["exported"] if o["sop_instance_uid"] == p["sop_instance_uid"])
    lost = cut["associations"][0]["tcp"]["client_to_server"]["missing_bytes"]
    assert lost >= 60000
    # counted: the data set's bytes (the PDU and PDV headers lost in the hole are not data)
    assert p["bytes"] == w["bytes"]
    # exported: every byte at its place, or zero where it was never captured
    got, want = Path(p["file"]).read_bytes(), Path(w["file"]).read_bytes()
    assert len(got) == len(want) and got != want
    bad = [i for i, (g, x) in enumerate(zip(got, want)) if g != x and g != 0]
    assert not bad, f"byte {bad[0]} is neither the original nor zero"
    assert got[-len(want) // 3:] == want[-len(want) // 3:]  # what follows the hole is all there
