"""``dicomtrace compare BEFORE AFTER``: what changed between two captures of the same
transactions (before and after a fix), on the analysis model of each.

Matching (docs/correlate.md): associations by requestor address, acceptor address and
port, calling and called AE title (the requestor's port is ephemeral), in order of
appearance when several share that key; operations within a matched association by
SOP instance UID where the command carries one, else by command and order.

Timing per command, per association and over all: latency (request start to final
response) and throughput (data set bytes over the latency).  It is judged against the
run-to-run spread: a latency or throughput change counts
only when the medians differ by more than the two sides' interquartile ranges together,
and by at least ``MIN_RELATIVE`` of the earlier median (latencies also by ``MIN_LATENCY``
seconds); with fewer than two values on a side there is no spread to judge by, and the
change is shown but not counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from dicomtrace.model.association import Analysis, Association, Operation
from dicomtrace.model.metrics import percentile
from dicomtrace.ul.pdu import PC_RESULTS
from dicomtrace.uids import uid_name

MIN_RELATIVE = 0.10
MIN_LATENCY = 0.001  # s
STATUS_RANK = {"success": 0, "pending": 0, "cancel": 1, "warning": 1, "failure": 2, "unanswered": 2}
OUTCOME_RANK = {"released": 0, "incomplete": 1, "reset": 2, "closed": 2, "aborted": 2, "rejected": 2}
WORSE_FINDING = {"error", "warning"}


@dataclass
class Side:
    """One capture's analysis and findings."""

    path: str
    analysis: Analysis
    findings: list  # findings.Finding


@dataclass
class Change:
    kind: str
    what: str
    before: object
    after: object
    worse: bool
    association: str | None = None  # label of the matched association
    before_association: int | None = None
    after_association: int | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "association": self.association,
                "before_association": self.before_association,
                "after_association": self.after_association,
                "what": self.what, "before": self.before, "after": self.after, "worse": self.worse}


@dataclass
class Timing:
    """One metric compared: medians, spreads and the verdict."""

    scope: str  # association label, or "all"
    service: str
    metric: str  # latency (s) or throughput (bytes/s)
    before: list[float]
    after: list[float]

    @property
    def stats(self):
        return _median_iqr(self.before), _median_iqr(self.after)

    @property
    def change_percent(self) -> float | None:
        (mb, _), (ma, _) = self.stats
        return None if mb is None or ma is None or mb == 0 else (ma - mb) / mb * 100

    @property
    def significant(self) -> bool:
        if len(self.before) < 2 or len(self.after) < 2:
            return False
        (mb, ib), (ma, ia) = self.stats
        delta = abs(ma - mb)
        if delta <= ib + ia or delta < MIN_RELATIVE * abs(mb):
            return False
        return not (self.metric == "latency" and delta < MIN_LATENCY)

    @property
    def worse(self) -> bool:
        (mb, _), (ma, _) = self.stats
        return self.significant and ((ma > mb) if self.metric == "latency" else (ma < mb))

    def to_json(self) -> dict:
        (mb, ib), (ma, ia) = self.stats
        return {"scope": self.scope, "command": self.service, "metric": self.metric,
                "before": {"count": len(self.before), "median": mb, "iqr": ib},
                "after": {"count": len(self.after), "median": ma, "iqr": ia},
                "change_percent": self.change_percent, "beyond_spread": self.significant,
                "worse": self.worse}


@dataclass
class Comparison:
    before: Side
    after: Side
    pairs: list[tuple[Association | None, Association | None, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=list)

    @property
    def worse(self) -> bool:
        return any(c.worse for c in self.changes)


def _median_iqr(values: list[float]):
    if not values:
        return None, None
    v = sorted(values)
    return percentile(v, 50), percentile(v, 75) - percentile(v, 25)


def association_key(a: Association) -> tuple:
    return (a.requestor.ip, a.acceptor.ip, a.acceptor.port, a.calling_ae, a.called_ae)


def association_label(a: Association, n: int) -> str:
    return (f"{a.calling_ae or '?'} -> {a.called_ae or '?'} ({a.requestor.ip} -> "
            f"{a.acceptor}){f' #{n}' if n > 1 else ''}")


def match_associations(before: list[Association], after: list[Association]):
    """[(before or None, after or None, label)] in the order of the before capture."""
    queue: dict[tuple, list[Association]] = defaultdict(list)
    for a in after:
        queue[association_key(a)].append(a)
    seen: Counter = Counter()
    pairs = []
    for b in before:
        k = association_key(b)
        seen[k] += 1
        a = queue[k].pop(0) if queue[k] else None
        pairs.append((b, a, association_label(b, seen[k])))
    for k, rest in queue.items():
        for a in rest:
            seen[k] += 1
            pairs.append((None, a, association_label(a, seen[k])))
    return pairs


def operation_key(op: Operation, index: int) -> tuple:
    if op.sop_instance_uid and op.service in ("C-STORE", "N-CREATE", "N-SET", "N-GET", "N-ACTION",
                                               "N-DELETE", "N-EVENT-REPORT"):
        return (op.service, op.sop_instance_uid)
    return (op.service, index)


def operation_label(op: Operation, key: tuple) -> str:
    if isinstance(key[1], str):
        return f"{op.service} {key[1]}"
    return f"{op.service} #{key[1] + 1}"


def _keyed(ops: list[Operation]) -> dict[tuple, Operation]:
    count: Counter = Counter()
    out = {}
    for op in ops:
        key = operation_key(op, count[op.service])
        count[op.service] += 1
        out.setdefault(key, op)
    return out


def _status(op: Operation) -> tuple[str, int | None, str]:
    if op.final is None:
        return "unanswered", None, "no response"
    return op.final.info.category, op.final.status, op.final.info.meaning


def _contexts(a: Association) -> dict:
    """Abstract syntax (and its order among equals) -> (result, accepted transfer syntax)."""
    out, count = {}, Counter()
    for pc in a.presentation_contexts:
        k = (pc.abstract_syntax, count[pc.abstract_syntax])
        count[pc.abstract_syntax] += 1
        out[k] = (pc.result, pc.transfer_syntax)
    return out


def _syntax(uid: str | None) -> str | None:
    return None if uid is None else (uid_name(uid) or uid)


def compare_associations(b: Association, a: Association, label: str) -> list[Change]:
    ch: list[Change] = []

    def add(kind, what, before, after, worse):
        ch.append(Change(kind, what, before, after, worse, label, b.id, a.id))

    if b.outcome != a.outcome:
        add("association-outcome", "association", b.outcome, a.outcome,
            OUTCOME_RANK.get(a.outcome, 1) > OUTCOME_RANK.get(b.outcome, 1))
    cb, ca = _contexts(b), _contexts(a)
    for k in list(cb) + [k for k in ca if k not in cb]:
        rb, tb = cb.get(k, (None, None))
        ra, ta = ca.get(k, (None, None))
        name = _syntax(k[0]) or "?"
        if k not in ca or k not in cb:
            add("presentation-context", f"{name} proposed", k in cb, k in ca, False)
            continue
        if (rb == 0) != (ra == 0):
            add("presentation-context", f"{name}", pc_result(rb), pc_result(ra), rb == 0)
        elif rb == 0 and tb != ta:
            add("transfer-syntax", f"{name}", _syntax(tb), _syntax(ta), False)
    ob, oa = _keyed(b.operations), _keyed(a.operations)
    for key in list(ob) + [k for k in oa if k not in ob]:
        x, y = ob.get(key), oa.get(key)
        what = operation_label(x or y, key)
        if y is None:
            add("operation-missing", what, _status(x)[0], None, True)
        elif x is None:
            add("operation-new", what, None, _status(y)[0], STATUS_RANK.get(_status(y)[0], 2) > 0)
        else:
            (cx, sx, mx), (cy, sy, my) = _status(x), _status(y)
            if sx != sy:
                add("status", what, _status_text(sx, mx), _status_text(sy, my),
                    STATUS_RANK.get(cy, 2) > STATUS_RANK.get(cx, 2))
    return ch


def pc_result(r: int | None) -> str:
    if r is None:
        return "no answer"
    return "accepted" if r == 0 else f"rejected ({PC_RESULTS.get(r, r)})"


def _status_text(status: int | None, meaning: str) -> str:
    return meaning if status is None else f"0x{status:04X} {meaning}"


def _finding_keys(side: Side, labels: dict[int, str]) -> Counter:
    return Counter((f.code, f.severity, labels.get(f.association) if f.association is not None else None)
                   for f in side.findings)


def _timings(pairs) -> list[Timing]:
    per: dict[tuple, tuple[list, list]] = {}
    for b, a, label in pairs:
        for side, assoc in ((0, b), (1, a)):
            if assoc is None:
                continue
            for op in assoc.operations:
                latency = op.latency
                if latency is None:
                    continue
                # what the sender achieves: data set bytes over the whole operation, response
                # included (bytes over the transfer alone moves with TCP's delayed ACKs, not the peer)
                rate = op.dataset_bytes / latency if op.dataset_bytes and latency > 0 else None
                for scope in (label, "all"):
                    per.setdefault((scope, op.service, "latency"), ([], []))[side].append(latency)
                    if rate is not None:
                        per.setdefault((scope, op.service, "throughput"), ([], []))[side].append(rate)
    return [Timing(s, svc, m, xs, ys) for (s, svc, m), (xs, ys) in per.items() if xs and ys]


def compare(before: Side, after: Side) -> Comparison:
    """Everything that changed from ``before`` to ``after``."""
    c = Comparison(before, after)
    c.pairs = match_associations(before.analysis.associations, after.analysis.associations)
    labels_b, labels_a = {}, {}
    for b, a, label in c.pairs:
        if b is not None:
            labels_b[b.id] = label
        if a is not None:
            labels_a[a.id] = label
        if a is None:
            c.changes.append(Change("association-missing", "association", b.outcome, None, True,
                                    label, b.id, None))
        elif b is None:
            c.changes.append(Change("association-new", "association", None, a.outcome,
                                    OUTCOME_RANK.get(a.outcome, 1) > 0, label, None, a.id))
        else:
            c.changes += compare_associations(b, a, label)
    fb, fa = _finding_keys(before, labels_b), _finding_keys(after, labels_a)
    for key in list(fb) + [k for k in fa if k not in fb]:
        code, severity, label = key
        n_b, n_a = fb.get(key, 0), fa.get(key, 0)
        if n_a > n_b:
            c.changes.append(Change("finding-appeared", code, n_b, n_a, severity in WORSE_FINDING, label))
        elif n_b > n_a:
            c.changes.append(Change("finding-disappeared", code, n_b, n_a, False, label))
    c.timing = _timings(c.pairs)
    for t in c.timing:
        if t.significant:
            (mb, _), (ma, _) = t.stats
            c.changes.append(Change(t.metric, f"{t.service} {t.metric} (median)", mb, ma, t.worse,
                                    None if t.scope == "all" else t.scope))
    return c

