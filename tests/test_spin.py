"""Spinning is bounded: an idle pool and a blocked result() sleep, they do
not keep a CPU busy (block.c caps every spin by the measured cost of a
wake-up).  The bounds are generous (a spinning thread would use the whole
interval); they check that waiting ends in a sleep, not how fast anything
is."""
import threading
import time

import pytest

from conftest import LONG

IDLE = 0.5
# A thread that never stops spinning would use ~IDLE of CPU time here.
MAX_CPU = IDLE / 4


def thread_cpu(fn):
    """CPU time of the whole process while fn() runs."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


@pytest.mark.timeout(60)
def test_idle_workers_sleep(impl):
    with impl.ThreadPoolExecutor(max_workers=4) as ex:
        # a burst grows the workers' spin budgets as far as they go
        for _ in range(3):
            list(ex.map(abs, range(2000)))
            for i in range(500):
                ex.submit(abs, i).result(timeout=LONG)
        used = thread_cpu(lambda: time.sleep(IDLE))
    assert used < MAX_CPU, "idle workers used %.3f s of CPU in %.1f s" % (used, IDLE)


@pytest.mark.timeout(60)
def test_blocked_result_sleeps(impl):
    with impl.ThreadPoolExecutor(max_workers=1) as ex:
        for i in range(2000):       # short waits: the caller's budget grows
            ex.submit(abs, i).result(timeout=LONG)
        gate = threading.Event()
        f = ex.submit(gate.wait, LONG)
        threading.Timer(IDLE, gate.set).start()
        used = thread_cpu(lambda: f.result(timeout=LONG))
    assert used < MAX_CPU, "result() used %.3f s of CPU in %.1f s" % (used, IDLE)
