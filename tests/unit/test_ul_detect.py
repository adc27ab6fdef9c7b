"""dicomtrace.ul.detect: is a connection DICOM (ports, A-ASSOCIATE-RQ heuristic, P-DATA runs)."""

from __future__ import annotations

from unit import wire

from dicomtrace.ul import detect


def test_configured_port():
    assert detect.on_dicom_port(wire.connection(server_port=104), frozenset({104}))
    assert not detect.on_dicom_port(wire.connection(server_port=8080), frozenset({104}))


def test_associate_request_at_the_start():
    s = wire.Stream(wire.connection(server_port=4242))
    d = detect.Detector()
    rq = wire.associate()
    assert d.feed(s.data(0, rq[:4])) is None  # too few bytes to judge
    assert d.feed(s.data(0, rq[4:])) == detect.BY_REQUEST
    assert [e.size for e in d.events] == [4, len(rq) - 4]  # kept, to replay


def test_other_protocol_at_the_start():
    s = wire.Stream(wire.connection(server_port=80))
    assert detect.Detector().feed(s.data(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) is False


def test_midstream_pdata_run():
    s = wire.Stream(wire.connection(server_port=4242, from_start=False))
    d = detect.Detector()
    verdicts = [d.feed(s.data(0, b"\x55" * 30 + wire.echo_rq(1)))]
    verdicts += [d.feed(s.data(0, wire.echo_rq(i))) for i in (2, 3, 4)]
    assert detect.BY_PDATA in verdicts and verdicts[0] is None


def test_request_cut_off_by_the_end_is_dicom_at_close():
    s = wire.Stream(wire.connection(server_port=4242))
    d = detect.Detector()
    assert d.feed(s.data(0, wire.associate()[:20])) is None
    assert d.at_close() == detect.BY_REQUEST


def test_gives_up_after_the_limit():
    s = wire.Stream(wire.connection(server_port=4242, from_start=False))
    d = detect.Detector()
    chunk = b"\xaa" * 65536
    verdicts = [d.feed(s.data(0, chunk)) for _ in range(detect.HEURISTIC_LIMIT // len(chunk) + 1)]
    assert verdicts[-1] is False and all(v is None for v in verdicts[:-1])
