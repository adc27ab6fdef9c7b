"""The main process's work while its pool analyses (scale/run.py ``background``)."""

from __future__ import annotations

import os
import threading

import pytest

from dicomtrace.scale.run import background


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no thread priorities here")
def test_it_runs_at_the_lowest_priority_and_leaves_the_caller_s_alone():
    seen = {}

    def work():
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    background(work).join()
    assert seen["nice"] == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_what_it_raises_is_raised_by_join():
    def work():
        raise LookupError("no such module")

    waiting = background(work)
    with pytest.raises(LookupError, match="no such module"):
        waiting.join()
