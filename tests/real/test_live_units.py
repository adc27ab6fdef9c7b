"""In-process parts of live capture and monitoring: the ring writer splits the pcap byte
stream only at record boundaries, however the bytes arrive; tcpdump's counters become the
capture-drops finding; the monitor's state changes, percentiles and --fail-on."""

from __future__ import annotations

import struct

import lab
from dicomtrace.capture.live import RingWriter, explain_failure, parse_stats
from dicomtrace.cli.live import capture_drops, parse_ring
from dicomtrace.probe.monitor import MonitorState, Round, parse_fail_on, parse_interval


def pcap_stream(n: int, size: int = 100) -> tuple[bytes, list[bytes]]:
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    recs = [struct.pack("<IIII", 1000 + i, i, size + i % 7, size + i % 7) + bytes([i % 256]) *
            (size + i % 7) for i in range(n)]
    return head + b"".join(recs), recs


def test_ring_splits_at_record_boundaries_whatever_the_pieces(tmp_path):
    stream, recs = pcap_stream(40)
    for step in (1, 7, 16, 23, 117, len(stream)):
        d = tmp_path / f"s{step}"
        d.mkdir()
        w = RingWriter(str(d / "r.pcap"), size=600, files=100)
        for i in range(0, len(stream), step):
            w.feed(stream[i:i + step])
        w.close()
        got = []
        for name in w.written:
            hdr, rs = lab.read_pcap(name)
            assert hdr["linktype"] == 1
            assert 24 + sum(16 + len(x) for _, x in rs) <= 600 or len(rs) == 1
            got += [struct.pack("<IIII", *h) + x for h, x in rs]
        assert got == recs, step
        assert w.rotations == len(w.written) - 1 >= 3


def test_ring_reuses_the_oldest_file(tmp_path):
    stream, recs = pcap_stream(30)
    w = RingWriter(str(tmp_path / "r.pcap"), size=500, files=3)
    w.feed(stream)
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pcap0", "r.pcap1", "r.pcap2"]
    assert w.rotations > 3


def test_single_file_without_ring(tmp_path):
    stream, recs = pcap_stream(5)
    w = RingWriter(str(tmp_path / "one.pcap"))
    w.feed(stream[:30])
    w.feed(stream[30:])
    w.close()
    assert (tmp_path / "one.pcap").read_bytes() == stream


def test_drops_become_a_finding():
    st = parse_stats("12 packets captured\n20 packets received by filter\n"
                     "8 packets dropped by kernel\n")
    assert (st.captured, st.received, st.dropped_kernel, st.dropped_interface) == (12, 20, 8, None)
    f = capture_drops(st)
    assert f.code == "capture-drops" and f.severity == "warning"
    assert "8 dropped by the kernel" in f.message and f.hint
    assert capture_drops(parse_stats("5 packets captured\n0 packets dropped by kernel\n")) is None


def test_capture_errors_say_what_to_do():
    assert "ip link" in explain_failure("eth9", "tcpdump: eth9: No such device exists\n")
    assert "setcap" in explain_failure("eth0", "tcpdump: eth0: You don't have permission to "
                                               "capture on that device\n")
    assert "filter" in explain_failure("lo", "tcpdump: syntax error\n", "port x y")


def test_ring_option():
    assert parse_ring("100,10") == (100_000_000, 10)
    for bad in ("100", "0,3", "1,0", "a,b"):
        try:
            parse_ring(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_monitor_state_changes_and_fail_on():
    s = MonitorState()
    for t, ok in enumerate([True, True, False, False, True]):
        s.record(Round(float(t), "echo", ok, 0.01 * (t + 1) if ok else None,
                       None if ok else "connection-refused", exit_code=0 if ok else 3))
    assert [(c["from"], c["to"]) for c in s.changes] == [("unknown", "up"), ("up", "down"),
                                                        ("down", "up")]
    assert s.changes[1]["reason"] == "connection-refused"
    summ = s.summary()["echo"]
    assert summ["checks"] == 5 and summ["succeeded"] == 3 and summ["success_rate"] == 0.6
    assert summ["latency_p50_ms"] == 20.0 and summ["latency_max_ms"] == 50.0
    assert s.exit_code("any") == 3 and s.exit_code("all") == 0 and s.exit_code("never") == 0
    assert s.exit_code(parse_fail_on("50%")) == 0 and s.exit_code(parse_fail_on("30%")) == 3
    assert parse_interval("30s") == 30 and parse_interval("500ms") == 0.5
    assert parse_interval("2m") == 120
