"""Stress: many threads at once on shared futures, pools and iterators.

Written for free-threaded CPython (3.13t with PYTHON_GIL=0), where nothing
but cfutures' own locks keeps these races apart; valid (and run) on every
build, against the stdlib as the reference too.  What is checked: every
future ends exactly once, every callback runs exactly once, every item of
a shared iterator comes out exactly once, nothing hangs (every thread is
joined under a bound).  CFUTURES_STRESS=<n> multiplies the sizes (CI runs
the file repeatedly with a larger n on 3.13t).
"""

import collections
import operator
import os
import random
import subprocess
import sys
import sysconfig
import threading
import time

import pytest

from conftest import LONG

SCALE = max(1, int(os.environ.get("CFUTURES_STRESS", "1")))
NTHREADS = 8
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def skip_stdlib_generators(impl):
    # The stdlib's map() and as_completed() are generators; 3.13t does not
    # make a generator shared between threads safe (next() racing next()
    # hung here), so only ours are tested there.
    if FREE_THREADED and impl.__name__ == "concurrent.futures":
        pytest.skip("free-threaded 3.13t: the stdlib's generators cannot "
                    "be shared between threads")


@pytest.mark.skipif(not FREE_THREADED, reason="a GIL build")
def test_import_keeps_the_gil_disabled():
    # Without PYTHON_GIL in the environment: the module's Py_mod_gil slot
    # alone decides, and importing must neither warn nor turn the GIL on.
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = ("import sys, cfutures, cfutures.process, cfutures.interpreter; "
            "print(sys._is_gil_enabled())")
    r = subprocess.run([sys.executable, "-W", "error", "-c", code],
                       capture_output=True, text=True, env=env,
                       timeout=LONG)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    assert r.stderr == ""


def run_threads(target, n=NTHREADS, args=()):
    """Start n threads on target(i, *args) behind a barrier, join them all
    (a hang fails), re-raise the first error."""
    barrier = threading.Barrier(n)
    errors = []

    def body(i):
        try:
            barrier.wait(LONG)
            target(i, *args)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LONG * 2)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


class Counter:
    """Thread-safe counts of keys."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()

    def add(self, key):
        with self.lock:
            self.counts[key] += 1


def test_racing_completers_and_callbacks(impl):
    # Every thread tries to end every future (set_result, set_exception or
    # cancel, in its own order) and adds a callback to each, while others
    # wait on them: one ending wins, each callback runs once.
    nfut = 200 * SCALE
    futs = [impl.Future() for _ in range(nfut)]
    ran = Counter()
    won = Counter()
    added = Counter()

    def racer(i):
        order = list(range(nfut))
        random.Random(i).shuffle(order)
        for k in order:
            f = futs[k]
            f.add_done_callback(lambda f, i=i, k=k: ran.add((k, i)))
            added.add((k, i))
            op = (i + k) % 3
            if op == 0:
                f.cancel()
                continue
            try:
                if op == 1:
                    f.set_result((k, i))
                else:
                    f.set_exception(ValueError(k, i))
            except impl.InvalidStateError:
                continue
            won.add(k)

    run_threads(racer)
    for k, f in enumerate(futs):
        assert f.done()
        if f.cancelled():
            assert won.counts[k] == 0
        else:
            assert won.counts[k] == 1, k
    assert ran.counts == added.counts
    assert all(n == 1 for n in ran.counts.values())


def test_waiters_see_every_completion(impl):
    # result(), wait() and as_completed() in several threads while other
    # threads complete the futures in random order.
    nfut = 100 * SCALE
    futs = [impl.Future() for _ in range(nfut)]
    half = NTHREADS // 2
    seen = Counter()
    order = list(range(nfut))
    random.Random(0).shuffle(order)

    def body(i):
        if i < half:
            for k in order[i::half]:     # each future has one completer
                f = futs[k]
                if k % 7 == 0:
                    assert f.cancel()
                    assert not f.set_running_or_notify_cancel()
                elif f.set_running_or_notify_cancel():
                    f.set_result(k)
            return
        mode = i % 4
        if mode == 0:
            for k, f in enumerate(futs):
                try:
                    assert f.result(timeout=LONG) == k
                except impl.CancelledError:
                    assert k % 7 == 0
        elif mode == 1:
            done, not_done = impl.wait(futs, timeout=LONG)
            assert not not_done and len(done) == nfut
        elif mode == 2:
            for f in impl.as_completed(futs, timeout=LONG):
                seen.add(id(f))
        else:
            # FIRST_COMPLETED until none is left: a missed completion
            # leaves a wait() that returns nothing at its timeout
            not_done = set(futs)
            while not_done:
                done, rest = impl.wait(not_done, timeout=LONG,
                                       return_when=impl.FIRST_COMPLETED)
                assert done and all(f.done() for f in done)
                assert done | rest == not_done and not done & rest
                not_done = rest

    run_threads(body)
    nreaders = sum(1 for i in range(half, NTHREADS) if i % 4 == 2)
    assert len(seen.counts) == nfut
    assert all(n == nreaders for n in seen.counts.values())


def test_stdlib_waiters_on_racing_completions(cf):
    # The stdlib's wait() and as_completed() (which lock f._condition and
    # read f._state) on our futures, started while other threads complete
    # or cancel them: none may miss a completion (it would time out).
    import concurrent.futures as std
    nfut = NTHREADS // 2
    rounds = [[cf.Future() for _ in range(nfut)] for _ in range(300 * SCALE)]
    barrier = threading.Barrier(NTHREADS)

    def body(i):
        for r, futs in enumerate(rounds):
            barrier.wait(LONG)
            if i < nfut:
                f = futs[i]
                op = (r + i) % 3
                if op == 0:
                    assert f.cancel()
                    assert not f.set_running_or_notify_cancel()
                elif op == 1:
                    assert f.set_running_or_notify_cancel()
                    f.set_result(i)
                else:
                    f.set_exception(ValueError(i))
            elif i % 2:
                done, not_done = std.wait(futs, timeout=LONG)
                assert not not_done and len(done) == nfut
            else:
                got = list(std.as_completed(futs, timeout=LONG))
                assert len(got) == nfut

    run_threads(body)


def test_many_blocked_on_one_future(impl):
    f = impl.Future()
    got = Counter()

    def body(i):
        if i == 0:
            threading.Event().wait(0.01)
            f.set_result("x")
        else:
            got.add(f.result(timeout=LONG))
            got.add(f.exception(timeout=LONG))

    for _ in range(5 * SCALE):
        f = impl.Future()
        got = Counter()
        run_threads(body)
        assert got.counts == {"x": NTHREADS - 1, None: NTHREADS - 1}


def test_shared_thread_pool_submit_and_shutdown(impl):
    # Threads submit to one pool while one of them shuts it down: every
    # future that submit() returned ends, each task runs at most once, and
    # submits after the shutdown raise RuntimeError.
    for cancel in (False, True):
        ex = impl.ThreadPoolExecutor(4)
        runs = Counter()
        futs = []
        lock = threading.Lock()
        per = 300 * SCALE

        def body(i):
            for n in range(per):
                if i == 0 and n == per // 2:
                    ex.shutdown(wait=True, cancel_futures=cancel)
                if i == 0 and n >= per // 2:
                    # after this thread's own shutdown(): always refused
                    with pytest.raises(RuntimeError, match="after shutdown"):
                        ex.submit(runs.add, (i, n))
                    continue
                try:
                    f = ex.submit(runs.add, (i, n))
                except RuntimeError:
                    continue
                with lock:
                    futs.append((f, (i, n)))

        run_threads(body)
        ex.shutdown(wait=True)
        assert all(n == 1 for n in runs.counts.values())
        for f, key in futs:
            assert f.done()
            if f.cancelled():
                assert runs.counts[key] == 0
            else:
                assert f.result() is None and runs.counts[key] == 1
        with pytest.raises(RuntimeError):
            ex.submit(int)


def test_shared_thread_pool_results(impl):
    with impl.ThreadPoolExecutor(4) as ex:
        def body(i):
            fs = [ex.submit(operator.mul, i, n) for n in range(200 * SCALE)]
            for n, f in enumerate(fs):
                assert f.result(timeout=LONG) == i * n
            assert list(ex.map(abs, range(-50, 0))) == list(range(50, 0, -1))

        run_threads(body)


def _drain_shared(it):
    """Items taken from it by several threads at once: each once."""
    got = Counter()

    def body(i):
        while True:
            try:
                x = next(it)
            except StopIteration:
                return
            except ValueError as e:
                # another thread is inside next(): the generator's answer;
                # back off so that it is not starved of a CPU
                assert "already executing" in str(e)
                time.sleep(1e-4)
                continue
            got.add(x)

    run_threads(body)
    return got.counts


def test_shared_map_iterator(impl):
    skip_stdlib_generators(impl)
    n = 500 * SCALE
    with impl.ThreadPoolExecutor(4) as ex:
        counts = _drain_shared(ex.map(abs, range(n)))
    assert counts == collections.Counter(range(n))


def test_shared_as_completed_iterator(impl):
    skip_stdlib_generators(impl)
    n = 300 * SCALE
    with impl.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(abs, k) for k in range(n)]
        counts = _drain_shared(impl.as_completed(futs, timeout=LONG))
    assert counts == collections.Counter(futs)


def test_shared_process_pool(impl):
    ex = impl.ProcessPoolExecutor(2)
    try:
        # the workers start (fork) before the threads do
        assert ex.submit(abs, -1).result(timeout=LONG) == 1
        def body(i):
            fs = [ex.submit(operator.mul, i, n) for n in range(50 * SCALE)]
            for n, f in enumerate(fs):
                assert f.result(timeout=LONG) == i * n

        run_threads(body, n=4)
        if not (FREE_THREADED and impl.__name__ == "concurrent.futures"):
            counts = _drain_shared(ex.map(abs, range(100), chunksize=7))
            assert counts == collections.Counter(range(100))
    finally:
        ex.shutdown(wait=True)


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="InterpreterPoolExecutor needs CPython 3.13+")
def test_shared_interpreter_pool(cf):
    from cfutures.interpreter import InterpreterPoolExecutor
    with InterpreterPoolExecutor(2) as ex:
        def body(i):
            fs = [ex.submit(operator.mul, i, n) for n in range(30 * SCALE)]
            for n, f in enumerate(fs):
                assert f.result(timeout=LONG) == i * n

        run_threads(body, n=4)


# A worker that only ever runs C callables must still free what it
# allocated once other threads drop it (free-threaded builds: biased
# reference counting hands such objects back to their owner thread, which
# frees them when it next enters Python code).  A pool whose workers
# never did kept every result of ex.submit(sum, ...) alive: the process
# grew by ~30 MB/s, and every fork() got slower with it.
KEPT = """
import sys, threading
import {mod} as M
def rss_kib():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])
ex = M.ThreadPoolExecutor(max_workers=2)
def feed(n):
    # C callables only, each result a new 2 KB object made by a worker
    if {serial!r}:
        for _ in range(n):
            ex.submit(bytes, 2000).result()
    else:
        for _ in range(n // 1000):
            fs = [ex.submit(bytes, 2000) for _ in range(1000)]
            for f in fs:
                f.result()
t = threading.Thread(target=feed, args=(5000,)); t.start(); t.join()
before = rss_kib()
t = threading.Thread(target=feed, args=(50000,)); t.start(); t.join()
print("GROWN_MIB", (rss_kib() - before) // 1024)
ex.shutdown()
"""


@pytest.mark.skipif(not FREE_THREADED, reason="a GIL build (no biased "
                    "reference counting)")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("serial", [False, True], ids=["batched", "serial"])
def test_worker_frees_what_other_threads_released(impl, serial):
    code = KEPT.format(mod=impl.__name__, serial=serial)
    r = subprocess.run([sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stderr
    # 50,000 results of 2 KB: kept, about 100 MiB; freed, about 0
    grown = int(r.stdout.split()[1])
    assert grown < 32, (r.stdout, r.stderr)
