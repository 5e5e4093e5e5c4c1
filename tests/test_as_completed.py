"""as_completed(): order, timeouts and their message, duplicates, abandonment
(no waiter left behind), lazily raised errors, stale references."""

import concurrent.futures
import gc
import threading
import time
import weakref

import pytest

from conftest import LONG, SHORT_DELAY, make_future, outcome, raised, waiters_left

KINDS = ["own", "foreign"]  # foreign: plain concurrent.futures futures


def future_factory(impl, kind):
    """Futures of the implementation under test, or plain stdlib futures (which
    cfutures.as_completed must handle through their private protocol)."""
    mod = impl if kind == "own" else concurrent.futures
    return mod


def no_waiters(*fs):
    return all(waiters_left(f) == 0 for f in fs)


def test_returns_iterator(impl):
    it = impl.as_completed([make_future(impl, "finished")])
    assert iter(it) is it
    assert hasattr(it, "__next__")
    assert list(it) and list(it) == []


def test_empty(same):
    def scenario(m):
        return [list(m.as_completed([])), list(m.as_completed([], timeout=0)),
                list(m.as_completed((), timeout=-1)), list(m.as_completed(set(), None))]

    assert same(scenario) == [[], [], [], []]


@pytest.mark.parametrize("kind", KINDS)
def test_finished_first_then_completion_order(impl, kind):
    mod = future_factory(impl, kind)
    d1, d2 = make_future(mod, "finished"), make_future(mod, "raised")
    c1 = make_future(mod, "cancelled_notified")
    p = [mod.Future() for _ in range(4)]
    it = impl.as_completed([p[0], d1, p[1], c1, p[2], d2, p[3]])
    first = {next(it), next(it), next(it)}
    assert first == {d1, d2, c1}
    # Completed while nothing is blocked: yielded in completion order.
    p[2].set_result(2)
    p[0].set_exception(ValueError())
    p[3].cancel()
    p[3].set_running_or_notify_cancel()
    assert next(it) is p[2]
    p[1].set_result(1)
    rest = list(it)
    assert rest == [p[0], p[3], p[1]]
    assert no_waiters(d1, d2, c1, *p)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_completion_order_from_thread(impl, kind, threads):
    mod = future_factory(impl, kind)
    sentinel = make_future(mod, "finished")
    p = [mod.Future() for _ in range(5)]
    order = [3, 0, 4, 1, 2]
    it = impl.as_completed(p + [sentinel], timeout=LONG)
    assert next(it) is sentinel  # the waiter is installed from here on

    def complete():
        for i in order:
            time.sleep(0.01)
            p[i].set_result(i)

    threads(complete)
    got = [f.result() for f in it]
    assert got == order
    assert no_waiters(sentinel, *p)


def test_cancelled_not_yielded_until_notified(impl):
    c = make_future(impl, "cancelled")
    d = make_future(impl, "finished")
    it = impl.as_completed([c, d], timeout=0.05)
    assert next(it) is d
    with pytest.raises(impl.TimeoutError):
        next(it)
    it = impl.as_completed([c, d], timeout=LONG)
    assert next(it) is d
    c.set_running_or_notify_cancel()
    assert next(it) is c
    assert list(it) == []


def test_duplicates_yielded_once(impl):
    a, b = make_future(impl, "finished"), make_future(impl, "finished")
    p = impl.Future()
    it = impl.as_completed([a, b, a, p, b, p, p])
    got = [next(it), next(it)]
    assert sorted(map(id, got)) == sorted([id(a), id(b)])
    p.set_result(0)
    assert list(it) == [p]


@pytest.mark.parametrize("kind", ["list", "tuple", "iter", "set", "dict"])
def test_input_kinds(impl, kind):
    """Every distinct future once, whatever iterable holds them, finished
    and pending, cfutures' and the stdlib's mixed."""
    fin = [make_future(impl, "finished") for _ in range(3)]
    fin.append(make_future(concurrent.futures, "finished"))
    pend = [impl.Future(), concurrent.futures.Future()]
    seq = fin + pend + fin[::-1] + pend
    arg = {"list": list, "tuple": tuple, "iter": iter, "set": set,
           "dict": dict.fromkeys}[kind](seq)
    it = impl.as_completed(arg, timeout=LONG)
    got = [next(it) for _ in fin]
    assert sorted(map(id, got)) == sorted(map(id, fin))
    for i, p in enumerate(pend):
        p.set_result(i)
    rest = list(it)
    assert sorted(map(id, rest)) == sorted(map(id, pend))


def test_input_list_mutated_while_hashing(same, impl):
    """A foreign future whose __hash__ grows the list: the future added
    while set(list) runs counts, as with set(list); later ones do not."""
    def scenario(m):
        class Growing(concurrent.futures.Future):
            def __hash__(self):
                if len(fs) < 6:
                    fs.append(make_future(m, "finished"))
                return id(self) >> 4
        g = Growing()
        g.set_result(0)
        fs = [make_future(m, "finished"), g]
        return sum(1 for _ in m.as_completed(fs, timeout=LONG))

    assert same(scenario) == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [0, -1, 0.05])
def test_timeout_message(same, impl, timeout):
    def scenario(m):
        d = make_future(m, "finished")
        p1, p2 = m.Future(), make_future(m, "running")
        it = m.as_completed([d, p1, p1, p2, d], timeout=timeout)
        first = next(it) is d
        err = outcome(next, it)
        after = outcome(next, it)
        clean = no_waiters(d, p1, p2)
        p1.set_result(1)
        return (first, err, after[:2], clean, p1.result())

    first, err, after, clean, value = same(scenario)
    assert first is True
    assert err == ("raise", impl.TimeoutError, "2 (of 3) futures unfinished")
    assert after == ("raise", StopIteration)
    assert clean is True


def test_timeout_zero_with_everything_done(impl):
    fs = [make_future(impl, s) for s in ("finished", "raised", "cancelled_notified")]
    for timeout in (0, -1):
        assert set(impl.as_completed(fs, timeout=timeout)) == set(fs)


@pytest.mark.timeout(60)
def test_timeout_message_counts_futures_completed_meanwhile(impl):
    d = make_future(impl, "finished")
    p1, p2, p3 = impl.Future(), impl.Future(), impl.Future()
    it = impl.as_completed([d, p1, p2, p3], timeout=1.0)
    assert next(it) is d
    p2.set_result(2)
    assert next(it) is p2
    with pytest.raises(impl.TimeoutError) as info:
        next(it)
    assert str(info.value) == "2 (of 4) futures unfinished"
    assert no_waiters(d, p1, p2, p3)


# ---------------------------------------------------------------------------
# Abandonment: break, close(), del
# ---------------------------------------------------------------------------


def _finish_and_check(mod, fs):
    calls = []
    for i, f in enumerate(fs):
        if not f.done():
            f.add_done_callback(calls.append)
            f.set_result(i)
            assert f.result() == i
    assert calls == [f for f in fs if f in calls]
    assert no_waiters(*fs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["break", "close", "del"])
@pytest.mark.parametrize("consumed", ["none", "finished", "waited"])
def test_abandoned_iterator_leaves_no_waiter(impl, kind, how, consumed):
    mod = future_factory(impl, kind)
    d = make_future(mod, "finished")
    p = [mod.Future() for _ in range(3)]
    fs = [d] + p
    if how == "break":
        got = []

        def loop():
            # The iterator is only referenced by the for statement.
            for f in impl.as_completed(fs):
                got.append(f)
                if consumed == "none":
                    break
                if len(got) == 1:
                    p[1].set_result("w")  # yielded next, through the waiter
                else:
                    break

        loop()
        assert got == ([d] if consumed == "none" else [d, p[1]])
    else:
        it = impl.as_completed(fs)
        if consumed != "none":
            assert next(it) is d
        if consumed == "waited":
            p[1].set_result("w")
            assert next(it) is p[1]
        if how == "close":
            it.close()
            with pytest.raises(StopIteration):
                next(it)
        else:
            del it
            gc.collect()
    assert no_waiters(*fs)
    _finish_and_check(mod, fs)


@pytest.mark.parametrize("kind", KINDS)
def test_abandoned_after_timeout_leaves_no_waiter(impl, kind):
    mod = future_factory(impl, kind)
    p = [mod.Future() for _ in range(2)]
    it = impl.as_completed(p, timeout=0)
    with pytest.raises(impl.TimeoutError):
        next(it)
    assert no_waiters(*p)
    del it
    _finish_and_check(mod, p)


@pytest.mark.parametrize("kind", KINDS)
def test_exhausted_iterator_leaves_no_waiter(impl, kind):
    mod = future_factory(impl, kind)
    p = [mod.Future() for _ in range(3)]
    it = impl.as_completed(p)
    for f in p:
        f.set_result(None)
    assert set(it) == set(p)
    assert no_waiters(*p)


def test_close_before_start(impl):
    p = impl.Future()
    it = impl.as_completed([p])
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    assert no_waiters(p)
    p.set_result(1)
    assert p.result() == 1


# ---------------------------------------------------------------------------
# Lazily raised errors (the stdlib's as_completed is a generator)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(5,), (None,), ([[]],), ([], "x"), ([1, 2], "x")],
                         ids=["int", "none", "unhashable", "bad-timeout", "bad-timeout2"])
def test_errors_raised_at_first_next(same, args):
    def scenario(m):
        call = outcome(m.as_completed, *args)
        assert call[0] == "ok", call
        it = call[1]
        first = outcome(next, it)
        second = outcome(next, it)
        return (first, second[:2])

    first, second = same(scenario, messages=False)
    assert first[:2] == ("raise", TypeError)
    assert second == ("raise", StopIteration)


def test_input_consumed_lazily(same):
    def scenario(m):
        log = []
        f = make_future(m, "finished")

        def gen():
            log.append("consumed")
            yield f

        it = m.as_completed(gen())
        log.append("called")
        log.append(next(it) is f)
        return log

    assert same(scenario) == ["called", "consumed", True]


def test_error_message_for_non_iterable(same):
    def scenario(m):
        return outcome(next, m.as_completed(5))

    assert same(scenario) == ("raise", TypeError, "'int' object is not iterable")


# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------


def test_yielded_futures_not_kept_alive(impl):
    """The iterator drops its references to a future once it has been
    yielded (bpo-27144)."""
    fs = [make_future(impl, "finished") for _ in range(3)] + [impl.Future() for _ in range(3)]
    pending = fs[3:]
    it = impl.as_completed(fs)
    del fs
    seen = 0
    for _ in range(3):
        f = next(it)
        r = weakref.ref(f)
        del f
        gc.collect()
        assert r() is None
        seen += 1
    for f in pending:
        f.set_result(None)
    pending_refs = [weakref.ref(f) for f in pending]
    del pending, f
    for _ in range(3):
        g = next(it)
        r = weakref.ref(g)
        del g
        gc.collect()
        assert r() is None
    assert all(r() is None for r in pending_refs)
    assert list(it) == []


def test_abandoned_iterator_does_not_keep_futures_alive(impl):
    fs = [impl.Future() for _ in range(3)]
    refs = [weakref.ref(f) for f in fs]
    it = impl.as_completed(fs)
    fs[0].set_result(0)
    assert next(it) is not None
    del fs
    del it
    gc.collect()
    assert all(r() is None for r in refs)


def test_waiting_iterator_in_other_thread_completes(impl):
    f = impl.Future()
    box = []

    def consume():
        box.extend(impl.as_completed([f], timeout=LONG))

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(SHORT_DELAY)
    f.set_result(1)
    t.join(LONG)
    assert not t.is_alive()
    assert box == [f]
    assert no_waiters(f)
    assert raised(impl.Future().result, 0).__class__ is impl.TimeoutError


@pytest.mark.parametrize("call", ["as_completed", "wait"])
def test_foreign_state_raising_keeps_its_error(same, impl, call):
    """A foreign future whose _state raises while the conditions are held:
    that error comes out (not a SystemError from releasing them with it
    pending), and the conditions are released."""
    def scenario(m):
        class Bad(concurrent.futures.Future):
            @property
            def _state(self):
                raise RuntimeError("boom")

            @_state.setter
            def _state(self, value):
                pass
        bad, other = Bad(), concurrent.futures.Future()
        if call == "wait":
            err = outcome(m.wait, [bad, other], timeout=0)
        else:
            err = outcome(list, m.as_completed([bad, other], timeout=0))
        free = [f._condition.acquire(blocking=False) for f in (bad, other)]
        return err, free

    err, free = same(scenario)
    assert err[:2] == ("raise", RuntimeError)
    assert free == [True, True]
