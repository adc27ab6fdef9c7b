"""Sharding: one capture analysed by several workers, each keeping its share of the TCP
connections, and the shares merged as one serial run would have numbered them.

The interface is small so that the local pool here and the Dask cluster of
:mod:`dicomtrace.scale.run` call it alike: :func:`run_shard` (sources, config, k, n) ->
(analysis, exported objects), and :func:`merge_shards` (the results) ->
:class:`~dicomtrace.model.association.Analysis`.  Everything that crosses between them
(config, export options, results) is picklable.  Every worker reads the whole capture and decides ownership from the packets
alone (:class:`ShardSelector`), so workers never talk to each other.
"""

from __future__ import annotations

import os

from dicomtrace.capture.multi import open_sources
from dicomtrace.config import AnalysisConfig
from dicomtrace.engine import Engine
from dicomtrace.model.association import Analysis
from dicomtrace.model.links import link_operations
from dicomtrace.net import Segments


class ShardSelector:
    """Keeps the segments of worker ``k`` of ``n``: the i-th connection (both directions,
    in order of first appearance) belongs to worker i mod n."""

    def __init__(self, k: int, n: int):
        self.k, self.n = k, n
        self.owners: dict = {}

    def __call__(self, segs: Segments) -> Segments:
        return segs.subset(self.keep(segs))

    def keep(self, segs: Segments) -> list[int]:
        import numpy as np

        k, n, owners = self.k, self.n, self.owners
        if not len(segs):
            return []
        sp = np.asarray(segs.sport, dtype=np.int64)
        dp = np.asarray(segs.dport, dtype=np.int64)
        try:
            a = (np.asarray(segs.src, dtype=np.int64) << 16) | sp
            b = (np.asarray(segs.dst, dtype=np.int64) << 16) | dp
        except OverflowError:  # IPv6 addresses do not fit: the slow way
            keep = []
            for i, key in enumerate(zip(segs.src, segs.sport, segs.dst, segs.dport)):
                canon = min(key[:2], key[2:]) + max(key[:2], key[2:])
                owner = owners.setdefault(canon, len(owners) % n)
                if owner == k:
                    keep.append(i)
            return keep
        pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
        uniq, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
        owner = np.empty(len(uniq), dtype=np.int64)
        for j in np.argsort(first, kind="stable").tolist():
            key = (int(uniq[j, 0]), int(uniq[j, 1]))
            owner[j] = owners.setdefault(key, len(owners) % n)
        return np.flatnonzero(owner[inverse.reshape(-1)] == k).tolist()


def run_shard(sources, config: AnalysisConfig, k: int, n: int, series: bool = False, export_options=None,
              tag: str = "", progress: bool = False):
    """Worker ``k`` of ``n``: its share of the connections of ``sources`` (a path or a
    :class:`~dicomtrace.capture.multi.Sensor`'s files, read as one capture), unlinked.
    Runs in another process (a pool's or a Dask worker's), so arguments and the result
    pickle.  ``progress``: show a progress bar of the reading (one task at a time).
    Returns (analysis, exported objects or None)."""
    exporter = None
    if export_options is not None:
        from dicomtrace.export.part10 import Part10Exporter

        exporter = Part10Exporter(export_options, tag=f"{tag}w{k}")
    reader = open_sources(sources)
    try:
        bar = None
        if progress:
            from dicomtrace.output.progress import for_file

            bar = for_file(sources.files if hasattr(sources, "files") else sources)
        engine = Engine(config, [exporter] if exporter is not None else [], series=series,
                        select=ShardSelector(k, n) if n > 1 else None, link=False, progress=bar)
        analysis = engine.run(reader)
    finally:
        reader.close()
    return analysis, (exporter.close_open() if exporter is not None else None)


def merge_shards(parts, ports, link: bool = True) -> Analysis:
    """One analysis from the shares of one capture, numbered as one run would: connections
    and associations in order of their first frame, C-MOVEs linked across shares."""
    conns = sorted((c for a, _ in parts for c in a.connections), key=lambda c: c.first_frame)
    for i, c in enumerate(conns, 1):
        c.id = i
    assocs = sorted((x for a, _ in parts for x in a.associations), key=lambda x: x.conn.id)
    for i, a in enumerate(assocs, 1):
        a.id = i
    if link:
        link_operations(assocs)
    tls_sessions = sorted((s for a, _ in parts for s in a.tls_connections), key=lambda s: s.conn.id)
    plain_on_tls = [p for a, _ in parts for p in a.plain_on_tls_port]
    return Analysis(assocs, conns, parts[0][0].capture, ports,
                    tls_connections=tls_sessions, plain_on_tls_port=plain_on_tls,
                    tls_ports=parts[0][0].tls_ports)


def pool_map(tasks, processes: int):
    """Run ``(function, args)`` tasks on a pool of ``processes``, results in task order."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(max(1, min(processes, len(tasks)))) as pool:
        pending = [pool.apply_async(fn, args) for fn, args in tasks]
        return [p.get() for p in pending]


def auto_jobs(paths) -> int:
    """Two processes pay for themselves on large capture files (not stdin, not live)."""
    if isinstance(paths, str) or paths is None:
        paths = [paths] if paths and paths != "-" else []
    try:
        size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    except OSError:
        return 1
    return min(2, os.cpu_count() or 1) if paths and size >= (256 << 20) else 1
