"""How an association ends when its TCP connection closes with FIN and no A-RELEASE
(issue #10): not "reset", which is for RST only.  The contract's outcome enum has no value
of its own for it, so JSON keeps its "reset" (defined there as "reset or closed without
release/abort") with ``closed_by: "fin"``; the terminal says what happened."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time

import pytest

import lab

pytestmark = pytest.mark.skipif(not lab.dicomtrace_available("analyze"), reason="dicomtrace not installed")


def _associate_rq(calling: bytes, called: bytes) -> bytes:
    """A minimal A-ASSOCIATE-RQ (PS3.8 9.3.2): Verification, Implicit VR Little Endian."""
    def item(t, body):
        return struct.pack(">BBH", t, 0, len(body)) + body
    app = item(0x10, b"1.2.840.10008.3.1.1.1")
    pc = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2"))
    ui = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32) + app + pc + ui
    return struct.pack(">BBI", 1, 0, len(body)) + body


def test_fin_without_release_is_closed_not_reset(tmp_path):
    pcap = tmp_path / "fin.pcap"
    with lab.PynetdicomSCP(aet="PYSCP") as scp:
        with lab.Capture(pcap, "lo", f"tcp port {scp.port}"):
            with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as s:
                s.sendall(_associate_rq(b"FINNER", b"PYSCP"))
                assert s.recv(6)[0] == 0x02  # A-ASSOCIATE-AC
                time.sleep(0.2)
                s.shutdown(socket.SHUT_WR)  # FIN, no A-RELEASE-RQ
                s.settimeout(10)
                while s.recv(65536):
                    pass
            time.sleep(0.3)
    import json
    doc = json.loads(lab.run_dicomtrace("analyze", pcap, "--format", "json").stdout)
    [a] = doc["associations"]
    assert a["outcome"] == "reset" and a["closed_by"] == "fin"  # the contract's word, and which close
    assert "connection-closed-without-release" in {f["code"] for f in doc["findings"]}
    assert "tcp-reset" not in {f["code"] for f in doc["findings"]}
    text = subprocess.run(lab.dicomtrace_cmd() + ["analyze", str(pcap)], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "100"}).stdout
    assert "outcome: closed" in text and "reset" not in text.lower().replace("tcp reset", "")
