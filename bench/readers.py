#!/usr/bin/env python3
"""Why dicomtrace reads captures with its own code: time three ways of reading a pcap.

usage: python bench/readers.py CAPTURE.pcap

1. records only: walk every record (timestamp, lengths, payload) — ours vs dpkt vs python-pcapng
   (pcapng only reads pcapng, so it is timed on an editcap -F pcapng copy if one is given with
   --pcapng FILE);
2. records + Ethernet/IPv4/TCP headers: ours (numpy over each 4 MiB batch) vs dpkt's per-packet
   object parsing.
Prints seconds and microseconds per packet for each.
"""

import argparse
import resource
import sys
import time


def ours_records(path):
    from dicomtrace.capture import open_capture
    n = 0
    r = open_capture(path)
    for b in r.batches():
        n += len(b)
    return n


def ours_headers(path):
    from dicomtrace.capture import open_capture
    from dicomtrace.net import NetStats, decode_batch
    n = 0
    r = open_capture(path)
    st = NetStats()
    for b in r.batches():
        segs = decode_batch(b, st)
        n += len(segs)
    return n


def dpkt_records(path):
    import dpkt
    n = 0
    with open(path, "rb") as f:
        for _ts, _buf in dpkt.pcap.Reader(f):
            n += 1
    return n


def dpkt_headers(path):
    import dpkt
    n = 0
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                tcp = ip.data
                _ = (ip.src, ip.dst, tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.flags, len(tcp.data))
                n += 1
    return n


def pcapng_records(path):
    from pcapng import FileScanner
    from pcapng.blocks import EnhancedPacket
    n = 0
    with open(path, "rb") as f:
        for block in FileScanner(f):
            if isinstance(block, EnhancedPacket):
                _ = block.packet_data
                n += 1
    return n


def timed(name, fn, path):
    t0 = time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_SELF)
    n = fn(path)
    dt = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    print(f"{name:40s} {n:9d} packets {dt:7.2f} s wall {cpu:7.2f} s cpu {dt / max(n, 1) * 1e6:6.2f} us/packet",
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("--pcapng", help="a pcapng copy of the same capture, for python-pcapng")
    a = ap.parse_args()
    timed("dicomtrace: records", ours_records, a.pcap)
    timed("dpkt: records", dpkt_records, a.pcap)
    if a.pcapng:
        timed("dicomtrace: records (pcapng)", ours_records, a.pcapng)
        timed("python-pcapng: records (pcapng)", pcapng_records, a.pcapng)
    timed("dicomtrace: records + eth/ip/tcp headers", ours_headers, a.pcap)
    timed("dpkt: records + eth/ip/tcp headers", dpkt_headers, a.pcap)


if __name__ == "__main__":
    sys.exit(main())
