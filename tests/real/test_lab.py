"""The laboratory checks itself: are the real captures what the other tests think they are?

These run without dicomtrace: tshark, capinfos, dpkt and the peers' own
output are compared with each other.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

import pytest

import lab


def independent_reassembly(pcap) -> dict:
    """{(src, dst): (bytes, missing)} by sequence number, first copy wins (dpkt, Ethernet only).

    A referee for the referee: tshark's follow must agree with this."""
    import dpkt
    streams: dict = {}
    with open(pcap, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        for _ts, buf in reader:
            ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            fam = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
            t = ip.data
            key = ((socket.inet_ntop(fam, ip.src), t.sport), (socket.inet_ntop(fam, ip.dst), t.dport))
            s = streams.setdefault(key, {"isn": None, "chunks": {}})
            if t.flags & dpkt.tcp.TH_SYN:
                s["isn"] = (t.seq + 1) % 2**32
                continue
            if s["isn"] is None:
                s["isn"] = t.seq
            if t.data:
                off = (t.seq - s["isn"]) % 2**32
                s["chunks"].setdefault(off, bytes(t.data))
    out = {}
    for key, s in streams.items():
        buf = bytearray()
        have = []
        for off, data in sorted(s["chunks"].items()):
            end = off + len(data)
            if have and off < have[-1][1]:
                if end <= have[-1][1]:
                    continue
                data = data[have[-1][1] - off:]
                off = have[-1][1]
            have.append((off, end))
            buf += data
        total = max((e for _, e in have), default=0)
        out[key] = (bytes(buf), total - len(buf))
    return out


def _check_follow_vs_dpkt(ref: lab.TsharkReference):
    mine = independent_reassembly(ref.pcap)
    for idx in ref.streams:
        f = ref.follow(idx)
        c, s = f.client, f.server
        mc, miss_c = mine.get((c, s), (b"", 0))
        ms, miss_s = mine.get((s, c), (b"", 0))
        assert f.client_to_server == mc and f.client_missing == miss_c, f"stream {idx} client"
        assert f.server_to_client == ms and f.server_missing == miss_s, f"stream {idx} server"


def _check_datasets(cap, follows):
    from pydicom import dcmread
    for f, run in zip(follows, cap.runs, strict=True):
        datasets = lab.stored_datasets(f.client_to_server, f.server_to_client)
        assert len(datasets) == len(run.files)
        for ds, file in zip(datasets, run.files):
            assert lab.same_instance(ds, dcmread(file.path))


def _check_received(cap):
    from pydicom import dcmread
    sent = {f.sop_instance_uid: dcmread(f.path) for f in cap.files}
    got = [dcmread(p) for p in cap.received]
    assert len(got) == len(sent)
    for ds in got:
        assert lab.same_instance(ds, sent[str(ds.SOPInstanceUID)])


# --------------------------------------------------------------------------

def test_dicom_files(store_files):
    uids = [(f.sop_instance_uid, f.series_instance_uid, f.study_instance_uid, f.patient_id) for f in store_files]
    for column in zip(*uids):
        assert len(set(column)) == len(store_files)
    assert {f.sop for f in store_files} == {"CT", "MR", "SC"}
    assert {f.transfer_syntax_uid for f in store_files} == {lab.EXPLICIT_VR_LE, lab.IMPLICIT_VR_LE}
    sizes = sorted(f.file_size for f in store_files)
    assert sizes[0] < 16 * 1024 and sizes[-1] > 2 * 1000 * 1000
    for f in store_files:
        raw = f.path.read_bytes()
        assert raw[128:132] == b"DICM"
        # the data set starts right after the meta group: first tag is (0008,0005)
        assert raw[f.dataset_offset:f.dataset_offset + 4] == b"\x08\x00\x05\x00"


def test_store_capture_is_real_dicom(store_capture):
    ref = store_capture.tshark
    assert len(ref.streams) == len(store_capture.runs) == 3
    assert all(s["syn_client"] is not None for s in ref.streams.values())
    pdus = lab.tshark_dicom_pdus(store_capture.pcap, store_capture.server[1])
    text = "\n".join(pdus)
    assert text.count("A-ASSOCIATE request") == 3
    assert text.count("C-STORE-RQ") == len(store_capture.files)
    assert text.count("C-STORE-RSP") == len(store_capture.files)
    _check_received(store_capture)
    assert "--max-send-pdu" in store_capture.runs[1].storescu_args
    # the 4096-byte-PDU association cut its 1.2 MB data set into ~300 PDVs
    f = ref.follow(1)
    msgs = lab.pdata_messages(f.client_to_server)
    assert max(m["pdvs"] for m in msgs) > 250


def test_store_capture_variants(store_capture):
    ref = store_capture.tshark
    kinds = {"pcap": "pcap", "pcapng": "pcapng", "gzip": "pcap", "nano": "nsecpcap"}
    for name, path in store_capture.variants.items():
        info = lab.capinfos(path)
        assert info["File type"] == kinds[name], name
        convs = lab.tshark_conv_tcp(path)
        strip = [{k: v for k, v in c.items() if k not in ("rel_start", "duration")} for c in convs]
        assert strip == [{k: v for k, v in c.items() if k not in ("rel_start", "duration")} for c in ref.convs]
    assert lab.capinfos(store_capture.variants["nano"])["File time precision"] == "nanoseconds"
    assert store_capture.variants["gzip"].read_bytes()[:2] == b"\x1f\x8b"


def test_store_follow_agrees_with_independent_reassembly(store_capture):
    _check_follow_vs_dpkt(store_capture.tshark)
    _check_datasets(store_capture, [store_capture.tshark.follow(i) for i in sorted(store_capture.tshark.streams)])


def test_holes_capture(holes_capture):
    ref = holes_capture.tshark
    gaps = [g for i in ref.streams for g in ref.follow(i).client_gaps]
    assert len(gaps) == len(holes_capture.deleted_frames)
    _check_follow_vs_dpkt(ref)


@pytest.mark.netns
def test_lossy_capture_has_loss_and_reordering(lossy_capture):
    ref = lossy_capture.tshark
    assert len(ref.streams) == 3
    assert sum(ref.retransmissions.values()) > 0
    # the slow htb class (reordering) really carried packets
    m = re.search(r"class htb 1:20 .*?Sent \d+ bytes (\d+) pkt", lossy_capture.netns["tc_a"], re.S)
    assert m and int(m.group(1)) > 0, lossy_capture.netns["tc_a"]
    # and the loss rules really dropped packets
    drops = re.findall(r"counter packets (\d+) bytes \d+ drop", lossy_capture.netns["nft_a"] + lossy_capture.netns["nft_b"])
    assert len(drops) == 3 and all(int(n) > 0 for n in drops), drops
    _check_received(lossy_capture)
    # MTU 1500 without offloads: no frame above 1514 bytes
    if shutil.which("ethtool"):  # without it NetnsPair cannot switch TSO/GSO off
        sizes = lab.tshark("-n", "-r", str(lossy_capture.pcap), "-T", "fields", "-e", "frame.len").split()
        assert max(map(int, sizes)) <= 1514
    _check_follow_vs_dpkt(ref)
    _check_datasets(lossy_capture, [ref.follow(i) for i in sorted(ref.streams)])


def test_byteswap_and_linktype_conversions(store_capture, tmp_path):
    src = store_capture.pcap
    hdr, recs = lab.read_pcap(src)
    be = lab.byteswap_pcap(src, tmp_path / "be.pcap")
    assert be.read_bytes()[:4] == b"\xa1\xb2\xc3\xd4"
    hdr2, recs2 = lab.read_pcap(be)
    assert hdr2["endian"] == ">" and recs2 == recs
    ref = store_capture.tshark
    for lt, shrink in ((lab.LINKTYPE_RAW, 14), (lab.LINKTYPE_NULL, 10)):
        out = lab.ethernet_to_linktype(src, tmp_path / f"lt{lt}.pcap", lt)
        convs = lab.tshark_conv_tcp(out)
        assert [c["frames"] for c in convs] == [c["frames"] for c in ref.convs]
        assert [c["bytes"] for c in convs] == [c["bytes"] - shrink * c["frames"] for c in ref.convs]
    vl = lab.ethernet_add_vlan(src, tmp_path / "vlan.pcap")
    assert int(lab.tshark("-n", "-r", str(vl), "-Y", "vlan.id == 100 && tcp", "-T", "fields",
                          "-e", "frame.number").count("\n")) == sum(c["frames"] for c in ref.convs)


def test_capture_keeps_the_last_packets(tmp_path):
    """A short association, captured and stopped at once: the closing FINs are in the file."""
    port = lab.free_port()
    with lab.Capture(tmp_path / "echo.pcap", "lo", f"tcp port {port}") as cap:
        with lab.StoreSCP(tmp_path / "rx", port, log_dir=tmp_path):
            lab.run_echoscu("127.0.0.1", port, aec="STORESCP")
    fins = lab.tshark("-n", "-r", str(cap.path), "-Y", "tcp.flags.fin == 1", "-T", "fields", "-e", "frame.number")
    assert len(fins.split()) == 2
    assert cap.packets_captured == int(lab.capinfos(cap.path)["Number of packets"])


@pytest.mark.netns
def test_netns_pair_cleans_up():
    with lab.NetnsPair(loss=5.0) as net:
        names = (net.ns_a, net.ns_b)
        listed = lab.run(["ip", "netns", "list"]).stdout.decode()
        assert all(n in listed for n in names)
        res = lab.run(["python3", "-c", "print(1)"], netns=net.ns_a)
        assert res.stdout.strip() == b"1"
    listed = lab.run(["ip", "netns", "list"]).stdout.decode()
    assert not any(n in listed for n in names)


def test_follow_parses_gap_markers(holes_capture):
    """tshark writes '[N bytes missing in capture file]' + NUL into follow,raw output:
    the helper removes it and records the gap."""
    raw = subprocess.run(["tshark", "-q", "-n", "-r", str(holes_capture.pcap), "-z", "follow,tcp,raw,0"],
                         capture_output=True, timeout=120, stdin=subprocess.DEVNULL).stdout.decode()
    decoded = [bytes.fromhex(line.strip()) for line in raw.splitlines()
               if line.strip() and all(c in "0123456789abcdef" for c in line.strip())]
    assert any(b"bytes missing in capture file]" in d for d in decoded)
    f = holes_capture.tshark.follow(0)
    assert b"bytes missing in capture file" not in f.client_to_server
    assert f.client_missing > 0
