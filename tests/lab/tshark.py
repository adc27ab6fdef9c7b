"""tshark as the referee, and checks of `dicomtrace conversations` against it."""

from __future__ import annotations

import functools
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lab.base import LabError, run
from lab.capture import capinfos
from lab.cli import run_dicomtrace

# --------------------------------------------------------------------------
# tshark as the referee
# --------------------------------------------------------------------------

def tshark(*args: str, timeout: float = 300) -> str:
    res = run(["tshark", *args], timeout=timeout)
    return res.stdout.decode(errors="replace")


def _split_endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


_UNIT = {"bytes": 1, "kB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4}


def _tcp_frames(pcap, extra_filter: str = "", extra_fields: Sequence[str] = ()) -> list[list[str]]:
    """Per TCP frame: tcp.stream, src ip, src port, dst ip, dst port, frame.len, *extra."""
    args = ["-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f",
            "-e", "frame.number", "-e", "tcp.stream", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
            "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "frame.len"]
    for f in extra_fields:
        args += ["-e", f]
    args += ["-Y", f"tcp{(' && (' + extra_filter + ')') if extra_filter else ''}"]
    rows = []
    for line in tshark(*args).splitlines():
        cols = line.split("\t")
        if len(cols) < 9 or not cols[1]:
            continue
        frame, stream, s4, s6, sp, d4, d6, dp, flen = cols[:9]
        rows.append([int(frame), int(stream), s4 or s6, int(sp), d4 or d6, int(dp), int(flen), *cols[9:]])
    return rows


def tshark_conv_tcp(pcap) -> list[dict]:
    """tshark -q -n -r PCAP -z conv,tcp as dicts (in tshark's order).

    Each: {"a": {"ip","port"}, "b": {"ip","port"}, "frames_a_to_b",
    "bytes_a_to_b", "frames_b_to_a", "bytes_b_to_a", "frames", "bytes",
    "rel_start", "duration", "streams": [tcp.stream indices]}.
    tshark 4.0 prints byte counts truncated to SI units ("10 kB" for 10673); exact
    byte counts are taken from frame.len of each TCP frame (which is what
    conv counts) and checked against tshark's rounded text and exact frame
    counts. The "->" column is frames from A to B, "<-" from B to A.
    """
    text = tshark("-q", "-n", "-r", str(pcap), "-z", "conv,tcp")
    convs = []
    for line in text.splitlines():
        if "<->" not in line:
            continue
        left, _, right = line.partition("<->")
        a = _split_endpoint(left.strip())
        tok = right.split()
        b = _split_endpoint(tok[0])
        nums = tok[1:]
        # frames, value, unit  x3, then rel_start, duration
        f_ba, v_ba, u_ba, f_ab, v_ab, u_ab, f_t, v_t, u_t, start, dur = nums[:11]
        convs.append({
            "a": {"ip": a[0], "port": a[1]}, "b": {"ip": b[0], "port": b[1]},
            "frames_b_to_a": int(f_ba), "frames_a_to_b": int(f_ab), "frames": int(f_t),
            "bytes_text": {"b_to_a": f"{v_ba} {u_ba}", "a_to_b": f"{v_ab} {u_ab}", "total": f"{v_t} {u_t}"},
            "rel_start": float(start), "duration": float(dur),
        })
    # exact bytes from the frames
    agg: dict = defaultdict(lambda: {"frames": Counter(), "bytes": Counter(), "streams": set()})
    for _frame, stream, sip, sport, dip, dport, flen, *_ in _tcp_frames(pcap):
        key = frozenset([(sip, sport), (dip, dport)])
        agg[key]["frames"][(sip, sport)] += 1
        agg[key]["bytes"][(sip, sport)] += flen
        agg[key]["streams"].add(stream)
    for c in convs:
        a, b = (c["a"]["ip"], c["a"]["port"]), (c["b"]["ip"], c["b"]["port"])
        g = agg.get(frozenset([a, b]))
        if g is None:
            raise LabError(f"conv {a}<->{b} not found among TCP frames")
        c["bytes_a_to_b"], c["bytes_b_to_a"] = g["bytes"][a], g["bytes"][b]
        c["bytes"] = c["bytes_a_to_b"] + c["bytes_b_to_a"]
        c["streams"] = sorted(g["streams"])
        if (g["frames"][a], g["frames"][b]) != (c["frames_a_to_b"], c["frames_b_to_a"]):
            raise LabError(f"conv {a}<->{b}: frame counts differ from tshark's fields: "
                           f"{c['frames_a_to_b']}/{c['frames_b_to_a']} vs {g['frames'][a]}/{g['frames'][b]}")
        for k, exact in (("a_to_b", c["bytes_a_to_b"]), ("b_to_a", c["bytes_b_to_a"]), ("total", c["bytes"])):
            v, u = c["bytes_text"][k].split()
            # tshark 4.0 truncates: 10673 bytes prints as "10 kB"
            approx = int(float(v)) * _UNIT[u]
            if not approx <= exact < approx + _UNIT[u]:
                raise LabError(f"conv {a}<->{b}: {k} bytes {exact} inconsistent with tshark's {v} {u}")
    return convs


def conv_directions(conv: dict, client: tuple[str, int]) -> dict:
    """Orient a tshark conv by a known client endpoint: frames/bytes c2s and s2c."""
    a = (conv["a"]["ip"], conv["a"]["port"])
    ab = (conv["frames_a_to_b"], conv["bytes_a_to_b"])
    ba = (conv["frames_b_to_a"], conv["bytes_b_to_a"])
    c2s, s2c = (ab, ba) if tuple(client) == a else (ba, ab)
    return {"c2s_packets": c2s[0], "c2s_bytes": c2s[1], "s2c_packets": s2c[0], "s2c_bytes": s2c[1]}


_MISSING_MARK = re.compile(rb"^\[(\d+) bytes missing in capture file\]\x00?$")


@dataclass
class Follow:
    """tshark follow,tcp,raw of one stream.

    node0/node1 as tshark prints them: node 0 is the source of the first
    packet of the stream in the capture (the SYN sender when the handshake was
    captured). data0/data1: bytes each node sent, in tshark's reassembly,
    without tshark's gap markers; gaps0/gaps1: [(offset in data, missing
    byte count)] where tshark reported bytes missing in the capture.
    client_to_server / server_to_client (and the gaps): oriented by the
    client given to tshark_follow_raw (default: node 0).
    """
    stream: int
    node0: tuple[str, int]
    node1: tuple[str, int]
    data0: bytes
    data1: bytes
    gaps0: list
    gaps1: list
    client: tuple[str, int]

    @property
    def _client_is_0(self) -> bool:
        return self.client == self.node0

    @property
    def server(self) -> tuple[str, int]:
        return self.node1 if self._client_is_0 else self.node0

    @property
    def client_to_server(self) -> bytes:
        return self.data0 if self._client_is_0 else self.data1

    @property
    def server_to_client(self) -> bytes:
        return self.data1 if self._client_is_0 else self.data0

    @property
    def client_gaps(self) -> list:
        return self.gaps0 if self._client_is_0 else self.gaps1

    @property
    def server_gaps(self) -> list:
        return self.gaps1 if self._client_is_0 else self.gaps0

    @property
    def client_missing(self) -> int:
        return sum(n for _, n in self.client_gaps)

    @property
    def server_missing(self) -> int:
        return sum(n for _, n in self.server_gaps)

    def __iter__(self):
        return iter((self.client_to_server, self.server_to_client))


def tshark_follow_raw(pcap, stream_index: int, client: tuple[str, int] | None = None) -> Follow:
    """Parse ``tshark -q -n -r PCAP -z follow,tcp,raw,N``.

    Format (tshark 4.0): header lines "Node 0: ip:port" and "Node 1: ip:port"
    between lines of '='; then one hex line per chunk of reassembled data;
    lines starting with a TAB are node 1's data, others node 0's. Where
    bytes are missing from the capture, tshark 4.0 puts the text
    "[N bytes missing in capture file]" plus a NUL byte into the raw data
    as its own line: those lines are removed here and kept as gaps.
    Returns a Follow, unpackable as (client->server, server->client).
    """
    text = tshark("-q", "-n", "-r", str(pcap), "-z", f"follow,tcp,raw,{stream_index}")
    node = {}
    chunks: dict[int, list[bytes]] = {0: [], 1: []}
    sizes = {0: 0, 1: 0}
    gaps: dict[int, list] = {0: [], 1: []}
    in_body = False
    for line in text.splitlines():
        m = re.match(r"^Node ([01]): (.*)$", line)
        if m:
            node[int(m.group(1))] = _split_endpoint(m.group(2).strip())
            in_body = True
            continue
        if not in_body or not line.strip() or line.startswith("=") or line.startswith("Follow:") \
                or line.startswith("Filter:"):
            continue
        who = 1 if line.startswith("\t") else 0
        hexs = line.strip()
        if not re.fullmatch(r"[0-9a-fA-F]*", hexs):
            raise LabError(f"unexpected follow line: {line[:80]!r}")
        chunk = bytes.fromhex(hexs)
        mark = _MISSING_MARK.match(chunk) if len(chunk) < 64 else None
        if mark:
            gaps[who].append((sizes[who], int(mark.group(1))))
            continue
        chunks[who].append(chunk)
        sizes[who] += len(chunk)
    if 0 not in node or 1 not in node:
        raise LabError(f"tshark follow of stream {stream_index}: no node lines")
    if node[0] == ("", 0) and node[1] == ("", 0):
        raise LabError(f"tshark follow: no tcp.stream {stream_index} in {pcap}")
    c = tuple(client) if client is not None else node[0]
    if c not in (node[0], node[1]):
        raise LabError(f"client {c} is not an endpoint of stream {stream_index}: {node}")
    return Follow(stream_index, node[0], node[1], b"".join(chunks[0]), b"".join(chunks[1]),
                  gaps[0], gaps[1], c)


def tshark_retransmissions(pcap, *, by_direction: bool = False) -> Counter:
    """Frames with tcp.analysis.retransmission, counted per tcp.stream.

    (tshark sets this flag on fast and spurious retransmissions too.) With
    by_direction=True, keys are (stream, (src ip, src port)).
    """
    counts: Counter = Counter()
    for _f, stream, sip, sport, *_ in _tcp_frames(pcap, "tcp.analysis.retransmission"):
        counts[(stream, (sip, sport)) if by_direction else stream] += 1
    return counts


def tshark_flag_counts(pcap, flag: str, *, by_direction: bool = False) -> Counter:
    """Frames matching a display filter (e.g. tcp.analysis.out_of_order), per tcp.stream
    (or per (stream, (src ip, src port)) with by_direction=True)."""
    counts: Counter = Counter()
    for _f, stream, sip, sport, *_ in _tcp_frames(pcap, flag):
        counts[(stream, (sip, sport)) if by_direction else stream] += 1
    return counts


def tshark_payload_bytes(pcap) -> Counter:
    """Sum of tcp.len per (stream, (src ip, src port)): every payload byte, retransmissions included."""
    counts: Counter = Counter()
    for _f, stream, sip, sport, _d, _dp, _fl, tlen in _tcp_frames(pcap, extra_fields=["tcp.len"]):
        counts[(stream, (sip, sport))] += int(tlen or 0)
    return counts


def tshark_streams(pcap) -> dict[int, dict]:
    """Per tcp.stream: first/last frame, first packet's src/dst, SYN sender (the client)
    if the SYN was captured, frame count, and the MSS / window-scale shift each side
    announced in its SYN or SYN/ACK: {"mss": {endpoint: value}, "wscale": {endpoint: shift}}."""
    out: dict[int, dict] = {}
    rows = _tcp_frames(pcap, extra_fields=["tcp.flags", "tcp.options.mss_val", "tcp.options.wscale.shift",
                                           "frame.time_epoch"])
    for frame, stream, sip, sport, dip, dport, _flen, flags, mss, ws, t in rows:
        s = out.setdefault(stream, {"first_frame": frame, "first_src": (sip, sport), "first_dst": (dip, dport),
                                    "syn_client": None, "frames": 0, "mss": {}, "wscale": {},
                                    "first_time": float(t), "last_frame": frame, "last_time": float(t)})
        s["frames"] += 1
        s["last_frame"], s["last_time"] = frame, float(t)
        fl = int(flags, 16) if flags else 0
        if fl & 0x02:
            if not fl & 0x10 and s["syn_client"] is None:
                s["syn_client"] = (sip, sport)
            if mss:
                s["mss"].setdefault((sip, sport), int(mss))
            if ws:
                s["wscale"].setdefault((sip, sport), int(ws))
    return out


def tshark_dicom_pdus(pcap, port: int) -> list[str]:
    """Decode as DICOM on port: one line per frame carrying DICOM PDUs (info column)."""
    return tshark("-n", "-r", str(pcap), "-d", f"tcp.port=={port},dicom", "-Y", "dicom",
                  "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Info").splitlines()


class TsharkReference:
    """What tshark says about one capture, each part computed once (tshark is slow-ish)."""

    def __init__(self, pcap):
        self.pcap = Path(pcap)

    @functools.cached_property
    def convs(self) -> list[dict]:
        return tshark_conv_tcp(self.pcap)

    @functools.cached_property
    def streams(self) -> dict[int, dict]:
        return tshark_streams(self.pcap)

    @functools.cached_property
    def retransmissions(self) -> Counter:
        """per (stream, src endpoint)"""
        return tshark_retransmissions(self.pcap, by_direction=True)

    @functools.cached_property
    def payload(self) -> Counter:
        """per (stream, src endpoint)"""
        return tshark_payload_bytes(self.pcap)

    @functools.cached_property
    def capinfos(self) -> dict:
        return capinfos(self.pcap)

    def flags(self, display_filter: str) -> Counter:
        """per (stream, src endpoint)"""
        if display_filter not in self._flags:
            self._flags[display_filter] = tshark_flag_counts(self.pcap, display_filter, by_direction=True)
        return self._flags[display_filter]

    def follow(self, stream: int) -> Follow:
        if stream not in self._follows:
            s = self.streams[stream]
            client = s["syn_client"] or s["first_src"]
            self._follows[stream] = tshark_follow_raw(self.pcap, stream, client=client)
        return self._follows[stream]

    @functools.cached_property
    def _flags(self) -> dict:
        return {}

    @functools.cached_property
    def _follows(self) -> dict:
        return {}

    def conv_for(self, a: tuple, b: tuple) -> dict:
        want = {normalize_endpoint(a), normalize_endpoint(b)}
        for c in self.convs:
            if {normalize_endpoint((c["a"]["ip"], c["a"]["port"])),
                    normalize_endpoint((c["b"]["ip"], c["b"]["port"]))} == want:
                return c
        raise KeyError(f"no tshark conversation {a} <-> {b}")

    def stream_starting_at(self, frame: int) -> int:
        for idx, s in self.streams.items():
            if s["first_frame"] == frame:
                return idx
        raise KeyError(f"no tcp.stream starts at frame {frame}")


def normalize_endpoint(ep) -> tuple[str, int]:
    """(ip, port) with the IP in canonical text form; accepts a {"ip","port"} dict too."""
    import ipaddress
    if isinstance(ep, dict):
        ep = (ep["ip"], ep["port"])
    ip, port = ep
    try:
        ip = ipaddress.ip_address(ip).compressed
    except ValueError:
        pass
    return ip, int(port)



# --------------------------------------------------------------------------
# checks of `dicomtrace conversations` against tshark (used by several test files)
# --------------------------------------------------------------------------

DIRECTION_KEYS = ("packets", "bytes", "payload_bytes", "retransmitted_segments", "retransmitted_bytes",
                  "out_of_order_segments", "missing_bytes", "gaps", "duplicate_acks", "zero_window_events",
                  "resets", "mss", "window_scale")
CONNECTION_KEYS = ("id", "client", "server", "oriented_by", "start_time", "end_time", "first_frame",
                   "last_frame", "state", "handshake_rtt", "client_to_server", "server_to_client")


def connection_stream(conn: dict, ref: TsharkReference) -> int:
    """The tshark tcp.stream of a dicomtrace connection (same first frame)."""
    return ref.stream_starting_at(conn["first_frame"])


def check_conversations(doc: dict, ref: TsharkReference, *, fmt: str | None = None,
                        path: str | None = None) -> None:
    """Connections, packets and bytes each way agree with tshark's conv,tcp.

    Also: the document's shape, ids 1..n in order of first packet, each
    connection's first/last frame equal to tshark's tcp.stream, client = SYN
    sender (oriented_by "syn") when the SYN was captured, capture.packets
    equal to capinfos.
    """
    assert doc["tool"]["name"] == "dicomtrace" and doc["tool"]["version"]
    cap = doc["capture"]
    for k in ("path", "format", "packets", "bytes", "first_time", "last_time", "problems"):
        assert k in cap, f"capture.{k} missing"
    if fmt is not None:
        assert cap["format"] == fmt
    if path is not None:
        assert cap["path"] == path
    assert cap["packets"] == int(ref.capinfos["Number of packets"])
    conns = doc["connections"]
    assert len(conns) == len(ref.streams), \
        f"{len(conns)} connections, tshark has {len(ref.streams)} tcp streams"
    assert len(conns) == len(ref.convs), f"{len(conns)} connections, tshark conv,tcp lists {len(ref.convs)}"
    assert [c["id"] for c in conns] == list(range(1, len(conns) + 1))
    firsts = [c["first_frame"] for c in conns]
    assert firsts == sorted(firsts) and len(set(firsts)) == len(firsts), "ids not in order of first packet"
    for c in conns:
        for k in CONNECTION_KEYS:
            assert k in c, f"connection {c.get('id')}: {k} missing"
        for side in ("client_to_server", "server_to_client"):
            for k in DIRECTION_KEYS:
                assert k in c[side], f"connection {c['id']} {side}.{k} missing"
        s = ref.streams[connection_stream(c, ref)]
        client, server = normalize_endpoint(c["client"]), normalize_endpoint(c["server"])
        assert {client, server} == {normalize_endpoint(s["first_src"]), normalize_endpoint(s["first_dst"])}
        assert c["last_frame"] == s["last_frame"], f"connection {c['id']}: last frame"
        if s["syn_client"] is not None:
            assert client == normalize_endpoint(s["syn_client"]), f"connection {c['id']}: client is not the SYN sender"
            assert c["oriented_by"] == "syn"
        else:
            assert c["oriented_by"] in ("port", "first-packet")
        d = conv_directions(ref.conv_for(client, server), client)
        got = {"c2s_packets": c["client_to_server"]["packets"], "c2s_bytes": c["client_to_server"]["bytes"],
               "s2c_packets": c["server_to_client"]["packets"], "s2c_bytes": c["server_to_client"]["bytes"]}
        assert got == d, f"connection {c['id']} {client}->{server}: dicomtrace {got} vs tshark conv,tcp {d}"


def check_dumps(dump_dir, doc: dict, ref: TsharkReference) -> dict[int, tuple[bytes, bytes]]:
    """conn-<id>-client.bin / -server.bin equal tshark's follow,tcp,raw (gap markers removed),
    and missing_bytes/gaps equal tshark's gap reports. Returns {id: (client bytes, server bytes)}."""
    dump_dir = Path(dump_dir)
    out = {}
    for c in doc["connections"]:
        stream = connection_stream(c, ref)
        f = ref.follow(stream)
        client = normalize_endpoint(c["client"])
        if normalize_endpoint(f.node0) == client:
            c2s, s2c, cg, sg = f.data0, f.data1, f.gaps0, f.gaps1
        elif normalize_endpoint(f.node1) == client:
            c2s, s2c, cg, sg = f.data1, f.data0, f.gaps1, f.gaps0
        else:
            raise AssertionError(f"connection {c['id']}: client {client} not in tshark stream {stream}")
        got = []
        for who, want, gaps in (("client", c2s, cg), ("server", s2c, sg)):
            p = dump_dir / f"conn-{c['id']}-{who}.bin"
            data = p.read_bytes() if p.exists() else None
            if data is None:
                assert want == b"", f"{p.name} not written, tshark follow has {len(want)} bytes"
                data = b""
            if data != want:
                i = next((i for i, (x, y) in enumerate(zip(data, want)) if x != y), min(len(data), len(want)))
                raise AssertionError(f"{p.name}: {len(data)} bytes, tshark follow {len(want)}; first difference "
                                     f"at offset {i}")
            side = c["client_to_server" if who == "client" else "server_to_client"]
            assert side["missing_bytes"] == sum(n for _, n in gaps), f"{p.name}: missing_bytes vs tshark {gaps}"
            assert side["gaps"] == len(gaps), f"{p.name}: gaps vs tshark {gaps}"
            got.append(data)
        out[c["id"]] = (got[0], got[1])
    return out


def run_conversations(capture, *, dump_dir=None, stdin: bytes | None = None) -> dict:
    """`dicomtrace conversations CAPTURE --format json [--dump-streams DIR]` -> parsed JSON (exit 0 checked)."""
    args = ["conversations", "-" if stdin is not None else capture, "--format", "json"]
    if dump_dir is not None:
        args += ["--dump-streams", dump_dir]
    res = run_dicomtrace(*args, input=stdin)
    return json.loads(res.stdout)
