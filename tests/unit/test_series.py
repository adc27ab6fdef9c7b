"""output/series.py: Series.extend keeps exactly the points that add() one by one would keep
(the TCP batch path records a whole run at once)."""

import random

import numpy as np

from dicomtrace.output.series import Series


def test_extend_equals_add_one_by_one():
    rnd = random.Random(12)
    for _ in range(300):
        limit = rnd.choice([4, 8, 16])
        one, run = Series(limit), Series(limit)
        t = 0
        for _ in range(rnd.randint(1, 30)):
            m = rnd.randint(0, 50)
            xs = np.arange(t, t + m)
            t += m
            for x in xs.tolist():
                one.add((x, 2 * x))
            run.extend(xs, 2 * xs)
            assert (run.points, run.stride, run.skip) == (one.points, one.stride, one.skip)


def test_repeated_acknowledgements_keep_only_their_time():
    """An ACK that repeats the last (offset, window edge) adds no point, only moves where the
    step line ends; one call per segment and one call per run keep the same points."""
    from types import SimpleNamespace

    from dicomtrace.output.series import SeriesRecorder

    rec = SeriesRecorder()
    rnd = random.Random(5)
    rows = []
    off = 0
    for i in range(5000):
        off += rnd.choice([0, 0, 0, 1448])  # mostly the same acknowledgement again
        rows.append((i * 0.001, off, off + 65535))
    one, run = SimpleNamespace(), SimpleNamespace()
    rec.open(one), rec.open(run)
    for r in rows:
        rec.acked(one, *r)
    cols = [np.array(c) for c in zip(*rows)]
    for a in range(0, len(rows), 333):
        rec.acked_run(run, *(c[a:a + 333] for c in cols))
    assert one.acked.points == run.acked.points
    changes = [r for k, r in enumerate(rows) if k == 0 or r[1:] != rows[k - 1][1:]]
    assert one.acked.points == changes
    assert tuple(one.acked.array()[-1]) == rows[-1] == tuple(run.acked.array()[-1])
