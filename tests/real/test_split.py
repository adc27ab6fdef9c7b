"""Work split by position (issues #12, #16): --jobs 1, 2 and 3 give the same JSON, export
bytes and tables, on single files cut in the middle of an association (DICOMTRACE_MIN_PART
forces parts of a few bytes), on the shared and golden captures, on lab captures with loss,
reordering, zero windows and reused ports, on the tcpdump ring of two sensors; and the
stitching's hard cases (a connection first seen mid-stream in a later part, a stray segment
long after a close) are proved by a re-run, still with the serial result.  In process where
possible (one import; the pool forks this process)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import sys
from pathlib import Path

import pytest

import lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import make as golden  # noqa: E402

JOBS = ("1", "2", "3")
PCAPS = {k: v for k, v in golden.captures().items() if v.suffix == ".pcap"}


def dicomtrace(*args) -> tuple[int, str, str]:
    from dicomtrace.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def tree(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def results(captures, tmp: Path, jobs: str, tables: bool = False) -> dict:
    got = {"analyze": dicomtrace("analyze", *captures, "--format", "json", "--jobs", jobs),
           "conversations": dicomtrace("conversations", *captures, "--format", "json", "--jobs", jobs)}
    out = tmp / f"export{jobs}"
    rc, _, err = dicomtrace("export", *captures, "-o", out, "--jobs", jobs)
    got["export"] = (rc, err, tree(out))
    if tables:
        pq = pytest.importorskip("pyarrow.parquet")
        dicomtrace("analyze", *captures, "--jobs", jobs, "--tables", tmp / f"tables{jobs}")
        got["tables"] = {p.stem: pq.read_table(p).to_pylist()
                         for p in sorted((tmp / f"tables{jobs}").glob("*.parquet"))}
    return got


def check_jobs(captures, tmp: Path, monkeypatch, tables: bool = False, min_part: int = 1) -> dict:
    monkeypatch.setenv("DICOMTRACE_MIN_PART", str(min_part))
    one = results(captures, tmp, "1", tables)
    assert one["analyze"][0] in (0, 1) and one["analyze"][1]
    for jobs in JOBS[1:]:
        got = results(captures, tmp, jobs, tables)
        for key in one:
            assert got[key] == one[key], f"--jobs {jobs}: {key} differs from one process"
    return one


def parts_of(capture: Path, n: int):
    """The plan, the first round's task results and what the merge could not prove."""
    from dicomtrace.cli.common import DEFAULT_PORTS
    from dicomtrace.config import AnalysisConfig
    from dicomtrace.parallel import plan_parts, run_part, verify
    from dicomtrace.ports import parse_ports

    config = AnalysisConfig(ports=parse_ports(DEFAULT_PORTS))
    [plan] = plan_parts([str(capture)], n, lambda tasks: [fn(*a) for fn, a in tasks], min_part=1)
    rs = [run_part(plan, k, config) for k in range(len(plan.parts))]
    return plan, rs, verify(plan, rs)[1]


@pytest.mark.parametrize("name", sorted(PCAPS))
def test_cut_files_give_the_serial_analysis(name, tmp_path, monkeypatch):
    check_jobs([PCAPS[name]], tmp_path, monkeypatch)


def test_store_capture_cut_inside_associations(store_capture, tmp_path, monkeypatch):
    plan, rs, needs = parts_of(store_capture.pcap, 3)
    assert len(plan.parts) == 3 and all(p.pieces[0].start for p in plan.parts[1:])
    assert any(r.skipped for r in rs[1:]) and not needs  # stitched, proved at once
    check_jobs([store_capture.pcap], tmp_path, monkeypatch)


@pytest.mark.netns
def test_lossy_capture(lossy_capture, tmp_path, monkeypatch):
    check_jobs([lossy_capture.pcap], tmp_path, monkeypatch)


def _records(capture):
    """(pcap header, [(record header, frame, client port)]) of a loopback/Ethernet capture."""
    hdr, recs = lab.read_pcap(capture.pcap)
    out = []
    for rh, frame in recs:
        tcp = 14 + (frame[14] & 15) * 4
        sport, dport = struct.unpack_from(">HH", frame, tcp)
        out.append((rh, frame, sport if dport == capture.server[1] else dport))
    return hdr, out


def test_reused_ports(store_capture, tmp_path, monkeypatch):
    """Every connection on one client port: each SYN closes the one before ("reused")."""
    hdr, recs = _records(store_capture)
    first = recs[0][2]
    out = []
    for rh, frame, client in recs:
        f = bytearray(frame)
        tcp = 14 + (f[14] & 15) * 4
        dport = struct.unpack_from(">H", f, tcp + 2)[0]
        struct.pack_into(">H", f, tcp if dport == store_capture.server[1] else tcp + 2, first)
        out.append((rh, bytes(f)))
    reused = lab.write_pcap(tmp_path / "reused.pcap", hdr, out)
    check_jobs([reused], tmp_path, monkeypatch)


def test_connection_first_seen_mid_stream_in_a_later_part(store_capture, tmp_path, monkeypatch):
    """The last connection's handshake cut out: it begins mid-stream in a later part, where
    no earlier task has it; the merge has that task take it whole (a re-run)."""
    hdr, recs = _records(store_capture)
    last = recs[-1][2]
    handshake = [i for i, r in enumerate(recs) if r[2] == last][:3]
    cut = lab.write_pcap(tmp_path / "midstream.pcap", hdr,
                         [(rh, f) for i, (rh, f, _) in enumerate(recs) if i not in handshake])
    _plan, _rs, needs = parts_of(cut, 3)
    assert needs.adopt and not needs.extend
    one = check_jobs([cut], tmp_path, monkeypatch)
    assert '"capture_started_midstream": true' in one["analyze"][1]


def test_stray_segment_long_after_a_close(store_capture, tmp_path, monkeypatch):
    """A copy of the first connection's last segment two seconds after the capture's last
    packet: one run counts it to the first connection, so the task that owns that
    connection must follow it that far (a re-run)."""
    hdr, recs = _records(store_capture)
    conn1 = recs[0][2]
    stray = max(i for i, r in enumerate(recs) if r[2] == conn1)
    sec, frac = recs[-1][0][:2]
    out = [(r[0], r[1]) for r in recs] + [((sec + 2, frac, 0, recs[stray][0][3]), recs[stray][1])]
    path = lab.write_pcap(tmp_path / "stray.pcap", hdr, out)
    _plan, _rs, needs = parts_of(path, 3)
    assert needs.extend and not needs.adopt
    check_jobs([path], tmp_path, monkeypatch)


def test_segment_path_with_parts(store_capture, tmp_path, monkeypatch):
    """DICOMTRACE_TCP_PATH=segment in parts gives the batch path's one-process result."""
    monkeypatch.setenv("DICOMTRACE_MIN_PART", "1")
    one = results([store_capture.pcap], tmp_path, "1")
    monkeypatch.setenv("DICOMTRACE_TCP_PATH", "segment")
    assert results([store_capture.pcap], tmp_path / "segment", "3") == one


def test_ring_of_two_sensors(ring_sensors, tmp_path, monkeypatch):
    """The tcpdump -C 1 -W 20 ring and the -C 1 ring of tests/ring_lab.py: whole files per
    part, every object crossing a file boundary; JSON, export bytes and Parquet tables as
    one process."""
    sensors = (ring_sensors.ward, ring_sensors.core)
    one = check_jobs(sensors, tmp_path, monkeypatch, tables=True, min_part=1 << 20)
    assert one["tables"]["operations"] and len(one["export"][2]) == 14



def test_part_0_started_again_after_a_re_cut_keeps_its_files(store_capture, tmp_path, monkeypatch):
    """Part 0 starts before the count pass; when the count pass's plan cuts differently, a new
    part 0 runs beside the early one, whose exported files are then removed. The two must not
    share temporary file names (a CI run once lost the new part's files that way)."""
    import dataclasses

    import dicomtrace.scale.run as run
    from dicomtrace.export.part10 import Part10Exporter

    monkeypatch.setenv("DICOMTRACE_MIN_PART", "1")
    one = results([store_capture.pcap], tmp_path, "1")
    early_plan = run.first_part

    def early(sources, parts):  # an early part 0 of the whole file: never the counted plan's
        plan = early_plan(sources, parts)
        plan.parts[0].pieces = [dataclasses.replace(plan.parts[0].pieces[0], stop=None)]
        return plan

    removed, kept = [], []
    discard, place = run.discard, Part10Exporter.place

    def removing(rs):
        removed.extend(o.temp.name for r in rs for o in (r.objects or ()))
        discard(rs)

    def placing(self, objects):
        kept.extend(o.temp.name for o in objects)
        return place(self, objects)

    monkeypatch.setattr(run, "first_part", early)
    monkeypatch.setattr(run, "discard", removing)
    monkeypatch.setattr(Part10Exporter, "place", placing)
    got = results([store_capture.pcap], tmp_path / "recut", "2")
    assert removed and kept and not set(removed) & set(kept)
    assert got == one
