"""Make the lab captures of the golden suite (run once, as root; the results are committed).

    python tests/golden/make_captures.py

Real peers from tests/scenarios.py and tests/lab/: dcmtk C-ECHO (accepted and refused),
C-STORE of five objects, dcmqrscp C-FIND/C-MOVE/C-GET, pynetdicom aborts and failure
statuses, a lossy and reordered transfer between two network namespaces, and the store
query/retrieve capture with one data segment deleted (bytes really missing). Everything is our own
traffic on loopback or in namespaces made here, so it may be committed; it is kept under
3 MB in total.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import lab  # noqa: E402
import scenarios  # noqa: E402

OUT = HERE / "captures"
LOSSY_SPECS = [lab.DicomSpec(sop="CT", size=40 * 1024, explicit_vr=True, name="l1"),
               lab.DicomSpec(sop="MR", size=160 * 1024, explicit_vr=False, name="l2"),
               lab.DicomSpec(sop="SC", size=300 * 1024, explicit_vr=True, name="l3")]


def lossy(d: Path) -> Path:
    """storescu in netns a -> storescp in netns b over a veth (MTU 1500), 2 % of the
    packets dropped after the capture point both ways and 10 % held back in a slow
    queue with a one-packet head-drop leaf (holes the retransmission fills)."""
    files = lab.make_dicom_files(d / "files", LOSSY_SPECS)
    pcap = d / "lossy.pcap"
    loss = [lab.LossRule("a", 2.0, "input"), lab.LossRule("b", 2.0, "input")]
    with lab.NetnsPair(mtu=1500, loss=loss, reorder_percent=10.0, reorder_src="a",
                       reorder_rate="2mbit") as net:
        lab.run(["tc", "qdisc", "add", "dev", net.if_a, "parent", "1:20", "handle", "20:",
                 "pfifo_head_drop", "limit", "1"], netns=net.ns_a, timeout=15)
        with lab.Capture(pcap, net.if_a, "tcp port 11112", netns=net.ns_a):
            with lab.StoreSCP(d / "rx", 11112, netns=net.ns_b, log_dir=d):
                lab.run_storescu(net.ip_b, 11112, [f.path for f in files], aet="LOSSYSCU",
                                 aec="STORESCP", netns=net.ns_a, timeout=180)
    return pcap


def holes(qr_pcap: Path, d: Path) -> Path:
    """The query/retrieve capture without its largest data segment (after the first
    tenth of the frames, a C-STORE sub-operation's): a hole no retransmission fills."""
    rows = lab.tshark("-r", str(qr_pcap), "-Y", "tcp.len > 1000", "-T", "fields",
                      "-e", "frame.number", "-e", "tcp.len").split("\n")
    frames = [tuple(map(int, r.split())) for r in rows if r.strip()]
    frame = max(frames[len(frames) // 10:], key=lambda x: x[1])[0]
    return lab.editcap(qr_pcap, d / "holes.pcap", "-F", "pcap", frames=[frame])


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dtgolden") as tmp:
        tmp = Path(tmp)
        made = {}
        for name, gen in (("echo", scenarios.echo_scenario), ("store", scenarios.store_scenario),
                          ("qr", scenarios.qr_scenario), ("abort", scenarios.abort_scenario),
                          ("status", scenarios.status_scenario)):
            d = tmp / name
            d.mkdir()
            made[name] = gen(d).pcap
        (tmp / "lossy").mkdir()
        made["lossy"] = lossy(tmp / "lossy")
        made["holes"] = holes(made["qr"], tmp)
        for name, src in made.items():
            shutil.copyfile(src, OUT / f"{name}.pcap")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{len(made)} captures, {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main()
