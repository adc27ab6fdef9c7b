#!/usr/bin/env python3
"""The record walk and the count pass, in process: CPU time, best of N.

usage: python bench/walk.py [CAPTURE.pcap] [--repeat N]

For each walk (DICOMTRACE_WALK_PATH=stride, the default, and =record, the reference) it
times with time.process_time, best of N (the machine may be shared):

- walk: a loop over ``open_capture(path).batches()`` doing nothing else;
- count: ``dicomtrace.parallel.count_records`` over the whole file, and over its first half
  (what a 2-process analyze counts before its second part starts);

and, once, the floor both pay for the file's pages: a 4 MiB memory map at a time with one
byte of each page touched (page faults and unmapping; a walk must read a header on every
page of bulk traffic).  Prints seconds and microseconds per record.
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from dicomtrace.capture import open_capture  # noqa: E402
from dicomtrace.parallel import count_records  # noqa: E402


def walk(path: str) -> int:
    reader = open_capture(path)
    n = 0
    for batch in reader.batches():
        n += len(batch)
    reader.close()
    return n


def floor(path: str) -> int:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        for base in range(0, size, 4 << 20):
            with mmap.mmap(f.fileno(), min(4 << 20, size - base), offset=base,
                           access=mmap.ACCESS_READ) as m:
                pages = np.frombuffer(m, np.uint8)
                int(pages[::mmap.PAGESIZE].sum())
                del pages
    return 0


def best(repeat: int, fn, *args):
    out, least = None, float("inf")
    for _ in range(repeat):
        t = time.process_time()
        out = fn(*args)
        least = min(least, time.process_time() - t)
    return least, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    ap.add_argument("capture", nargs="?", default=str(here / "data" / "store-1g.pcap"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    path = args.capture
    if not os.path.isfile(path):
        print(f"walk.py: no capture {path} (bash bench/run.sh builds it)", file=sys.stderr)
        return 2
    size = os.path.getsize(path)
    records = walk(path)  # also warms the page cache
    print(f"{path}: {size:,} bytes, {records:,} records; CPU time, best of {args.repeat}")
    t, _ = best(args.repeat, floor, path)
    print(f"  {'page floor':24s} {t:6.3f} s  {t / records * 1e6:.3f} us/record")
    for name in ("stride", "record"):
        os.environ["DICOMTRACE_WALK_PATH"] = name
        t, n = best(args.repeat, walk, path)
        assert n == records
        print(f"  {'walk, ' + name:24s} {t:6.3f} s  {t / records * 1e6:.3f} us/record")
        t, got = best(args.repeat, count_records, path, 24, size)
        assert got is not None and got[0] == records
        print(f"  {'count whole, ' + name:24s} {t:6.3f} s  {t / records * 1e6:.3f} us/record")
        t, got = best(args.repeat, count_records, path, 24, size // 2)
        print(f"  {'count half, ' + name:24s} {t:6.3f} s  ({got[0]:,} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
