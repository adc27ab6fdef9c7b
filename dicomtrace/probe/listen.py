"""``dicomtrace listen``: a test SCP (pynetdicom) that mimics a PACS in chosen good or bad ways.

It accepts Verification, Storage and Query/Retrieve (C-FIND, C-MOVE to configured
destinations); it can reject calling AE titles (PS3.8 table 9-21, reason 3), answer every
Nth request with a chosen status (PS3.7 C), wait before answering, or abort (A-ABORT,
PS3.8 9.3.8) instead of answering.  It prints each request as it arrives and, when an
association ends, what happened on it in the words of the findings.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field

from dicomtrace.dimse.commands import C_ECHO, C_FIND, C_MOVE, C_STORE
from dicomtrace.dimse.status import describe_status
from dicomtrace.probe.session import finding, quiet_pynetdicom, sop_name
from dicomtrace.ul.pdu import abort_text

SERVICE_GROUPS = ("verification", "storage", "find", "move")
QR_FIND = ("1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1")  # patient, study root
QR_MOVE = ("1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2")
LEVEL_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
              "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


@dataclass
class Behaviour:
    """How the SCP answers (the good and bad ways a PACS can behave)."""

    ae_title: str = "ANY-SCP"
    require_called: bool = False  # reject a called AE title other than ae_title
    accept: tuple[str, ...] = ()  # SOP class UIDs (empty: every group)
    reject_calling: frozenset[str] = frozenset()
    status: int | None = None  # answer every Nth request with this status
    every: int = 1
    delay: float = 0.0  # seconds to wait before each answer
    abort_after: int | None = None  # abort instead of answering the Nth request
    move_destinations: dict[str, tuple[str, int]] = field(default_factory=dict)


def parse_accept(text: str) -> tuple[str, ...]:
    """Comma list of groups (verification, storage, find, move, all) or SOP classes."""
    from pynetdicom import AllStoragePresentationContexts

    from dicomtrace.probe.images import sop_class_uid

    out: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        group = part.lower()
        if group == "all":
            group_uids = ["1.2.840.10008.1.1", *(str(c.abstract_syntax) for c in
                                                 AllStoragePresentationContexts), *QR_FIND, *QR_MOVE]
        elif group == "verification":
            group_uids = ["1.2.840.10008.1.1"]
        elif group == "storage":
            group_uids = [str(c.abstract_syntax) for c in AllStoragePresentationContexts]
        elif group == "find":
            group_uids = list(QR_FIND)
        elif group == "move":
            group_uids = list(QR_MOVE)
        else:
            group_uids = [sop_class_uid(part)]
        out += [u for u in group_uids if u not in out]
    return tuple(out)


def parse_destination(text: str) -> tuple[str, tuple[str, int]]:
    """AE=HOST:PORT"""
    ae, sep, addr = text.partition("=")
    host, _, port = addr.rpartition(":")
    if not sep or not ae or not host or not port.isdigit():
        raise ValueError(f"--move-destination {text!r}: give AE=HOST:PORT")
    return ae.strip(), (host.strip("[]"), int(port))


@dataclass
class Served:
    """One association the SCP served, as it saw it."""

    id: int
    peer: str
    calling: str = "?"
    called: str = "?"
    started: float = 0.0
    ended: float | None = None
    outcome: str = "open"  # accepted, rejected, released, aborted (by us or the peer)
    contexts: list[str] = field(default_factory=list)
    operations: list[dict] = field(default_factory=list)
    findings: list = field(default_factory=list)
    bytes: int = 0

    def to_json(self) -> dict:
        return {"association": self.id, "peer": self.peer, "calling_ae": self.calling,
                "called_ae": self.called, "outcome": self.outcome,
                "duration_ms": round(((self.ended or time.monotonic()) - self.started) * 1000, 3),
                "contexts": self.contexts, "operations": self.operations, "bytes": self.bytes,
                "findings": [f.to_json() for f in self.findings]}


class TestSCP:
    """The SCP; ``on_line(text)`` gets each line to print, ``on_end(Served)`` each ended
    association."""

    def __init__(self, behaviour: Behaviour, on_line=print, on_end=None, storage_dir=None):
        self.b = behaviour
        self.on_line = on_line
        self.on_end = on_end
        self._own_dir = storage_dir is None
        self.storage_dir = storage_dir or tempfile.mkdtemp(prefix="dicomtrace-listen-")
        os.makedirs(self.storage_dir, exist_ok=True)
        self.index: list[tuple[object, str]] = []  # (header data set, path) of objects held
        self.served: dict[int, Served] = {}
        self._by_assoc: dict[int, Served] = {}
        self._requests = 0
        self._lock = threading.Lock()
        self.server = None
        self.ended = threading.Event()

    # -- set-up ----------------------------------------------------------------------
    def start(self, host: str, port: int):
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, evt

        quiet_pynetdicom()
        ae = AE(ae_title=self.b.ae_title)
        ae.require_called_aet = self.b.require_called
        ae.maximum_associations = 64
        for uid in self.b.accept or parse_accept("all"):
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_REQUESTED, self._requested), (evt.EVT_ESTABLISHED, self._established),
                    (evt.EVT_REJECTED, self._rejected), (evt.EVT_RELEASED, self._released),
                    (evt.EVT_ABORTED, self._aborted), (evt.EVT_CONN_CLOSE, self._closed),
                    (evt.EVT_C_ECHO, self._echo), (evt.EVT_C_STORE, self._store),
                    (evt.EVT_C_FIND, self._find), (evt.EVT_C_MOVE, self._move),
                    (evt.EVT_PDU_RECV, self._pdu)]
        self.server = ae.start_server((host, port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        for s in list(self._by_assoc.values()):
            if s.ended is None:
                self._end(s, "open when the SCP stopped" if s.outcome == "open" else s.outcome)
        if self._own_dir:
            shutil.rmtree(self.storage_dir, ignore_errors=True)

    # -- associations ------------------------------------------------------------------
    def _served(self, event) -> Served:
        key = id(event.assoc)
        with self._lock:
            s = self._by_assoc.get(key)
            if s is None:
                r = event.assoc.requestor
                s = Served(len(self.served) + 1, f"{r.address}:{r.port}", started=time.monotonic())
                self.served[s.id] = s
                self._by_assoc[key] = s
        return s

    def _requested(self, event) -> None:
        s = self._served(event)
        rq = event.assoc.requestor.primitive
        s.calling = str(rq.calling_ae_title).strip()
        s.called = str(rq.called_ae_title).strip()
        self.on_line(f"association {s.id} from {s.peer}: A-ASSOCIATE-RQ “{s.calling}” → "
                     f"“{s.called}”, {len(rq.presentation_context_definition_list)} context(s)")
        if s.calling in self.b.reject_calling:
            # as pynetdicom's own rejections do: send the A-ASSOCIATE-RJ, let the DUL finish
            s.outcome = "rejected"
            self.on_line(f"association {s.id}: A-ASSOCIATE-RJ sent (--reject-calling)")
            s.findings.append(finding(
                "association-rejected", f"Rejected association {s.id} from “{s.calling}” "
                "(calling AE title not recognized), as configured by --reject-calling."))
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            event.assoc.kill()

    def _established(self, event) -> None:
        s = self._served(event)
        s.outcome = "accepted"
        cxs = event.assoc.accepted_contexts + event.assoc.rejected_contexts
        for cx in sorted(cxs, key=lambda c: c.context_id):
            if cx.result == 0:
                s.contexts.append(f"{cx.context_id} {sop_name(cx.abstract_syntax)}: accepted, "
                                  f"{sop_name(cx.transfer_syntax[0])}")
            else:
                s.contexts.append(f"{cx.context_id} {sop_name(cx.abstract_syntax)}: rejected")
        n_ok = len(event.assoc.accepted_contexts)
        self.on_line(f"association {s.id}: accepted {n_ok} of {len(cxs)} context(s)")

    def _rejected(self, event) -> None:
        s = self._served(event)
        s.outcome = "rejected"
        if not s.findings:
            reason = "called AE title not recognized" if self.b.require_called else "rejected"
            s.findings.append(finding(
                "association-rejected", f"Rejected association {s.id} from “{s.calling}”: "
                f"{reason} (this SCP answers to “{self.b.ae_title}”, the requestor called "
                f"“{s.called}”)."))
        self.on_line(f"association {s.id}: A-ASSOCIATE-RJ sent")

    def _released(self, event) -> None:
        s = self._served(event)
        if s.outcome not in ("aborted", "aborted by the SCP"):
            s.outcome = "released"

    def _aborted(self, event) -> None:
        s = self._served(event)
        if s.outcome != "aborted by the SCP":
            s.outcome = "aborted"

    def _pdu(self, event) -> None:
        from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF

        if isinstance(event.pdu, P_DATA_TF):
            s = self._served(event)
            s.bytes += sum(len(item.data) for item in event.pdu.presentation_data_value_items)
        elif isinstance(event.pdu, A_ABORT_RQ):
            s = self._served(event)
            s.outcome = "aborted"
            s.findings.append(finding("association-aborted", f"The requestor aborted association "
                                      f"{s.id}: {abort_text(event.pdu.source, event.pdu.reason_diagnostic)}."))

    def _closed(self, event) -> None:
        with self._lock:
            s = self._by_assoc.get(id(event.assoc))
        if s is not None and s.ended is None:
            self._end(s, s.outcome)

    def _end(self, s: Served, outcome: str) -> None:
        s.ended = time.monotonic()
        if outcome == "accepted":
            outcome = "closed without release"
            s.findings.append(finding("connection-closed-without-release",
                                      f"Association {s.id} ended without A-RELEASE or A-ABORT."))
        s.outcome = outcome
        self.on_line(self.summary_line(s))
        for f in s.findings:
            self.on_line(f"  {f.severity.upper()} {f.code}: {f.message}")
        if self.on_end is not None:
            self.on_end(s)

    @staticmethod
    def summary_line(s: Served) -> str:
        secs = (s.ended or time.monotonic()) - s.started
        by_status: dict[str, int] = {}
        for op in s.operations:
            key = f"{op['command']} {op['status_text']}"
            by_status[key] = by_status.get(key, 0) + 1
        ops = "; ".join(f"{n} × {k}" for k, n in by_status.items()) or "no operation"
        rate = f", {s.bytes / secs / 1e6:.2f} MB/s" if secs > 0 and s.bytes else ""
        return (f"association {s.id} “{s.calling}” → “{s.called}” from {s.peer}: {s.outcome} "
                f"after {secs:.3f} s; {ops}; {s.bytes:,} bytes of PDVs{rate}")

    # -- behaviour common to every request -------------------------------------------
    def _answer(self, event, command: str, default: int, sop_class: str, what: str):
        """The delay, abort and status the behaviour asks for; returns the status to send,
        or None when the association was aborted."""
        s = self._served(event)
        with self._lock:
            self._requests += 1
            n = self._requests
        if self.b.delay:
            time.sleep(self.b.delay)
        if self.b.abort_after is not None and n % self.b.abort_after == 0:
            s.outcome = "aborted by the SCP"
            s.findings.append(finding("association-aborted", f"Aborted association {s.id} instead of "
                                      f"answering request {n} ({command}), as configured by "
                                      "--abort-after."))
            self.on_line(f"association {s.id}: {command} {what}: A-ABORT sent (--abort-after)")
            event.assoc.abort(block=False)
            return None
        status = default
        if self.b.status is not None and n % self.b.every == 0:
            status = self.b.status
        cf = {"C-ECHO": C_ECHO, "C-STORE": C_STORE, "C-FIND": C_FIND, "C-MOVE": C_MOVE}[command]
        info = describe_status(status, cf, sop_class)
        op = {"command": command, "message_id": event.request.MessageID, "object": what,
              "status": status, "status_text": info.text, "category": info.category}
        s.operations.append(op)
        self.on_line(f"association {s.id}: {command} {what} → {info.text}")
        if info.category == "failure" and status != default:
            s.findings.append(finding("dimse-failure", f"Answered {command} message "
                                      f"{op['message_id']} with {info.text}, as configured by "
                                      "--status."))
        return status

    def _echo(self, event):
        st = self._answer(event, "C-ECHO", 0x0000, "1.2.840.10008.1.1", "")
        return 0x0000 if st is None else st

    def _store(self, event):
        sop = str(event.request.AffectedSOPClassUID)
        uid = str(event.request.AffectedSOPInstanceUID)
        st = self._answer(event, "C-STORE", 0x0000, sop, f"{sop_name(sop)} {uid}")
        if st is None or describe_status(st, C_STORE, sop).category not in ("success", "warning"):
            return 0xA700 if st is None else st
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            path = os.path.join(self.storage_dir, f"{uid}.dcm")
            ds.save_as(path, enforce_file_format=True)
            if "PixelData" in ds:
                del ds.PixelData  # keep the header for C-FIND, the file for C-MOVE
            with self._lock:
                self.index.append((ds, path))
        except Exception as e:  # a data set we cannot decode or write: say so, answer C000
            self.on_line(f"  could not keep {uid}: {e}")
            return 0xC000
        return st

    def _matches(self, identifier) -> list[tuple[object, str]]:
        level = str(identifier.get("QueryRetrieveLevel", "STUDY")).upper()
        keys = [e for e in identifier if e.keyword not in ("QueryRetrieveLevel", "")]
        seen, out = set(), []
        with self._lock:
            held = list(self.index)
        for ds, path in held:
            ok = True
            for e in keys:
                want = "" if e.value is None else str(e.value)
                if not want or e.VR == "SQ":
                    continue
                have = str(ds.get(e.keyword, ""))
                if not fnmatch.fnmatchcase(have, want):
                    ok = False
                    break
            unique = str(ds.get(LEVEL_KEYS.get(level, "SOPInstanceUID"), ""))
            if ok and unique not in seen:
                seen.add(unique)
                out.append((ds, path))
        return out

    def _find(self, event):
        from pydicom.dataset import Dataset

        sop = str(event.request.AffectedSOPClassUID)
        matches = self._matches(event.identifier)
        for ds, _ in matches:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            rsp = Dataset()
            for e in event.identifier:
                rsp.add_new(e.tag, e.VR, ds.get(e.keyword, e.value) if e.keyword else e.value)
            yield 0xFF00, rsp
        st = self._answer(event, "C-FIND", 0x0000, sop, f"{len(matches)} match(es)")
        yield (0xA700 if st is None else st), None

    def _move(self, event):
        sop = str(event.request.AffectedSOPClassUID)
        dest = str(event.move_destination).strip()
        addr = self.b.move_destinations.get(dest)
        if addr is None:
            self.on_line(f"C-MOVE to unknown destination “{dest}”: 0xA801")
            s = self._served(event)
            s.operations.append({"command": "C-MOVE", "message_id": event.request.MessageID,
                                 "object": dest, "status": 0xA801,
                                 "status_text": describe_status(0xA801, C_MOVE, sop).text,
                                 "category": "failure"})
            yield None, None
            return
        matches = self._matches(event.identifier)
        st = self._answer(event, "C-MOVE", 0x0000, sop, f"{len(matches)} object(s) to “{dest}” "
                          f"at {addr[0]}:{addr[1]}")
        if st is None:
            yield None, None
            return
        if st != 0x0000:
            yield addr[0], addr[1]
            yield 0
            yield st, None
            return
        from pydicom import dcmread

        from dicomtrace.probe.store import contexts_for

        yield addr[0], addr[1], {"contexts": contexts_for(ds for ds, _ in matches)[:128]}
        yield len(matches)

        for _, path in matches:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, dcmread(path)
