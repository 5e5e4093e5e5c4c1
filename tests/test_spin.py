"""Spinning is bounded: an idle pool and a blocked result() sleep, they do
not keep a CPU busy (block.c caps every spin by the measured cost of a
wake-up).  The bounds are generous (a spinning thread would use the whole
interval); they check that waiting ends in a sleep, not how fast anything
is."""
import sysconfig
import threading
import time

import pytest

from conftest import LONG

IDLE = 0.5
# A thread that never stops spinning would use ~IDLE of CPU time here.
MAX_CPU = IDLE / 4


def process_cpu(fn):
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
        used = process_cpu(lambda: time.sleep(IDLE))
    assert used < MAX_CPU, "idle workers used %.3f s of CPU in %.1f s" % (used, IDLE)


@pytest.mark.timeout(60)
def test_blocked_result_sleeps(impl):
    with impl.ThreadPoolExecutor(max_workers=1) as ex:
        for i in range(2000):       # short waits: the caller's budget grows
            ex.submit(abs, i).result(timeout=LONG)
        gate = threading.Event()
        f = ex.submit(gate.wait, LONG)
        threading.Timer(IDLE, gate.set).start()
        used = process_cpu(lambda: f.result(timeout=LONG))
    assert used < MAX_CPU, "result() used %.3f s of CPU in %.1f s" % (used, IDLE)


def spin_stats():
    import cfutures._cfutures as c
    return c._spin_stats()


@pytest.mark.timeout(60)
def test_spin_cap_is_a_measured_wake_up():
    import cfutures
    with cfutures.ThreadPoolExecutor(max_workers=1) as ex:
        before = spin_stats()["wake_samples"]
        for i in range(200):        # the worker sleeps between requests
            f = ex.submit(abs, i)
            time.sleep(0.001)
            f.result(timeout=LONG)
    st = spin_stats()
    assert st["wake_samples"] > before
    assert 2000 <= st["wake_ns"] <= 50000, st


@pytest.mark.skipif(bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
                    reason="free-threaded: no GIL, no hand-off hint to spin for")
@pytest.mark.timeout(60)
def test_no_dead_spin_for_a_hint_that_cannot_come():
    """Work picked up while the submitter sleeps in time.sleep(): the GIL
    is free but nobody sets the hand-off hint (the submitter's last GIL
    acquisition, in a result() that blocked, cleared it).  The worker's
    budget for that hint must shrink: a fixed spin per request (60 us
    before, or a budget stuck at the ~20 us cap) cost 4-12 ms here; a
    decaying one costs well under 1 ms on an idle machine, about 1 ms
    on a loaded one."""
    import cfutures
    n = 200
    with cfutures.ThreadPoolExecutor(max_workers=1) as ex:
        ex.submit(abs, 0).result(timeout=LONG)
        before = spin_stats()
        for i in range(n):
            ex.submit(time.sleep, 0.0005).result(timeout=LONG)
            f = ex.submit(abs, i)
            time.sleep(0.002)       # releases the GIL, sets no hint
            f.result(timeout=LONG)
        after = spin_stats()
    assert after["gil_spins_failed"] > before["gil_spins_failed"]  # the case ran
    spent = after["gil_spins_failed_ns"] - before["gil_spins_failed_ns"]
    assert spent < n * 10000, "failed GIL-hint spins cost %.1f us" % (spent / 1e3)
