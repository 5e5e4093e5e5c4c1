"""Executor (the abstract base): context manager, map() semantics, and the
``buffersize`` argument of Python 3.14's Executor.map, which cfutures provides
on every Python version.

Executors are tiny subclasses of ``impl.Executor`` defined here; the pools are
tested elsewhere.  ``buffersize`` semantics follow CPython 3.14's
Lib/concurrent/futures/_base.py:
  * validated at call time: TypeError("buffersize must be an integer or None"),
    ValueError("buffersize must be None or > 0");
  * map() submits the first ``buffersize`` calls; every next() first submits
    one more call (if the input is not exhausted and the executor is still
    alive: it is only weakly referenced), then yields the oldest result; so
    after n results ``buffersize + n`` calls have been submitted;
  * on an exception, a timeout or close(), the remaining futures are
    cancelled and the input is not consumed further.
"""

import concurrent.futures
import gc
import itertools
import weakref

import pytest

from conftest import outcome


class CountingIterable:
    """An iterator that records how many items were taken from it."""

    def __init__(self, source):
        self.it = iter(source)
        self.taken = 0

    def __iter__(self):
        return self

    def __next__(self):
        value = next(self.it)
        self.taken += 1
        return value


def make_executors(mod):
    class SyncExecutor(mod.Executor):
        """Runs each call at once in submit()."""

        def __init__(self):
            self.submitted = []
            self.shutdown_calls = []

        def submit(self, fn, /, *args, **kwargs):
            f = mod.Future()
            self.submitted.append(f)
            assert f.set_running_or_notify_cancel()
            try:
                result = fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                f.set_exception(e)
            else:
                f.set_result(result)
            return f

        def shutdown(self, wait=True, *, cancel_futures=False):
            self.shutdown_calls.append((wait, cancel_futures))

    class ManualExecutor(mod.Executor):
        """Returns pending futures; the test completes them."""

        def __init__(self):
            self.submitted = []

        def submit(self, fn, /, *args, **kwargs):
            f = mod.Future()
            self.submitted.append((f, fn, args))
            return f

        def run(self, i):
            f, fn, args = self.submitted[i]
            if f.set_running_or_notify_cancel():
                try:
                    f.set_result(fn(*args))
                except Exception as e:  # noqa: BLE001
                    f.set_exception(e)

    return SyncExecutor, ManualExecutor


def states(futures):
    return [f._state for f in futures]


# ---------------------------------------------------------------------------
# The abstract base
# ---------------------------------------------------------------------------


def test_base_executor_methods(same):
    def scenario(m):
        ex = m.Executor()
        return [outcome(ex.submit, pow, 2, 3)[:2],
                outcome(ex.map, pow, [1], [2])[:2],
                outcome(lambda: list(ex.map(pow, [], [])))[:2],
                ex.shutdown(), ex.shutdown(wait=False, cancel_futures=True)]

    out = same(scenario)
    assert out[0] == ("raise", NotImplementedError)
    assert out[1] == ("raise", NotImplementedError)  # map submits eagerly
    assert out[2] == ("ok", [])


def test_context_manager(impl):
    SyncExecutor, _ = make_executors(impl)
    ex = SyncExecutor()
    with ex as entered:
        assert entered is ex
    assert ex.shutdown_calls == [(True, False)]
    with pytest.raises(KeyError):
        with SyncExecutor() as ex2:
            raise KeyError("propagates")
    assert ex2.shutdown_calls == [(True, False)]
    assert ex.__exit__(None, None, None) is False
    assert isinstance(ex, concurrent.futures.Executor)


# ---------------------------------------------------------------------------
# map() without buffersize: compared with the installed stdlib
# ---------------------------------------------------------------------------


def test_map_results_and_eager_submission(same):
    def scenario(m):
        SyncExecutor, ManualExecutor = make_executors(m)
        out = []
        ex = SyncExecutor()
        out.append(list(ex.map(pow, range(6), range(6))))
        out.append(list(ex.map(pow, [2, 3, 4], [1, 2])))  # zip() semantics
        out.append(list(ex.map(str)))
        out.append(list(ex.map(str, [], chunksize=0)))  # chunksize ignored
        out.append(list(ex.map(abs, [-1, -2], timeout=None, chunksize=50)))
        man = ManualExecutor()
        src = CountingIterable(range(5))
        it = man.map(lambda x: x * 10, src)
        out.append(("eager", src.taken, len(man.submitted)))
        for i in reversed(range(5)):
            man.run(i)
        out.append(list(it))
        out.append(iter(it) is it)
        return out

    out = same(scenario)
    assert out[0] == [pow(i, i) for i in range(6)]
    assert out[5] == ("eager", 5, 5)


def test_map_exception_stops_and_cancels(same):
    def scenario(m):
        _, ManualExecutor = make_executors(m)
        man = ManualExecutor()
        it = man.map(divmod, [5, 5, 5, 5], [2, 0, 3, 5])
        man.run(0)
        man.run(1)
        out = [next(it), outcome(next, it), outcome(next, it)[:2]]
        out.append(states(f for f, _, _ in man.submitted))
        return out

    out = same(scenario)
    assert out[0] == (2, 1)
    assert out[1][:2] == ("raise", ZeroDivisionError)
    assert out[2] == ("raise", StopIteration)
    assert out[3] == ["FINISHED", "FINISHED", "CANCELLED", "CANCELLED"]


@pytest.mark.timeout(60)
def test_map_timeout_cancels_remaining(same):
    def scenario(m):
        _, ManualExecutor = make_executors(m)
        man = ManualExecutor()
        it = man.map(abs, [-1, -2, -3], timeout=0.05)
        man.run(0)
        out = [next(it), outcome(next, it), outcome(next, it)[:2]]
        out.append(states(f for f, _, _ in man.submitted))
        return out

    out = same(scenario)
    assert out[1][1] is concurrent.futures.TimeoutError
    assert out[3] == ["FINISHED", "CANCELLED", "CANCELLED"]


def test_map_close_cancels_remaining(same):
    def scenario(m):
        _, ManualExecutor = make_executors(m)
        man = ManualExecutor()
        it = man.map(abs, [-1, -2, -3])
        man.run(0)
        first = next(it)
        it.close()
        return [first, outcome(next, it)[:2], states(f for f, _, _ in man.submitted)]

    out = same(scenario)
    assert out[2] == ["FINISHED", "CANCELLED", "CANCELLED"]


# ---------------------------------------------------------------------------
# buffersize (3.14 semantics; cfutures only)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["foo", 2.0, [], 1j])
def test_buffersize_type_error(cf, bad):
    SyncExecutor, _ = make_executors(cf)
    ex = SyncExecutor()
    src = CountingIterable(range(4))
    with pytest.raises(TypeError) as info:
        ex.map(str, src, buffersize=bad)
    assert str(info.value) == "buffersize must be an integer or None"
    assert src.taken == 0 and ex.submitted == []


@pytest.mark.parametrize("bad", [0, -1, -(2 ** 70)])
def test_buffersize_value_error(cf, bad):
    SyncExecutor, _ = make_executors(cf)
    ex = SyncExecutor()
    src = CountingIterable(range(4))
    with pytest.raises(ValueError) as info:
        ex.map(str, src, buffersize=bad)
    assert str(info.value) == "buffersize must be None or > 0"
    assert src.taken == 0 and ex.submitted == []


@pytest.mark.parametrize("buffersize", [1, 2, 4, 8])
def test_buffersize_results(cf, buffersize):
    SyncExecutor, _ = make_executors(cf)
    ex = SyncExecutor()
    assert list(ex.map(str, range(4), buffersize=buffersize)) == ["0", "1", "2", "3"]
    assert list(ex.map(pow, range(4), range(4), buffersize=buffersize)) == [1, 1, 4, 27]
    assert list(ex.map(pow, [2, 3, 4], [1, 2], buffersize=buffersize)) == [2, 9]


def test_buffersize_none_is_eager(cf):
    _, ManualExecutor = make_executors(cf)
    man = ManualExecutor()
    src = CountingIterable(range(5))
    man.map(str, src, buffersize=None)
    assert src.taken == 5 and len(man.submitted) == 5


@pytest.mark.parametrize("buffersize", [1, 2, 3])
def test_buffersize_bounded_lookahead(cf, buffersize):
    SyncExecutor, _ = make_executors(cf)
    ex = SyncExecutor()
    n = 10
    src = CountingIterable(range(n))
    it = ex.map(lambda x: x * 2, src, buffersize=buffersize)
    assert src.taken == buffersize
    assert len(ex.submitted) == buffersize
    for k in range(1, n + 1):
        assert next(it) == (k - 1) * 2
        assert len(ex.submitted) == min(buffersize + k, n)
        assert src.taken == min(buffersize + k, n)
        outstanding = len(ex.submitted) - k
        assert outstanding <= buffersize
    with pytest.raises(StopIteration):
        next(it)
    assert src.taken == n


def test_buffersize_infinite_iterables(cf):
    SyncExecutor, _ = make_executors(cf)
    ex = SyncExecutor()
    it = ex.map(str, itertools.count(), buffersize=2)
    assert [next(it) for _ in range(3)] == ["0", "1", "2"]
    assert len(ex.submitted) == 5
    it2 = ex.map(lambda a, b: a + b, itertools.count(), itertools.count(), buffersize=2)
    assert [next(it2) for _ in range(3)] == [0, 2, 4]
    it.close()
    it2.close()


def test_buffersize_empty_inputs(cf):
    SyncExecutor, _ = make_executors(cf)
    ex = SyncExecutor()
    assert next(ex.map(str, [], buffersize=2), None) is None
    assert next(ex.map(str, buffersize=2), None) is None
    assert ex.submitted == []


def test_buffersize_exception_cancels_buffer(cf):
    _, ManualExecutor = make_executors(cf)
    man = ManualExecutor()
    src = CountingIterable([2, 0, 3, 5, 7, 9])
    it = man.map(lambda d: 10 // d, src, buffersize=3)
    assert src.taken == 3
    man.run(0)
    assert next(it) == 5
    assert src.taken == 4
    man.run(1)
    with pytest.raises(ZeroDivisionError):
        next(it)
    # The failing call's next() had submitted one more first.
    assert src.taken == 5
    with pytest.raises(StopIteration):
        next(it)
    assert src.taken == 5
    assert states(f for f, _, _ in man.submitted) == [
        "FINISHED", "FINISHED", "CANCELLED", "CANCELLED", "CANCELLED"]


@pytest.mark.timeout(60)
def test_buffersize_timeout_cancels_buffer(cf):
    _, ManualExecutor = make_executors(cf)
    man = ManualExecutor()
    src = CountingIterable(itertools.count())
    it = man.map(str, src, timeout=0.05, buffersize=3)
    man.run(0)
    assert next(it) == "0"
    with pytest.raises(cf.TimeoutError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert src.taken == 5
    assert states(f for f, _, _ in man.submitted) == ["FINISHED"] + ["CANCELLED"] * 4


def test_buffersize_close_cancels_buffer(cf):
    _, ManualExecutor = make_executors(cf)
    man = ManualExecutor()
    src = CountingIterable(itertools.count())
    it = man.map(str, src, buffersize=2)
    man.run(0)
    assert next(it) == "0"
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    assert src.taken == 3
    assert states(f for f, _, _ in man.submitted) == ["FINISHED", "CANCELLED", "CANCELLED"]


def test_buffersize_executor_only_weakly_referenced(cf):
    """3.14 holds the executor through a weak reference: once it is gone, no
    more calls are submitted and the buffered results are still yielded."""
    SyncExecutor, _ = make_executors(cf)
    ex = SyncExecutor()
    ref = weakref.ref(ex)
    it = ex.map(str, itertools.count(), buffersize=2)
    del ex
    gc.collect()
    assert ref() is None
    assert list(itertools.islice(it, 10)) == ["0", "1"]


def test_buffersize_true_is_one(cf):
    """isinstance(True, int): bool is accepted, as in 3.14."""
    SyncExecutor, _ = make_executors(cf)
    ex = SyncExecutor()
    src = CountingIterable(range(3))
    it = ex.map(str, src, buffersize=True)
    assert src.taken == 1
    assert list(it) == ["0", "1", "2"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("buffersize", [None, 2])
def test_map_with_foreign_futures(cf, buffersize):
    """submit() may return futures of another implementation (here the
    stdlib's): map() only uses their public methods."""

    class ForeignExecutor(cf.Executor):
        def __init__(self):
            self.submitted = []

        def submit(self, fn, /, *args, **kwargs):
            f = concurrent.futures.Future()
            self.submitted.append(f)
            if args and args[0] == "pending":
                return f
            try:
                f.set_result(fn(*args))
            except Exception as e:  # noqa: BLE001
                f.set_exception(e)
            return f

    ex = ForeignExecutor()
    assert list(ex.map(abs, [-1, -2, -3], buffersize=buffersize)) == [1, 2, 3]
    it = ex.map(int, ["4", "x", "5"], buffersize=buffersize)
    assert next(it) == 4
    with pytest.raises(ValueError):
        next(it)
    ex2 = ForeignExecutor()
    it = ex2.map(str, ["pending", "pending", "pending"], timeout=0.02, buffersize=buffersize)
    with pytest.raises(cf.TimeoutError):
        next(it)
    assert all(f.cancelled() for f in ex2.submitted)
