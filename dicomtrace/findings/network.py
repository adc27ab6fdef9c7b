"""TCP findings, raised only where they touched DICOM operations."""

from __future__ import annotations

from dicomtrace.findings.association import label
from dicomtrace.findings.base import Finding, completing_frame
from dicomtrace.model.association import Association, Operation
from dicomtrace.net import format_ip

ZERO_WINDOW_MIN = 0.2  # s a side must advertise a zero window in total to matter
ZERO_WINDOW_SHARE = 0.10
RETRANS_WARN_SHARE = 0.01
STALL_WARN_SHARE = 0.10  # of the association's time lost to Nagle / delayed-ACK stalls ...
STALL_WARN_MIN = 0.5  # ... and at least this many seconds: then a warning, else a note


def _ops_during(a: Association, times: list[float]) -> list[Operation]:
    out = []
    for op in a.operations:
        end = op.final.time if op.final else a.end_time
        if any(op.request_time <= t <= end for t in times):
            out.append(op)
    return out


def _ops_at_frames(a: Association, frames: list[int]) -> list[Operation]:
    """Operations in progress (request's first frame to final response) at those frames."""
    out = []
    for op in a.operations:
        end = completing_frame(op.final) if op.final else a.conn.last_frame
        if any(op.request_frame <= f <= end for f in frames):
            out.append(op)
    return out


def spurious_retransmissions(h) -> int:
    """The tcp layer's count of retransmissions of data already acknowledged (0 before it
    counted them)."""
    return getattr(h, "spurious_retransmissions", 0)


def _ops_text(ops: list[Operation]) -> str:
    if not ops:
        return ""
    return (" Operations affected: " + ", ".join(f"{op.service} message {op.message_id}"
                                                for op in ops[:6])
            + (f" and {len(ops) - 6} more" if len(ops) > 6 else "") + ".")


def _side(a: Association, half) -> str:
    """requestor/acceptor name of the side that sent a TCP half."""
    c = a.conn
    client_sent = half is c.client_to_server
    client_is_requestor = a.requestor.port == c.client_port
    return "requestor" if client_sent == client_is_requestor else "acceptor"


def network(analysis) -> list[Finding]:
    out = []
    for a in analysis.associations:
        c = a.conn
        halves = (c.client_to_server, c.server_to_client)
        # retransmissions
        rts = sum(h.retransmitted_segments for h in halves)
        if rts:
            pk = sum(h.packets for h in halves) or 1
            samples = [x for h in halves for x in h.retransmissions]
            ops = _ops_during(a, [t for _f, t in samples])
            # resends of data the receiver already had (D-SACK, tail-loss probes): counted as
            # tshark does, but they are not packet loss (tcp/: spurious_retransmissions)
            spurious = sum(spurious_retransmissions(h) for h in halves)
            lost = rts - spurious
            share = lost / pk
            severity = ("warning" if lost and (share >= RETRANS_WARN_SHARE or lost >= 10)
                        else "note")
            msg = (f"{rts} TCP segment(s) of {label(a)} were retransmitted "
                   f"({sum(h.retransmitted_bytes for h in halves)} bytes, {rts / pk:.1%} of its "
                   f"packets): {c.client_to_server.retransmitted_segments} from the client, "
                   f"{c.server_to_client.retransmitted_segments} from the server.")
            if spurious:
                msg += (f" {spurious} of them were spurious: the receiver already had that data "
                        "(the sender resent too early, or probed the tail), which is not loss.")
            msg += _ops_text(ops)
            hint = ("Packets were lost between the two hosts (or the capture point sees "
                    "duplicates). Each loss costs the sender at least a round trip, often a "
                    "retransmission timeout of 200 ms or more. Check the path for congestion, "
                    "duplex mismatches, faulty cables or Wi-Fi, and interface error counters."
                    if lost else
                    "No packet was lost: the sender resent data the receiver had already "
                    "received (a retransmission timer shorter than the path's delay, or "
                    "tail-loss probes). Harmless unless frequent; a slow receiver or a "
                    "delay spike on the path makes them.")
            out.append(Finding(
                "tcp-retransmissions", severity, msg, hint,
                a.id, [f for f, _t in samples[:20]], [op.message_id for op in ops],
                details={"segments": rts, "spurious": spurious}))
        # data never captured
        missing = sum(h.missing_bytes for h in halves)
        if missing:
            hurt = [op for op in a.operations if op.has_data_set and op.dataset_lost]
            gaps = sum(h.gaps for h in halves)
            msg = (f"{missing} bytes of {label(a)} were never captured ({gaps} gap(s)); "
                   + (f"{len(hurt)} data set(s) are incomplete in this capture." if hurt else
                      "no data set was hit, but decoding had to skip ahead."))
            out.append(Finding(
                "tcp-data-missing", "error" if hurt else "warning", msg,
                "The receiver acknowledged bytes this capture does not contain: the capture "
                "dropped packets (tcpdump's “dropped by kernel”, an oversubscribed span port, a "
                "snap length too short) rather than the network. Capture with a larger buffer "
                "(-B), a BPF filter on the DICOM hosts, on the host itself, and -s 0.",
                a.id, [f for h in halves for f in h.gap_frames[:10]]
                + [op.request_frame for op in hurt[:10]],
                [op.message_id for op in hurt]))
        # zero window
        dur = max(c.end_time - c.start_time, 1e-9)
        for h in halves:
            if h.zero_window_events and (h.zero_window_time >= ZERO_WINDOW_MIN
                                         and h.zero_window_time >= ZERO_WINDOW_SHARE * dur):
                who = _side(a, h)
                slowed = _ops_at_frames(a, h.zero_window_frames)
                msg = (f"The {who} of {label(a)} advertised a zero TCP receive window "
                       f"{h.zero_window_events} time(s), {h.zero_window_time:.2f} s in all "
                       f"({h.zero_window_time / dur:.0%} of the connection): the sender had to "
                       "stop and wait." + _ops_text(slowed).replace("affected", "slowed"))
                out.append(Finding(
                    "tcp-zero-window", "warning", msg,
                    f"The {who}'s application did not read from the network fast enough: it "
                    "was slow to store or process data (disk, database, CPU), or paused. Look "
                    f"at the {who}'s load and storage latency at that time.",
                    a.id, h.zero_window_frames[:20], [op.message_id for op in slowed],
                    details={"side": who, "seconds": h.zero_window_time}))
        # resets that ended the association
        rst = [h for h in halves if h.reset_frame is not None]
        if rst and a.outcome == "reset":
            first = min(rst, key=lambda h: h.reset_frame)
            who = _side(a, first)
            flying = [op for op in a.operations if op.final is None]
            out.append(Finding(
                "tcp-reset", "error",
                f"The {who} reset the TCP connection of {label(a)} (frame {first.reset_frame})"
                + (f" while {len(flying)} operation(s) were unanswered." if flying else "."),
                f"A reset from the {who} means its TCP stack or application dropped the "
                "connection: a crash or restart, a timeout that closes sockets hard, or a "
                "firewall between the hosts injecting resets. Check its log and any firewall.",
                a.id, [first.reset_frame] + [op.request_frame for op in flying[:10]],
                [op.message_id for op in flying]))
        # idle gaps inside operations
        if a.idle_gaps:
            longest = max(a.idle_gaps, key=lambda g: g.end - g.start)
            samples = [t for h in halves for _f, t in h.retransmissions]
            after_loss = any(abs(t - longest.end) < 0.05 for t in samples)
            msg = (f"{len(a.idle_gaps)} silence(s) inside operations on {label(a)}; the longest "
                   f"lasted {longest.end - longest.start:.2f} s, waiting for {longest.waiting}"
                   + (f" (message {', '.join(map(str, longest.message_ids))})"
                      if longest.message_ids else "")
                   + (", and ended with a retransmission: packet loss and a retransmission "
                      "timeout." if after_loss else "."))
            out.append(Finding(
                "idle-gap", "warning", msg,
                "Nothing crossed the wire while an operation was in progress: the side being "
                "waited for was busy or stalled (see its log at that time), or packets were "
                "lost and waited for a retransmission timeout (see tcp-retransmissions).",
                a.id, [g.frame for g in a.idle_gaps[:20]],
                sorted({m for g in a.idle_gaps for m in g.message_ids}),
                details={"longest_s": longest.end - longest.start}))
    return out


def _implementation(a: Association, side: str) -> str:
    name = (a.implementation.get(side) or {}).get("version_name")
    return f" ({name})" if name else ""


def delayed_ack_stall(analysis) -> list[Finding]:
    """Nagle on the sender and delayed ACKs on the receiver (tcp/stalls.py, RFC 896)."""
    out = []
    for a in analysis.associations:
        c = a.conn
        halves = [h for h in (c.client_to_server, c.server_to_client) if h.stalls]
        if not halves:
            continue
        total = sum(h.stall_time for h in halves)
        count = sum(h.stalls for h in halves)
        dur = max(a.end_time - a.start_time, 1e-9)
        severity = ("warning" if total >= STALL_WARN_SHARE * dur and total >= STALL_WARN_MIN
                    else "note")
        parts, senders, frames, times, by_side = [], [], [], [], {}
        for h in halves:
            who = _side(a, h)
            peer = "acceptor" if who == "requestor" else "requestor"
            senders.append(who)
            samples = h.stall_samples
            listed = ", ".join(f"{s.cost * 1000:.1f} ms at frame {s.frame}" for s in samples[:6])
            more = f" and {h.stalls - 6} more" if h.stalls > 6 else ""
            parts.append(f"the {who} waited {h.stalls} time(s), {h.stall_time * 1000:.1f} ms in "
                         f"all, for the {peer}'s ACK of a small segment before sending the rest "
                         f"({listed}{more})")
            frames += [f for s in samples[:10] for f in (s.frame, s.resume_frame)]
            times += [s.time for s in samples]
            by_side[who] = {"stalls": h.stalls, "seconds": h.stall_time,
                            "durations_ms": [round(s.cost * 1000, 1) for s in samples]}
        ops = _ops_during(a, times)
        msg = (f"{count} Nagle / delayed-ACK stall(s) on {label(a)} cost "
               f"{total * 1000:.1f} ms, {total / dur:.0%} of its {dur:.3f} s: " + "; ".join(parts)
               + "." + _ops_text(ops))
        who = "; ".join(f"the {w}{_implementation(a, w)} sent, the "
                        f"{'acceptor' if w == 'requestor' else 'requestor'}"
                        f"{_implementation(a, 'acceptor' if w == 'requestor' else 'requestor')}"
                        " delayed its ACK" for w in senders)
        hint = (f"Who stalls: {who}. The sender wrote a PDU or PDV header as a segment of its "
                "own, and its TCP stack held the rest of the message back (Nagle's algorithm) "
                "until the peer acknowledged it, while the peer delayed that ACK (40 ms on "
                "Linux, up to 200 ms on Windows and many devices). Set TCP_NODELAY on the "
                "sending implementation: dcmtk 3.6.7 leaves Nagle on unless the environment "
                "sets TCP_NODELAY=1; for other products check the vendor's network settings. "
                "Turning delayed ACKs off on the receiver also helps. Each small message loses "
                "one such wait: a study of a thousand small objects loses tens of seconds.")
        out.append(Finding("tcp-delayed-ack-stall", severity, msg, hint, a.id, frames,
                           [op.message_id for op in ops],
                           details={"stalls": count, "seconds": total, "share": total / dur,
                                    "sides": by_side}))
    return out


def connection_attempts(analysis) -> list[Finding]:
    """Connections to a DICOM port that never carried any data: refused or unanswered."""
    out = []
    assoc_conns = {a.conn.id for a in analysis.associations}
    # DICOM servers: the configured ports, and every acceptor's address and port (an
    # association found by the heuristic on another port shows that one is DICOM too)
    servers = {(a.acceptor.ip, a.acceptor.port) for a in analysis.associations}
    failed: dict[tuple, list] = {}
    for c in analysis.connections:
        if c.id in assoc_conns or c.oriented_by != "syn" or (
                c.server_port not in analysis.ports
                and (format_ip(c.server_ip), c.server_port) not in servers):
            continue
        if c.client_to_server.payload_bytes or c.server_to_client.payload_bytes:
            continue
        s2c = c.server_to_client
        if s2c.packets == 0:
            kind = "unanswered"
        elif s2c.reset_frame is not None and s2c.isn is None:
            kind = "refused"
        else:
            continue
        key = (kind, format_ip(c.client_ip), format_ip(c.server_ip), c.server_port)
        failed.setdefault(key, []).append(c)
    for (kind, client, server, port), conns in failed.items():
        dest = f"[{server}]:{port}" if ":" in server else f"{server}:{port}"
        # a SYN that a reset answers ends an attempt, and a client that tries again with the
        # same port and sequence number is the same TCP connection: count the resets
        attempts = (sum(max(c.server_to_client.resets, 1) for c in conns) if kind == "refused"
                    else len(conns))
        if kind == "refused":
            msg = (f"{attempts} connection attempt(s) from {client} to the DICOM port {dest} "
                   "were refused (reset).")
            hint = ("Nothing listens on that port at that address: the DICOM service is stopped, "
                    "or the port configured on the sender is wrong, or a firewall rejects it.")
        else:
            msg = (f"{attempts} connection attempt(s) from {client} to the DICOM port {dest} "
                   "got no answer at all.")
            hint = ("The packets do not reach the destination or its answers do not come back: "
                    "a wrong IP address, the host down, or a firewall dropping the traffic.")
        out.append(Finding(f"connection-{kind}", "error", msg, hint, None,
                           [c.first_frame for c in conns[:20]] + [
                               c.server_to_client.reset_frame for c in conns[:20]
                               if c.server_to_client.reset_frame is not None],
                           details={"client": client, "server": server, "port": port,
                                    "attempts": attempts}))
    return out


RULES = [network, delayed_ack_stall, connection_attempts]
