"""Issue #2 on other link types and containers, made with real tools.

Every capture here carries real DICOM associations (dcmtk or pynetdicom
peers). For each one, two tests:
  test_lab_...   -- tshark sees the expected link type(s), the TCP streams,
                    and the stored data sets inside the client streams (no
                    dicomtrace needed: this checks the capture itself);
  test_cli_...   -- `dicomtrace conversations --format json --dump-streams`
                    agrees with tshark conv,tcp (connections, packets and
                    bytes each way) and follow,tcp,raw (stream bytes).
How each capture is made is in its builder's docstring (and in CAPTURES).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lab


@dataclass
class Built:
    path: Path
    encapsulations: set            # capinfos-style names tshark reports per frame (frame.encap_type text)
    runs: list                     # [[DicomFileInfo, ...] per association, in order]
    how: str
    extra: dict = field(default_factory=dict)

    @property
    def ref(self) -> lab.TsharkReference:
        if "ref" not in self.extra:
            self.extra["ref"] = lab.TsharkReference(self.path)
        return self.extra["ref"]


def _small(files):
    """Two associations' worth of files: 8 KB CT + 40 KB CT, then the 300 KB MR."""
    return [[files[0], files[3]], [files[1]]]


def _store_on_loopback(path, runs, **capture_kw) -> list:
    """storescp on a free 127.0.0.1 port; one storescu association per run; captured."""
    port = lab.free_port()
    with lab.Capture(path, capture_kw.pop("iface", "lo"), f"tcp port {port}", **capture_kw):
        with lab.StoreSCP(path.parent / f"{path.stem}-rx", port, log_dir=path.parent, name=f"{path.stem}-scp"):
            for r in runs:
                lab.run_storescu("127.0.0.1", port, [f.path for f in r])
    return runs


# -------------------------------------------------------------------------- builders

def build_sll(d, files, store_capture):
    """Linux cooked v1 (LINKTYPE_LINUX_SLL, 113): `tcpdump -i any -y LINUX_SLL`,
    storescu -> storescp on 127.0.0.1. (On tcpdump 4.99.3 / libpcap 1.10.3,
    plain `-i any` gives cooked v2, so v1 must be asked for.)"""
    p = d / "sll.pcap"
    runs = _store_on_loopback(p, _small(files), iface="any", linktype="LINUX_SLL")
    return Built(p, {"Linux cooked-mode capture v1"}, runs, build_sll.__doc__)


def build_sll2(d, files, store_capture):
    """Linux cooked v2 (LINKTYPE_LINUX_SLL2, 276): `tcpdump -i any -y LINUX_SLL2`
    (also this tcpdump's default for -i any), storescu -> storescp on 127.0.0.1."""
    p = d / "sll2.pcap"
    runs = _store_on_loopback(p, _small(files), iface="any", linktype="LINUX_SLL2")
    return Built(p, {"Linux cooked-mode capture v2"}, runs, build_sll2.__doc__)


def build_ipv6(d, files, store_capture):
    """IPv6 loopback: pynetdicom storage SCP on [::1] and pynetdicom SCU (C-ECHO then
    C-STOREs), `tcpdump -i lo` (Ethernet). dcmtk 3.6.7 cannot: storescu ::1 fails with
    'Illegal service parameter', so pynetdicom is the peer here."""
    lab.require_ipv6_loopback()
    p = d / "ipv6.pcap"
    runs = _small(files)
    port = lab.free_port("::1")
    with lab.Capture(p, "lo", f"tcp port {port}"):
        with lab.PynetdicomSCP("::1", port, output_dir=d / "ipv6-rx") as scp:
            for r in runs:
                assert lab.pynetdicom_store("::1", port, [f.path for f in r], echo=True) == [0] * len(r)
    assert len(scp.received) == sum(len(r) for r in runs)
    return Built(p, {"Ethernet"}, runs, build_ipv6.__doc__)


def build_vlan_netns(d, files, store_capture):
    """802.1Q for real: NetnsPair with a vlan 100 sub-interface on each veth end,
    storescu -> storescp over the VLAN addresses, `tcpdump -i <parent veth>` in the
    client namespace so the tags are in the frames. Skips where the kernel has no
    802.1Q support (as on the machine this was written on)."""
    p = d / "vlan_netns.pcap"
    runs = _small(files)
    with lab.NetnsPair(vlan=100) as net:
        port = 11112
        with lab.Capture(p, net.if_a, "", netns=net.ns_a):
            with lab.StoreSCP(d / "vlan-rx", port, netns=net.ns_b, log_dir=d, name="vlan-scp"):
                for r in runs:
                    lab.run_storescu(net.vip_b, port, [f.path for f in r], netns=net.ns_a)
    return Built(p, {"Ethernet"}, runs, build_vlan_netns.__doc__, {"vlan": 100})


def build_vlan_tagged(d, files, store_capture):
    """802.1Q made from a real capture: the session's loopback store capture with a
    VLAN 100 tag (TPID 0x8100) inserted after the MAC addresses of every frame
    (lab.ethernet_add_vlan). Used because this kernel cannot make vlan interfaces."""
    p = lab.ethernet_add_vlan(store_capture.pcap, d / "vlan_tagged.pcap", ((0x8100, 100),))
    return Built(p, {"Ethernet"}, [r.files for r in store_capture.runs], build_vlan_tagged.__doc__,
                 {"vlan": 100})


def build_qinq_tagged(d, files, store_capture):
    """802.1ad QinQ made from a real capture: outer tag TPID 0x88A8 VLAN 200 over
    inner 0x8100 VLAN 100, inserted into every frame of the loopback store capture."""
    p = lab.ethernet_add_vlan(store_capture.pcap, d / "qinq_tagged.pcap", ((0x88A8, 200), (0x8100, 100)))
    return Built(p, {"Ethernet"}, [r.files for r in store_capture.runs], build_qinq_tagged.__doc__,
                 {"vlan": 100})


def build_pcapng_two_linktypes(d, files, store_capture):
    """pcapng with two interfaces of different link types: one association captured
    with `tcpdump -i lo` (Ethernet), a later one with `tcpdump -i any -y LINUX_SLL2`,
    then `mergecap -F pcapng` (two interface description blocks, frames in time order)."""
    runs = _small(files)
    a, b = d / "two_a.pcap", d / "two_b.pcap"
    _store_on_loopback(a, runs[:1])
    _store_on_loopback(b, runs[1:], iface="any", linktype="LINUX_SLL2")
    p = d / "two_linktypes.pcapng"
    lab.run(["mergecap", "-F", "pcapng", "-w", str(p), str(a), str(b)])
    return Built(p, {"Ethernet", "Linux cooked-mode capture v2"}, runs, build_pcapng_two_linktypes.__doc__)


def build_pcapng_dumpcap_two_ifaces(d, files, store_capture):
    """pcapng written live by `dumpcap -i <veth> -i lo` inside the client namespace of
    a NetnsPair: one association to storescp in the other namespace (veth), one to a
    storescp in the same namespace (lo)."""
    p = d / "dumpcap_two.pcapng"
    runs = _small(files)
    with lab.NetnsPair() as net:
        with lab.Capture(p, [net.if_a, "lo"], "tcp", netns=net.ns_a, tool="dumpcap", fmt="pcapng"):
            with lab.StoreSCP(d / "dc-rx1", 11112, netns=net.ns_b, log_dir=d, name="dc-scp1"), \
                    lab.StoreSCP(d / "dc-rx2", 11113, netns=net.ns_a, log_dir=d, name="dc-scp2"):
                lab.run_storescu(net.ip_b, 11112, [f.path for f in runs[0]], netns=net.ns_a)
                lab.run_storescu("127.0.0.1", 11113, [f.path for f in runs[1]], netns=net.ns_a)
    return Built(p, {"Ethernet"}, runs, build_pcapng_dumpcap_two_ifaces.__doc__, {"interfaces": 2})


def build_big_endian(d, files, store_capture):
    """Big-endian pcap: the loopback store capture (tcpdump, little-endian, microseconds)
    with its global header and every record header rewritten big-endian
    (magic bytes a1 b2 c3 d4 on disk; lab.byteswap_pcap). Packet bytes unchanged."""
    p = lab.byteswap_pcap(store_capture.pcap, d / "big_endian.pcap")
    return Built(p, {"Ethernet"}, [r.files for r in store_capture.runs], build_big_endian.__doc__)


def build_big_endian_nano(d, files, store_capture):
    """Big-endian nanosecond pcap (magic a1 b2 3c 4d on disk): the store capture's
    nanosecond copy (editcap -F nsecpcap) byte-swapped as above."""
    p = lab.byteswap_pcap(store_capture.variants["nano"], d / "big_endian_ns.pcap")
    return Built(p, {"Ethernet"}, [r.files for r in store_capture.runs], build_big_endian_nano.__doc__)


def build_raw_ip(d, files, store_capture):
    """Raw IP (LINKTYPE_RAW, 101): the loopback store capture with the 14-byte Ethernet
    header cut from every record (captured and original lengths -14) and link type 101
    (lab.ethernet_to_linktype). `editcap -T rawip` is no substitute: it only relabels
    the file, leaving the Ethernet headers in (tshark then shows 'Bogus IP version')."""
    p = lab.ethernet_to_linktype(store_capture.pcap, d / "raw_ip.pcap", lab.LINKTYPE_RAW)
    return Built(p, {"Raw IP"}, [r.files for r in store_capture.runs], build_raw_ip.__doc__)


def build_null(d, files, store_capture):
    """BSD loopback (LINKTYPE_NULL, 0): Ethernet header replaced by a 4-byte address
    family in the file's byte order (AF_INET = 2), from the loopback store capture."""
    p = lab.ethernet_to_linktype(store_capture.pcap, d / "null.pcap", lab.LINKTYPE_NULL)
    return Built(p, {"NULL/Loopback"}, [r.files for r in store_capture.runs], build_null.__doc__)


def build_null_ipv6_big_endian(d, files, store_capture):
    """BSD loopback carrying IPv6 (AF 24, as written on BSD) in a big-endian pcap:
    the IPv6 pynetdicom capture converted to LINKTYPE_NULL, then byte-swapped
    (so the AF word is big-endian too)."""
    v6 = _built(d, "ipv6", files, store_capture)
    le = lab.ethernet_to_linktype(v6.path, d / "null6_le.pcap", lab.LINKTYPE_NULL)
    p = lab.byteswap_pcap(le, d / "null6_be.pcap")
    # byteswap_pcap swaps headers only: the AF word written little-endian must follow the file
    hdr, recs = lab.read_pcap(p)
    recs = [(h, data[:4][::-1] + data[4:]) for h, data in recs]
    lab.write_pcap(p, hdr, recs)
    return Built(p, {"NULL/Loopback"}, v6.runs, build_null_ipv6_big_endian.__doc__)


BUILDERS = {
    "sll": build_sll,
    "sll2": build_sll2,
    "ipv6": build_ipv6,
    "vlan_netns": build_vlan_netns,
    "vlan_tagged": build_vlan_tagged,
    "qinq_tagged": build_qinq_tagged,
    "pcapng_two_linktypes": build_pcapng_two_linktypes,
    "pcapng_dumpcap_two_ifaces": build_pcapng_dumpcap_two_ifaces,
    "big_endian": build_big_endian,
    "big_endian_nano": build_big_endian_nano,
    "raw_ip": build_raw_ip,
    "null": build_null,
    "null_ipv6_big_endian": build_null_ipv6_big_endian,
}
NETNS = {"vlan_netns", "pcapng_dumpcap_two_ifaces"}
_CACHE: dict = {}


def _built(d, name, files, store_capture) -> Built:
    if name not in _CACHE:
        _CACHE[name] = BUILDERS[name](d, files, store_capture)
    return _CACHE[name]


@pytest.fixture(scope="module")
def linktype_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("linktypes")


@pytest.fixture
def built(request, linktype_dir, store_files, store_capture) -> Built:
    return _built(linktype_dir, request.param, store_files, store_capture)


def _params():
    return [pytest.param(n, marks=[pytest.mark.netns] if n in NETNS else [], id=n) for n in BUILDERS]


# -------------------------------------------------------------------------- tests

@pytest.mark.parametrize("built", _params(), indirect=True)
def test_lab_capture_is_what_it_claims(built):
    """The capture has the intended link type(s), the associations, and the data sets."""
    from pydicom import dcmread
    ref = built.ref
    encaps = set(lab.tshark("-n", "-r", str(built.path), "-T", "fields", "-e", "frame.encap_type").split())
    names = {_ENCAP_NAMES.get(int(e), e) for e in encaps}
    assert names == built.encapsulations
    if "interfaces" in built.extra or len(built.encapsulations) > 1:
        ids = set(lab.tshark("-n", "-r", str(built.path), "-T", "fields", "-e", "frame.interface_id").split())
        assert len(ids) == 2
    if "vlan" in built.extra:
        tagged = lab.tshark("-n", "-r", str(built.path), "-Y", f"vlan.id == {built.extra['vlan']} && tcp",
                            "-T", "fields", "-e", "frame.number").split()
        assert len(tagged) == sum(s["frames"] for s in ref.streams.values())
    assert len(ref.streams) == len(built.runs)
    # streams matched to runs by content: a multi-interface dumpcap file is not
    # in time order, so tcp.stream order need not be the order of the runs
    by_uid = {f.sop_instance_uid: f for r in built.runs for f in r}
    seen = []
    for idx in sorted(ref.streams):
        f = ref.follow(idx)
        datasets = lab.stored_datasets(f.client_to_server, f.server_to_client)
        for ds in datasets:
            assert lab.same_instance(ds, dcmread(by_uid[str(ds.SOPInstanceUID)].path))
        seen.append([str(ds.SOPInstanceUID) for ds in datasets])
    assert sorted(seen) == sorted([f.sop_instance_uid for f in r] for r in built.runs)


@pytest.mark.parametrize("built", _params(), indirect=True)
def test_cli_matches_tshark(dicomtrace_cli, built, tmp_path):
    """dicomtrace agrees with tshark conv,tcp and follow,tcp,raw on this link type."""
    doc = lab.run_conversations(built.path, dump_dir=tmp_path)
    fmt = "pcapng" if built.path.suffix == ".pcapng" else "pcap"
    lab.check_conversations(doc, built.ref, fmt=fmt)
    assert doc["capture"]["problems"] == []
    lab.check_dumps(tmp_path, doc, built.ref)


# tshark's frame.encap_type numbers (wiretap WTAP_ENCAP_*) for the link types used here
_ENCAP_NAMES = {
    1: "Ethernet",
    7: "Raw IP",
    15: "NULL/Loopback",
    25: "Linux cooked-mode capture v1",
    210: "Linux cooked-mode capture v2",
}
