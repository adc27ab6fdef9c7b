#!/usr/bin/env python3
"""The cost per packet in one process, layer by layer: CPU time, best of N.

usage: python bench/layers.py [CAPTURE.pcap] [--repeat N] [--chunk MB]

Issue #12 asks for at most 1 us a packet on bulk in-order traffic in one process.  This
times, in this process and with time.process_time (the machine may be shared, so the best
of N rounds is kept), four nested loops over the capture, each doing what the one before
does and one layer more:

- read:   ``open_capture(path).batches()`` (the record walk and the page faults);
- decode: + ``decode_batch`` (link, IP and TCP headers);
- tcp:    + ``TcpReassembler.feed`` (reassembly and the TCP figures);
- engine: ``Engine.run``, the whole analysis up to the model (Upper Layer, DIMSE, data
  sets, findings), what ``analyze --jobs 1`` does before the output.

The rounds interleave the loops, so a noisy moment hurts all of them alike.  Each line
gives the seconds, the microseconds per packet and the layer's own share (the difference
to the loop before).  ``--chunk`` reads in chunks of that many MiB instead of the reader's
default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicomtrace.capture import open_capture  # noqa: E402
from dicomtrace.capture import reader as _reader  # noqa: E402
from dicomtrace.config import AnalysisConfig  # noqa: E402
from dicomtrace.engine import Engine  # noqa: E402
from dicomtrace.net import NetStats, decode_batch  # noqa: E402
from dicomtrace.tcp import TcpReassembler  # noqa: E402

LAYERS = ("read", "decode", "tcp", "engine")
HERE = Path(__file__).resolve().parent


def loop(path: str, layer: str, chunk: int | None, ports: list[int]) -> tuple[float, int]:
    """CPU seconds of one loop, and the packets it read."""
    t = time.process_time()
    reader = open_capture(path, chunk_size=chunk)
    if layer == "engine":
        Engine(AnalysisConfig(ports=ports)).run(reader)
        reader.close()
        return time.process_time() - t, reader.frames
    net = NetStats()
    tcp = TcpReassembler(ports)
    n = 0
    for batch in reader.batches():
        n += len(batch)
        if layer != "read":
            segs = decode_batch(batch, net)
            if layer == "tcp":
                tcp.feed(segs)
    if layer == "tcp":
        tcp.finish()
    reader.close()
    return time.process_time() - t, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="?", default=str(HERE / "data" / "store-1g.pcap"))
    ap.add_argument("--repeat", type=int, default=5, help="rounds (best of N is kept)")
    ap.add_argument("--chunk", type=float, default=None, help="read chunk in MiB")
    ap.add_argument("--ports", default="104,11112")
    args = ap.parse_args()
    if not Path(args.capture).is_file():
        print(f"layers.py: error: no capture {args.capture} (bash bench/build_capture.sh)",
              file=sys.stderr)
        return 2
    chunk = int(args.chunk * (1 << 20)) if args.chunk else None  # None: the reader's default
    ports = [int(p) for p in args.ports.split(",")]
    # warm up: imports (pydicom at the first data set) and the page cache
    Engine(AnalysisConfig(ports=ports)).run(open_capture(str(HERE.parent / "examples" / "sample.pcap")))
    loop(args.capture, "read", chunk, ports)
    best: dict[str, float] = {}
    packets = 0
    for _ in range(args.repeat):
        for layer in LAYERS:
            cpu, n = loop(args.capture, layer, chunk, ports)
            best[layer] = min(best.get(layer, cpu), cpu)
            packets = max(packets, n)
    shown = f"{chunk / (1 << 20):g} MiB" if chunk else f"{_reader.MAP_CHUNK / (1 << 20):g} MiB (default)"
    print(f"{args.capture}: {packets} packets, chunk {shown}, "
          f"best of {args.repeat}, CPU seconds in one process")
    before = 0.0
    for layer in LAYERS:
        s = best[layer]
        print(f"  {layer:7} {s:6.3f} s  {s / packets * 1e6:5.2f} us/packet  "
              f"(this layer {s - before:+.3f} s, {(s - before) / packets * 1e6:.2f} us/packet)")
        before = s
    return 0


if __name__ == "__main__":
    sys.exit(main())
