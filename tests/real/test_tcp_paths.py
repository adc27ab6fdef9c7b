"""Issue #12: the fast paths and the one-at-a-time paths give the same answers.

The reference takes one TCP segment at a time (DICOMTRACE_TCP_PATH=segment) and one PDU at a
time (DICOMTRACE_UL_PATH=pdu); the default path takes TCP segments a run at a time and bulk
P-DATA-TF PDUs a run at a time (PduStream runs, PdvRun).

Most segments of a transfer are taken a run at a time (numpy over the batch's header arrays,
TcpReassembler._batch_run); DICOMTRACE_TCP_PATH=segment forces one segment at a time. Both
must give identical JSON for analyze and conversations and identical export bytes, on every
shared capture, the golden lab captures (loss, a real hole, aborts), and lab captures made
here for what sends segments off the fast path: loss and reordering between two namespaces
(conftest's lossy_capture), loss in the handshake, zero windows from a slow reader, and
ports reused by a new connection. Run in process (one import, ~1 s in all).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import sys
from pathlib import Path

import pytest

import lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import make as golden  # noqa: E402


def outputs(capture: Path, tmp: Path, path: str, monkeypatch) -> dict:
    """analyze / conversations / export JSON (normalised) and the exported files' sha256."""
    from dicomtrace.cli import main
    monkeypatch.setenv("DICOMTRACE_TCP_PATH", path)
    monkeypatch.setenv("DICOMTRACE_UL_PATH", "pdu" if path == "segment" else "run")
    got = {}
    for command in ("analyze", "conversations", "export"):
        args = [command, str(capture), "--format", "json", "--jobs", "1"] if command != "conversations" \
            else [command, str(capture), "--format", "json"]
        out_dir = None
        if command == "export":
            out_dir = str(tmp / f"export-{path}")
            args += ["-o", out_dir]
        buf, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            rc = main(args)
        got[command] = (rc, golden._normalise(json.loads(buf.getvalue()), capture, out_dir),
                        err.getvalue().replace(str(capture), "<capture>"))
        if out_dir is not None:
            root = Path(out_dir)
            got["files"] = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                            for p in sorted(root.rglob("*")) if p.is_file()}
    return got


def check_same(capture: Path, tmp: Path, monkeypatch) -> dict:
    one = outputs(capture, tmp, "segment", monkeypatch)
    run = outputs(capture, tmp, "batch", monkeypatch)
    for key in one:
        assert run[key] == one[key], (f"{capture.name}: {key} differs between the fast and the "
                                      f"one-at-a-time paths: {first_difference(run[key], one[key])}")
    return run


def first_difference(a, b, where: str = "") -> str:
    """Where two JSON-like values first differ, and how (so that a failure in CI, whose
    lab capture is gone afterwards, can still be diagnosed)."""
    if type(a) is not type(b):
        return f"{where or '.'}: {a!r:.200} (fast) against {b!r:.200} (reference)"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k, "<missing>") != b.get(k, "<missing>"):
                return first_difference(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
        if len(a) != len(b):
            return f"{where}: {len(a)} items (fast) against {len(b)} (reference)"
    return f"{where or '.'}: {a!r:.200} (fast) against {b!r:.200} (reference)"


def in_runs(capture: Path) -> tuple[int, int]:
    """(segments taken in runs, all segments) on the batch path."""
    from dicomtrace.capture import open_capture
    from dicomtrace.net import NetStats, decode_batch
    from dicomtrace.tcp import TcpReassembler
    tcp, net = TcpReassembler([104, 11112], path="batch"), NetStats()
    reader = open_capture(str(capture))
    for batch in reader.batches():
        tcp.feed(decode_batch(batch, net))
    reader.close()
    return tcp.segments_in_runs, net.tcp_segments


CAPTURES = {k: v for k, v in golden.captures().items()}


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_paths_agree_on_golden_and_shared_captures(name, tmp_path, monkeypatch):
    check_same(CAPTURES[name], tmp_path, monkeypatch)


@pytest.mark.netns
def test_paths_agree_with_loss_and_reordering(lossy_capture, tmp_path, monkeypatch):
    check_same(lossy_capture.pcap, tmp_path, monkeypatch)
    taken, total = in_runs(lossy_capture.pcap)
    assert 0 < taken < total


def test_paths_agree_on_clean_store(store_capture, tmp_path, monkeypatch):
    check_same(store_capture.pcap, tmp_path, monkeypatch)
    taken, total = in_runs(store_capture.pcap)
    assert taken > 0, (taken, total)


@pytest.fixture(scope="module")
def zero_window_capture(tmp_path_factory, store_files):
    """storescp --sleep-during 1 with 128 KB PDUs receiving a 300 KB object on loopback: its
    receive buffer fills and it advertises zero windows."""
    d = lab.work_dir(tmp_path_factory, "paths_zero_window")
    port = lab.free_port()
    pcap = d / "zero_window.pcap"
    with lab.StoreSCP(d / "rx", port, log_dir=d, max_pdu=131072, extra_args=["--sleep-during", "1"]):
        with lab.Capture(pcap, "lo", f"tcp port {port}"):
            lab.run_storescu("127.0.0.1", port, [store_files[1].path])
    return pcap


def test_paths_agree_with_zero_windows(zero_window_capture, tmp_path, monkeypatch):
    zw = lab.tshark_flag_counts(zero_window_capture, "tcp.analysis.zero_window")
    assert sum(zw.values()) > 0, "tshark sees no zero window: the slow reader did not stall"
    check_same(zero_window_capture, tmp_path, monkeypatch)


def test_paths_agree_on_reused_ports(store_capture, tmp_path, monkeypatch):
    """The store capture's three connections rewritten to one client port: each new SYN on the
    same four-tuple closes the previous connection ("reused") and opens the next."""
    hdr, recs = lab.read_pcap(store_capture.pcap)
    ports = []
    out = []
    for rh, frame in recs:
        ip = 14
        tcp = ip + (frame[ip] & 15) * 4
        sport, dport = struct.unpack_from(">HH", frame, tcp)
        client = sport if dport == store_capture.server[1] else dport
        if client not in ports:
            ports.append(client)
        f = bytearray(frame)
        off = tcp if dport == store_capture.server[1] else tcp + 2
        struct.pack_into(">H", f, off, ports[0])
        out.append((rh, bytes(f)))
    assert len(ports) == 3
    reused = lab.write_pcap(tmp_path / "reused.pcap", hdr, out)
    got = check_same(reused, tmp_path, monkeypatch)
    _rc, doc, _err = got["conversations"]
    assert len(doc["connections"]) == 3


def series_of(capture: Path, path: str) -> list:
    """The report's graph series (sent, acked, retransmissions) of every direction."""
    from dicomtrace.capture import open_capture
    from dicomtrace.net import NetStats, decode_batch
    from dicomtrace.output.series import SeriesRecorder
    from dicomtrace.tcp import TcpReassembler
    tcp, net = TcpReassembler([104, 11112], series=SeriesRecorder(), path=path), NetStats()
    reader = open_capture(str(capture))
    for batch in reader.batches():
        tcp.feed(decode_batch(batch, net))
    reader.close()
    tcp.finish()
    return [(h.sent.points, h.acked.points, h.retransmitted_at) for c in tcp.connections for h in c.half]


def test_paths_record_the_same_graph_series(lossy_capture):
    for capture in [lossy_capture.pcap] + sorted((Path(golden.HERE) / "captures").glob("*.pcap")):
        assert series_of(capture, "batch") == series_of(capture, "segment"), capture.name
