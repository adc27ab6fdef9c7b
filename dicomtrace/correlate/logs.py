"""The peers' own logs (``--log FILE``) beside the wire: each line attached to the
association, and the operation, it belongs to.

Formats read (docs/correlate.md): dcmtk's console output (``I: ...``, ``D: ...``,
with or without ``-v``/``-d``, no timestamps), the same with a timestamp in front
(dcmtk with a log configuration, Python logging as pynetdicom's debug log is usually
written: ``2026-12-01 07:29:05,957 ...``), and Orthanc's (glog: ``I1201
07:29:05.957123 ... file.cpp:123] ...``).

1. *Blocks.* A log is cut into association blocks: one begins at "Association
   Received", "Request Parameters:" (pynetdicom), "Requesting Association"; it ends
   at its release, abort or rejection (and the PDU dump printed right after it), or at
   "Association Request Failed" (dcmtk: it never became an association).
   Within a block, the line that names a request's Message ID (``(MsgID 3``,
   ``Message ID : 3``) starts that operation; later lines belong to it until the
   next request or the block's end.
2. *Matching.* A log is one application: its blocks are matched, in order, to the
   wire's associations on one listening address (acceptor blocks) whose AE titles
   (when the log names them), outcome (released, rejected, aborted), request Message
   IDs and logged statuses (success or not) agree; the address that matches the most
   blocks wins.
3. *Clock.* For a log with timestamps, the offset is the median, over the events
   both show (association request, accept or reject, each request by Message ID,
   the release), of wire time minus log time; a block whose events then lie more than
   ``MATCH_TOLERANCE`` away is unmatched.  A log without timestamps takes its times
   from the wire: each line gets the time of the last matched event before it.
"""

from __future__ import annotations

import calendar
import os
import re
import statistics
from dataclasses import dataclass, field

MATCH_TOLERANCE = 2.0  # s: a matched block's events within this of the wire's, once corrected

_ISO = re.compile(r"^\[?(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\]?\s*"
                  r"(?:([A-Z])[A-Za-z]*\s*:?\s)?\s*(.*)$")
_GLOG = re.compile(r"^([IWEF])(\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d+)\s+(?:\S+\s+)*?\S+:\d+\]\s?(.*)$")
_LEVEL = re.compile(r"^([TDIWEF]): ?(.*)$")

START_ACCEPTOR = re.compile(r"Association Received|^Request Parameters:$|INCOMING A-ASSOCIATE-RQ")
START_REQUESTOR = re.compile(r"Requesting (?:Sub-)?Association|OUTGOING A-ASSOCIATE-RQ")
AE_PAIR = re.compile(r"\(([^()]*):(\S+) -> (\S+)\)")
CALLING = re.compile(r"Calling Application Name\s*:\s*(\S+)")
FROM_AET = re.compile(r"Association Received from AET (\S+)")  # Orthanc
CALLED = re.compile(r"Called Application Name\s*:\s*(\S+)")
ACCEPT = re.compile(r"Association Acknowledged|Accepting Association|Association Accepted")
REJECT = re.compile(r"Refusing Association|Rejecting Association|Association Rejected")
RELEASE = re.compile(r"Association Release\b|Association Released|Releasing Association")
FAILED = re.compile(r"Association Request Failed")  # dcmtk SCU: no association came of it
ABORT = re.compile(r"Association Abort|Aborting Association|Abort Association")
REQUEST_ID = re.compile(r"\(MsgID (\d+)|^Message ID\s*:\s*(\d+)\s*$")
STATUS = re.compile(r"Response\b[^(\[]*(?:\(|\[status: )([A-Za-z][^)\]]*)[)\]]")  # dcmtk
DUMP_START = re.compile(r"Parameters:$|^=+ (?:INCOMING|OUTGOING) .*=+$")
DUMP_END = re.compile(r"^=+ END .*=+$")


@dataclass(slots=True)
class LogLine:
    source: str  # the log file's base name
    number: int  # line number in the file (1-based)
    text: str
    log_time: float | None  # as written (seconds, the log's clock; None: no timestamp)
    level: str | None = None  # T D I W E F as the log marks it
    time: float | None = None  # corrected to the capture's clock
    association: int | None = None
    message_id: int | None = None

    def to_json(self) -> dict:
        return {"source": self.source, "time": self.time, "text": self.text,
                "message_id": self.message_id, "line": self.number}


@dataclass
class Block:
    """The lines of one association as the log tells it."""

    role: str  # "acceptor" (the log's application accepted or refused) or "requestor"
    lines: list[LogLine] = field(default_factory=list)
    calling: str | None = None
    called: str | None = None
    outcome: str | None = None  # released, rejected, aborted; None: not seen
    statuses: dict[int, str] = field(default_factory=dict)  # message ID -> final status as logged
    # (event, message id, line): request, accept, reject, release, abort, start
    events: list[tuple[str, int | None, LogLine]] = field(default_factory=list)


@dataclass
class LogFile:
    path: str
    lines: list[LogLine]
    blocks: list[Block]
    timed: bool
    offset: float | None = None  # seconds added to the log's times
    matched: int = 0

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def summary_json(self) -> dict:
        return {"source": self.name, "lines": len(self.lines), "timestamps": self.timed,
                "clock_offset": self.offset, "associations_found": len(self.blocks),
                "associations_matched": self.matched}


def parse_line(raw: str, year: int) -> tuple[float | None, str | None, str]:
    """(seconds as written, or None; the level letter, or None; the text without
    timestamp and level).  Times are read as UTC: the estimated offset absorbs the
    log's time zone as well as its clock error."""
    m = _ISO.match(raw)
    if m:
        y, mo, d, h, mi, s, frac, lvl, text = m.groups()
        t = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s)))
        return t + (float("0." + frac) if frac else 0.0), lvl, text
    m = _GLOG.match(raw)
    if m:
        lvl, mo, d, h, mi, s, frac, text = m.groups()
        t = calendar.timegm((year, int(mo), int(d), int(h), int(mi), int(s)))
        return t + float("0." + frac), lvl, text
    m = _LEVEL.match(raw)
    if m:
        return None, m.group(1), m.group(2)
    return None, None, raw


def read_log(path: str, year: int) -> LogFile:
    """Parse a log file into lines and association blocks (no matching yet)."""
    name = os.path.basename(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read().splitlines()
    lines, texts = [], []
    for i, r in enumerate(raw, 1):
        if not r.strip():
            continue
        t, level, text = parse_line(r, year)
        lines.append(LogLine(name, i, r.rstrip(), t, level))
        texts.append(text.strip())
    timed = sum(1 for x in lines if x.log_time is not None) > len(lines) // 2
    return LogFile(path, lines, _blocks(lines, texts), timed)


def _blocks(lines: list[LogLine], texts: list[str]) -> list[Block]:
    blocks: list[Block] = []
    cur: Block | None = None
    trailing = 0  # 1: after an end event; 2: inside the dump that follows it
    for line, text in zip(lines, texts):
        if cur is not None and trailing:
            if trailing == 1 and DUMP_START.search(text) and not (
                    START_ACCEPTOR.search(text) or START_REQUESTOR.search(text)):
                trailing = 2
            if trailing == 2:
                cur.lines.append(line)
                if DUMP_END.search(text):
                    cur, trailing = None, 0
                continue
            cur, trailing = None, 0
        start = ("acceptor" if START_ACCEPTOR.search(text) else
                 "requestor" if START_REQUESTOR.search(text) else None)
        if start and (cur is None or any(e[0] in ("accept", "reject", "request") for e in cur.events)):
            cur = Block(start)
            blocks.append(cur)
            cur.events.append(("start", None, line))
        elif start and cur is not None and "OUTGOING A-ASSOCIATE-RQ" in text:
            cur.role = "requestor"
        if cur is None:
            continue
        cur.lines.append(line)
        m = AE_PAIR.search(text)
        if m and "Association" in text:
            cur.calling, cur.called = m.group(2), m.group(3)
        if (m := CALLING.search(text) or FROM_AET.search(text)) is not None:
            cur.calling = m.group(1)
        if (m := CALLED.search(text)) is not None:
            cur.called = m.group(1)
        if (m := REQUEST_ID.search(text)) is not None:
            mid = int(m.group(1) or m.group(2))
            if not cur.events or cur.events[-1][:2] != ("request", mid):
                cur.events.append(("request", mid, line))
        elif (m := STATUS.search(text)) is not None:
            requests = [e[1] for e in cur.events if e[0] == "request"]
            if requests and not m.group(1).startswith("Pending"):
                cur.statuses[requests[-1]] = m.group(1)
        elif ACCEPT.search(text):
            cur.events.append(("accept", None, line))
        elif FAILED.search(text):
            if cur.outcome is None:
                cur.outcome, trailing = "failed", 1
        elif REJECT.search(text):
            cur.events.append(("reject", None, line))
            cur.outcome, trailing = "rejected", 1
        elif ABORT.search(text):
            cur.events.append(("abort", None, line))
            cur.outcome, trailing = "aborted", 1
        elif RELEASE.search(text):
            cur.events.append(("release", None, line))
            cur.outcome, trailing = "released", 1
    return blocks


def _wire_events(a) -> dict[tuple[str, int | None], float]:
    """The association's events on the wire, named as the log's are."""
    out = {}
    if a.request_time is not None:
        out[("start", None)] = a.request_time
    if a.accept_time is not None:
        out[("accept", None)] = a.accept_time
    if a.reject is not None:
        out[("reject", None)] = a.reject.time
    if a.abort is not None:
        out[("abort", None)] = a.abort.time
    if a.release_time is not None:
        out[("release", None)] = a.release_time
    for op in a.operations:
        out.setdefault(("request", op.message_id), op.request_time)
    return out


_OUTCOMES = {"released": {"released"}, "rejected": {"rejected"}, "aborted": {"aborted", "reset", "closed"}}


def _compatible(b: Block, a) -> bool:
    """Could the block be this association?  AE titles, outcome, the Message IDs of its
    requests and the statuses it logged (success or not) must agree with the wire."""
    if b.calling and (a.calling_ae or "").strip() != b.calling:
        return False
    if b.called and (a.called_ae or "").strip() != b.called:
        return False
    if b.outcome == "failed" or (b.outcome is not None
                                 and a.outcome not in _OUTCOMES.get(b.outcome, {a.outcome})):
        return False
    ops = {op.message_id: op for op in a.operations}
    if any(e[0] == "request" and e[1] not in ops for e in b.events):
        return False
    for mid, text in b.statuses.items():
        final = ops[mid].final if mid in ops else None
        if final is not None and (final.info.category == "success") != text.startswith("Success"):
            return False
    return True


def _match_in_order(blocks: list[Block], assocs: list) -> list[tuple[Block, object]]:
    pairs, k = [], 0
    for b in blocks:
        for j in range(k, len(assocs)):
            if _compatible(b, assocs[j]):
                pairs.append((b, assocs[j]))
                k = j + 1
                break
    return pairs


def _differences(pairs) -> list[float]:
    out = []
    for b, a in pairs:
        wire = _wire_events(a)
        for ev, mid, line in b.events:
            t = wire.get((ev, mid))
            if t is not None and line.log_time is not None:
                out.append(t - line.log_time)
    return out


def match_log(log: LogFile, assocs: list) -> list[tuple[Block, object]]:
    """Pair the log's blocks with associations (see the module docstring); sets the offset."""
    assocs = sorted(assocs, key=lambda a: a.start_time)
    best: list = []
    candidates: dict = {}
    for a in assocs:
        candidates.setdefault(("acceptor", a.acceptor.ip, a.acceptor.port), []).append(a)
        candidates.setdefault(("requestor", a.requestor.ip), []).append(a)
    for key, group in candidates.items():
        blocks = [b for b in log.blocks if b.role == key[0]]
        pairs = _match_in_order(blocks, group)
        if len(pairs) > len(best):
            best = pairs
    if log.timed and best:
        diffs = _differences(best)
        if diffs:
            log.offset = statistics.median(diffs)
            best = [(b, a) for b, a in best
                    if all(abs(d - log.offset) <= MATCH_TOLERANCE for d in _differences([(b, a)]))]
    log.matched = len(best)
    return best


def attach(log: LogFile, pairs) -> None:
    """Give every line its corrected time, association and operation."""
    owner = {}
    for b, a in pairs:
        wire = _wire_events(a)
        events = {id(line): (ev, mid) for ev, mid, line in b.events}
        current_op, current_time = None, a.request_time if a.request_time is not None else a.start_time
        for line in b.lines:
            ev = events.get(id(line))
            if ev is not None:
                if ev[0] == "request":
                    current_op = ev[1]
                elif ev[0] in ("release", "abort", "reject"):
                    current_op = None
                current_time = wire.get(ev, current_time)
            line.association, line.message_id = a.id, current_op
            if not log.timed:
                line.time = current_time
            owner[id(line)] = a
    last = None
    for line in log.lines:
        if log.timed:
            if line.log_time is not None:
                line.time = line.log_time + (log.offset or 0.0)
            else:
                line.time = last  # a continuation line: the time of the one before
        elif line.time is None:
            line.time = last
        last = line.time if line.time is not None else last
    # untimed lines before the first matched event: the first time known
    first = next((x.time for x in log.lines if x.time is not None), None)
    for line in log.lines:
        if line.time is not None:
            break
        line.time = first


def correlate_logs(paths: list[str], analysis) -> list[LogFile]:
    """Read, match and attach each log; the lines land on ``Association.log_lines``."""
    import time

    first = getattr(analysis.capture, "first_time", None)
    year = time.gmtime(first).tm_year if first else time.gmtime().tm_year
    by_id = {a.id: a for a in analysis.associations}
    logs = []
    for path in paths:
        log = read_log(path, year)
        attach(log, match_log(log, analysis.associations))
        for line in log.lines:
            if line.association is not None:
                by_id[line.association].log_lines.append(line)
        logs.append(log)
    for a in analysis.associations:
        a.log_lines.sort(key=lambda x: (x.time if x.time is not None else 0.0))
    return logs


def unattached(logs: list[LogFile]) -> list[LogLine]:
    """Lines that belong to no association on the wire (evidence too)."""
    return [x for log in logs for x in log.lines if x.association is None]
