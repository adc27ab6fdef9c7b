"""Issue #2: broken, truncated and wrong inputs, made by hand from a real capture.

Every input below is built with a few lines of byte manipulation from
/work/shared/captures/store_multi.pcap (169 frames, two associations: dcmtk
storescu with 5 C-STOREs in frames 1-133, pynetdicom with 2 C-STOREs in
frames 134-169), or from its pcapng / gzip versions. For each input both
`dicomtrace conversations X --format json` and `dicomtrace analyze X --format
json` run as subprocesses (all of them at once, in a thread pool) and:

* no traceback and no "internal error" (the CLI's catch-all) ever appears;
* the exit code is the documented one (dicomtrace/cli.py): 0 read and
  analysed, 1 analysed but parts could not be read, 2 nothing could be read;
* exit 2: nothing on stdout, exactly one line `dicomtrace: error: ...` on stderr;
  exit 0/1: complete JSON on stdout, and one stderr line
  `dicomtrace: warning|error: ...` per entry of capture.problems, naming the
  frame or byte offset (checked exactly where the corruption was put);
* what could be read before the damage (and after it, where the format lets
  a reader find the next record) is analysed as in the intact capture:
  connections, packet and byte counts, AE titles, operations, statuses.

Frames after a record that had to be skipped are numbered without it (the
reader cannot know how many records the damage swallowed), so comparisons
after the damage use contents, not frame numbers.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

import lab

BASE = lab.SHARED_CAPTURES / "store_multi.pcap"
COMMANDS = ("conversations", "analyze")

OP_KEYS = ("command", "message_id", "status", "status_category", "sop_class_uid", "sop_instance_uid",
           "presentation_context_id", "priority", "dataset_bytes", "dataset_complete")
RESPONSE_KEYS = ("status", "remaining", "completed", "failed", "warning")
DIRECTION_KEYS = ("packets", "bytes", "payload_bytes", "missing_bytes", "gaps", "retransmitted_segments")


# --------------------------------------------------------------------------
# the intact capture, taken apart once
# --------------------------------------------------------------------------

@dataclass
class Base:
    raw: bytes                  # the pcap file
    recs: list                  # lab.read_pcap records: ((sec, frac, incl, orig), data)
    offs: list[int]             # file offset of each record header
    ng: bytes                   # the same capture as pcapng (editcap)
    epbs: list[int]             # file offset of each enhanced packet block in ng (one per frame)
    tcp: list                   # per frame: (src (ip, port), dst (ip, port), payload length) or None

    @property
    def n(self) -> int:
        return len(self.recs)


def _tcp_of(data: bytes):
    """(src, dst, TCP payload length) of an Ethernet/IPv4/TCP frame, else None (no tshark needed)."""
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        return None
    ip = data[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 6:
        return None
    total = struct.unpack(">H", ip[2:4])[0]
    tcp = ip[ihl:]
    sport, dport = struct.unpack(">HH", tcp[:4])
    doff = (tcp[12] >> 4) * 4
    src = (".".join(map(str, ip[12:16])), sport)
    dst = (".".join(map(str, ip[16:20])), dport)
    return src, dst, total - ihl - doff


def _pcapng_blocks(ng: bytes) -> list[tuple[int, int, int]]:
    out, p = [], 0
    while p + 8 <= len(ng):
        btype, blen = struct.unpack_from("<II", ng, p)
        out.append((p, btype, blen))
        p += blen
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    if not BASE.is_file():
        pytest.skip(f"{BASE} not available")
    raw = BASE.read_bytes()
    hdr, recs = lab.read_pcap(BASE)
    assert hdr["endian"] == "<" and hdr["linktype"] == lab.LINKTYPE_ETHERNET
    offs, o = [], 24
    for (_h, data) in recs:
        offs.append(o)
        o += 16 + len(data)
    assert o == len(raw)
    ng_path = lab.to_pcapng(BASE, tmp_path_factory.mktemp("bad_base") / "store_multi.pcapng")
    ng = ng_path.read_bytes()
    epbs = [p for p, t, _l in _pcapng_blocks(ng) if t == 6]
    assert len(epbs) == len(recs)
    return Base(raw, recs, offs, ng, epbs, [_tcp_of(d) for _h, d in recs])


# --------------------------------------------------------------------------
# the inputs
# --------------------------------------------------------------------------

@dataclass
class Made:
    """What a case built: the argument to pass, stdin, and what is known about the damage."""
    arg: str
    stdin: bytes | None = None
    prefix: int | None = None        # frames 1..prefix are intact and everything else was lost
                                     # (-1: the frames read, whatever their number, are such a prefix)
    skipped: int | None = None       # 0-based index of the one record that is lost; all others intact
    packets: int | None = None       # capture.packets expected exactly
    where: tuple | None = None       # (frame, offset) the first problem must name
    note: str = ""


@dataclass
class Case:
    name: str
    exit: int
    build: Callable[[Base, Path], Made]
    message: str = ""                # regex the stderr must match
    problems: int | None = None      # exact number of problem lines, when known
    marks: dict = field(default_factory=dict)   # test name -> pytest mark (xfail for known bugs)


def _write(d: Path, name: str, data: bytes) -> str:
    p = d / name
    p.write_bytes(data)
    return str(p)


def _big_record(b: Base, start: int) -> int:
    """Index of the first record at or after start whose data is > 10 KB (a DICOM data segment)."""
    return next(i for i in range(start, b.n) if len(b.recs[i][1]) > 10000)


def _victim(b: Base) -> int:
    """A client data record in the middle of connection 1's data (frame ~60 of 133),
    so that losing it leaves every command and response in place."""
    client = b.tcp[0][0]  # the SYN sender of connection 1
    big = [i for i in range(_conn2_start(b)) if b.tcp[i] and b.tcp[i][0] == client and b.tcp[i][2] > 30000]
    return big[len(big) // 2]


def _conn2_start(b: Base) -> int:
    """Index of the first frame of connection 2 (a SYN from another client port)."""
    client_port = b.tcp[0][0][1]
    return next(i for i, t in enumerate(b.tcp) if t and client_port not in (t[0][1], t[1][1]))


def build_empty(b, d):
    return Made(_write(d, "empty.pcap", b""))


def build_text(b, d):
    return Made(_write(d, "notes.txt", b"This is a text file, not a capture.\nSecond line.\n" * 20))


def build_tiny(b, d):
    return Made(_write(d, "tiny.pcap", b"\xd4\xc3"))


def build_header_truncated(b, d):
    return Made(_write(d, "header_cut.pcap", b.raw[:14]))


def build_header_only(b, d):
    return Made(_write(d, "header_only.pcap", b.raw[:24]), packets=0, prefix=0)


def build_record_truncated(b, d):
    k = _big_record(b, b.n // 2)
    cut = b.offs[k] + 16 + len(b.recs[k][1]) // 2
    return Made(_write(d, "record_cut.pcap", b.raw[:cut]), prefix=k, packets=k, where=(k + 1, b.offs[k]),
                note=f"cut {len(b.recs[k][1]) // 2} bytes into frame {k + 1}")


def build_record_header_truncated(b, d):
    k = _big_record(b, b.n // 2)
    return Made(_write(d, "rechdr_cut.pcap", b.raw[:b.offs[k] + 8]), prefix=k, packets=k,
                where=(k + 1, b.offs[k]))


def build_record_past_end(b, d):
    k = b.n - 1
    data = bytearray(b.raw)
    struct.pack_into("<I", data, b.offs[k] + 8, len(b.recs[k][1]) + 1000)
    return Made(_write(d, "past_end.pcap", bytes(data)), prefix=k, packets=k, where=(k + 1, b.offs[k]))


def build_caplen_impossible(b, d):
    k = _victim(b)
    data = bytearray(b.raw)
    struct.pack_into("<I", data, b.offs[k] + 8, 0x7FFFFFFF)
    return Made(_write(d, "caplen_middle.pcap", bytes(data)), skipped=k, packets=b.n - 1,
                where=(k + 1, b.offs[k]))


def build_caplen_impossible_last(b, d):
    k = b.n - 1
    data = bytearray(b.raw)
    struct.pack_into("<I", data, b.offs[k] + 8, 0xFFFFFFFF)
    return Made(_write(d, "caplen_last.pcap", bytes(data)), prefix=k, packets=k, where=(k + 1, b.offs[k]))


def build_linktype_147(b, d):
    data = bytearray(b.raw)
    struct.pack_into("<I", data, 20, 147)  # LINKTYPE_USER0
    return Made(_write(d, "user0.pcap", bytes(data)), packets=b.n)


def build_pcapng_block_impossible(b, d):
    k = _victim(b)
    data = bytearray(b.ng)
    struct.pack_into("<I", data, b.epbs[k] + 4, 0x7FFFFFF1)
    return Made(_write(d, "block_middle.pcapng", bytes(data)), skipped=k, packets=b.n - 1,
                where=(k + 1, b.epbs[k]))


def build_pcapng_truncated(b, d):
    k = _big_record(b, b.n // 2)
    blen = struct.unpack_from("<I", b.ng, b.epbs[k] + 4)[0]
    return Made(_write(d, "cut.pcapng", b.ng[:b.epbs[k] + blen // 2]), prefix=k, packets=k,
                where=(k + 1, b.epbs[k]))


def build_pcapng_shb_truncated(b, d):
    return Made(_write(d, "shb_cut.pcapng", b.ng[:20]))


def _gz(b: Base) -> bytes:
    return gzip.compress(b.raw, compresslevel=6, mtime=0)


def build_gzip_truncated(b, d):
    gz = _gz(b)
    return Made(_write(d, "cut.pcap.gz", gz[:len(gz) // 2]), prefix=-1)


def _inflatable_prefix(data: bytes) -> tuple[int, str]:
    """How many bytes a gzip stream yields before zlib gives up, and zlib's message."""
    dec = zlib.decompressobj(31)
    n = 0
    try:
        for i in range(0, len(data), 256):
            n += len(dec.decompress(data[i:i + 256]))
        dec.flush()
    except zlib.error as e:
        return n, str(e)
    return n, ""


def build_gzip_corrupt_midstream(b, d):
    """Compressed bytes overwritten so that zlib stops with a data error (not at the
    final CRC) after having inflated several KB: those frames are readable."""
    gz = _gz(b)
    for pos in range(1000, len(gz) - 100, 97):
        bad = bytearray(gz)
        bad[pos:pos + 8] = b"\xff" * 8
        n, err = _inflatable_prefix(bytes(bad))
        if err and "data check" not in err and n > 4 * 1024:
            whole = sum(1 for k in range(b.n) if b.offs[k] + 16 + len(b.recs[k][1]) <= n)
            return Made(_write(d, "corrupt_mid.pcap.gz", bytes(bad)), prefix=-1,
                        note=f"compressed byte {pos}: zlib inflates {n} bytes ({whole} whole frames), "
                             f"then: {err}")
    pytest.skip("no corruption position found that stops zlib mid-stream")


def build_gzip_corrupt_crc(b, d):
    """Compressed bytes in the middle overwritten: zlib inflates garbage and only the
    final CRC check fails."""
    gz = bytearray(_gz(b))
    m = len(gz) // 2
    gz[m:m + 64] = bytes(x ^ 0x5A for x in gz[m:m + 64])
    return Made(_write(d, "corrupt_crc.pcap.gz", bytes(gz)))


def build_gzip_header_only(b, d):
    return Made(_write(d, "magic_only.gz", _gz(b)[:12]))


def build_directory(b, d):
    p = d / "a_directory.pcap"
    p.mkdir()
    return Made(str(p))


def build_missing(b, d):
    return Made(str(d / "no_such_file.pcap"))


def build_stdin_empty(b, d):
    return Made("-", stdin=b"")


def build_stdin_record_truncated(b, d):
    m = build_record_truncated(b, d)
    return Made("-", stdin=Path(m.arg).read_bytes(), prefix=m.prefix, packets=m.packets, where=m.where)



CASES = [
    Case("empty", 2, build_empty, r"empty"),
    Case("text", 2, build_text, r"not a pcap or pcapng"),
    Case("tiny", 2, build_tiny, r"too short"),
    Case("pcap_header_truncated", 2, build_header_truncated, r"global header truncated"),
    Case("pcap_header_only", 0, build_header_only, problems=0),
    Case("record_truncated", 1, build_record_truncated, r"truncated", problems=1),
    Case("record_header_truncated", 1, build_record_header_truncated, r"truncated", problems=1),
    Case("record_past_end_of_file", 1, build_record_past_end, r"truncated", problems=1),
    Case("caplen_impossible_middle", 1, build_caplen_impossible, r"2147483647", problems=1),
    Case("caplen_impossible_last", 1, build_caplen_impossible_last, r"4294967295", problems=1),
    Case("linktype_user0", 1, build_linktype_147, r"link type 147", problems=1),
    Case("pcapng_block_impossible_middle", 1, build_pcapng_block_impossible, r"impossible length",
         problems=1),
    Case("pcapng_truncated", 1, build_pcapng_truncated, r"truncated", problems=1),
    Case("pcapng_shb_truncated", 2, build_pcapng_shb_truncated, r"section header truncated"),
    Case("gzip_truncated", 1, build_gzip_truncated, r"(?i)compressed|gzip"),
    Case("gzip_corrupt_midstream", 1, build_gzip_corrupt_midstream, r"(?i)gzip|compress|inflat|zlib"),
    Case("gzip_corrupt_crc", 1, build_gzip_corrupt_crc, r"(?i)crc|gzip|compress"),
    Case("gzip_header_only", 2, build_gzip_header_only, r"gzip"),
    Case("directory", 2, build_directory, r"(?i)directory"),
    Case("missing_file", 2, build_missing, r"(?i)no such file|cannot open"),
    Case("stdin_empty", 2, build_stdin_empty, r"<stdin>.*empty"),
    Case("stdin_record_truncated", 1, build_stdin_record_truncated, r"truncated", problems=1),
]
CASE_BY_NAME = {c.name: c for c in CASES}


def params(test: str, select=lambda c: True):
    return [pytest.param(c.name, id=c.name, marks=[c.marks[test]] if test in c.marks else [])
            for c in CASES if select(c)]


# --------------------------------------------------------------------------
# running dicomtrace on everything at once
# --------------------------------------------------------------------------

@dataclass
class Result:
    case: str
    command: str
    made: Made
    rc: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [x for x in self.stderr.splitlines() if x.strip()]

    @property
    def doc(self) -> dict:
        return json.loads(self.stdout)


def _run(command: str, made: Made) -> tuple[int, str, str]:
    cmd = lab.dicomtrace_cmd() + [command, made.arg, "--format", "json"]
    proc = subprocess.run(cmd, input=made.stdin if made.stdin is not None else None,
                          stdin=subprocess.DEVNULL if made.stdin is None else None,
                          capture_output=True, timeout=300, cwd=lab.REPO_ROOT)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def results(dicomtrace_cli, base, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bad_inputs")
    made: dict[str, Made | BaseException] = {}
    for c in CASES:
        try:
            made[c.name] = c.build(base, d)
        except BaseException as e:  # noqa: BLE001 -- a skip inside a builder skips that case only
            made[c.name] = e
    made["intact"] = Made(str(BASE), packets=base.n)
    jobs = [(name, cmd) for name, m in made.items() if isinstance(m, Made) for cmd in COMMANDS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {job: pool.submit(_run, job[1], made[job[0]]) for job in jobs}
        out = {job: Result(job[0], job[1], made[job[0]], *f.result()) for job, f in futures.items()}
    out["made"] = made
    intact = [out[("intact", cmd)] for cmd in COMMANDS]
    for r in intact:
        assert r.rc == 0 and not r.lines, f"intact capture: {r.command} exit {r.rc}: {r.stderr}"
        assert r.doc["capture"]["packets"] == base.n
    return out


def get(results, name: str, command: str) -> Result:
    m = results["made"][name]
    if isinstance(m, BaseException):
        raise m
    return results[(name, command)]


# --------------------------------------------------------------------------
# exit code, stdout, stderr
# --------------------------------------------------------------------------

LINE = re.compile(r"^dicomtrace: (warning|error): \S.*$")
WHERE = re.compile(r"\b(frame \d+|offset \d+)\b")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", params("test_exit_code_and_output"))
def test_exit_code_and_output(results, name, command):
    case = CASE_BY_NAME[name]
    r = get(results, name, command)
    both = r.stdout + r.stderr
    assert "Traceback" not in both, f"{name}: traceback\n{r.stderr[-3000:]}"
    assert "internal error" not in r.stderr, f"{name}: {r.stderr}"
    assert r.rc == case.exit, f"{name} ({r.made.note}): exit {r.rc}, documented {case.exit}; stderr:\n{r.stderr}"
    for line in r.lines:
        assert LINE.match(line), f"{name}: stderr line is not a one-line dicomtrace message: {line!r}"
    if case.message:
        assert re.search(case.message, r.stderr), f"{name}: stderr does not say /{case.message}/: {r.stderr}"
    if case.exit == 2:
        assert r.stdout.strip() == "", f"{name}: fatal error but stdout has {r.stdout[:200]!r}"
        assert len(r.lines) == 1 and r.lines[0].startswith("dicomtrace: error: "), r.stderr
        shown = "<stdin>" if r.made.arg == "-" else Path(r.made.arg).name
        assert shown in r.lines[0], f"{name}: the error does not name the input: {r.lines[0]}"
        return
    doc = r.doc  # complete JSON even when parts were unreadable
    problems = doc["capture"]["problems"]
    assert len(r.lines) == len(problems), (r.lines, problems)
    for line, p in zip(r.lines, problems):
        assert p["message"] in line and line.startswith(f"dicomtrace: {p['severity']}: "), (line, p)
    if case.exit == 1:
        assert problems, f"{name}: exit 1 with no problem listed"
    else:
        assert not problems


@pytest.mark.parametrize("name", params("test_problems_name_frame_or_offset", lambda c: c.exit == 1
                                        and c.name != "linktype_user0"))
def test_problems_name_frame_or_offset(results, name):
    """Every problem in a damaged file says where: a frame number or a byte offset.
    (The link-type case is a summary over all frames and is left out.)"""
    r = get(results, name, "conversations")
    assert r.rc == 1, r.stderr
    for line in r.lines:
        assert WHERE.search(line), f"{name}: problem without frame or offset: {line!r}"
    for p in r.doc["capture"]["problems"]:
        assert p["frame"] is not None or p["offset"] is not None, p


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", params("test_problem_position", lambda c: c.exit == 1 and not
                                        c.name.startswith("gzip") and c.name != "linktype_user0"))
def test_problem_position(results, name, command):
    """Where the damage was put by hand, the first problem names exactly that frame and offset."""
    r = get(results, name, command)
    if r.made.where is None:
        pytest.skip("position of the damage not known exactly for this input")
    frame, offset = r.made.where
    first = r.doc["capture"]["problems"][0]
    assert (first["frame"], first["offset"]) == (frame, offset), first
    assert f"frame {frame}, offset {offset}: " in r.lines[0], r.lines[0]


@pytest.mark.parametrize("name", params("test_problem_count", lambda c: c.problems is not None))
def test_problem_count(results, name):
    """One piece of damage, one problem line (not a cascade of follow-up complaints)."""
    case = CASE_BY_NAME[name]
    for command in COMMANDS:
        r = get(results, name, command)
        assert len(r.lines) == case.problems, f"{name} {command}: {r.lines}"


def test_unknown_link_type_is_named(results, base):
    """Link type 147 (USER0): every frame counted, none decoded, the link type named."""
    for command in COMMANDS:
        r = get(results, "linktype_user0", command)
        doc = r.doc
        assert doc["capture"]["packets"] == base.n
        assert doc["capture"]["link_types"] == [147]
        assert doc.get("connections", doc.get("associations")) == []
        assert re.search(rf"\b{base.n}\b.*link type 147", r.stderr), r.stderr


# --------------------------------------------------------------------------
# what was readable is still analysed
# --------------------------------------------------------------------------

def _ep(e) -> tuple[str, int]:
    return lab.normalize_endpoint(e)


def _conn_key(c) -> tuple:
    return _ep(c["client"]), _ep(c["server"])


def _assoc_key(a) -> tuple:
    return _ep(a["requestor"]), _ep(a["acceptor"])


def _op_view(op) -> dict:
    v = {k: op.get(k) for k in OP_KEYS}
    v["responses"] = [{k: r.get(k) for k in RESPONSE_KEYS} for r in op.get("responses") or []]
    return v


def _frames_by_direction(base: Base, frames) -> dict:
    """{(src, dst): (packets, bytes on the wire, payload)} over the given 0-based frame indexes."""
    out: dict = {}
    for i in frames:
        t = base.tcp[i]
        if t is None:
            continue
        src, dst, payload = t
        p, b, pl = out.get((src, dst), (0, 0, 0))
        out[(src, dst)] = (p + 1, b + base.recs[i][0][3], pl + payload)
    return out


def _check_conversations(base: Base, made: Made, doc: dict, intact: dict, name: str) -> None:
    n = base.n
    kept = [i for i in range(n) if i != made.skipped] if made.prefix is None else list(range(made.prefix))
    want = _frames_by_direction(base, kept)
    got = {_conn_key(c): c for c in doc["connections"]}
    for ic in intact["connections"]:
        key = _conn_key(ic)
        cl, sv = key
        c2s, s2c = want.get((cl, sv)), want.get((sv, cl))
        if c2s is None and s2c is None:
            assert key not in got, f"{name}: connection {key} has no readable frame but is listed"
            continue
        assert key in got, f"{name}: connection {key} (frames {ic['first_frame']}-{ic['last_frame']}) lost"
        c = got[key]
        for side, w in (("client_to_server", c2s), ("server_to_client", s2c)):
            w = w or (0, 0, 0)
            assert (c[side]["packets"], c[side]["bytes"]) == w[:2], \
                f"{name}: connection {key} {side}: {c[side]['packets']} packets / {c[side]['bytes']} bytes, " \
                f"the readable frames have {w[:2]}"
        whole = made.prefix is None and not (made.skipped is not None and base.tcp[made.skipped]
                                             and {base.tcp[made.skipped][0], base.tcp[made.skipped][1]} == {cl, sv})
        if whole or (made.prefix is not None and ic["last_frame"] <= made.prefix):
            # untouched connection: everything equal but the frame numbers
            for side in ("client_to_server", "server_to_client"):
                assert {k: c[side][k] for k in DIRECTION_KEYS} == {k: ic[side][k] for k in DIRECTION_KEYS}, \
                    f"{name}: untouched connection {key} {side} differs from the intact capture"
            assert c["state"] == ic["state"]
        elif made.skipped is not None:
            # the connection that lost one data segment: its payload is missing, not more
            src, _dst, payload = base.tcp[made.skipped]
            side = "client_to_server" if src == cl else "server_to_client"
            assert c[side]["missing_bytes"] == payload, f"{name}: {side} missing_bytes vs the lost segment"
            assert c[side]["payload_bytes"] == ic[side]["payload_bytes"] - payload
    assert set(got) <= {_conn_key(ic) for ic in intact["connections"]}, f"{name}: connections invented"


def _check_analysis(base: Base, made: Made, doc: dict, intact: dict, name: str) -> None:
    got = {_assoc_key(a): a for a in doc["associations"]}
    assert set(got) <= {_assoc_key(a) for a in intact["associations"]}, f"{name}: associations invented"
    for ia in intact["associations"]:
        key = _assoc_key(ia)
        if made.prefix is not None and ia["request_frame"] > made.prefix:
            assert key not in got, f"{name}: association {key} starts after the readable part"
            continue
        assert key in got, f"{name}: association {key} lost"
        a = got[key]
        for k in ("calling_ae", "called_ae", "calling_ae_raw", "called_ae_raw", "max_pdu_length",
                  "presentation_contexts", "application_context", "implementation"):
            assert a.get(k) == ia.get(k), f"{name}: association {key} {k}"
        ops = {op["message_id"]: _op_view(op) for op in a["operations"]}
        iops = {op["message_id"]: (op, _op_view(op)) for op in ia["operations"]}
        assert set(ops) <= set(iops), f"{name}: association {key}: operations invented {set(ops) - set(iops)}"
        if made.prefix is not None:
            # every operation answered well inside the readable part is there, unchanged
            for mid, (iop, view) in iops.items():
                last = iop["responses"][-1]["frame"] if iop["responses"] else None
                if last is not None and last + 3 <= made.prefix:
                    assert ops.get(mid) == view, f"{name}: association {key} message {mid}"
            # operations cut off by the damage: what is said about them must not be invented
            for mid, v in ops.items():
                if v["status"] is not None:
                    assert v["status"] == iops[mid][1]["status"]
                    assert v["responses"] == iops[mid][1]["responses"][:len(v["responses"])]
        else:
            assert a["outcome"] == ia["outcome"], f"{name}: association {key} outcome"
            assert set(ops) == set(iops), f"{name}: association {key}: operations lost"
            for mid, (iop, view) in iops.items():
                v = ops[mid]
                if v == view:
                    continue
                # only the data set that lost a segment may differ, and only in its size / completeness
                assert {k: v[k] for k in v if not k.startswith("dataset")} == \
                       {k: view[k] for k in view if not k.startswith("dataset")}, f"{name}: {key} message {mid}"
                assert v["dataset_complete"] is False, f"{name}: {key} message {mid}: data set changed " \
                                                       "but still called complete"
                lost_in = iop["request_frame"] <= made.skipped + 1 <= iop["request_last_frame"]
                assert lost_in, f"{name}: {key} message {mid} changed though the lost frame " \
                                f"{made.skipped + 1} is not in its request"


def _check_conversations_loose(doc: dict, intact: dict, name: str) -> None:
    ic = {_conn_key(c): c for c in intact["connections"]}
    for c in doc["connections"]:
        key = _conn_key(c)
        assert key in ic, f"{name}: connection {key} invented"
        for side in ("client_to_server", "server_to_client"):
            assert c[side]["packets"] <= ic[key][side]["packets"], f"{name}: {key} {side}"
            assert c[side]["payload_bytes"] <= ic[key][side]["payload_bytes"], f"{name}: {key} {side}"


def _check_analysis_loose(doc: dict, intact: dict, good: int, name: str) -> None:
    got = {_assoc_key(a): a for a in doc["associations"]}
    for ia in intact["associations"]:
        key = _assoc_key(ia)
        if ia["request_frame"] > good:
            continue
        assert key in got, f"{name}: association {key}, requested in frame {ia['request_frame']} " \
                           f"before the damage (frame {good + 1}), lost"
    for key, a in got.items():
        ia = next((x for x in intact["associations"] if _assoc_key(x) == key), None)
        assert ia is not None, f"{name}: association {key} invented"
        assert (a["calling_ae"], a["called_ae"]) == (ia["calling_ae"], ia["called_ae"])
        iops = {op["message_id"]: op for op in ia["operations"]}
        ops = {op["message_id"]: op for op in a["operations"]}
        assert set(ops) <= set(iops), f"{name}: {key}: operations invented"
        for mid, iop in iops.items():
            last = iop["responses"][-1]["frame"] if iop["responses"] else None
            if last is not None and last + 3 <= good:
                assert mid in ops and _op_view(ops[mid]) == _op_view(iop), f"{name}: {key} message {mid}"
        for mid, op in ops.items():
            if op["status"] is not None:
                assert op["command"] == iops[mid]["command"] and op["status"] == iops[mid]["status"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", params("test_readable_part_still_analysed",
                                        lambda c: c.exit in (0, 1) and c.name != "linktype_user0"))
def test_readable_part_still_analysed(results, base, name, command):
    """Compare with the intact capture: the readable frames give the same connections,
    counts, AE titles, operations and statuses."""
    r = get(results, name, command)
    assert r.rc in (0, 1), f"{name}: exit {r.rc}: {r.stderr}"
    made, doc = r.made, r.doc
    intact = results[("intact", command)].doc
    read = doc["capture"]["packets"]
    if made.packets is not None:
        assert read == made.packets, f"{name}: {made.note}"
    assert made.prefix == 0 or read >= 1, f"{name}: {made.note}: nothing analysed"
    if made.prefix == -1:
        made = Made(made.arg, prefix=read)
    elif made.prefix is None and made.skipped is None:
        # damage of unknown extent (garbage inflated from a corrupt gzip): the frames
        # before the first problem must be analysed as in the intact capture; after it,
        # whatever is reported must agree with the intact capture
        located = [p["frame"] for p in doc["capture"]["problems"] if p["frame"] is not None]
        if command == "conversations":
            _check_conversations_loose(doc, intact, name)
        else:
            _check_analysis_loose(doc, intact, min(located + [read + 1]) - 1, name)
        return
    if command == "conversations":
        _check_conversations(base, made, doc, intact, name)
    else:
        _check_analysis(base, made, doc, intact, name)


def test_skipped_record_leaves_the_next_connection_whole(results, base):
    """The record of impossible length is in connection 1; connection 2 (after it in the
    file) is read completely, in pcap and in pcapng."""
    start = _conn2_start(base)
    for name in ("caplen_impossible_middle", "pcapng_block_impossible_middle"):
        r = get(results, name, "analyze")
        assert r.made.skipped < start
        intact = results[("intact", "analyze")].doc
        a2 = {_assoc_key(a): a for a in r.doc["associations"]}
        for ia in intact["associations"]:
            if ia["request_frame"] <= start:
                continue
            a = a2[_assoc_key(ia)]
            assert a["pdus"] == ia["pdus"] and a["outcome"] == ia["outcome"]
            assert [_op_view(o) for o in a["operations"]] == [_op_view(o) for o in ia["operations"]]
            # frames after the skipped record are numbered without it
            assert [o["request_frame"] for o in a["operations"]] == \
                   [o["request_frame"] - 1 for o in ia["operations"]]


@pytest.mark.parametrize("name", ["caplen_impossible_middle", "pcapng_block_impossible_middle"])
def test_lost_segment_is_not_a_protocol_violation(results, name):
    """One data segment lost from the capture: the findings may say data is missing,
    but must not accuse the peers of protocol violations (the intact capture has none)."""
    r = get(results, name, "analyze")
    intact_codes = {f["code"] for f in results[("intact", "analyze")].doc["findings"]}
    codes = {f["code"] for f in r.doc["findings"]}
    assert "tcp-data-missing" in codes, codes
    extra = codes - intact_codes - {"tcp-data-missing", "object-incomplete", "capture-gap"}
    assert not extra, f"{name}: findings {sorted(extra)}: " + "; ".join(
        f["message"] for f in r.doc["findings"] if f["code"] in extra)
