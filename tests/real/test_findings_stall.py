"""Issue #10: `tcp-delayed-ack-stall`, the Nagle / delayed-ACK stall, on real traffic.

* the public captures (../shared/captures/public, skipped when absent): the Wireshark
  wiki's echoscu sample (the acceptor's C-ECHO-RSP waits 43.6 ms for the requestor's
  delayed ACK of its 12-byte PDU + PDV header segment, frames 13 -> 15) and the GE Vivid i
  C-ECHO of `Figure10_(a).pcapng` (198 ms for the request, 41 ms for the response);
* lab traffic between two network namespaces joined by a veth: dcmtk storescu ->
  storescp, both writing the PDU and PDV headers of each message as a write of their
  own, once with Nagle on (dcmtk 3.6.7's default: TCP_NODELAY unset) -- every C-STORE
  stalls --, and once with TCP_NODELAY=1 in the environment of both -- quiet.

tshark is the referee for the frames: the stalled segment is a 12-byte "TCP segment of
a reassembled PDU" and the segment that the ACK released completes the PDU.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

import lab

PUBLIC = lab.SHARED_CAPTURES / "public"
DICOM_PORT = 11112
OBJECTS = 16


def analyze(pcap, *args) -> dict:
    res = lab.run([sys.executable, "-m", "dicomtrace", "analyze", str(pcap), "--format", "json",
                   *map(str, args)], timeout=120, cwd=lab.REPO_ROOT)
    assert not res.stderr, res.stderr.decode(errors="replace")
    return json.loads(res.stdout)


def stalls(doc: dict) -> list[dict]:
    return [f for f in doc["findings"] if f["code"] == "tcp-delayed-ack-stall"]


def public(name: str):
    path = PUBLIC / name
    if not path.exists():
        pytest.skip(f"{path} absent (the shared public captures)")
    return path


def tcp_lengths(pcap) -> dict[int, int]:
    out = lab.tshark("-n", "-r", str(pcap), "-Y", "tcp", "-T", "fields", "-e", "frame.number",
                     "-e", "tcp.len")
    return {int(f): int(n) for f, n in (line.split("\t") for line in out.splitlines())}


@pytest.mark.parametrize("name, expected", [
    ("DICOM_C-ECHO-echoscu.pcap", {"acceptor": [43.6]}),
    ("Figure10_(a).pcapng", {"requestor": [198.1], "acceptor": [41.6]}),
])
def test_public_capture_stalls(name, expected):
    pcap = public(name)
    doc = analyze(pcap)
    (f,) = stalls(doc)
    assert f["severity"] == "note"  # a single C-ECHO: a few hundred ms at most
    sides = f["details"]["sides"]
    assert {side: v["durations_ms"] for side, v in sides.items()} == expected
    assert f["message_ids"] == [1]
    for side, durations in expected.items():
        assert f"the {side} waited {len(durations)} time(s)" in f["message"]
        for d in durations:
            assert f"{d:.1f} ms at frame" in f["message"]
    assert "TCP_NODELAY" in f["hint"]
    # the stalled segments are the 12-byte PDU + PDV headers, the frames after them complete it
    lengths = tcp_lengths(pcap)
    small, resumed = f["frames"][0::2], f["frames"][1::2]
    assert all(lengths[fr] == 12 for fr in small)
    assert all(lengths[fr] > 12 for fr in resumed)
    (a,) = doc["associations"]
    assert a["limitation"]["kind"] == "delayed-ack-limited"


def test_public_captures_without_small_writes_are_quiet():
    for name in ("Figure10_(c).pcapng", "Figure10_(d).pcapng", "Figure16_captured_packet.pcapng"):
        assert not stalls(analyze(public(name))), name


@pytest.fixture(scope="module")
def netns_stores(tmp_path_factory):
    """storescu (netns a) -> storescp (netns b) with OBJECTS small CTs, with Nagle on and off."""
    d = lab.work_dir(tmp_path_factory, "findings-stall")
    files = [f.path for f in lab.make_dicom_files(d / "files", [
        lab.DicomSpec(sop="CT", size=4096, name=f"s{i}") for i in range(OBJECTS)])]
    caps = {}
    saved = os.environ.get("TCP_NODELAY")
    try:
        with lab.NetnsPair(mtu=1500) as pair:
            for mode in ("nagle", "nodelay"):
                if mode == "nodelay":
                    os.environ["TCP_NODELAY"] = "1"
                else:
                    os.environ.pop("TCP_NODELAY", None)
                pcap = d / f"{mode}.pcap"
                with lab.StoreSCP(d / f"rx-{mode}", DICOM_PORT, netns=pair.ns_b, log_dir=d,
                                  name=f"storescp-{mode}") as scp:
                    with lab.Capture(pcap, pair.if_a, f"tcp port {DICOM_PORT}", netns=pair.ns_a):
                        lab.run_storescu(pair.ip_b, DICOM_PORT, files, extra_args=["-R"],
                                         netns=pair.ns_a)
                    assert len(scp.received()) == OBJECTS
                caps[mode] = pcap
    finally:
        if saved is None:
            os.environ.pop("TCP_NODELAY", None)
        else:
            os.environ["TCP_NODELAY"] = saved
    return caps


@pytest.mark.netns
def test_lab_stall_with_nagle_on(netns_stores):
    doc = analyze(netns_stores["nagle"], "--port", DICOM_PORT)
    (f,) = stalls(doc)
    (a,) = doc["associations"]
    duration = a["end_time"] - a["start_time"]
    # every C-STORE request and response waits for a delayed ACK (40 ms on Linux)
    assert f["details"]["stalls"] >= OBJECTS
    assert set(f["details"]["sides"]) <= {"requestor", "acceptor"}
    assert sorted(f["message_ids"]) == list(range(1, OBJECTS + 1))
    assert all(d >= 20 for s in f["details"]["sides"].values() for d in s["durations_ms"])
    seconds = f["details"]["seconds"]
    assert seconds >= 0.5 and seconds >= duration / 2  # the association is dominated by them
    assert f["severity"] == "warning"
    assert a["limitation"]["kind"] == "delayed-ack-limited"
    lengths = tcp_lengths(netns_stores["nagle"])
    assert all(lengths[fr] <= 64 for fr in f["frames"][0::2])


@pytest.mark.netns
def test_lab_quiet_with_tcp_nodelay(netns_stores):
    doc = analyze(netns_stores["nodelay"], "--port", DICOM_PORT)
    assert not stalls(doc)
    (a,) = doc["associations"]
    assert a["limitation"]["kind"] != "delayed-ack-limited"
    assert len(a["operations"]) == OBJECTS
