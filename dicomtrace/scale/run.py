"""The analysis of several sensors' captures, over local processes or a Dask cluster.

Each sensor (:class:`~dicomtrace.capture.multi.Sensor`: a sequence of files read as one
capture) is analysed by its own reassembly, so the same connection seen at two capture
points is never merged.  Each sensor's capture is cut into parts by position (whole files,
or byte ranges of a large pcap file: :func:`dicomtrace.parallel.plan_parts`), one task a
part (:func:`dicomtrace.parallel.run_part`), run in this process, on a local process pool
(``jobs``) or on an existing ``dask.distributed`` cluster (``scheduler``), and stitched at
the part boundaries (:func:`dicomtrace.parallel.merge_parts`): the results are the same
either way, and the same as one process reading everything.
"""

from __future__ import annotations

import pickle

from dicomtrace.parallel import ROUNDS, Part, Plan, discard, merge_parts, plan_parts, pool_map, run_part
from dicomtrace.capture import CaptureError, CaptureProblem
from dicomtrace.capture.multi import Piece, Sensor
from dicomtrace.model.association import Analysis
from dicomtrace.model.links import link_operations
from dicomtrace.pipeline import CaptureSummary

DASK_CONNECT_TIMEOUT = 10  # s to reach the scheduler


def analyze_sensors(sensors: list[Sensor], config, *, jobs: int = 1, series: bool = False,
                    export_options=None, scheduler: str | None = None, progress: bool = False):
    """Analyse every sensor, its capture cut into ``jobs`` parts (fewer when it is small).
    Returns (analysis, exported objects or None); association and connection ids run on
    across sensors.  ``progress``: a progress bar on this terminal (when this process does
    the reading)."""
    # one sensor of one file: exactly the analysis of that file (no sensor keys)
    sources = [s.files[0] if len(sensors) == 1 and len(s.files) == 1 else s for s in sensors]
    serial = not scheduler and jobs == 1

    def mapper(tasks, bar=None):
        if scheduler:
            return dask_map(tasks, scheduler)
        return pool_map(tasks, jobs, progress=bar)

    def one_bar():  # of every part of every sensor, for the pool's first round
        from dicomtrace.output.progress import for_file

        return for_file([f for plan in plans for f in plan.files])

    plans = plan_parts(sources, jobs, mapper)
    wanted = {(i, k): ((), None) for i, plan in enumerate(plans) for k in range(len(plan.parts))}
    results: dict = {}
    merged: dict = {}
    for attempt in range(ROUNDS + 1):
        if attempt == ROUNDS:  # nothing proved: one serial run of what is left
            for i in {i for i, _ in wanted}:
                discard([results.pop((i, k)) for k in range(len(plans[i].parts))])
                plans[i] = Plan(plans[i].sources, [Part(1, [Piece(p) for p in plans[i].files])])
            wanted = {(i, 0): ((), None) for i in {i for i, _ in wanted}}
        tasks = []
        pooled = progress and not serial and not scheduler and attempt == 0
        for (i, k), (adopt, extend) in sorted(wanted.items()):
            bar = None
            if progress and serial:
                from dicomtrace.output.progress import for_file

                bar = for_file(plans[i].files)
            elif pooled:
                bar = len(tasks)  # this task's counters in the one bar
            if (i, k) in results:
                discard([results.pop((i, k))])
            tasks.append((run_part, (plans[i], k, config, series, export_options,
                                     f"s{i}r{attempt}", bar, adopt, extend)))
        for key, r in zip(sorted(wanted), mapper(tasks, one_bar if pooled else None) if not serial
                          else [fn(*args) for fn, args in tasks]):
            results[key] = r
        wanted = {}
        for i, plan in enumerate(plans):
            if i in merged:
                continue
            analysis, objects, needs = merge_parts(plan, [results[(i, k)] for k in range(len(plan.parts))],
                                                   config.ports, link=False)
            if analysis is not None:
                merged[i] = (analysis, objects)
                continue
            for k, pairs in needs.adopt.items():
                adopt, extend = wanted.get((i, k), (set(), {}))
                wanted[(i, k)] = (set(adopt) | pairs, extend)
            for k, more in needs.extend.items():
                adopt, extend = wanted.get((i, k), (set(), {}))
                wanted[(i, k)] = (adopt, {**(extend or {}), **more})
            for (j, k), (adopt, extend) in list(wanted.items()):  # a re-run keeps what it was given
                if j == i:
                    old = results[(i, k)].given
                    wanted[(i, k)] = (set(old[0]) | set(adopt), {**old[1], **(extend or {})})
        if not wanted:
            break
    per_sensor = [merged[i][0] for i in range(len(plans))]
    objects = None
    if export_options is not None:
        objects = [o for i in range(len(plans)) for o in merged[i][1]]
    if len(per_sensor) == 1 and not isinstance(sources[0], Sensor):
        link_operations(per_sensor[0].associations)
        return per_sensor[0], objects
    return combine_sensors(sensors, per_sensor, config.ports), objects


def combine_sensors(sensors: list[Sensor], analyses: list[Analysis], ports) -> Analysis:
    """One analysis of several sensors: ids numbered on, sensor after sensor; C-MOVE
    sub-associations are looked for within a sensor only."""
    conns, assocs = [], []
    for sensor, a in zip(sensors, analyses):
        for c in a.connections:
            c.id = len(conns) + 1
            conns.append(c)
        for x in a.associations:
            x.id = len(assocs) + 1
            x.sensor = sensor.name
            assocs.append(x)
    for a in analyses:
        link_operations(a.associations)
    return Analysis(assocs, conns, combine_summaries(sensors, [a.capture for a in analyses]), ports)


def combine_summaries(sensors: list[Sensor], summaries: list[CaptureSummary]) -> CaptureSummary:
    if len(summaries) == 1:
        return summaries[0]
    firsts = [s.first_time for s in summaries if s.first_time is not None]
    lasts = [s.last_time for s in summaries if s.last_time is not None]
    problems = [CaptureProblem(p.severity, f"sensor {sensor.name}: {p.message}", p.frame, p.offset)
                for sensor, s in zip(sensors, summaries) for p in s.problems]
    return CaptureSummary(
        path=", ".join(s.path for s in summaries), format=summaries[0].format,
        packets=sum(s.packets for s in summaries), bytes=sum(s.bytes for s in summaries),
        first_time=min(firsts) if firsts else None, last_time=max(lasts) if lasts else None,
        compressed=any(s.compressed for s in summaries),
        linktypes=sorted({t for s in summaries for t in s.linktypes}),
        problems=problems, files=[f for s in summaries for f in s.files])


def dask_map(tasks, address: str):
    """Run ``(function, args)`` tasks on the Dask cluster whose scheduler is at
    ``address`` (``tcp://HOST:8786``); results in task order.  The workers must be
    able to import dicomtrace and to read the capture files at the same paths."""
    try:
        from distributed import Client
    except ImportError:
        raise CaptureError("--scheduler needs dask.distributed: pip install 'dicomtrace[scale]'") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise CaptureError(f"--scheduler {address}: cannot reach the Dask scheduler ({e})") from None
    with client:
        futures = [client.submit(_pickled, fn, *args, pure=False) for fn, args in tasks]
        return [pickle.loads(b) for b in client.gather(futures)]


def _pickled(fn, *args) -> bytes:
    """``fn(*args)`` as one pickle: Dask would serialise a tuple's items apart, and the
    exported objects must keep pointing at the associations of the same result."""
    return pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL)
