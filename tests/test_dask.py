"""Outgrowing one machine: code written against `concurrent.futures.Executor`
runs unchanged on dask.distributed's `Client.get_executor()`, and the futures
that executor returns mix with cfutures' (and the stdlib's) in `wait()` and
`as_completed()`.

`ClientExecutor.submit()` returns a `concurrent.futures.Future` that dask
completes from its event loop (cfutures' `Future` under `python -m cfutures`,
which the last test runs).  A bare `Client.submit()` future is not a
`concurrent.futures.Future`: the stdlib's `wait()` raises `AttributeError` on
it, and so does cfutures'.

The cluster is in-process (`processes=False`: starts in well under a second).
Skipped when `distributed` is not installed: `pip install -e ".[test,dask]"`.
"""
import concurrent.futures
import contextlib
import multiprocessing
import os
import subprocess
import sys
import threading

import pytest

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install -e '.[dask]')")

import process_helpers as ph  # noqa: E402  (after the skip: imported by workers)
from conftest import LONG, module_env, same_behaviour  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# dask runs its tasks on threads of this process: a task can wait on this
GATE = threading.Event()


def gated(value):
    if not GATE.wait(LONG):
        raise RuntimeError("gate never opened")
    return value


@pytest.fixture(scope="module")
def client():
    with contextlib.ExitStack() as stack:
        # a Client that fails to start still closes the cluster
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2,
                                           processes=False, dashboard_address=":0")
        stack.callback(cluster.close, timeout=LONG)
        client = distributed.Client(cluster, timeout=LONG)
        stack.callback(client.close, timeout=LONG)
        stack.callback(GATE.clear)
        stack.callback(GATE.set)            # runs first: frees a gated task
        yield client
    assert client.status == "closed" and cluster.status.name == "closed"


@pytest.fixture
def gate():
    GATE.clear()
    yield GATE
    GATE.set()


def sum_of_squares(impl, executor, n):
    """Only the Executor API: what a library would write."""
    futures = [executor.submit(ph.sq, i) for i in range(n)]
    total = sum(f.result() for f in impl.as_completed(futures, timeout=LONG))
    done, not_done = impl.wait(futures, timeout=LONG)
    assert len(done) == n and not not_done
    assert list(executor.map(ph.sq, range(n), timeout=LONG)) == [i * i for i in range(n)]
    return total


@pytest.mark.timeout(90)
def test_same_function_on_every_executor(impl, client):
    want = sum(i * i for i in range(20))
    with impl.ThreadPoolExecutor(2) as ex:
        assert sum_of_squares(impl, ex, 20) == want
    # spawn: this process has dask's threads, and fork() would copy their locks
    with impl.ProcessPoolExecutor(2, multiprocessing.get_context("spawn")) as ex:
        assert sum_of_squares(impl, ex, 20) == want
    ex = client.get_executor()
    assert isinstance(ex, concurrent.futures.Executor)
    assert isinstance(ex.submit(ph.sq, 2), concurrent.futures.Future)
    assert sum_of_squares(impl, ex, 20) == want
    ex.shutdown()


@pytest.mark.timeout(90)
def test_wait_mixes_dask_futures_with_the_pools(impl, client, gate, threads):
    dex = client.get_executor()
    with impl.ThreadPoolExecutor(2) as tpool:
        # dask's future completes first; a bare pending Future never does
        pending = impl.Future()
        d = dex.submit(ph.sq, 7)
        done, not_done = impl.wait([pending, d], timeout=LONG,
                                   return_when=impl.FIRST_COMPLETED)
        assert done == {d} and not_done == {pending} and d.result() == 49
        # a pool's future completes while dask's task waits at the gate
        slow = dex.submit(gated, "dask")
        quick = tpool.submit(ph.sq, 3)
        done, not_done = impl.wait([slow, quick], timeout=LONG,
                                   return_when=impl.FIRST_COMPLETED)
        assert done == {quick} and not_done == {slow}
        # a task failing on dask ends FIRST_EXCEPTION; its exception is the task's
        bad = dex.submit(ph.raise_value_error, "on dask")
        done, not_done = impl.wait([slow, bad, pending], timeout=LONG,
                                   return_when=impl.FIRST_EXCEPTION)
        assert done == {bad} and not_done == {slow, pending}
        assert repr(bad.exception()) == "ValueError('on dask')"
        # as_completed: in completion order, dask's last once the gate opens
        threads(pending.set_result, "by hand", delay=0.05)
        it = impl.as_completed([slow, quick, pending], timeout=LONG)
        assert {next(it).result(), next(it).result()} == {9, "by hand"}
        gate.set()
        assert next(it).result() == "dask"
        assert next(it, None) is None
        done, not_done = impl.wait([slow, quick, pending, d, bad], timeout=LONG)
        assert len(done) == 5 and not not_done


@pytest.mark.timeout(90)
def test_cancelling_a_queued_dask_future_wakes_wait(impl, client, gate):
    dex = client.get_executor()
    # both of the worker's threads busy: the third task is queued
    busy = [dex.submit(gated, i) for i in range(2)]
    queued = dex.submit(gated, 2)
    assert queued.cancel()
    done, not_done = impl.wait(busy + [queued], timeout=LONG,
                               return_when=impl.FIRST_COMPLETED)
    assert done == {queued} and queued.cancelled()
    # the executor cancelled the dask task too (its futures: a private set)
    dask_futures = getattr(dex, "_futures", None)
    if dask_futures is not None:
        assert sorted(f.status for f in dask_futures) == \
            ["cancelled", "pending", "pending"]
    gate.set()
    assert [f.result() for f in impl.as_completed(busy, timeout=LONG)] != []
    done, _ = impl.wait(busy + [queued], timeout=LONG)
    assert len(done) == 3


@pytest.mark.timeout(90)
def test_bare_dask_future_is_refused_like_the_stdlib(impl, client):
    raw = client.submit(ph.sq, 5)
    assert raw.result(timeout=LONG) == 25
    assert not isinstance(raw, concurrent.futures.Future)

    def scenario(mod):
        out = []
        for call in (lambda: mod.wait([raw], timeout=0),
                     lambda: list(mod.as_completed([raw], timeout=0))):
            try:
                call()
            except AttributeError as e:
                out.append(str(e))
        return out

    assert same_behaviour(scenario, impl) == [
        "'Future' object has no attribute '_condition'"] * 2


@pytest.mark.timeout(90)
def test_refusal_leaves_the_other_futures_usable(cf, client, threads):
    """The stdlib's wait() raises half-way through taking the futures'
    conditions and keeps those it took (a later set_result() from another
    thread would block for ever); cfutures' gives them back."""
    raw = client.submit(ph.sq, 5)
    # locks are taken in id() order: put the stdlib's future before raw
    keep = [concurrent.futures.Future()]
    while id(keep[-1]) > id(raw) and len(keep) < 100000:
        keep.append(concurrent.futures.Future())
    std = keep[-1]
    assert id(std) < id(raw)
    mine = cf.Future()
    for call in (lambda: cf.wait([std, mine, raw], timeout=LONG),
                 lambda: list(cf.as_completed([std, mine, raw], timeout=LONG))):
        with pytest.raises(AttributeError):
            call()
    threads(std.set_result, 1)
    threads(mine.set_result, 2)
    done, not_done = cf.wait([std, mine], timeout=LONG)
    assert not not_done and {f.result() for f in done} == {1, 2}


SCRIPT = r"""
import concurrent.futures, sys, distributed
import cfutures
sys.path.insert(0, sys.argv[1])
import process_helpers as ph

if __name__ == "__main__":
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        dex = client.get_executor()
        futs = [dex.submit(ph.sq, 3), pool.submit(ph.sq, 4), dex.submit(ph.sq, 5)]
        print(sorted({type(f).__module__ + "." + type(f).__name__ for f in futs}))
        print(sorted(f.result() for f in concurrent.futures.as_completed(futs, timeout=30)))
        done, not_done = concurrent.futures.wait(futs, timeout=30)
        print(len(done), len(not_done), list(dex.map(ph.sq, range(4))))
"""


@pytest.mark.timeout(120)
def test_under_python_m_cfutures_dask_makes_cfutures_futures(cf, tmp_path):
    script = tmp_path / "dask_script.py"
    script.write_text(SCRIPT)
    try:
        proc = subprocess.run([sys.executable, "-m", "cfutures", str(script), HERE],
                              capture_output=True, text=True, timeout=100,
                              env=module_env(cf))
    except subprocess.TimeoutExpired as e:
        pytest.fail("the script hung; stdout so far: %r" % (e.stdout,))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines() == [
        "['cfutures.Future']", "[9, 16, 25]", "3 0 [0, 1, 4, 9]"], proc.stderr[-4000:]
