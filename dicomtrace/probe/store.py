"""``dicomtrace store``: C-STORE (PS3.7 9.1.1, Storage Service Class PS3.4 annex B) of given
files or generated test images, with each image's time, throughput and status, and a size
sweep that shows where transfers start to fail or slow down."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from dicomtrace.dimse.commands import C_STORE
from dicomtrace.dimse.status import describe_status
from dicomtrace.findings.operation import status_hint
from dicomtrace.probe.images import NATIVE, UNCOMPRESSED, encoded_size, make_image
from dicomtrace.probe.session import (
    CheckReport, Target, associate, dimse_unanswered, failure, failure_exit, finding, make_ae,
    ms, negotiation_lines, release, sop_name,
)

SLOWER = 0.5  # a size whose rate falls under half that of smaller sizes "slows down"


@dataclass
class Item:
    """One object to send: a file on disk, or a generated data set."""

    label: str
    dataset: object
    size: int  # bytes of the data set as encoded for the wire


def load_files(paths: list[str]) -> list[Item]:
    """Part 10 files; ValueError naming the file that is not one."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    items = []
    for p in paths:
        try:
            ds = dcmread(p)
        except (OSError, InvalidDicomError) as e:
            raise ValueError(f"{p}: not a readable DICOM file ({e})") from None
        if "SOPClassUID" not in ds or "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            raise ValueError(f"{p}: no SOP Class UID or transfer syntax (not a Part 10 file)")
        items.append(Item(os.path.basename(p), ds, os.path.getsize(p)))
    return items


def generate(count: int, size_mb: float, sop_class: str, transfer_syntax) -> list[Item]:
    items = []
    for i in range(1, count + 1):
        ds = make_image(size_mb, sop_class, transfer_syntax, index=i)
        items.append(Item(f"generated {i} ({size_mb:g} MB, {transfer_syntax.name})", ds,
                          encoded_size(ds)))
    return items


def contexts_for(datasets):
    """One presentation context per SOP class and transfer syntax; uncompressed data sets
    also offer the other uncompressed syntaxes (pynetdicom converts between them)."""
    from pynetdicom.presentation import build_context

    wanted: dict[str, list] = {}
    for ds in datasets:
        ts = ds.file_meta.TransferSyntaxUID
        lst = wanted.setdefault(str(ds.SOPClassUID), [])
        for t in [ts] + (list(UNCOMPRESSED) if ts in NATIVE else []):
            if t not in lst:
                lst.append(t)
    return [build_context(sop, tss) for sop, tss in wanted.items()]


def store(target: Target, items: list[Item], report: CheckReport | None = None) -> CheckReport:
    """Send ``items`` on one association; each C-STORE's time, rate and status."""
    report = report or CheckReport("store", target)
    ae = make_ae(target)
    assoc, att = associate(ae, target, contexts_for(it.dataset for it in items))
    report.lines += negotiation_lines(att, assoc)
    bad = failure(att, assoc)
    if bad is not None:
        report.fail(bad, failure_exit(att))
        return report
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    try:
        for i, it in enumerate(items, 1):
            sop = str(it.dataset.SOPClassUID)
            row = {"command": "C-STORE", "message_id": i, "object": it.label, "sop_class_uid": sop,
                   "transfer_syntax": str(it.dataset.file_meta.TransferSyntaxUID), "bytes": it.size}
            report.operations.append(row)
            if sop not in accepted:
                row["status"] = None
                report.lines.append(f"C-STORE {i} {it.label}: not sent, {sop_name(sop)} was not "
                                    "accepted")
                report.fail(finding("presentation-context-rejected",
                                    f"The acceptor did not accept {sop_name(sop)}, so "
                                    f"{it.label} could not be sent."))
                continue
            t0 = time.monotonic()
            try:
                rsp = assoc.send_c_store(it.dataset, msg_id=i)
            except ValueError as e:  # pynetdicom: no context for this transfer syntax
                row["status"] = None
                report.lines.append(f"C-STORE {i} {it.label}: not sent: {e}")
                report.fail(finding("presentation-context-rejected",
                                    f"{it.label} could not be sent: {e}"))
                continue
            took = time.monotonic() - t0
            row["time_ms"] = round(took * 1000, 3)
            row["mb_per_s"] = round(it.size / took / 1e6, 3) if took > 0 else None
            if "Status" not in rsp:
                row["status"] = None
                report.fail(dimse_unanswered(att, f"the C-STORE of {it.label}"))
                break
            info = describe_status(int(rsp.Status), C_STORE, sop)
            row.update(status=info.code, status_text=info.text, category=info.category)
            report.lines.append(f"C-STORE {i} {it.label}: {info.text}, {it.size:,} bytes in "
                                f"{ms(took)} ({row['mb_per_s']} MB/s)")
            if info.category == "failure":
                report.fail(finding("dimse-failure", f"C-STORE of {it.label} answered "
                                    f"{info.text}.", status_hint(info.service, info.code,
                                                                 info.category), status=info.code))
            elif info.category == "warning":
                report.findings.append(finding("dimse-warning", f"C-STORE of {it.label} "
                                               f"answered {info.text}.", status_hint(
                                                   info.service, info.code, info.category),
                                               status=info.code))
            if not assoc.is_established:
                report.fail(dimse_unanswered(att, "the next C-STORE"))
                break
    finally:
        release(assoc)
    sent = [r for r in report.operations if r.get("status") is not None]
    ok = [r for r in sent if r.get("category") in ("success", "warning")]
    total = sum(r["bytes"] for r in ok)
    secs = sum(r["time_ms"] for r in ok) / 1000
    report.summary.update({"objects": len(items), "stored": len(ok), "bytes": total,
                           "mb_per_s": round(total / secs / 1e6, 3) if secs else None})
    return report


def sweep(target: Target, sizes: list[float], sop_class: str, transfer_syntax,
          count: int = 1) -> CheckReport:
    """One association per size; says the first size that failed and the sizes that slowed
    down (throughput under half the best)."""
    report = CheckReport("store", target)
    rows = []
    for size in sizes:
        report.lines.append(f"-- {size:g} MB --")
        before = len(report.operations)
        store(target, generate(count, size, sop_class, transfer_syntax), report)
        ops = report.operations[before:]
        good = [o for o in ops if o.get("category") in ("success", "warning")]
        rate = (sum(o["bytes"] for o in good) / (sum(o["time_ms"] for o in good) / 1000) / 1e6
                if good and sum(o["time_ms"] for o in good) else None)
        rows.append({"size_mb": size, "sent": len(ops), "stored": len(good),
                     "mb_per_s": round(rate, 3) if rate else None})
        for o in ops:
            o["size_mb"] = size
    first_fail = next((r["size_mb"] for r in rows if r["stored"] < max(r["sent"], count)), None)
    # larger objects normally move faster (less overhead per byte): a size is slower when its
    # rate falls under half the best rate of the smaller sizes
    slow, best = [], None
    for r in sorted(rows, key=lambda r: r["size_mb"]):
        if r["mb_per_s"] and best and r["mb_per_s"] < best * SLOWER:
            slow.append(r["size_mb"])
        if r["mb_per_s"]:
            best = max(best or 0, r["mb_per_s"])
    for r in rows:
        state = ("failed" if r["stored"] < max(r["sent"], count) else
                 "slower" if r["size_mb"] in slow else "ok")
        r["state"] = state
        report.lines.append(f"sweep {r['size_mb']:g} MB: {r['stored']}/{count} stored, "
                            f"{r['mb_per_s'] or '-'} MB/s, {state}")
    report.summary = {"sizes": rows, "first_failing_size_mb": first_fail,
                      "slower_sizes_mb": slow}
    return report
