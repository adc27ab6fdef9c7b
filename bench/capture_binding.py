"""Which capture binding for `dicomtrace live`: tcpdump through a pipe (what live uses) or
pcapy-ng in the Python process.  Sends N UDP datagrams on loopback at a chosen rate from a
separate process and counts what each method delivered to Python, the drops libpcap
reports, and the CPU seconds spent (tcpdump's and ours).

    .venv/bin/python bench/capture_binding.py [--packets 200000] [--rates 20000,100000,0]

Rate 0 is as fast as the sender can go.  pcapy-ng is optional (pip install pcapy-ng); it is
not a dependency of dicomtrace.  Results and the decision: docs/capture.md, "Live capture".
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

PAYLOAD = 100
BUFFER_KIB = 32768  # the same kernel buffer for both (tcpdump -B, pcap_set_buffer_size)


def send(port: int, n: int, rate: int, ready) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = b"x" * PAYLOAD
    ready.wait()
    t0 = time.perf_counter()
    for i in range(n):
        if rate and i % 64 == 0:
            lag = t0 + i / rate - time.perf_counter()
            if lag > 0:
                time.sleep(lag)
        s.sendto(data, ("127.0.0.1", port))


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_tcpdump(port: int, n: int, rate: int, immediate: bool = False) -> dict:
    from dicomtrace.capture.live import LiveCapture

    ready = multiprocessing.Event()
    sender = multiprocessing.Process(target=send, args=(port, n, rate, ready))
    sender.start()
    cap = LiveCapture("lo", f"udp port {port}", buffer_kib=BUFFER_KIB, immediate=immediate)
    got = 0
    cpu = {}

    def finish():  # the sender is done: let the pipe drain a second, then stop tcpdump
        sender.join()
        time.sleep(1.5)  # past libpcap's block timeout: everything handed over
        cpu["tcpdump"] = proc_cpu(cap.proc.pid)
        cap.stop()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with cap as reader:
        threading.Thread(target=finish, daemon=True).start()
        ready.set()
        for batch in reader.batches():
            got += len(batch.offsets)
    tcpdump_cpu = cpu.get("tcpdump", 0.0)
    sender.join()
    return {"method": "tcpdump --immediate-mode" if immediate else "tcpdump pipe", "delivered": got, "dropped": cap.stats.dropped,
            "seconds": time.perf_counter() - t0, "cpu_ours": time.process_time() - cpu0,
            "cpu_tcpdump": tcpdump_cpu}


def run_pcapy(port: int, n: int, rate: int) -> dict:
    import pcapy

    p = pcapy.create("lo")
    p.set_snaplen(262144)
    p.set_buffer_size(BUFFER_KIB * 1024)
    p.set_timeout(100)
    p.activate()
    p.setfilter(f"udp port {port}")
    ready = multiprocessing.Event()
    sender = multiprocessing.Process(target=send, args=(port, n, rate, ready))
    sender.start()
    got = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ready.set()
    idle_since = None
    while got < n:
        hdr, data = p.next()
        if hdr is None or not data:
            if not sender.is_alive():
                idle_since = idle_since or time.perf_counter()
                if time.perf_counter() - idle_since > 1.0:
                    break
            continue
        got += 1
    recv, drop, ifdrop = p.stats()
    sender.join()
    p.close()
    return {"method": "pcapy-ng", "delivered": got, "dropped": drop + ifdrop,
            "seconds": time.perf_counter() - t0, "cpu_ours": time.process_time() - cpu0,
            "cpu_tcpdump": 0.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--rates", default="20000,100000,0")
    args = ap.parse_args()
    methods = [run_tcpdump, lambda *a: run_tcpdump(*a, immediate=True)]
    try:
        import pcapy  # noqa: F401
        methods.append(run_pcapy)
    except ImportError:
        print("pcapy-ng not installed: measuring tcpdump only", file=sys.stderr)
    print(f"{'rate/s':>8} {'method':25} {'delivered':>9} {'dropped':>8} {'lost %':>7} "
          f"{'secs':>6} {'cpu ours':>8} {'cpu tcpdump':>11}")
    for rate in [int(r) for r in args.rates.split(",")]:
        for method in methods:
            port = 40000 + (os.getpid() + rate) % 2000
            r = method(port, args.packets, rate)
            lost = 100 * (args.packets - r["delivered"]) / args.packets
            print(f"{rate or 'max':>8} {r['method']:25} {r['delivered']:>9} {r['dropped']:>8} "
                  f"{lost:>7.2f} {r['seconds']:>6.2f} {r['cpu_ours']:>8.2f} {r['cpu_tcpdump']:>11.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
