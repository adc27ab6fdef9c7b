"""``dicomtrace monitor``: a C-ECHO (and optionally a small C-STORE) every interval; success
rate, latency percentiles and changes of state, with Prometheus metrics for scrapers."""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field

from dicomtrace.probe import EXIT_DICOM_FAILURE, EXIT_OK, EXIT_UNREACHABLE
from dicomtrace.probe.echo import echo
from dicomtrace.probe.session import Target

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_interval(text: str) -> float:
    """30s, 500ms, 2m, 1h or a number of seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not an interval (e.g. 30s, 500ms, 2m)")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_fail_on(text: str) -> str | float:
    """any, all, never, or a failure rate such as 10%."""
    t = text.strip().lower()
    if t in ("any", "all", "never"):
        return t
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", t)
    if m and float(m.group(1)) <= 100:
        return float(m.group(1)) / 100
    raise ValueError(f"--fail-on {text!r}: give any, all, never or a percentage like 10%")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class Round:
    """One check of the monitor: echo (and store) with what it found."""

    time: float
    check: str
    ok: bool
    latency: float | None  # seconds: the C-ECHO round trip, or the C-STORE time
    code: str | None = None  # finding code when it failed
    message: str = ""
    exit_code: int = EXIT_OK


@dataclass
class MonitorState:
    rounds: list[Round] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)  # check -> "up"/"down"
    changes: list[dict] = field(default_factory=list)

    def record(self, r: Round) -> dict | None:
        self.rounds.append(r)
        new = "up" if r.ok else "down"
        old = self.state.get(r.check)
        self.state[r.check] = new
        if old != new:
            ch = {"time": r.time, "check": r.check, "from": old or "unknown", "to": new,
                  "reason": r.code or ""}
            self.changes.append(ch)
            return ch
        return None

    def summary(self) -> dict:
        out = {}
        for check in sorted({r.check for r in self.rounds}):
            rs = [r for r in self.rounds if r.check == check]
            lat = [r.latency * 1000 for r in rs if r.ok and r.latency is not None]
            ok = sum(r.ok for r in rs)
            out[check] = {"checks": len(rs), "succeeded": ok,
                          "success_rate": round(ok / len(rs), 4) if rs else None,
                          "latency_p50_ms": _r(percentile(lat, 50)),
                          "latency_p90_ms": _r(percentile(lat, 90)),
                          "latency_p99_ms": _r(percentile(lat, 99)),
                          "latency_max_ms": _r(max(lat) if lat else None)}
        return out

    def exit_code(self, fail_on) -> int:
        bad = [r for r in self.rounds if not r.ok]
        if not self.rounds or not bad or fail_on == "never":
            return EXIT_OK
        rate = len(bad) / len(self.rounds)
        triggered = (fail_on == "any" or (fail_on == "all" and len(bad) == len(self.rounds))
                     or (isinstance(fail_on, float) and rate > fail_on))
        if not triggered:
            return EXIT_OK
        return (EXIT_UNREACHABLE if all(r.exit_code == EXIT_UNREACHABLE for r in bad)
                else EXIT_DICOM_FAILURE)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class Metrics:
    """Prometheus text metrics (prometheus-client) on ADDRESS:PORT."""

    def __init__(self, port: int, address: str = "127.0.0.1"):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        self.registry = CollectorRegistry()
        self.checks = Counter("dicomtrace_checks", "Checks made, by check and result",
                              ["check", "result"], registry=self.registry)
        self.latency = Histogram("dicomtrace_check_latency_seconds",
                                 "C-ECHO round trip or C-STORE time of successful checks",
                                 ["check"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.up = Gauge("dicomtrace_peer_up", "1 when the last check succeeded", ["check"],
                        registry=self.registry)
        self.server, self.thread = start_http_server(port, address, registry=self.registry)

    def observe(self, r: Round) -> None:
        self.checks.labels(r.check, "success" if r.ok else "failure").inc()
        if r.ok and r.latency is not None:
            self.latency.labels(r.check).observe(r.latency)
        self.up.labels(r.check).set(1 if r.ok else 0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def echo_round(target: Target) -> Round:
    rep = echo(target, 1)
    ok = rep.exit_code == EXIT_OK
    lat = rep.operations[0].get("round_trip_ms") if rep.operations else None
    f = rep.findings[0] if rep.findings else None
    return Round(time.time(), "echo", ok, lat / 1000 if lat is not None else None,
                 f.code if f else None, f.message if f else "", rep.exit_code)


def store_round(target: Target, items) -> Round:
    from dicomtrace.probe.store import store

    rep = store(target, items)
    ok = rep.exit_code == EXIT_OK
    lat = rep.operations[0].get("time_ms") if rep.operations else None
    f = rep.findings[0] if rep.findings else None
    return Round(time.time(), "store", ok, lat / 1000 if lat is not None and ok else None,
                 f.code if f else None, f.message if f else "", rep.exit_code)


def run(target: Target, every: float, *, count: int | None = None, duration: float | None = None,
        with_store: bool = False, metrics: Metrics | None = None, on_round=None,
        on_change=None, stop=None) -> MonitorState:
    """Check until ``count`` rounds, ``duration`` seconds, or ``stop`` (an Event) is set."""
    import threading

    stop = stop or threading.Event()
    items = None
    if with_store:
        from dicomtrace.probe.images import make_image, sop_class_uid
        from dicomtrace.probe.store import Item
        from pydicom.uid import ExplicitVRLittleEndian

        ds = make_image(0.01, sop_class_uid("SC"), ExplicitVRLittleEndian)
        items = [Item("test image (10 KB)", ds, len(ds.PixelData))]
    state = MonitorState()
    start = time.monotonic()
    n = 0
    while not stop.is_set():
        n += 1
        rounds = [echo_round(target)]
        if items is not None:
            from pydicom.uid import generate_uid

            items[0].dataset.SOPInstanceUID = generate_uid()
            items[0].dataset.file_meta.MediaStorageSOPInstanceUID = items[0].dataset.SOPInstanceUID
            rounds.append(store_round(target, items))
        for r in rounds:
            ch = state.record(r)
            if metrics is not None:
                metrics.observe(r)
            if on_round is not None:
                on_round(r)
            if ch is not None and on_change is not None:
                on_change(ch, r)
        if count is not None and n >= count:
            break
        wait = start + n * every - time.monotonic()
        if duration is not None and time.monotonic() - start + max(wait, 0) >= duration:
            break
        if wait > 0:
            stop.wait(wait)
    return state
