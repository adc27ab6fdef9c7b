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

from dicomtrace.parallel import (ROUNDS, Inline, LocalPool, Part, Plan, count_tasks, cut, discard,
                                 finish_plans, first_part, merge_parts, run_part)
from dicomtrace.capture import CaptureError, CaptureProblem
from dicomtrace.capture.multi import Piece, Sensor
from dicomtrace.model.association import Analysis
from dicomtrace.model.links import link_operations
from dicomtrace.pipeline import CaptureSummary

DASK_CONNECT_TIMEOUT = 10  # s to reach the scheduler


def analyze_sensors(sensors: list[Sensor], config, *, jobs: int = 1, series: bool = False,
                    export_options=None, scheduler: str | None = None, progress: bool = False,
                    dicom: bool = True, meanwhile=None):
    """Analyse every sensor, its capture cut into ``jobs`` parts (fewer when it is small).
    Returns (analysis, exported objects or None); association and connection ids run on
    across sensors.  ``progress``: a progress bar on this terminal: one for all the parts
    of a local pool (bytes of every part), none for a Dask cluster.

    Part 0 of every capture starts at once, beside the count pass that numbers the frames
    of the other parts (it needs none); the others start when it is done.  ``dicom``
    False: TCP only (``conversations``).  ``meanwhile``: what this process needs after the
    parts (imports), done while the other processes analyse, once the first of them is done
    and a core is free (``gather``'s)."""
    # one sensor of one file: exactly the analysis of that file (no sensor keys)
    sources = [s.files[0] if len(sensors) == 1 and len(s.files) == 1 else s for s in sensors]
    cuts = [cut(src, jobs) for src in sources]
    # one task in all: it runs here (no pool to start)
    serial = not scheduler and (jobs == 1 or sum(len(c) for c in cuts) == 1)
    pooled = progress and not serial and not scheduler
    found = "associations" if dicom else "connections"  # (what the progress bar counts)

    def one_bar():  # of every part of every sensor
        from dicomtrace.output.progress import for_file

        return for_file([f for src in sources for f in Plan(src, []).files], found)

    if scheduler:
        executor = DaskPool(scheduler)
    elif serial:
        executor = Inline()
    else:
        # the pool's processes are forked from this one: what every part's analysis imports
        # (the exporter) is imported here, once, and not in each of them.  Not pydicom
        # (0.09-0.16 s): a stored object with a plain header is read without it
        # (dimse/plain.py), and a process that meets another data set imports it then.
        if export_options is not None:
            import dicomtrace.export.part10  # noqa: F401
        executor = LocalPool(jobs, sum(len(c) for c in cuts), one_bar if pooled else None)
    slot = {(i, k): n for n, (i, k) in enumerate((i, k) for i, c in enumerate(cuts) for k in range(len(c)))}

    def task(plans_, i, k, attempt, adopt=(), extend=None, recut=False):
        bar = None
        if progress and serial:
            from dicomtrace.output.progress import for_file

            bar = for_file(plans_[i].files, found)
        elif pooled and attempt == 0:
            bar = slot[(i, k)]  # this task's counters in the one bar
        # (the tag keeps each task's exported temporary files apart: a part 0 started again
        # after a re-cut runs beside the one it replaces, whose files are then removed)
        tag = f"s{i}r{attempt}{'c' if recut else ''}"
        return run_part, (plans_[i], k, config, series, export_options, tag, bar, adopt, extend, dicom)

    with executor as ex:
        early = [first_part(src, c) for src, c in zip(sources, cuts)]
        handles = {(i, 0): ex.submit(*task(early, i, 0, 0)) for i in range(len(sources))}
        while True:  # the count pass, beside the first parts
            tasks, where = count_tasks(cuts, jobs)
            plans = finish_plans(sources, cuts, where, ex.gather([ex.submit(fn, a) for fn, a in tasks]))
            if plans is not None:
                break
        stale = []
        for i, plan in enumerate(plans):
            if [p.path for p in plan.parts[0].pieces] != [p.path for p in early[i].parts[0].pieces] or \
                    [(p.start, p.stop) for p in plan.parts[0].pieces] != \
                    [(p.start, p.stop) for p in early[i].parts[0].pieces]:
                stale.append(handles.pop((i, 0)))  # re-cut: part 0 is another part now
                handles[(i, 0)] = ex.submit(*task(plans, i, 0, 0, recut=True))
            for k in range(1, len(plan.parts)):
                handles[(i, k)] = ex.submit(*task(plans, i, k, 0))
        discard(ex.gather(stale))
        keys = sorted(handles)
        results = dict(zip(keys, ex.gather([handles[key] for key in keys],
                                           meanwhile=None if serial else meanwhile)))
        merged: dict = {}
        for attempt in range(1, ROUNDS + 2):
            wanted = {}
            for i, plan in enumerate(plans):
                if i in merged:
                    continue
                analysis, objects, needs = merge_parts(plan, [results[(i, k)] for k in range(len(plan.parts))],
                                                       config.ports, link=False)
                if analysis is not None:
                    merged[i] = (analysis, objects)
                    continue
                for k in set(needs.adopt) | set(needs.extend):  # a re-run keeps what it was given
                    adopt, extend = results[(i, k)].given
                    wanted[(i, k)] = (set(adopt) | needs.adopt.get(k, set()),
                                      {**extend, **needs.extend.get(k, {})})
            if not wanted:
                break
            if attempt > ROUNDS:  # nothing proved: one serial run of what is left
                for i in {i for i, _ in wanted}:
                    discard([results.pop((i, k)) for k in range(len(plans[i].parts))])
                    plans[i] = Plan(plans[i].sources, [Part(1, [Piece(p) for p in plans[i].files])])
                wanted = {(i, 0): ((), None) for i in {i for i, _ in wanted}}
            keys = sorted(wanted)
            for key in keys:
                if key in results:
                    discard([results.pop(key)])
            handles = [ex.submit(*task(plans, i, k, attempt, *wanted[(i, k)])) for i, k in keys]
            results.update(zip(keys, ex.gather(handles)))
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


class DaskPool:
    """The tasks on the Dask cluster whose scheduler is at ``address`` (``tcp://HOST:8786``).
    The workers must be able to import dicomtrace and to read the capture files at the
    same paths."""

    def __init__(self, address: str):
        self.address = address

    def __enter__(self):
        try:
            from distributed import Client
        except ImportError:
            raise CaptureError("--scheduler needs dask.distributed: pip install 'dicomtrace[scale]'") from None
        try:
            self.client = Client(self.address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise CaptureError(f"--scheduler {self.address}: cannot reach the Dask scheduler ({e})") from None
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def submit(self, fn, args):
        return self.client.submit(_pickled, fn, *args, pure=False)

    def gather(self, handles, meanwhile=None) -> list:
        if meanwhile is not None:  # (the cluster's cores are not this machine's)
            meanwhile()
        return [pickle.loads(b) for b in self.client.gather(list(handles))]


def dask_map(tasks, address: str):
    """Run ``(function, args)`` tasks on the Dask cluster at ``address``; results in task
    order (see :class:`DaskPool`)."""
    with DaskPool(address) as pool:
        return pool.gather([pool.submit(fn, args) for fn, args in tasks])


def _pickled(fn, *args) -> bytes:
    """``fn(*args)`` as one pickle: Dask would serialise a tuple's items apart, and the
    exported objects must keep pointing at the associations of the same result."""
    return pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL)
