"""connection-refused and connection-unanswered: attempts to reach a DICOM port that never
carried a PDU (real echoscu attempts under tcpdump), and their clean counterpart."""

from __future__ import annotations

import json

import pytest

import lab


def analyze(pcap, port):
    res = lab.run_dicomtrace("analyze", str(pcap), "--format", "json", "--port", str(port))
    return json.loads(res.stdout)


def codes(doc):
    return {f["code"] for f in doc["findings"]}


def test_connection_refused_on_loopback(tmp_path):
    port = lab.free_port()  # nothing listens there
    pcap = tmp_path / "refused.pcap"
    with lab.Capture(pcap, "lo", f"tcp port {port}"):
        lab.run_echoscu("127.0.0.1", port, extra_args=["-to", "3"], check=False)
    doc = analyze(pcap, port)
    assert doc["associations"] == []
    (f,) = [f for f in doc["findings"] if f["code"] == "connection-refused"]
    assert f["severity"] == "error"
    assert f"127.0.0.1:{port}" in f["message"] and "refused" in f["message"]
    assert 1 in f["frames"]  # the SYN
    assert "connection-unanswered" not in codes(doc)


def test_clean_echo_has_no_connection_finding(tmp_path):
    pcap = tmp_path / "echo.pcap"
    with lab.StoreSCP(tmp_path / "recv") as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            lab.run_echoscu("127.0.0.1", scp.port, aec="STORESCP")
        doc = analyze(pcap, scp.port)
    assert not codes(doc) & {"connection-refused", "connection-unanswered"}
    assert len(doc["associations"]) == 1


@pytest.mark.netns
def test_connection_unanswered_when_syns_are_dropped(tmp_path):
    port = 11112
    pcap = tmp_path / "unanswered.pcap"
    with lab.NetnsPair() as net:
        rules = ("table inet dtdrop {\n chain in {\n  type filter hook input priority 0;\n"
                 f"  tcp dport {port} drop\n }}\n}}\n")
        lab.run(["nft", "-f", "-"], netns=net.ns_b, timeout=15, input=rules.encode())
        with lab.Capture(pcap, net.if_a, f"tcp port {port}", netns=net.ns_a):
            lab.run_echoscu(net.ip_b, port, extra_args=["-to", "2"], netns=net.ns_a, check=False,
                            timeout=30)
    doc = analyze(pcap, port)
    (f,) = [f for f in doc["findings"] if f["code"] == "connection-unanswered"]
    assert f["severity"] == "error"
    assert f"{net.ip_b}:{port}" in f["message"] and "no answer" in f["message"]
    assert f["frames"] and "connection-refused" not in codes(doc)
