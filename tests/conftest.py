"""Session fixtures: real captures built once per test session (see tests/lab/).

store_capture  -- storescu -> storescp on loopback, 3 associations, ~3.6 MB,
                  one association limited to 4096-byte PDUs; as pcap plus
                  pcapng, gzip and nanosecond-pcap copies. ~1.5 s.
lossy_capture  -- the same kind of transfer between two network namespaces
                  over a veth at MTU 1500 with random loss both ways and
                  reordering, captured in the client's namespace. ~1.5 s.
                  Skips (not fails) where namespaces cannot be made.
holes_capture  -- the store capture with client data segments deleted by
                  editcap: bytes truly missing from the capture. ~0.5 s.
store_files    -- the 5 Part 10 files all of them send. ~0.4 s.
tshark reference data for each capture is computed lazily and cached.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest.register_assert_rewrite("lab")

import lab  # noqa: E402


# the files every store capture sends: three SOP classes, both VRs, 8 KB .. 2 MB
STORE_SPECS = [
    lab.DicomSpec(sop="CT", size=8 * 1024, explicit_vr=True),
    lab.DicomSpec(sop="MR", size=300 * 1024, explicit_vr=False),
    lab.DicomSpec(sop="SC", size=1200 * 1024, explicit_vr=True),
    lab.DicomSpec(sop="CT", size=40 * 1024, explicit_vr=False),
    lab.DicomSpec(sop="MR", size=2 * 1024 * 1024, explicit_vr=True),
]


@dataclass
class Run:
    """One storescu association: the files it sent (in order) and how."""
    files: list
    storescu_args: list
    output: str = ""


@dataclass
class StoreCapture:
    """A finished store capture and everything known about how it was made."""
    dir: Path
    pcap: Path
    variants: dict                 # name -> path: pcap, pcapng, gzip, nano
    server: tuple                  # (ip, port) of storescp
    files: list                    # lab.DicomFileInfo, all sent
    runs: list                     # Run per association, in order
    received: list                 # files storescp wrote
    scp_log: str
    seconds: float
    netns: dict = field(default_factory=dict)   # lossy only: names, addresses, rules
    tshark: lab.TsharkReference = None

    def __post_init__(self):
        self.tshark = lab.TsharkReference(self.pcap)


def _store_runs(files) -> list[Run]:
    return [
        Run([files[0], files[1]], []),
        Run([files[2]], ["--max-send-pdu", "4096"]),   # 1.2 MB data set in ~300 PDVs
        Run([files[3], files[4]], ["-xi"]),            # implicit VR little endian on the wire
    ]


def _do_runs(runs, host, port, netns=None):
    for r in runs:
        res = lab.run_storescu(host, port, [f.path for f in r.files], extra_args=r.storescu_args,
                               netns=netns, timeout=120)
        r.output = (res.stdout + res.stderr).decode(errors="replace")


CLEAN_ATTEMPTS = 3
CLEAN_FILTER = "tcp.analysis.retransmission || tcp.analysis.out_of_order || tcp.analysis.lost_segment"


@pytest.fixture(scope="session")
def store_files(tmp_path_factory):
    return lab.make_dicom_files(tmp_path_factory.mktemp("dicom_files"), STORE_SPECS)


@pytest.fixture(scope="session")
def store_capture(tmp_path_factory, store_files) -> StoreCapture:
    """storescu -> storescp over 127.0.0.1, 3 associations (see _store_runs)."""
    t0 = time.monotonic()
    d = tmp_path_factory.mktemp("store_capture")
    seen = []
    for attempt in range(CLEAN_ATTEMPTS):
        port = lab.free_port()
        runs = _store_runs(store_files)
        pcap = d / f"store{attempt or ''}.pcap"
        with lab.Capture(pcap, "lo", f"tcp port {port}"):
            with lab.StoreSCP(d / f"received{attempt or ''}", port, log_dir=d) as scp:
                _do_runs(runs, "127.0.0.1", port)
        # a busy machine sometimes makes even loopback resend (a receiver falling behind, a
        # tail-loss probe); the tests of this capture need none, and tshark decides
        trouble = lab.tshark_flag_counts(pcap, CLEAN_FILTER)
        if not trouble:
            break
        seen.append(dict(trouble))
    else:
        raise lab.LabError(f"no clean loopback store capture in {CLEAN_ATTEMPTS} attempts: {seen}")
    variants = {
        "pcap": pcap,
        "pcapng": lab.to_pcapng(pcap, d / "store.pcapng"),
        "gzip": lab.gzip_file(pcap, d / "store.pcap.gz"),
        "nano": lab.to_nanosecond_pcap(pcap, d / "store_ns.pcap"),
    }
    return StoreCapture(dir=d, pcap=pcap, variants=variants, server=("127.0.0.1", port), files=store_files,
                        runs=runs, received=scp.received(), scp_log=scp.log(), seconds=time.monotonic() - t0)


# client->server: 2.5% dropped before the capture point (holes the
# retransmission fills), 1% dropped after it (captured, then retransmitted:
# true duplicates); server->client: 2% dropped before the capture point
LOSSY_RULES = [
    lab.LossRule("a", 2.5, "output"),
    lab.LossRule("a", 1.0, "input"),
    lab.LossRule("b", 2.0, "output"),
]


@pytest.fixture(scope="session")
def lossy_capture(tmp_path_factory, store_files) -> StoreCapture:
    """storescu (netns a) -> storescp (netns b) over a veth, MTU 1500, loss + reordering.

    Captured with tcpdump on a's veth. 3% of a's TCP packets leave through a
    slow htb class, so they arrive after packets sent later (reordering).
    """
    t0 = time.monotonic()
    d = tmp_path_factory.mktemp("lossy_capture")
    runs = _store_runs(store_files)
    pcap = d / "lossy.pcap"
    with lab.NetnsPair(mtu=1500, loss=LOSSY_RULES, reorder_percent=3.0, reorder_src="a") as net:
        port = 11112
        with lab.Capture(pcap, net.if_a, f"tcp port {port}", netns=net.ns_a):
            with lab.StoreSCP(d / "received", port, netns=net.ns_b, log_dir=d) as scp:
                _do_runs(runs, net.ip_b, port, netns=net.ns_a)
        info = {"ns_a": net.ns_a, "ns_b": net.ns_b, "ip_a": net.ip_a, "ip_b": net.ip_b,
                "nft_a": net.nft_counters("a"), "nft_b": net.nft_counters("b"), "tc_a": net.tc_stats("a")}
    return StoreCapture(dir=d, pcap=pcap, variants={"pcap": pcap}, server=(net.ip_b, port), files=store_files,
                        runs=runs, received=scp.received(), scp_log=scp.log(),
                        seconds=time.monotonic() - t0, netns=info)


@pytest.fixture(scope="session")
def holes_capture(tmp_path_factory, store_capture) -> StoreCapture:
    """The store capture with some client data segments deleted (editcap):
    bytes that are truly missing from the capture, not retransmitted later.

    Deleted: in every association, the 3rd client segment carrying data and
    (in the 4096-byte-PDU association) one more in the middle.
    """
    d = tmp_path_factory.mktemp("holes_capture")
    ref = store_capture.tshark
    rows = lab._tcp_frames(store_capture.pcap, "tcp.len > 0", extra_fields=["tcp.len"])
    deleted = []
    for idx, s in ref.streams.items():
        client = s["syn_client"]
        data = [r[0] for r in rows if r[1] == idx and (r[2], r[3]) == client]
        picks = {data[2]}
        if len(data) > 20:
            picks.add(data[len(data) // 2])
        deleted += sorted(picks)
    pcap = d / "holes.pcap"
    lab.editcap(store_capture.pcap, pcap, "-F", "pcap", frames=sorted(deleted))
    cap = StoreCapture(dir=d, pcap=pcap, variants={"pcap": pcap}, server=store_capture.server,
                       files=store_capture.files, runs=store_capture.runs, received=[], scp_log="",
                       seconds=0.0)
    cap.deleted_frames = deleted
    return cap


@pytest.fixture(scope="session")
def dicomtrace_cli():
    """The CLI command. Skips only while the package has no CLI module at all;
    a CLI that exists but cannot run `conversations --help` fails the tests."""
    import importlib.util
    if importlib.util.find_spec("dicomtrace") is None or importlib.util.find_spec("dicomtrace.cli") is None:
        pytest.skip("dicomtrace CLI not written yet")
    if not lab.dicomtrace_available("conversations"):
        pytest.fail(f"{' '.join(lab.dicomtrace_cmd())} conversations --help does not run")
    return lab.dicomtrace_cmd()


@pytest.fixture(scope="session")
def ring_sensors(tmp_path_factory):
    """Ring buffers (tcpdump -C 1) from two capture points, >= 20 files (tests/ring_lab.py)."""
    import ring_lab

    return ring_lab.build(tmp_path_factory.mktemp("ring_sensors"))
