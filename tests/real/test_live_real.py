"""`dicomtrace live` on loopback while dcmtk peers talk: the same analysis as `analyze` of the
file it wrote, findings while the capture runs, a ring of files that holds exactly the
packets a reference tcpdump saw, clean stops, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

import lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root")


def start_live(*args) -> subprocess.Popen:
    return subprocess.Popen(lab.dicomtrace_cmd() + ["live", "-i", "lo", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=lab.REPO_ROOT, start_new_session=True)


def wait_capturing(proc: subprocess.Popen) -> None:
    """live says on stderr when tcpdump listens (text mode); wait for that line."""
    line = proc.stderr.readline().decode()
    assert "capturing on lo" in line, line


def same_model(doc: dict) -> list:
    """What must agree between live and analyze: associations and their operations."""
    return [(a["calling_ae"], a["called_ae"], a["outcome"],
             [(op["command"], op["message_id"], (op.get("final") or {}).get("status"))
              for op in a["operations"]]) for a in doc["associations"]]


@pytest.fixture
def store_files(tmp_path):
    return lab.make_dicom_files(tmp_path / "files", [lab.DicomSpec(sop="CT", size=200_000),
                                                     lab.DicomSpec(sop="MR", size=400_000),
                                                     lab.DicomSpec(sop="SC", size=30_000)])


def test_live_equals_analyze_of_its_file(tmp_path, store_files):
    pcap = tmp_path / "out.pcap"
    with lab.StoreSCP(tmp_path / "recv") as scp:
        proc = start_live("-f", f"tcp port {scp.port}", "-w", pcap, "--port", scp.port,
                          "--duration", "60", "--format", "json")
        try:
            wait_capturing(proc)
            lab.run_storescu("127.0.0.1", scp.port, [f.path for f in store_files])
            lab.run_echoscu("127.0.0.1", scp.port, aec="STORESCP")
            time.sleep(0.5)  # the last ACKs reach the capture
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            lab._stop(proc)
    assert proc.returncode == 0, err.decode()
    live = json.loads(out)
    ref = json.loads(lab.run_dicomtrace("analyze", pcap, "--format", "json", "--port",
                                        scp.port).stdout)
    assert same_model(live) == same_model(ref)
    assert [len(a["operations"]) for a in live["associations"]] == [3, 1]
    assert live["capture"]["format"] == "live" and live["live"]["drops"]["dropped_by_kernel"] == 0
    assert live["live"]["written"] == [str(pcap)]
    assert live["capture"]["packets"] == ref["capture"]["packets"]
    # tshark reads the file and counts the same packets
    assert len(lab.tshark("-r", str(pcap), "-T", "fields", "-e", "frame.number").split()) == \
        ref["capture"]["packets"]


def test_rejection_printed_while_capturing(tmp_path):
    """A rejected association is on standard output while live still runs; SIGTERM then
    ends it cleanly with the summary, and the pcap is valid."""
    pcap = tmp_path / "rej.pcap"
    port = lab.free_port()
    listen = lab.Peer(lab.dicomtrace_cmd() + ["listen", str(port), "--bind", "127.0.0.1",
                                              "--reject-calling", "BADMOD"],
                      port=port, log_dir=tmp_path, name="listen", cwd=lab.REPO_ROOT)
    with listen:
        proc = start_live("-f", f"tcp port {port}", "--port", port, "-w", pcap,
                          "--duration", "120")
        try:
            wait_capturing(proc)
            lines: list[str] = []
            seen = threading.Event()

            def read():
                for raw in proc.stdout:
                    lines.append(raw.decode())
                    if "association-rejected" in lines[-1]:
                        seen.set()
            threading.Thread(target=read, daemon=True).start()
            lab.run_echoscu("127.0.0.1", port, aet="BADMOD", check=False)
            assert seen.wait(30), "".join(lines)
            assert proc.poll() is None  # still capturing
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            lab._stop(proc)
    text = "".join(lines)
    assert proc.returncode == 0
    assert "“BADMOD” → “ANY-SCP”: rejected" in text
    assert "calling-AE-title-not-recognized" in text
    assert "packets captured, 0 dropped by the kernel" in text
    ref = json.loads(lab.run_dicomtrace("analyze", pcap, "--format", "json", "--port", port).stdout)
    assert [a["outcome"] for a in ref["associations"]] == ["rejected"]


def test_failure_status_printed_before_its_association_ends(tmp_path):
    """A C-STORE answered 0xA700 is on standard output as soon as its response is complete,
    while the association goes on (the SCP waits 2 s before each answer; storescu stops after the refusal)."""
    files = lab.make_dicom_files(tmp_path / "files", [lab.DicomSpec(sop="CT", size=20_000)
                                                      for _ in range(3)])
    port = lab.free_port()
    listen = lab.Peer(lab.dicomtrace_cmd() + ["listen", str(port), "--bind", "127.0.0.1",
                                              "--status", "0xA700", "--delay", "2"],
                      port=port, log_dir=tmp_path, name="listen", cwd=lab.REPO_ROOT)
    with listen:
        proc = start_live("-f", f"tcp port {port}", "--port", port, "--duration", "120")
        try:
            wait_capturing(proc)
            lines: list[str] = []
            order: list[str] = []

            def read():
                for raw in proc.stdout:
                    lines.append(raw.decode())
                    if "dimse-failure" in lines[-1]:
                        order.append("finding")
                    elif "association 1 " in lines[-1]:
                        order.append("association")
            threading.Thread(target=read, daemon=True).start()
            lab.run_storescu("127.0.0.1", port, [f.path for f in files], aec="ANY-SCP", check=False)
            lab.wait_for(lambda: "association" in order, 30, what="the association's line")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            lab._stop(proc)
    text = "".join(lines)
    # the failure is told while the association still runs, and not again when it ends
    # (the summary at the end repeats the whole analysis)
    assert order[:3] == ["finding", "association", "association"], text


def test_ring_holds_exactly_what_tcpdump_saw(tmp_path):
    files = lab.make_dicom_files(tmp_path / "files", [lab.DicomSpec(sop="CT", size=300_000)
                                                      for _ in range(4)])
    ring = tmp_path / "ring.pcap"
    ref = tmp_path / "ref.pcap"
    with lab.StoreSCP(tmp_path / "recv") as scp:
        bpf = f"tcp port {scp.port}"
        with lab.Capture(ref, "lo", bpf):
            proc = start_live("-f", bpf, "-w", ring, "--ring", "0.25,50", "--port", scp.port,
                              "--duration", "60")
            try:
                wait_capturing(proc)
                lab.run_storescu("127.0.0.1", scp.port, [f.path for f in files])
                time.sleep(0.5)
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=60)
            finally:
                lab._stop(proc)
    assert proc.returncode == 0, err.decode()
    parts = sorted(tmp_path.glob("ring.pcap*"))
    assert len(parts) >= 4, parts  # rotated at least three times
    assert [p.name for p in parts] == [f"ring.pcap{i:02d}" for i in range(len(parts))]
    got = []
    for p in parts:
        assert p.stat().st_size <= 250_000 + 70_000  # a file is closed before it passes the size
        _, recs = lab.read_pcap(p)
        assert recs, p
        got += recs
    _, want = lab.read_pcap(ref)
    # each packet once, and each direction's in order. Not one order for both directions:
    # on two cores, the two ends send at once, and the kernel hands each packet to one
    # packet socket after the other, so two tcpdumps may see two packets sent together in
    # either order (CI saw an ACK and a data segment swapped).
    assert sorted(d for _, d in got) == sorted(d for _, d in want)
    assert _by_direction(got) == _by_direction(want)
    # two tcpdumps stamp the same packet within microseconds of each other
    stamps: dict = {}
    for h, d in want:
        stamps.setdefault(d, []).append(h)
    for h, d in got:
        w = stamps[d].pop(0)
        assert abs((h[0] - w[0]) * 1e6 + h[1] - w[1]) < 1000, (h, w)


def _by_direction(recs) -> dict:
    """The packets (Ethernet, IPv4, TCP on loopback) by source port, in capture order."""
    out: dict = {}
    for _, d in recs:
        tcp = 14 + (d[14] & 0x0F) * 4
        out.setdefault(d[tcp:tcp + 2], []).append(d)
    return out


def test_a_hang_up_stops_tcpdump_too(tmp_path):
    """The terminal of a running live capture goes away (SIGHUP): tcpdump, which runs in a
    session of its own, stops with it instead of capturing on as an orphan."""
    port = lab.free_port()
    proc = start_live("-f", f"tcp port {port}", "--port", port, "-w", tmp_path / "hup.pcap")
    try:
        wait_capturing(proc)
        children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
        tcpdump = [int(c) for c in children
                   if b"tcpdump" in open(f"/proc/{c}/cmdline", "rb").read()]
        assert len(tcpdump) == 1, children
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=60)
    finally:
        lab._stop(proc)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{tcpdump[0]}") and time.monotonic() < deadline:
        time.sleep(0.1)
    orphan = os.path.exists(f"/proc/{tcpdump[0]}")
    if orphan:
        os.kill(tcpdump[0], signal.SIGKILL)  # (not left behind by a failing test either)
    assert not orphan, "tcpdump still runs"
    assert (tmp_path / "hup.pcap").stat().st_size >= 24  # what it wrote is a pcap


def test_missing_interface_is_one_line():
    res = lab.run_dicomtrace("live", "-i", "nosuch0", "--duration", "5", check=False, timeout=60)
    assert res.returncode == 2
    err = res.stderr.decode().strip()
    assert "\n" not in err and "no interface 'nosuch0'" in err and "ip link" in err


def test_bad_options(tmp_path):
    res = lab.run_dicomtrace("live", "-i", "lo", "--ring", "1,3", check=False, timeout=60)
    assert res.returncode == 2 and b"--ring needs -w" in res.stderr
    res = lab.run_dicomtrace("live", "-i", "lo", "-w", tmp_path / "x.pcap", "--ring", "big",
                             check=False, timeout=60)
    assert res.returncode == 2 and b"SIZE_MB,FILES" in res.stderr
    res = lab.run_dicomtrace("live", "-i", "lo", "-f", "tcp port banana", "--duration", "3",
                             check=False, timeout=60)
    assert res.returncode == 2 and b"filter" in res.stderr and b"Traceback" not in res.stderr
