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
