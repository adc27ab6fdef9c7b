"""echo, store, monitor and listen against real peers on loopback: dcmtk's storescp and
`dicomtrace listen` made to reject, abort, delay and answer with failure statuses.  Each
failure must be explained with the findings' code and the documented exit code."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.request

import pytest

import lab

OK, DICOM_FAILURE, USAGE, UNREACHABLE = 0, 1, 2, 3


def check(*args, timeout: float = 90):
    """Run an active check with --format json; (exit code, document)."""
    res = lab.run_dicomtrace(*args, "--format", "json", timeout=timeout, check=False)
    assert res.stderr == b"", res.stderr.decode()
    return res.returncode, json.loads(res.stdout)


def codes(doc) -> list[str]:
    return [f["code"] for f in doc["findings"]]


class Listen(lab.Peer):
    """`dicomtrace listen PORT --bind 127.0.0.1 OPTIONS` for the length of a with-block."""

    def __init__(self, tmp_path, *options, name="listen"):
        self.port = lab.free_port()
        super().__init__(lab.dicomtrace_cmd() + ["listen", str(self.port), "--bind", "127.0.0.1",
                                                 *map(str, options)],
                         port=self.port, log_dir=tmp_path, name=name, cwd=lab.REPO_ROOT)

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def storescp(tmp_path_factory):
    d = tmp_path_factory.mktemp("storescp")
    with lab.StoreSCP(d / "recv") as scp:
        yield scp


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return lab.make_dicom_files(tmp_path_factory.mktemp("files"), [
        lab.DicomSpec(sop="CT", size=20_000), lab.DicomSpec(sop="MR", size=60_000,
                                                             explicit_vr=False)])


def test_echo_storescp_times_and_negotiation(storescp):
    rc, doc = check("echo", "127.0.0.1", storescp.port, "--called", "STORESCP", "--count", "3")
    assert rc == OK and doc["ok"] and doc["findings"] == []
    s = doc["summary"]
    assert s["sent"] == 3 and s["succeeded"] == 3
    assert s["tcp_connect_ms"] > 0 and s["association_ms"] > 0
    assert 0 < s["round_trip_min_ms"] <= s["round_trip_avg_ms"] <= s["round_trip_max_ms"]
    assert [op["status"] for op in doc["operations"]] == [0, 0, 0]
    text = "\n".join(doc["negotiation"])
    assert "A-ASSOCIATE-AC" in text and "OFFIS_DCMTK" in text
    assert "Verification SOP Class: accepted" in text


def test_echo_text_output(storescp):
    res = lab.run_dicomtrace("echo", "127.0.0.1", storescp.port, timeout=60)
    out = res.stdout.decode()
    assert "C-ECHO 1: 0x0000 Success" in out and out.rstrip().endswith("OK")


def test_echo_refused_port():
    port = lab.free_port()
    rc, doc = check("echo", "127.0.0.1", port, "--timeout", "3")
    assert rc == UNREACHABLE
    assert codes(doc) == ["connection-refused"]
    assert "refused" in doc["findings"][0]["message"] and doc["findings"][0]["hint"]


def test_bad_command_lines_are_one_line_errors(tmp_path):
    bad = tmp_path / "not.dcm"
    bad.write_bytes(b"hello")
    for args in (["echo", "no-such-host.invalid", "104"], ["store", "127.0.0.1", "104", str(bad)],
                 ["store", "127.0.0.1", "104", "--generate", "1", "--transfer-syntax",
                  "JPEGBaseline8Bit"],
                 ["store", "127.0.0.1", "104"], ["monitor", "127.0.0.1", "104", "--every", "soon"],
                 ["store", "127.0.0.1", "104", "--sizes", "1,x"],
                 ["store", "127.0.0.1", "104", str(bad), "--size", "3"],
                 ["listen", "104", "--every", "2"], ["listen", "104", "--status", "bogus"]):
        res = lab.run_dicomtrace(*args, check=False, timeout=60)
        assert res.returncode == USAGE, args
        err = res.stderr.decode().strip()
        assert err.startswith(f"dicomtrace {args[0]}: error:") and "\n" not in err, (args, err)
        assert b"Traceback" not in res.stderr


@pytest.mark.parametrize("options, bad, good, reason, hint, logged", [
    (("--reject-calling", "BADMOD"), ("--calling", "BADMOD"), ("--calling", "GOODMOD"),
     "calling-AE-title-not-recognized", "BADMOD",  # the findings' advice, the title filled in
     r"A-ASSOCIATE-RJ sent \(--reject-calling\)(.|\n)*association 1 “BADMOD” → “ANY-SCP” .*: rejected"),
    (("--ae", "PACS"), ("--called", "PAC"), ("--called", "PACS"),
     "called-AE-title-not-recognized", "“PAC”", r"association 1 “DICOMTRACE” → “PAC” .*: rejected"),
], ids=["calling", "called"])
def test_rejected(tmp_path, options, bad, good, reason, hint, logged):
    with Listen(tmp_path, *options) as scp:
        rc, doc = check("echo", "127.0.0.1", scp.port, *bad)
        rc_ok, _ = check("echo", "127.0.0.1", scp.port, *good)
    assert rc == DICOM_FAILURE and rc_ok == OK
    (f,) = doc["findings"]
    assert f["code"] == "association-rejected" and reason in f["message"]
    assert hint in f["hint"]
    assert re.search(logged, scp.output()), scp.output()


def test_aborted(tmp_path):
    with Listen(tmp_path, "--abort-after", "1") as scp:
        rc, doc = check("echo", "127.0.0.1", scp.port)
    assert rc == DICOM_FAILURE
    assert codes(doc) == ["association-aborted"]
    assert "aborted" in doc["findings"][0]["message"] and "C-ECHO" in doc["findings"][0]["message"]
    assert "--abort-after" in scp.output()


def test_delay_beyond_timeout(tmp_path):
    with Listen(tmp_path, "--delay", "3") as scp:
        rc, doc = check("echo", "127.0.0.1", scp.port, "--timeout", "1")
    assert rc == DICOM_FAILURE
    assert codes(doc) == ["request-unanswered"]
    assert "within 1 s" in doc["findings"][0]["message"]


def test_store_failure_status_every_second(tmp_path):
    with Listen(tmp_path, "--status", "0xA700", "--every", "2", "--accept", "storage") as scp:
        rc, doc = check("store", "127.0.0.1", scp.port, "--generate", "3", "--size", "0.05",
                        "--transfer-syntax", "RLELossless")
    assert rc == DICOM_FAILURE
    assert [op["status"] for op in doc["operations"]] == [0, 0xA700, 0]
    assert all(op["transfer_syntax"] == "1.2.840.10008.1.2.5" for op in doc["operations"])
    (f,) = doc["findings"]
    assert f["code"] == "dimse-failure" and "out of resources" in f["message"]
    assert "disk" in f["hint"]
    assert doc["summary"]["stored"] == 2
    out = scp.output()
    assert "0xA700 Refused: out of resources" in out
    assert re.search(r"association 1 .*: released after .*2 × C-STORE 0x0000 Success; "
                     r"1 × C-STORE 0xA700", out)


def test_store_files_to_storescp(storescp, files):
    rc, doc = check("store", "127.0.0.1", storescp.port, *[f.path for f in files])
    assert rc == OK, doc
    ops = doc["operations"]
    assert [op["status"] for op in ops] == [0, 0]
    assert [op["bytes"] for op in ops] == [f.file_size for f in files]
    assert all(op["time_ms"] > 0 and op["mb_per_s"] > 0 for op in ops)
    got = {p.name.split(".", 1)[1] for p in storescp.received()}
    assert {f.sop_instance_uid for f in files} <= got


def test_store_compressed_rejected_by_storescp(storescp):
    """storescp accepts only uncompressed syntaxes unless told otherwise (+xa)."""
    rc, doc = check("store", "127.0.0.1", storescp.port, "--generate", "1", "--size", "0.05",
                    "--transfer-syntax", "1.2.840.10008.1.2.5")
    assert rc == DICOM_FAILURE
    assert codes(doc) == ["no-accepted-presentation-context"]
    assert any("transfer-syntaxes-not-supported" in line and "RLE Lossless" in line
               for line in doc["negotiation"])


def test_size_sweep_finds_the_failing_size(tmp_path, storescp):
    rc, doc = check("store", "127.0.0.1", storescp.port, "--sizes", "0.05,0.5", "--sop-class", "MR")
    assert rc == OK
    assert [r["size_mb"] for r in doc["summary"]["sizes"]] == [0.05, 0.5]
    assert doc["summary"]["first_failing_size_mb"] is None
    # an SCP that fails every second request: the second size fails
    with Listen(tmp_path, "--status", "0xA700", "--every", "2") as scp:
        rc, doc = check("store", "127.0.0.1", scp.port, "--sizes", "0.05,0.2,0.4")
    assert rc == DICOM_FAILURE
    assert doc["summary"]["first_failing_size_mb"] == 0.2
    assert [r["state"] for r in doc["summary"]["sizes"]][1] == "failed"


def metric(text: str, name: str, **labels) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{want}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_monitor_prometheus_and_sigterm(storescp):
    mport = lab.free_port()
    proc = subprocess.Popen(lab.dicomtrace_cmd() + [
        "monitor", "127.0.0.1", str(storescp.port), "--every", "200ms", "--count", "100",
        "--store", "--metrics-port", str(mport), "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        cwd=lab.REPO_ROOT, start_new_session=True)
    try:
        def scraped():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read()
            except OSError:
                return None
            text = text.decode()
            n = metric(text, "dicomtrace_checks_total", check="store", result="success")
            return text if n and n >= 2 else None
        text = lab.wait_for(scraped, 60, 0.2, "two successful rounds in the metrics")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        lab._stop(proc)
    assert metric(text, "dicomtrace_checks_total", check="echo", result="success") >= 2
    assert metric(text, "dicomtrace_peer_up", check="echo") == 1
    assert metric(text, "dicomtrace_check_latency_seconds_count", check="echo") >= 2
    assert proc.returncode == OK and err == b""
    doc = json.loads(out)
    s = doc["summary"]["echo"]
    assert s["success_rate"] == 1.0 and s["latency_p50_ms"] <= s["latency_p99_ms"]
    assert doc["summary"]["store"]["succeeded"] >= 2


def test_monitor_unreachable_and_fail_on():
    port = lab.free_port()
    rc, doc = check("monitor", "127.0.0.1", port, "--every", "100ms", "--count", "2",
                    "--timeout", "2")
    assert rc == UNREACHABLE
    assert doc["summary"]["echo"] == {"checks": 2, "succeeded": 0, "success_rate": 0.0,
                                      "latency_p50_ms": None, "latency_p90_ms": None,
                                      "latency_p99_ms": None, "latency_max_ms": None}
    assert [r["code"] for r in doc["rounds"]] == ["connection-refused"] * 2
    assert doc["changes"] == [{"time": doc["rounds"][0]["time"], "check": "echo", "from": "unknown",
                               "to": "down", "reason": "connection-refused"}]
    rc, _ = check("monitor", "127.0.0.1", port, "--every", "100ms", "--count", "1",
                  "--fail-on", "never")
    assert rc == OK


def test_monitor_failure_status(tmp_path):
    with Listen(tmp_path, "--status", "0xA700", "--every", "2") as scp:
        rc, doc = check("monitor", "127.0.0.1", scp.port, "--every", "100ms", "--count", "4",
                        "--fail-on", "60%")
        rc_any, _ = check("monitor", "127.0.0.1", scp.port, "--every", "100ms", "--count", "2")
    assert rc == OK  # half failed: under 60 %
    assert rc_any == DICOM_FAILURE
    assert [r["ok"] for r in doc["rounds"]].count(False) == 2
    assert [c["to"] for c in doc["changes"]][:2] in (["up", "down"], ["down", "up"])


def test_capture_appends_the_wire_analysis(tmp_path):
    if not shutil.which("tcpdump"):
        pytest.skip("tcpdump not installed")
    pcap = tmp_path / "echo.pcap"
    with Listen(tmp_path, "--reject-calling", "BADMOD") as scp:
        rc, doc = check("echo", "127.0.0.1", scp.port, "--calling", "BADMOD", "--capture", pcap)
    assert rc == DICOM_FAILURE
    wire = doc["capture"]["analysis"]
    (a,) = wire["associations"]
    assert a["outcome"] == "rejected"
    assert "association-rejected" in [f["code"] for f in wire["findings"]]
    assert int(lab.capinfos(pcap)["Number of packets"]) > 0
    # success: the capture is written, no analysis appended
    with Listen(tmp_path, name="listen2") as scp:
        rc, doc = check("echo", "127.0.0.1", scp.port, "--capture", tmp_path / "ok.pcap")
    assert rc == OK and "capture" not in doc


def test_listen_find_and_move(tmp_path, files):
    """listen as a small archive: objects stored to it are found by C-FIND and moved by
    C-MOVE to a configured destination (dcmtk findscu and movescu)."""
    with lab.StoreSCP(tmp_path / "dest", aet="DEST") as storescp, \
            Listen(tmp_path, "--move-destination", f"DEST=127.0.0.1:{storescp.port}",
                   "--format", "json") as scp:
        rc, _ = check("store", "127.0.0.1", scp.port, *[f.path for f in files])
        assert rc == OK
        study = files[0].study_instance_uid
        res = lab.run([lab.dcmtk("findscu"), "-v", "-S", "-aec", "ANY-SCP",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                       "-k", "PatientID", "127.0.0.1", str(scp.port)], timeout=60)
        assert files[0].patient_id in (res.stdout + res.stderr).decode()
        lab.run([lab.dcmtk("movescu"), "-v", "-S", "-aec", "ANY-SCP", "-aem", "DEST",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                 "127.0.0.1", str(scp.port)], timeout=60)
        res = lab.run([lab.dcmtk("movescu"), "-S", "-aec", "ANY-SCP", "-aem", "NOWHERE",
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                       "127.0.0.1", str(scp.port)], timeout=60, check=False)
        moved = [p.name for p in storescp.received()]
    assert len(moved) == 1 and files[0].sop_instance_uid in moved[0]
    lines = [json.loads(line) for line in scp.output().splitlines() if line.startswith("{")]
    commands = [op["command"] for a in lines for op in a["operations"]]
    assert commands.count("C-STORE") == 2 and "C-FIND" in commands
    statuses = [op["status"] for a in lines for op in a["operations"] if op["command"] == "C-MOVE"]
    assert statuses == [0, 0xA801]


@pytest.mark.parametrize("options, code", [
    (("--reject-calling", "DICOMTRACE"), "association-rejected"),
    (("--abort-after", "1"), "association-aborted"),
    (("--delay", "2"), "request-unanswered"),
], ids=["reject", "abort", "delay"])
def test_monitor_explains_each_failing_round(tmp_path, options, code):
    with Listen(tmp_path, *options) as scp:
        rc, doc = check("monitor", "127.0.0.1", scp.port, "--every", "100ms", "--count", "2",
                        "--timeout", "1")
    assert rc == DICOM_FAILURE
    assert [r["code"] for r in doc["rounds"]] == [code, code]
    assert all(r["message"] for r in doc["rounds"])
    assert doc["summary"]["echo"]["success_rate"] == 0.0
