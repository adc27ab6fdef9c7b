"""Timing and throughput of operations, associations, studies and series.

Pure functions over the model.  Definitions (seconds, bytes, bytes per second):

- request transfer: first frame of the request to the last frame of its data set;
- response delay: end of the request to the final response (time the responder took);
- latency: first frame of the request to the final response;
- operation throughput: data set bytes over the request transfer time;
- association throughput: TCP payload bytes both ways over the association's duration.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from dicomtrace.model.association import Association, Operation


@dataclass(slots=True)
class OperationTiming:
    transfer: float | None  # request first frame -> last frame of its data set
    response_delay: float | None
    latency: float | None
    bytes: int
    throughput: float | None  # data set bytes per second of transfer


@dataclass(slots=True)
class Distribution:
    count: int
    mean: float
    stdev: float
    p50: float
    p90: float
    p99: float
    max: float
    outliers: list[int] = field(default_factory=list)  # message IDs far above the rest


@dataclass(slots=True)
class AssociationMetrics:
    setup_time: float | None  # A-ASSOCIATE-RQ to -AC
    duration: float
    bytes_requestor: int  # TCP payload the requestor sent
    bytes_acceptor: int
    throughput: float | None  # payload bytes both ways / duration
    operations: int
    operations_per_second: float | None
    store_bytes: int  # C-STORE data set bytes
    store_throughput: float | None  # C-STORE data set bytes / time from first to last C-STORE
    store_latency: Distribution | None  # per-image time (request start to response)


@dataclass(slots=True)
class GroupMetrics:
    """The C-STOREs of one study or series."""

    uid: str
    objects: int
    bytes: int
    start: float
    end: float
    failures: int

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def throughput(self) -> float | None:
        return self.bytes / self.duration if self.duration > 0 else None


def operation_timing(op: Operation) -> OperationTiming:
    transfer = op.request_end_time - op.request_time if op.has_data_set else None
    nbytes = op.dataset_bytes or 0
    return OperationTiming(transfer, op.response_delay, op.latency, nbytes,
                           nbytes / transfer if transfer and transfer > 0 and nbytes else None)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in 0..100) of sorted ``values``."""
    if len(values) == 1:
        return values[0]
    k = (len(values) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def distribution(pairs: list[tuple[int, float]]) -> Distribution | None:
    """Summary of (message ID, seconds); outliers lie above Q3 + 3 IQR and twice the median."""
    if not pairs:
        return None
    vals = sorted(v for _m, v in pairs)
    q1, med, q3 = percentile(vals, 25), percentile(vals, 50), percentile(vals, 75)
    fence = max(q3 + 3 * (q3 - q1), 2 * med)
    return Distribution(
        count=len(vals), mean=statistics.fmean(vals),
        stdev=statistics.pstdev(vals) if len(vals) > 1 else 0.0,
        p50=med, p90=percentile(vals, 90), p99=percentile(vals, 99), max=vals[-1],
        outliers=[m for m, v in pairs if v > fence] if len(vals) >= 5 else [])


def association_metrics(a: Association) -> AssociationMetrics:
    c = a.conn
    client_is_requestor = a.requestor.port == c.client_port
    req_half, acc_half = ((c.client_to_server, c.server_to_client) if client_is_requestor
                          else (c.server_to_client, c.client_to_server))
    duration = max(a.end_time - a.start_time, 0.0)
    total = req_half.payload_bytes + acc_half.payload_bytes
    stores = [op for op in a.operations if op.service == "C-STORE" and op.has_data_set]
    store_bytes = sum(op.dataset_bytes or 0 for op in stores)
    store_span = None
    if stores:
        end = max((op.final.time if op.final else op.request_end_time) for op in stores)
        store_span = end - min(op.request_time for op in stores)
    return AssociationMetrics(
        setup_time=(a.accept_time - a.request_time
                    if a.accept_time is not None and a.request_time is not None else None),
        duration=duration,
        bytes_requestor=req_half.payload_bytes,
        bytes_acceptor=acc_half.payload_bytes,
        throughput=total / duration if duration > 0 else None,
        operations=len(a.operations),
        operations_per_second=len(a.operations) / duration if duration > 0 else None,
        store_bytes=store_bytes,
        store_throughput=store_bytes / store_span if store_span else None,
        store_latency=distribution([(op.message_id, op.latency) for op in stores
                                    if op.latency is not None]),
    )


def group_metrics(assocs: list[Association], key: str) -> list[GroupMetrics]:
    """C-STOREs grouped by ``StudyInstanceUID`` or ``SeriesInstanceUID`` of their data sets."""
    groups: dict[str, GroupMetrics] = {}
    for a in assocs:
        for op in a.operations:
            if op.service != "C-STORE" or not op.dataset:
                continue
            uid = op.dataset.attributes.get(key)
            if not uid:
                continue
            end = op.final.time if op.final else op.request_end_time
            failed = int(op.final is None or op.final.info.category == "failure")
            g = groups.get(uid)
            if g is None:
                groups[uid] = GroupMetrics(uid, 1, op.dataset_bytes or 0, op.request_time, end, failed)
            else:
                g.objects += 1
                g.bytes += op.dataset_bytes or 0
                g.start = min(g.start, op.request_time)
                g.end = max(g.end, end)
                g.failures += failed
    return sorted(groups.values(), key=lambda g: g.start)


STORE_OUTCOMES = ("stored", "refused", "failed", "unanswered", "incomplete")


def store_outcome(op: Operation) -> str:
    """What became of a C-STORE: "stored" (the receiver confirmed it: success or warning,
    PS3.4 B.2.3), "refused" (a Refused status: out of resources, SOP class not supported,
    not authorized), "failed" (another failure, or cancel), "unanswered" (the whole data
    set was sent, no final response), "incomplete" (the data set never went out whole)."""
    f = op.final
    if f is not None:
        if f.info.category in ("success", "warning"):
            return "stored"
        return "refused" if f.info.meaning.lower().startswith("refused") else "failed"
    if op.has_data_set and not op.dataset_complete:
        return "incomplete"
    return "unanswered"


def store_counts(assocs: list[Association]) -> dict[str, int]:
    """C-STOREs (C-GET sub-operations included) by :func:`store_outcome`."""
    counts = dict.fromkeys(STORE_OUTCOMES, 0)
    for a in assocs:
        for op in a.operations:
            if op.service == "C-STORE":
                counts[store_outcome(op)] += 1
    return counts


@dataclass(slots=True)
class Limitation:
    """What held a transfer back, with the figures that show it.

    ``kind``: "network-limited" (losses and retransmissions), "receiver-limited" (a closed
    or full receive window, or slow responses), "delayed-ack-limited" (Nagle on a sender
    and delayed ACKs on its peer: small segments waiting for ACKs, either direction),
    "sender-limited" (the sender idle between operations), or "not-limited" (none of
    these took a noticeable share of the time).
    """

    kind: str
    direction: str  # the data direction looked at: "requestor->acceptor" or the reverse
    duration: float
    retransmitted_share: float  # (retransmitted + out-of-order) / data segments
    retransmission_wait: float  # s the stream stood still before retransmissions
    zero_window_time: float  # s the receiver advertised a zero window
    window_limited_share: float  # data segments sent with the receiver's window (nearly) full
    response_wait: float  # s spent waiting for responses (sum of response delays)
    sender_idle: float  # s between a final response and the next request
    stall_time: float = 0.0  # s lost to Nagle / delayed-ACK stalls, both directions
    reasons: list[str] = field(default_factory=list)


NETWORK_SHARE = 0.01  # of data segments retransmitted or out of order
NETWORK_MIN = 3  # segments: one or two resends on a short transfer prove nothing
WAIT_SHARE = 0.10  # of the duration
WINDOW_SHARE = 0.30  # of data segments sent into a full window
SLOW_SHARE = 0.5  # of the duration spent waiting for responses, or idle
SLOW_MIN = 0.5  # s: below this the waiting is not worth naming


def limitation(a: Association) -> Limitation:
    c = a.conn
    # the data direction: the half that carried more payload
    h, r = ((c.client_to_server, c.server_to_client)
            if c.client_to_server.payload_bytes >= c.server_to_client.payload_bytes
            else (c.server_to_client, c.client_to_server))
    client_is_requestor = a.requestor.port == c.client_port
    sends_requestor = (h is c.client_to_server) == client_is_requestor
    direction = "requestor->acceptor" if sends_requestor else "acceptor->requestor"
    duration = max(a.end_time - a.start_time, 1e-9)
    segs = max(h.data_segments, 1)
    ops = sorted((op for op in a.operations if op.final is not None), key=lambda op: op.request_time)
    response_wait = sum(max(op.response_delay or 0.0, 0.0) for op in ops)
    idle = sum(max(nxt.request_time - cur.final.time, 0.0) for cur, nxt in zip(ops, ops[1:]))
    # on a short round trip a fast resend looks out of order (to Wireshark too): both count
    # spurious retransmissions (the receiver had the data) are not loss
    lost = (h.retransmitted_segments - getattr(h, "spurious_retransmissions", 0)
            + h.out_of_order_segments)
    lim = Limitation("not-limited", direction, duration, lost / segs,
                     h.retransmission_wait, r.zero_window_time, h.window_limited / segs,
                     response_wait, idle, c.client_to_server.stall_time + c.server_to_client.stall_time)
    if ((lost >= NETWORK_MIN and lim.retransmitted_share >= NETWORK_SHARE)
            or lim.retransmission_wait >= WAIT_SHARE * duration):
        lim.kind = "network-limited"
        lim.reasons.append(f"{h.retransmitted_segments} retransmitted and "
                           f"{h.out_of_order_segments} out-of-order of {h.data_segments} data "
                           f"segments ({lim.retransmitted_share:.1%}), the stream stood still "
                           f"{lim.retransmission_wait:.3f} s before retransmissions")
    elif (lim.zero_window_time >= WAIT_SHARE * duration
          or lim.window_limited_share >= WINDOW_SHARE
          or (response_wait >= SLOW_MIN and response_wait >= SLOW_SHARE * duration)):
        lim.kind = "receiver-limited"
        if lim.zero_window_time >= WAIT_SHARE * duration:
            lim.reasons.append(f"the receiver's window was closed {lim.zero_window_time:.3f} s "
                               f"({lim.zero_window_time / duration:.0%} of the time)")
        if lim.window_limited_share >= WINDOW_SHARE:
            lim.reasons.append(f"{lim.window_limited_share:.0%} of the data segments filled the "
                               "receiver's advertised window")
        if response_wait >= SLOW_MIN and response_wait >= SLOW_SHARE * duration:
            lim.reasons.append(f"{response_wait:.3f} s ({response_wait / duration:.0%} of the time) "
                               "waiting for responses")
    elif lim.stall_time >= WAIT_SHARE * duration:
        lim.kind = "delayed-ack-limited"
        lim.reasons.append(f"{c.client_to_server.stalls + c.server_to_client.stalls} small "
                           f"segment(s) waited for a delayed ACK, {lim.stall_time:.3f} s "
                           f"({lim.stall_time / duration:.0%} of the time): see "
                           "tcp-delayed-ack-stall")
    elif idle >= SLOW_MIN and idle >= SLOW_SHARE * duration:
        lim.kind = "sender-limited"
        lim.reasons.append(f"{idle:.3f} s ({idle / duration:.0%} of the time) between a response "
                           "and the next request")
    return lim
