"""The whole analysis of one capture: stages wired in their one direction."""

from __future__ import annotations

from dicomtrace.capture import open_capture
from dicomtrace.capture.multi import open_sources
from dicomtrace.model.association import Analysis
from dicomtrace.model.builder import AnalysisBuilder, AnalysisConfig
from dicomtrace.model.links import link_operations
from dicomtrace.net import NetStats, decode_batch
from dicomtrace.output.series import SeriesRecorder
from dicomtrace.pipeline import summarize
from dicomtrace.tcp import TcpReassembler
from dicomtrace.tls import TlsLayer


def analyze_capture(path: str, config: AnalysisConfig, observer=None, series: bool = False) -> Analysis:
    """Read ``path`` through every stage up to the model of associations and operations."""
    reader = open_capture(path)
    try:
        return analyze_reader(reader, config, observer, series)
    finally:
        reader.close()


def analyze_reader(reader, config: AnalysisConfig, observer=None, series: bool = False,
                   shard: tuple[int, int] | None = None, link: bool = True,
                   progress=None) -> Analysis:
    """The same for an open reader (a file or a live capture).  An interrupt (Ctrl-C)
    ends the reading, not the analysis.  ``series``: also record bounded time series of
    each TCP direction for graphs.  ``shard=(k, n)``: only the connections whose port sum
    is k modulo n (one worker's share, see :func:`run_shard`).  ``progress``: called
    after each batch with (bytes read, packets, associations found)."""
    net = NetStats()
    tcp = TcpReassembler(config.ports, series=SeriesRecorder() if series else None)
    builder = AnalysisBuilder(config, observer)
    tls = TlsLayer.from_config(config)  # the stream transform between tcp and ul
    batches = reader.batches()
    owners: dict = {}
    try:
        for batch in batches:
            segs = decode_batch(batch, net)
            if shard is not None:
                segs = segs.subset(_shard_keep(segs, owners, *shard))
            builder.feed(tls.feed(tcp.feed(segs)))
            if progress is not None:
                progress(reader.read_bytes, net.frames,
                         sum(1 for a in builder.associations if any(a.pdus.values())))
    except KeyboardInterrupt:
        if reader.format != "live":
            raise
    finally:
        if progress is not None:
            progress.close()
    builder.feed(tls.feed(tcp.finish()))
    assocs = builder.finish()
    if link:
        link_operations(assocs)
    analysis = Analysis(assocs, tcp.connections, summarize(reader, net, reader.path), config.ports)
    tls.attach(analysis)
    return analysis


def _shard_keep(segs, owners: dict, k: int, n: int) -> list[int]:
    """Indexes of the segments worker ``k`` of ``n`` keeps: the i-th connection (both
    directions, in order of first appearance) belongs to worker i mod n.  Every worker
    sees every packet, so all agree without talking to each other."""
    import numpy as np

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


def run_shard(sources, config, k, n, series=False, export_options=None, tag="",
              progress=False):
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
        analysis = analyze_reader(reader, config, exporter, series,
                                  shard=(k, n) if n > 1 else None, link=False, progress=bar)
    finally:
        reader.close()
    return analysis, (exporter.close_open() if exporter is not None else None)


def merge_shards(parts, ports, link: bool = True) -> Analysis:
    """One analysis from the shares of one capture, numbered as one run would."""
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
    import os

    if isinstance(paths, str) or paths is None:
        paths = [paths] if paths and paths != "-" else []
    try:
        size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    except OSError:
        return 1
    return min(2, os.cpu_count() or 1) if paths and size >= (256 << 20) else 1
