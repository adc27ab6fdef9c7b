"""The local pool runs the main process's own work once the first task is done."""

from __future__ import annotations

import time

from dicomtrace.parallel import Inline, LocalPool


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_meanwhile_runs_once_the_first_task_is_done_and_before_the_last():
    seen = []
    with LocalPool(2) as pool:
        handles = [pool.submit(nap, (1.5,)), pool.submit(nap, (0.05,))]

        def meanwhile():
            seen.append([h.ready() for h in handles])

        assert pool.gather(handles, meanwhile=meanwhile) == [1.5, 0.05]
    assert seen == [[False, True]]  # once; the short task done, the long one not yet


def test_meanwhile_runs_once_when_everything_is_done_already():
    seen = []
    with LocalPool(2) as pool:
        handles = [pool.submit(nap, (0.0,)), pool.submit(nap, (0.0,))]
        time.sleep(0.5)
        assert pool.gather(handles, meanwhile=lambda: seen.append(1)) == [0.0, 0.0]
    with Inline() as pool:
        assert pool.gather([pool.submit(nap, (0.0,))], meanwhile=lambda: seen.append(2)) == [0.0]
    assert seen == [1, 2]
