"""Two captures of one path (``analyze A B --same-traffic``): which TCP segments
left one capture point and never reached the other, which arrived altered, how
much delay the path between the points added, and the two clocks' offset.

How it works (docs/correlate.md has the reasoning and the limits):

- A segment is known at both points by its flow (the 4-tuple, so the path must be
  free of NAT), sequence and acknowledgement numbers, payload length and
  SYN/FIN/RST flags (the coarse key), and within that by its window and TCP
  options (the fine key: duplicate ACKs differ in their SACK blocks, a
  retransmission in its timestamp option).  Copies are paired by the fine key
  first, then what is left by the coarse key (a middlebox that rewrote options
  or the window: counted as altered, as is a payload whose CRC-32 differs).
- Copies of one key are paired by their IPv4 identification first (a copy that
  reached the other point still carries its own; Linux gives a retransmission a new
  one), then in time: each copy at the receiving point goes with the latest unpaired
  copy the sending point saw before it arrived.  Time alone cannot tell apart two
  copies sent within the pairing slack (a fast retransmission 0.1 ms after its
  original, same timestamp option): which one was lost is then a guess.
- Clock offset: with ``c`` the seconds to add to the second capture's times, a
  segment going from point 1 to point 2 shows ``t2 - t1 = delay - c`` and one
  going the other way ``t2 - t1 = -delay - c``.  The smallest delay of each
  direction is the path's bare propagation time; assuming it is the same both
  ways, ``c = -(F + B) / 2`` where ``F`` is the smallest ``t2 - t1`` from point 1
  to point 2 and ``B`` the largest the other way (the NTP argument, with minima
  instead of single samples).  Which way a connection's directions go falls out
  of the same numbers: the direction with the larger ``t2 - t1`` flows from
  point 1 to point 2.
"""

from __future__ import annotations

import statistics
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dicomtrace.capture import open_capture
from dicomtrace.net import NetStats, decode_batch
from dicomtrace.net.decode import TCP_FIN, TCP_RST, TCP_SYN, V6_FLAG, format_ip

KEY_FLAGS = TCP_SYN | TCP_FIN | TCP_RST
PAIR_SLACK = 0.0005  # s: a copy may seem to arrive this much before it left (clock estimate error)


@dataclass(slots=True)
class Copy:
    """One sighting of a segment at one capture point."""

    frame: int
    time: float
    crc: int  # of the payload
    fine: tuple  # (window, CRC-32 of the TCP options)
    ip_id: int | None = None  # IPv4 identification (RFC 791); None for IPv6 and for 0
    partner: "Copy | None" = None


@dataclass
class PointSegments:
    """Every TCP segment one capture point saw, by direction and key."""

    path: str
    first_time: float | None
    last_time: float | None
    # (src, sport, dst, dport) -> (seq, ack, len, flags) -> copies in capture order
    flows: dict[tuple, dict[tuple, list[Copy]]] = field(default_factory=dict)


@dataclass
class Direction:
    src: tuple[str, int]
    dst: tuple[str, int]
    sender_point: int  # 0: the first capture is nearer the sender; 1: the second
    segments: int = 0
    lost_frames: list[int] = field(default_factory=list)
    altered_frames: list[int] = field(default_factory=list)
    appeared_frames: list[int] = field(default_factory=list)  # at the receiving point only
    delays: list[float] = field(default_factory=list)
    recovery: list[tuple[float, float]] = field(default_factory=list)  # lost copy sent -> resent copy arrived

    @property
    def recovery_time(self) -> float:
        """Seconds in which some lost segment was waiting for its resent copy (a union)."""
        total, end = 0.0, None
        for a, b in sorted(self.recovery):
            if end is None or a > end:
                total += b - a
                end = b
            elif b > end:
                total += b - end
                end = b
        return total

    @property
    def added_delay(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None


@dataclass
class SameTraffic:
    clock_offset: float | None
    min_one_way_delay: float | None
    directions: list[Direction]
    unpaired_flows: int  # directions seen at one point only (another path, or NAT)
    dominant: str | None = None
    budget: dict[str, float] = field(default_factory=dict)


def read_point(path: str) -> PointSegments:
    """The TCP segments of one capture, keyed for pairing (capture and net stages only)."""
    reader = open_capture(path)
    net = NetStats()
    flows: dict[tuple, dict[tuple, list[Copy]]] = {}
    try:
        for batch in reader.batches():
            s = decode_batch(batch, net)
            data = memoryview(s.data)
            crc32 = zlib.crc32
            # the net stage gives numpy arrays: Python values for keys and records
            frame, time_, src, dst, sport, dport, seq, ack, flags, window, poff, plen, missing, \
                _wire = s.columns()
            toff = s.toff.tolist()
            ip_ids = _ip_ids(s)
            for i in range(len(s)):
                fk = (src[i], sport[i], dst[i], dport[i])
                n, p = plen[i], poff[i]
                key = (seq[i], ack[i], n + missing[i], flags[i] & KEY_FLAGS)
                fine = (window[i], crc32(data[toff[i] + 20:p]))
                flows.setdefault(fk, {}).setdefault(key, []).append(
                    Copy(frame[i], time_[i], crc32(data[p:p + n]) if n else 0, fine, ip_ids[i] or None))
        return PointSegments(path, reader.first_time, reader.last_time, flows)
    finally:
        reader.close()


def _ip_ids(s) -> list[int]:
    """The IPv4 identification (RFC 791 3.1) of each segment of a batch, 0 for IPv6."""
    b = np.frombuffer(s.data, dtype=np.uint8)
    v4 = np.array([a < V6_FLAG for a in s.src.tolist()], dtype=bool) if s.src.dtype == object \
        else np.ones(len(s), dtype=bool)
    p = s.noff[v4]
    ids = np.zeros(len(s), dtype=np.int64)
    ids[v4] = (b[p + 4].astype(np.int64) << 8) | b[p + 5]
    return ids.tolist()


def _single_differences(one: dict, two: dict) -> list[float]:
    """t2 - t1 of the segments seen exactly once at each point (by the fine key)."""
    out = []
    for key, c1 in one.items():
        c2 = two.get(key)
        if c2 is None:
            continue
        f1, f2 = Counter(c.fine for c in c1), Counter(c.fine for c in c2)
        for x in c1:
            if f1[x.fine] == 1 and f2[x.fine] == 1:
                y = next(c for c in c2 if c.fine == x.fine)
                out.append(y.time - x.time)
    return out


def estimate_offset(p1: PointSegments, p2: PointSegments):
    """(clock offset, smallest one-way delay, {flow: index of the point nearer its sender}).

    The offset is ``None`` when no connection was seen both ways at both points."""
    lo: dict[tuple, float] = {}
    hi: dict[tuple, float] = {}
    for fk, keys in p1.flows.items():
        d = _single_differences(keys, p2.flows.get(fk, {}))
        if d:
            lo[fk], hi[fk] = min(d), max(d)
    forward, backward = [], []
    sender_point: dict[tuple, int] = {}
    for fk in lo:
        rev = (fk[2], fk[3], fk[0], fk[1])
        if rev not in lo or fk in sender_point:
            continue
        if lo[fk] - hi[rev] >= lo[rev] - hi[fk]:
            fwd, bwd = fk, rev
        else:
            fwd, bwd = rev, fk
        sender_point[fwd], sender_point[bwd] = 0, 1
        forward.append(lo[fwd])
        backward.append(hi[bwd])
    if not forward:
        return None, None, sender_point
    f, b = min(forward), max(backward)
    return -(f + b) / 2, (f - b) / 2, sender_point


def _pair_copies(sent: list[Copy], received: list[Copy], to_sender_clock) -> None:
    """Pair the copies of one coarse key: by the fine key, then the rest by the coarse."""
    if len(sent) == 1 and len(received) == 1:
        if to_sender_clock(received[0].time) + PAIR_SLACK >= sent[0].time:
            sent[0].partner, received[0].partner = received[0], sent[0]
        return
    fines = {c.fine for c in sent} & {c.fine for c in received}
    for f in fines:
        _pair([c for c in sent if c.fine == f], [c for c in received if c.fine == f], to_sender_clock)
    _pair([c for c in sent if c.partner is None], [c for c in received if c.partner is None],
          to_sender_clock)


def _pair(sent: list[Copy], received: list[Copy], to_sender_clock) -> None:
    """Pair each received copy with the unpaired copy sent before it arrived that has its IPv4
    identification, else (IPv6, ids rewritten or zero) with the latest one."""
    for by_id in (True, False):
        for r in received:
            if r.partner is not None or (by_id and r.ip_id is None):
                continue
            arrived = to_sender_clock(r.time) + PAIR_SLACK
            best = None
            for s in sent:
                if s.time > arrived:
                    break
                if s.partner is None and (not by_id or s.ip_id == r.ip_id):
                    best = s
            if best is not None:
                best.partner, r.partner = r, best


def correlate(p1: PointSegments, p2: PointSegments) -> SameTraffic:
    """Pair the segments of two capture points of one path; see the module docstring."""
    offset, dmin, sender_point = estimate_offset(p1, p2)
    points = (p1, p2)
    directions = []
    flows = set(p1.flows) | set(p2.flows)
    unpaired = 0
    for fk in sorted(flows, key=lambda k: min(_first_frame(p.flows.get(k)) for p in points)):
        if fk not in sender_point:
            unpaired += 1
            continue
        if offset is None:
            continue
        k = sender_point[fk]
        sent_at, recv_at = points[k], points[1 - k]
        # times at the receiving point, on the sending point's clock
        shift = offset if k == 0 else -offset  # p2 -> p1 clock: +offset
        to_sender = (lambda t: t + shift)
        d = Direction((format_ip(fk[0]), fk[1]), (format_ip(fk[2]), fk[3]), k)
        sent_keys, recv_keys = sent_at.flows.get(fk, {}), recv_at.flows.get(fk, {})
        lo = None if recv_at.first_time is None else recv_at.first_time + shift
        hi = None if recv_at.last_time is None else recv_at.last_time + shift
        # a receiving point that saw the connection open (a SYN) would have seen everything
        # sent on it since: a copy sent before its first packet (a first SYN dropped on the
        # way, resent a second later) is lost, not "before that capture began"
        saw_open = any(key[3] & TCP_SYN for key in recv_keys)
        for key, sent in sent_keys.items():
            received = recv_keys.get(key, [])
            _pair_copies(sent, received, to_sender)
            for s in sent:
                if s.partner is not None:
                    d.segments += 1
                    d.delays.append(to_sender(s.partner.time) - s.time)
                    if s.partner.crc != s.crc or s.partner.fine != s.fine:
                        d.altered_frames.append(s.frame)
                elif lo is not None and (saw_open or lo <= s.time + (dmin or 0)) \
                        and s.time + (dmin or 0) <= hi:
                    d.segments += 1
                    d.lost_frames.append(s.frame)
                    later = [to_sender(r.time) for r in received if to_sender(r.time) > s.time]
                    if later:
                        d.recovery.append((s.time, min(later)))
            d.appeared_frames += [r.frame for r in received if r.partner is None]
        for key, received in recv_keys.items():
            if key not in sent_keys:
                d.appeared_frames += [r.frame for r in received]
        for xs in (d.lost_frames, d.altered_frames, d.appeared_frames):
            xs.sort()
        directions.append(d)
    return SameTraffic(offset, dmin, directions, unpaired)


def _first_frame(keys: dict | None) -> int:
    if not keys:
        return 1 << 62
    return min(c[0].frame for c in keys.values())


def delay_budget(result: SameTraffic, first, second) -> None:
    """Where the time of the DICOM operations went: the network between the points,
    the receiver (acceptor) answering, or the sender (requestor) between requests.

    ``first``/``second``: the analyses (model) of the two captures.  For each operation
    seen at both points (association by its TCP 4-tuple, operation by message ID):
    receiver = its response delay at the acceptor's point (end of request -> response);
    network = its latency at the requestor's point minus its latency at the acceptor's
    (the path's round trip), plus the time lost segments waited for their resent copies;
    sender = the requestor's pause before the request (after the previous response).
    Fills ``result.budget`` (seconds, summed) and ``result.dominant``."""
    near = {(d.src, d.dst): d.sender_point for d in result.directions}
    analyses = (first, second)
    by_flow = [{(a.requestor.ip, a.requestor.port, a.acceptor.ip, a.acceptor.port): a
                for a in an.associations} for an in analyses]
    budget = {"network": sum(d.recovery_time for d in result.directions), "receiver": 0.0,
              "sender": 0.0}
    seen = False
    for flow, a0 in by_flow[0].items():
        a1 = by_flow[1].get(flow)
        k = near.get(((flow[0], flow[1]), (flow[2], flow[3])))
        if a1 is None or k is None:
            continue
        req, acc = (a0, a1) if k == 0 else (a1, a0)
        acc_ops = {(op.service, op.message_id): op for op in acc.operations}
        previous = req.accept_time
        for op in req.operations:
            other = acc_ops.get((op.service, op.message_id))
            if other is None or op.latency is None or other.latency is None:
                continue
            seen = True
            budget["receiver"] += max(other.response_delay or 0.0, 0.0)
            budget["network"] += max(op.latency - other.latency, 0.0)
            if previous is not None:
                budget["sender"] += max(op.request_time - previous, 0.0)
            previous = op.final.time
    if seen:
        result.budget = budget
        result.dominant = max(budget, key=budget.get)


def same_traffic_json(r: SameTraffic) -> dict:
    """The contract's ``same_traffic`` object (extra keys beside its own)."""
    out = {
        "min_one_way_delay": r.min_one_way_delay,
        "directions": [{
            "from": {"ip": d.src[0], "port": d.src[1]},
            "to": {"ip": d.dst[0], "port": d.dst[1]},
            "sender_capture": "first" if d.sender_point == 0 else "second",
            "segments": d.segments,
            "lost": len(d.lost_frames),
            "lost_frames": d.lost_frames,
            "altered": len(d.altered_frames),
            "altered_frames": d.altered_frames,
            "appeared": len(d.appeared_frames),
            "added_delay": d.added_delay,
            "loss_recovery_time": d.recovery_time,
        } for d in r.directions],
        "flows_seen_at_one_point_only": r.unpaired_flows,
    }
    if r.clock_offset is not None:  # unknown (no connection seen both ways at both points): absent
        out["clock_offset"] = r.clock_offset
    if r.dominant is not None:
        out["dominant"] = r.dominant
        out["time_budget"] = r.budget
    return out


def print_same_traffic(r: SameTraffic, console) -> None:
    """Terminal form: one line per direction, then the verdict."""
    from rich.table import Table

    console.print()
    if r.clock_offset is None:
        console.print("[bold]Same traffic[/bold]: no connection was seen both ways at both capture "
                      "points, so the clocks cannot be compared")
        return
    console.print(f"[bold]Same traffic[/bold] at two points: the second capture's clock is "
                  f"{-r.clock_offset * 1000:+.3f} ms from the first's; smallest one-way delay "
                  f"{r.min_one_way_delay * 1e6:.0f} µs")
    t = Table(header_style="bold", show_edge=False)
    for col in ("from", "to", "sent at", "segments", "lost", "altered", "appeared", "added delay",
                "lost frames (sender's capture)"):
        t.add_column(col)
    for d in r.directions:
        frames = ", ".join(map(str, d.lost_frames[:12])) + (" ..." if len(d.lost_frames) > 12 else "")
        t.add_row(f"{d.src[0]}:{d.src[1]}", f"{d.dst[0]}:{d.dst[1]}",
                  "first" if d.sender_point == 0 else "second", str(d.segments),
                  str(len(d.lost_frames)), str(len(d.altered_frames)), str(len(d.appeared_frames)),
                  "-" if d.added_delay is None else f"{d.added_delay * 1000:.3f} ms", frames)
    console.print(t)
    if r.unpaired_flows:
        console.print(f"{r.unpaired_flows} flow direction(s) seen at one point only (another path, "
                      "NAT, or outside the other capture)")
    if r.dominant:
        parts = ", ".join(f"{k} {v:.3f} s" for k, v in r.budget.items())
        console.print(f"Time of the DICOM operations: {parts}: the [bold]{r.dominant}[/bold] dominates")
