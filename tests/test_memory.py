"""Leak checks that work on release builds: run a scenario many times and
require that RSS and the number of GC-tracked objects stop growing; reference
cycles through a future are collected.

cfutures runs the big scenario a million times, the stdlib (slower, and only
the reference here) 100,000 times.
"""

import gc
import os
import sys
import threading
import tracemalloc
import weakref

import pytest

from conftest import RecordingWaiter

PAGE = os.sysconf("SC_PAGE_SIZE")
N_BIG = {"stdlib": 100_000, "cfutures": 1_000_000}
N_SMALL = {"stdlib": 20_000, "cfutures": 100_000}

from conftest import UNDER_ASAN  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="needs /proc/self/statm")


def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def tracked():
    return len(gc.get_objects())


def impl_id(impl):
    return "stdlib" if impl.__name__ == "concurrent.futures" else "cfutures"


# tracemalloc phase: iterations per pass, and the most the traced memory may
# grow over a pass.  Warm-up passes fill free lists, caches and spin budgets;
# after them a steady scenario allocates and frees the same amount, so any
# leak through Python's allocators (objects, cfutures' PyMem_* buffers) of
# TRACE_SLACK / TRACE_N = 0.33 bytes per iteration or more fails.
TRACE_N = 50_000
TRACE_SLACK = 16 * 1024


def check_no_growth(run, n):
    """Warm up with n iterations, then require that n more leave RSS and the
    GC object count (nearly) unchanged; then, under tracemalloc, that
    TRACE_N more leave Python's allocators where they were."""
    run(n)
    gc.collect()
    rss0, objs0 = rss(), tracked()
    run(n)
    gc.collect()
    rss1, objs1 = rss(), tracked()
    # RSS moves by whole pages and arenas (a few MB of noise), so it only
    # bounds what tracemalloc cannot see, memory from plain malloc (pthread
    # and semaphore state): >= 4 bytes per iteration over n = 1e6 (cfutures),
    # >= 40 at n = 1e5.  The exact check is the tracemalloc one below.
    limit = 4 * 2 ** 20 + 4 * n
    assert UNDER_ASAN or rss1 - rss0 < limit, "RSS grew by %d bytes over %d iterations" % (rss1 - rss0, n)
    assert objs1 - objs0 < 1000, "%d more GC-tracked objects after %d iterations" % (
        objs1 - objs0, n)
    nt = min(n, TRACE_N)
    tracemalloc.start()
    try:
        run(nt)
        gc.collect()
        run(nt)
        gc.collect()
        m0 = tracemalloc.get_traced_memory()[0]
        run(nt)
        gc.collect()
        m1 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert m1 - m0 < TRACE_SLACK, "traced memory grew by %d bytes over %d iterations" % (
        m1 - m0, nt)


# ---------------------------------------------------------------------------
# Churn scenarios
# ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_create_complete_read_no_growth(impl):
    Future = impl.Future

    def run(n):
        for i in range(n):
            f = Future()
            f.set_result(i + 1000)
            f.result()

    check_no_growth(run, N_BIG[impl_id(impl)])


@pytest.mark.timeout(120)
def test_exceptions_no_growth(impl):
    Future = impl.Future

    def run(n):
        for i in range(n):
            f = Future()
            f.set_exception(ValueError(i))
            try:
                f.result()
            except ValueError:
                pass
            f.exception()
            del f

    check_no_growth(run, N_SMALL[impl_id(impl)])


@pytest.mark.timeout(120)
def test_callbacks_and_cancel_no_growth(impl):
    Future = impl.Future

    def run(n):
        for i in range(n):
            f = Future()
            f.add_done_callback(lambda fut: None)
            if i % 2:
                f.cancel()
                f.set_running_or_notify_cancel()
            else:
                f.set_running_or_notify_cancel()
                f.set_result(i)
            f.add_done_callback(lambda fut: fut.done())

    check_no_growth(run, N_SMALL[impl_id(impl)])


@pytest.mark.timeout(120)
def test_callback_cycles_no_growth(impl):
    """A callback closing over its own future: a cycle on every iteration,
    which the GC must be able to break."""
    Future = impl.Future

    def run(n):
        for i in range(n):
            f = Future()
            f.add_done_callback(lambda fut, f=f: f)
            f.set_result(i)

    check_no_growth(run, N_SMALL[impl_id(impl)])


@pytest.mark.timeout(120)
def test_wait_and_as_completed_no_growth(impl):
    Future = impl.Future
    done = [Future() for _ in range(3)]
    for f in done:
        f.set_result(None)

    def run(n):
        for _ in range(n // 10):
            p = Future()
            impl.wait(done + [p], timeout=0)
            impl.wait(done + [p], timeout=0, return_when=impl.FIRST_COMPLETED)
            for _f in impl.as_completed(done):
                pass
            it = impl.as_completed(done + [p])
            next(it)
            it.close()
            p.set_result(1)
            list(impl.as_completed([p], timeout=0))

    check_no_growth(run, N_SMALL[impl_id(impl)])


# ---------------------------------------------------------------------------
# Cycles are collected
# ---------------------------------------------------------------------------


def _cycle_via_callback_pending(mod):
    f = mod.Future()
    f.add_done_callback(lambda fut: f)
    return f


def _cycle_via_callback_done(mod):
    f = mod.Future()
    f.add_done_callback(lambda fut: f)
    f.set_result(f)
    return f


def _cycle_via_result(mod):
    f = mod.Future()
    f.set_result([f])
    return f


def _cycle_via_exception_traceback(mod):
    f = mod.Future()
    try:
        raise KeyError("in a frame that references f")
    except KeyError as e:
        f.set_exception(e)
    return f


def _cycle_via_result_raise(mod):
    f = mod.Future()
    f.set_exception(ValueError("x"))
    try:
        f.result()
    except ValueError:
        pass
    return f


def _cycle_via_dict(mod):
    f = mod.Future()
    f.me = f
    return f


def _cycle_via_waiter(mod):
    f = mod.Future()
    w = RecordingWaiter()
    w.future = f
    f._waiters.append(w)
    return f


def _cycle_via_waiter_notified(mod):
    f = _cycle_via_waiter(mod)
    f.set_result(None)  # the waiter now holds f in its calls
    return f


def _cycle_via_subclass(mod):
    class Sub(mod.Future):
        pass

    f = Sub()
    f.add_done_callback(lambda fut: f)
    f.cancel()
    return f


def _cycle_via_condition(mod):
    f = mod.Future()
    cond = f._condition
    cond.owner_future = f if hasattr(cond, "__dict__") else None
    f.cond_again = cond
    return f


CYCLES = [_cycle_via_callback_pending, _cycle_via_callback_done, _cycle_via_result,
          _cycle_via_exception_traceback, _cycle_via_result_raise, _cycle_via_dict,
          _cycle_via_waiter, _cycle_via_waiter_notified, _cycle_via_subclass,
          _cycle_via_condition]


@pytest.mark.parametrize("make", CYCLES, ids=[c.__name__[len("_cycle_via_"):] for c in CYCLES])
def test_cycles_are_collected(impl, make):
    f = make(impl)
    ref = weakref.ref(f)
    del f
    gc.collect()
    assert ref() is None, "future kept alive: %r" % (ref(),)


@pytest.mark.parametrize("how", ["result", "exception", "cancel", "pending", "callback"])
def test_freed_by_refcount_alone(impl, how):
    """Without cycles, a future is freed as soon as the last reference goes,
    with the GC disabled."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        f = impl.Future()
        if how == "result":
            f.set_result(object())
            f.result()
        elif how == "exception":
            f.set_exception(ValueError())
            f.exception()
        elif how == "cancel":
            f.cancel()
            f.set_running_or_notify_cancel()
        elif how == "callback":
            f.add_done_callback(id)
            f.add_done_callback(lambda fut: None)
            f.set_result(1)
        ref = weakref.ref(f)
        del f
        assert ref() is None
    finally:
        if was_enabled:
            gc.enable()


def test_result_object_released_with_future(impl):
    class Payload:
        pass

    p = Payload()
    pref = weakref.ref(p)
    f = impl.Future()
    f.set_result(p)
    del p
    assert pref() is f.result()
    del f
    gc.collect()
    assert pref() is None


@pytest.mark.timeout(60)
def test_callbacks_released_after_completion_from_thread(impl):
    """Objects captured by callbacks do not outlive the future."""

    class Token:
        pass

    tokens = []
    fs = []
    for _ in range(50):
        t = Token()
        tokens.append(weakref.ref(t))
        f = impl.Future()
        f.add_done_callback(lambda fut, t=t: t)
        fs.append(f)
        del t

    def complete():
        for f in fs:
            f.set_result(None)

    th = threading.Thread(target=complete)
    th.start()
    th.join(30)
    assert not th.is_alive()
    del fs, f, th
    gc.collect()
    assert all(r() is None for r in tokens)


def test_getrefcount_of_result_stable(impl):
    value = object()
    before = sys.getrefcount(value)
    for _ in range(1000):
        f = impl.Future()
        f.set_result(value)
        f.result()
        f.exception()
        repr(f)
    del f
    assert sys.getrefcount(value) == before
