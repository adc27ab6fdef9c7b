"""``dicomtrace echo``: C-ECHO (PS3.7 9.1.5, Verification SOP Class PS3.4 annex A) with the
TCP connect, association set-up and round-trip times."""

from __future__ import annotations

import statistics
import time

from dicomtrace.dimse.commands import C_ECHO
from dicomtrace.dimse.status import describe_status
from dicomtrace.findings.operation import status_hint
from dicomtrace.probe.session import (
    CheckReport, Target, associate, dimse_unanswered, failure, failure_exit, finding, make_ae,
    ms, negotiation_lines, release,
)

VERIFICATION = "1.2.840.10008.1.1"


def echo(target: Target, count: int = 1, interval: float = 0.0) -> CheckReport:
    """``count`` C-ECHOs on one association; the report says each round trip."""
    report = CheckReport("echo", target)
    ae = make_ae(target)
    ae.add_requested_context(VERIFICATION)
    assoc, att = associate(ae, target)
    report.lines = negotiation_lines(att, assoc)
    report.summary = {"tcp_connect_ms": _ms(att.connect_time),
                      "association_ms": _ms(att.association_time)}
    bad = failure(att, assoc)
    if bad is not None:
        report.fail(bad, failure_exit(att))
        return report
    rtts = []
    try:
        for i in range(1, count + 1):
            if i > 1 and interval:
                time.sleep(interval)
            t0 = time.monotonic()
            rsp = assoc.send_c_echo(msg_id=i)
            rtt = time.monotonic() - t0
            if "Status" not in rsp:
                report.fail(dimse_unanswered(att, f"C-ECHO message {i}"))
                report.operations.append({"command": "C-ECHO", "message_id": i, "status": None,
                                          "round_trip_ms": None})
                break
            info = describe_status(int(rsp.Status), C_ECHO, VERIFICATION)
            report.operations.append({"command": "C-ECHO", "message_id": i, "status": info.code,
                                      "status_text": info.text, "category": info.category,
                                      "round_trip_ms": _ms(rtt)})
            report.lines.append(f"C-ECHO {i}: {info.text}, round trip {ms(rtt)}")
            if info.category == "success":
                rtts.append(rtt)
            else:
                report.fail(finding(
                    "dimse-failure" if info.category == "failure" else "dimse-warning",
                    f"C-ECHO message {i} answered {info.text}.",
                    status_hint(info.service, info.code, info.category), status=info.code))
    finally:
        release(assoc)
    report.summary.update(echo_summary(rtts, count))
    report.lines.append(f"released: {'yes' if att.released else 'no'}")
    return report


def echo_summary(rtts: list[float], count: int) -> dict:
    out = {"sent": count, "succeeded": len(rtts)}
    if rtts:
        out.update({"round_trip_min_ms": _ms(min(rtts)), "round_trip_avg_ms": _ms(statistics.fmean(rtts)),
                    "round_trip_max_ms": _ms(max(rtts))})
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
