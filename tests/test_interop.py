"""Interoperability: the stdlib's wait()/as_completed() over cfutures futures,
cfutures' over stdlib futures and third-party subclasses, asyncio."""

import asyncio
import concurrent.futures
import queue
import threading
import time

import pytest

from conftest import LONG, SHORT_DELAY, make_future, run_bounded, waiters_left

STD = concurrent.futures


class ThirdPartyFuture(concurrent.futures.Future):
    """A subclass as libraries write them (pebble-like): extra state, an
    overridden method that calls up, and direct use of the private lock."""

    def __init__(self):
        super().__init__()
        self.history = []

    def set_result(self, result):
        with self._condition:
            self.history.append(("set_result", result))
        super().set_result(result)


def mixed_futures(impl):
    """Pending futures of several origins."""

    class ImplSubclass(impl.Future):
        def set_result(self, result):
            super().set_result(result)

    return [impl.Future(), STD.Future(), ThirdPartyFuture(), ImplSubclass()]


def complete_all(fs, delay=0.01):
    for i, f in enumerate(fs):
        time.sleep(delay)
        if i % 3 == 1:
            f.set_exception(ValueError(i))
        elif i % 3 == 2:
            f.cancel()
            f.set_running_or_notify_cancel()
        else:
            f.set_result(i)


def no_waiters(fs):
    return all(waiters_left(f) == 0 for f in fs)


# ---------------------------------------------------------------------------
# wait() and as_completed() of one module over futures of the other
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("waiter_module", ["std-wait", "impl-wait"])
def test_wait_all_completed_mixed(impl, threads, waiter_module):
    mod = STD if waiter_module == "std-wait" else impl
    fs = mixed_futures(impl)
    threads(complete_all, fs, delay=SHORT_DELAY / 5)
    r = run_bounded(mod.wait, fs, timeout=LONG)
    assert r.done == set(fs) and r.not_done == set()
    assert no_waiters(fs)
    assert fs[2].history == [("set_result", 2)] or fs[2].cancelled()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("waiter_module", ["std-wait", "impl-wait"])
@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_wait_first_completed_mixed(impl, threads, waiter_module, which):
    mod = STD if waiter_module == "std-wait" else impl
    fs = mixed_futures(impl)
    threads(fs[which].set_result, "x", delay=SHORT_DELAY)
    r = run_bounded(mod.wait, fs, timeout=LONG, return_when=mod.FIRST_COMPLETED)
    assert r.done == {fs[which]}
    assert r.not_done == set(fs) - {fs[which]}
    assert no_waiters(fs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("waiter_module", ["std-wait", "impl-wait"])
@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_wait_first_exception_mixed(impl, threads, waiter_module, which):
    mod = STD if waiter_module == "std-wait" else impl
    fs = mixed_futures(impl)
    others = [f for f in fs if f is not fs[which]]

    def complete():
        others[0].set_result(0)
        fs[which].set_exception(KeyError(which))

    threads(complete, delay=SHORT_DELAY)
    r = run_bounded(mod.wait, fs, timeout=LONG, return_when=mod.FIRST_EXCEPTION)
    assert fs[which] in r.done
    assert r.not_done >= set(others[1:])
    assert no_waiters(fs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("waiter_module", ["std-wait", "impl-wait"])
def test_wait_first_exception_over_done_futures(impl, waiter_module):
    """The stdlib's wait() calls f.cancelled() and f.exception() on done
    futures while it holds every f._condition: the lock must be re-entrant
    (or not taken by those methods)."""
    mod = STD if waiter_module == "std-wait" else impl
    fs = [make_future(impl, "finished"), make_future(impl, "raised"),
          make_future(impl, "cancelled_notified"), impl.Future(),
          make_future(STD, "raised")]
    r = run_bounded(mod.wait, fs, timeout=LONG, return_when=mod.FIRST_EXCEPTION)
    assert r.not_done == {fs[3]}
    r = run_bounded(mod.wait, fs[:3], return_when=mod.FIRST_EXCEPTION)
    assert r.done == set(fs[:3])
    r = run_bounded(mod.wait, [fs[0], fs[3]], timeout=0.01, return_when=mod.FIRST_EXCEPTION)
    assert r.done == {fs[0]} and r.not_done == {fs[3]}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("iter_module", ["std-as_completed", "impl-as_completed"])
def test_as_completed_mixed_order(impl, threads, iter_module):
    mod = STD if iter_module == "std-as_completed" else impl
    sentinel = make_future(STD, "finished")
    fs = mixed_futures(impl) + mixed_futures(impl)
    order = [5, 0, 7, 2, 1, 6, 3, 4]
    it = mod.as_completed(fs + [sentinel], timeout=LONG)
    assert next(it) is sentinel

    def complete():
        for i in order:
            time.sleep(0.005)
            fs[i].set_result(i)

    threads(complete)
    got = run_bounded(lambda: [f.result() for f in it])
    assert got == order
    assert no_waiters(fs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("iter_module", ["std-as_completed", "impl-as_completed"])
def test_as_completed_mixed_abandoned(impl, iter_module):
    mod = STD if iter_module == "std-as_completed" else impl
    fs = mixed_futures(impl)
    fs[1].set_result(1)
    it = mod.as_completed(fs)
    assert next(it) is fs[1]
    it.close()
    assert no_waiters(fs)
    for i, f in enumerate(fs):
        if not f.done():
            f.set_result(i)
    assert [f.result() for f in fs] == [0, 1, 2, 3]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("iter_module", ["std-as_completed", "impl-as_completed"])
def test_as_completed_mixed_timeout(impl, iter_module):
    mod = STD if iter_module == "std-as_completed" else impl
    fs = mixed_futures(impl)
    fs[3].set_result(3)
    it = mod.as_completed(fs, timeout=0.02)
    assert next(it) is fs[3]
    with pytest.raises(STD.TimeoutError) as info:
        next(it)
    assert str(info.value) == "3 (of 4) futures unfinished"
    assert no_waiters(fs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("combo", ["std-wait/impl-futures", "impl-wait/std-futures",
                                   "impl-wait/third-party", "std-as_completed/impl-futures",
                                   "impl-as_completed/std-futures"])
def test_no_lost_wakeup_across_modules(impl, combo):
    """Completions racing with the installation of a waiter by the other
    module's wait()/as_completed(): nothing is lost."""
    waiter_side, future_side = combo.split("/")
    mod = STD if waiter_side.startswith("std") else impl
    make = {"impl-futures": impl.Future, "std-futures": STD.Future,
            "third-party": ThirdPartyFuture}[future_side]
    q = queue.Queue()

    def completer():
        while True:
            item = q.get(timeout=LONG)
            if item is None:
                return
            for f in item:
                f.set_result(None)

    t = threading.Thread(target=completer, daemon=True)
    t.start()
    try:
        for _ in range(1000):
            fs = [make(), make()]
            q.put(fs)
            if waiter_side.endswith("as_completed"):
                got = list(mod.as_completed(fs, timeout=LONG))
                assert len(got) == 2
            else:
                r = mod.wait(fs, timeout=LONG)
                assert r.not_done == set(), "lost wake-up"
            assert no_waiters(fs)
    finally:
        q.put(None)
        t.join(LONG)
    assert not t.is_alive()


# ---------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------


def run_async(coro):
    return run_bounded(asyncio.run, coro)


@pytest.mark.timeout(60)
def test_wrap_future_result(impl, threads):
    async def main():
        f = impl.Future()
        af = asyncio.wrap_future(f)
        assert asyncio.isfuture(af) and not asyncio.isfuture(f)
        threads(f.set_result, "from-thread", delay=SHORT_DELAY)
        return await af

    assert run_async(main()) == "from-thread"


@pytest.mark.timeout(60)
def test_wrap_future_already_done(impl):
    async def main():
        f = make_future(impl, "finished", value=11)
        return await asyncio.wrap_future(f)

    assert run_async(main()) == 11


@pytest.mark.timeout(60)
def test_wrap_future_exception(impl, threads):
    exc = LookupError("async")

    async def main():
        f = impl.Future()
        threads(f.set_exception, exc, delay=SHORT_DELAY)
        try:
            await asyncio.wrap_future(f)
        except LookupError as e:
            return e
        return None

    assert run_async(main()) is exc


@pytest.mark.timeout(60)
def test_wrap_future_cancelled_on_concurrent_side(impl, threads):
    async def main():
        f = impl.Future()
        af = asyncio.wrap_future(f)
        threads(f.cancel, delay=SHORT_DELAY)
        try:
            await af
        except asyncio.CancelledError:
            return ("cancelled", af.cancelled(), f.cancelled())
        return ("not cancelled",)

    assert run_async(main()) == ("cancelled", True, True)


@pytest.mark.timeout(60)
def test_wrap_future_cancelled_on_asyncio_side(impl):
    async def main():
        f = impl.Future()
        af = asyncio.wrap_future(f)
        af.cancel()
        for _ in range(10):
            await asyncio.sleep(0)
            if f.cancelled():
                break
        return (af.cancelled(), f.cancelled(), f._state)

    assert run_async(main()) == (True, True, "CANCELLED")


@pytest.mark.timeout(60)
def test_wrap_future_asyncio_cancel_does_not_stop_running(impl):
    async def main():
        f = impl.Future()
        assert f.set_running_or_notify_cancel()
        af = asyncio.wrap_future(f)
        af.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        f.set_result(1)  # still allowed: a running future cannot be cancelled
        return (af.cancelled(), f.cancelled(), f.result())

    assert run_async(main()) == (True, False, 1)


def make_thread_executor(impl):
    class _ThreadExecutor(impl.Executor):
        def __init__(self):
            self.threads = []
            self.futures = []

        def submit(self, fn, /, *args, **kwargs):
            f = impl.Future()
            self.futures.append(f)

            def run():
                if not f.set_running_or_notify_cancel():
                    return
                try:
                    r = fn(*args, **kwargs)
                except BaseException as e:  # noqa: BLE001
                    f.set_exception(e)
                else:
                    f.set_result(r)

            t = threading.Thread(target=run, daemon=True)
            self.threads.append(t)
            t.start()
            return f

        def shutdown(self, wait=True, *, cancel_futures=False):
            for t in self.threads:
                t.join(LONG)

    return _ThreadExecutor()


@pytest.mark.timeout(60)
def test_run_in_executor_with_custom_executor(impl):
    ex = make_thread_executor(impl)
    main_ident = threading.get_ident()

    async def main():
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(ex, pow, 2, 10)
        ident = await loop.run_in_executor(ex, threading.get_ident)
        try:
            await loop.run_in_executor(ex, int, "not a number")
        except ValueError as e:
            err = type(e)
        results = await asyncio.gather(*(loop.run_in_executor(ex, abs, -i) for i in range(5)))
        return a, ident, err, results

    with ex:
        a, ident, err, results = run_async(main())
    assert a == 1024
    assert ident != main_ident
    assert err is ValueError
    assert results == [0, 1, 2, 3, 4]
    assert all(type(f) is impl.Future for f in ex.futures)
    assert not any(t.is_alive() for t in ex.threads)


@pytest.mark.timeout(60)
def test_run_in_executor_cancel_from_asyncio(impl):
    ex = make_thread_executor(impl)
    started = threading.Event()
    release = threading.Event()

    def job():
        started.set()
        return release.wait(LONG)

    async def main():
        loop = asyncio.get_running_loop()
        af = loop.run_in_executor(ex, job)
        deadline = time.monotonic() + LONG
        while not started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        af.cancel()
        try:
            await af
        except asyncio.CancelledError:
            pass
        return af.cancelled()

    with ex:
        try:
            assert run_async(main()) is True
        finally:
            release.set()
    # The job was running: the concurrent future could not be cancelled and
    # completes normally.
    f = ex.futures[0]
    assert f.result(LONG) is True
    assert not f.cancelled()
