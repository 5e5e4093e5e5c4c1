"""wait(): return conditions, timeouts, inputs, invalid return_when, and
futures completed from other threads while waiting."""

import concurrent.futures

import pytest

from conftest import (LONG, SHORT_DELAY, STATES, make_future, outcome, run_bounded,
                      waiters_left)

RETURN_WHENS = ["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"]


def named(fs_by_name, result):
    """DoneAndNotDoneFutures -> (sorted done names, sorted not_done names)."""
    names = {id(f): n for n, f in fs_by_name.items()}
    return (sorted(names[id(f)] for f in result.done),
            sorted(names[id(f)] for f in result.not_done))


def check_result_type(impl, result):
    assert type(result) is concurrent.futures._base.DoneAndNotDoneFutures
    assert type(result) is impl._base.DoneAndNotDoneFutures
    assert type(result.done) is set and type(result.not_done) is set
    assert result.done.isdisjoint(result.not_done)
    done, not_done = result  # unpacks like a tuple
    assert done is result.done and not_done is result.not_done


def test_return_when_constants(impl):
    assert impl.ALL_COMPLETED == "ALL_COMPLETED"
    assert impl.FIRST_COMPLETED == "FIRST_COMPLETED"
    assert impl.FIRST_EXCEPTION == "FIRST_EXCEPTION"


@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_empty_input(impl, same, return_when):
    def scenario(m):
        r = m.wait([], timeout=None, return_when=getattr(m, return_when))
        return (type(r).__name__, r.done, r.not_done)

    assert same(scenario) == ("DoneAndNotDoneFutures", set(), set())
    check_result_type(impl, impl.wait([], return_when=return_when))


@pytest.mark.parametrize("return_when", RETURN_WHENS)
@pytest.mark.parametrize("timeout", [0, -1, 0.01])
def test_state_matrix_without_blocking(same, return_when, timeout):
    """Every combination of states: which futures count as done.  Note that a
    future cancelled but not yet notified (state CANCELLED) is not done for
    wait()."""

    def scenario(m):
        out = []
        for combo in (
            ("finished",), ("raised",), ("cancelled",), ("cancelled_notified",),
            ("pending",), ("running",),
            ("finished", "pending"), ("raised", "pending"),
            ("cancelled_notified", "pending"), ("cancelled", "finished"),
            ("finished", "raised", "running"), ("cancelled", "raised"),
            STATES,
        ):
            fs = {"%d-%s" % (i, s): make_future(m, s) for i, s in enumerate(combo)}
            r = m.wait(list(fs.values()), timeout=timeout, return_when=return_when)
            out.append((combo, named(fs, r)))
            assert all(waiters_left(f) == 0 for f in fs.values())
        return out

    out = same(scenario)
    lookup = dict(out)
    # Futures cancelled without notification stay in not_done.
    assert lookup[("cancelled",)] == ([], ["0-cancelled"])
    assert lookup[("cancelled_notified",)] == (["0-cancelled_notified"], [])


@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_result_type_and_keywords(impl, return_when):
    f, g = make_future(impl, "finished"), make_future(impl, "pending")
    r = impl.wait(fs=[f, g], timeout=0, return_when=return_when)
    check_result_type(impl, r)
    assert r.done == {f} and r.not_done == {g}
    r = impl.wait([f, g], 0, return_when)  # positional
    assert r.done == {f} and r.not_done == {g}


def test_all_done_returns_everything(impl):
    fs = [make_future(impl, s) for s in ("finished", "raised", "cancelled_notified")]
    for rw in RETURN_WHENS:
        r = impl.wait(fs, return_when=rw)  # no timeout: must not block
        assert r.done == set(fs) and r.not_done == set()


def test_duplicates_and_generators(same):
    def scenario(m):
        a = make_future(m, "finished")
        b = make_future(m, "pending")
        names = {"a": a, "b": b}
        out = []
        r = m.wait([a, a, b, b, a], timeout=0)
        out.append(named(names, r))
        r = m.wait((x for x in [a, b, a]), timeout=0)
        out.append(named(names, r))
        r = m.wait({a, b}, timeout=0, return_when=m.FIRST_COMPLETED)
        out.append(named(names, r))
        r = m.wait(iter([b]), timeout=0.01, return_when=m.FIRST_EXCEPTION)
        out.append(named(names, r))
        r = m.wait({a: 1, b: 2}, timeout=0)  # any iterable: dict keys
        out.append(named(names, r))
        return out

    out = same(scenario)
    assert out[0] == (["a"], ["b"])


def test_generator_consumed_eagerly(same):
    def scenario(m):
        consumed = []
        f = make_future(m, "finished")

        def gen():
            consumed.append("start")
            yield f
            consumed.append("end")

        r = m.wait(gen(), timeout=0)
        return (consumed, len(r.done))

    assert same(scenario) == (["start", "end"], 1)


def test_bad_fs_raises_at_call(same):
    def scenario(m):
        return [outcome(m.wait, 5), outcome(m.wait, None), outcome(m.wait, [[]])]

    out = same(scenario, messages=False)
    assert all(o[:2] == ("raise", TypeError) for o in out)


# ---------------------------------------------------------------------------
# Invalid return_when
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["bogus", None, 0, "first_completed"])
def test_invalid_return_when(same, bad):
    """The stdlib raises ValueError only when it gets to installing a waiter:
    not for empty input, nor when every future is already done."""

    def scenario(m):
        out = []
        for combo in ((), ("finished",), ("finished", "raised"),
                      ("pending",), ("finished", "pending"),
                      ("cancelled",), ("cancelled_notified", "running")):
            fs = [make_future(m, s) for s in combo]
            o = outcome(m.wait, fs, timeout=0, return_when=bad)
            if o[0] == "ok":
                o = ("ok", len(o[1].done), len(o[1].not_done))
            out.append((combo, o))
            # No waiter is left behind when it raised.
            assert all(waiters_left(f) == 0 for f in fs)
        return out

    out = dict(same(scenario))
    assert out[()] == ("ok", 0, 0)
    assert out[("finished", "raised")] == ("ok", 2, 0)
    assert out[("pending",)] == ("raise", ValueError, "Invalid return condition: %r" % (bad,))
    assert out[("cancelled",)][1] is ValueError


def test_return_when_compared_by_equality(same):
    def scenario(m):
        out = []
        for rw in ("FIRST_" + "COMPLETED".lower().upper(),
                   "".join(["FIRST_", "EXCEPTION"]),
                   "".join(["ALL_", "COMPLETED"])):
            a, b = make_future(m, "raised"), make_future(m, "pending")
            r = m.wait([a, b], timeout=0, return_when=rw)
            out.append((len(r.done), len(r.not_done)))
        return out

    assert same(scenario) == [(1, 1), (1, 1), (1, 1)]


# ---------------------------------------------------------------------------
# FIRST_EXCEPTION specifics
# ---------------------------------------------------------------------------


def test_first_exception_with_already_raised(impl):
    raised_f = make_future(impl, "raised")
    pending = make_future(impl, "pending")
    finished = make_future(impl, "finished")
    r = impl.wait([pending, raised_f, finished], return_when=impl.FIRST_EXCEPTION)
    assert r.done == {raised_f, finished}
    assert r.not_done == {pending}
    assert waiters_left(pending) == 0


def test_first_exception_ignores_cancelled(impl):
    cancelled = make_future(impl, "cancelled_notified")
    pending = make_future(impl, "pending")
    r = impl.wait([cancelled, pending], timeout=0.01, return_when=impl.FIRST_EXCEPTION)
    assert r.done == {cancelled} and r.not_done == {pending}


@pytest.mark.timeout(60)
def test_first_exception_wakes_on_exception(impl, threads):
    ok, bad, never = impl.Future(), impl.Future(), impl.Future()

    def complete():
        ok.set_result(1)
        bad.set_exception(ValueError("x"))

    threads(complete, delay=SHORT_DELAY)
    r = impl.wait([ok, bad, never], timeout=LONG, return_when=impl.FIRST_EXCEPTION)
    assert bad in r.done
    assert r.not_done == {never}
    assert all(waiters_left(f) == 0 for f in (ok, bad, never))


@pytest.mark.timeout(60)
def test_first_exception_without_exception_is_all_completed(impl, threads):
    fs = [impl.Future() for _ in range(3)]

    def complete():
        fs[0].set_result(0)
        fs[1].cancel()
        fs[1].set_running_or_notify_cancel()
        fs[2].set_running_or_notify_cancel()
        fs[2].set_result(2)

    threads(complete, delay=SHORT_DELAY)
    r = impl.wait(fs, timeout=LONG, return_when=impl.FIRST_EXCEPTION)
    assert r.done == set(fs) and r.not_done == set()


# ---------------------------------------------------------------------------
# Blocking: timeouts and completion from other threads
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_timeout_expires_with_nothing_done(impl, return_when):
    fs = [impl.Future(), make_future(impl, "running"), make_future(impl, "cancelled")]
    r = impl.wait(fs, timeout=0.02, return_when=return_when)
    check_result_type(impl, r)
    assert r.done == set() and r.not_done == set(fs)
    assert all(waiters_left(f) == 0 for f in fs)
    # Still usable afterwards.
    fs[0].set_result(1)
    assert fs[0].result() == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, LONG])
def test_all_completed_from_threads(impl, threads, timeout):
    fs = [impl.Future() for _ in range(4)]

    def complete():
        fs[0].set_result(0)
        fs[1].set_exception(KeyError())
        fs[2].cancel()
        fs[2].set_running_or_notify_cancel()
        fs[3].set_running_or_notify_cancel()
        fs[3].set_result(3)

    threads(complete, delay=SHORT_DELAY)
    r = impl.wait(fs, timeout=timeout)
    assert r.done == set(fs) and r.not_done == set()
    assert all(f.done() for f in fs)
    assert all(waiters_left(f) == 0 for f in fs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["set_result", "set_exception", "cancel_notify"])
def test_first_completed_from_thread(impl, threads, how):
    fs = [impl.Future() for _ in range(3)]

    def complete():
        if how == "set_result":
            fs[1].set_result(1)
        elif how == "set_exception":
            fs[1].set_exception(ValueError())
        else:
            fs[1].cancel()
            fs[1].set_running_or_notify_cancel()

    threads(complete, delay=SHORT_DELAY)
    r = impl.wait(fs, timeout=LONG, return_when=impl.FIRST_COMPLETED)
    assert r.done == {fs[1]}
    assert r.not_done == {fs[0], fs[2]}
    assert all(waiters_left(f) == 0 for f in fs)


@pytest.mark.timeout(60)
def test_cancel_without_notify_does_not_wake_wait(impl, threads):
    f = impl.Future()
    t = threads(f.cancel, delay=SHORT_DELAY)
    r = impl.wait([f], timeout=0.3, return_when=impl.FIRST_COMPLETED)
    t.join(LONG)
    assert f.cancelled()
    assert r.done == set() and r.not_done == {f}


@pytest.mark.timeout(60)
def test_all_completed_partial_timeout(impl, threads):
    fs = [impl.Future() for _ in range(3)]
    threads(fs[0].set_result, 0, delay=SHORT_DELAY)
    r = impl.wait(fs, timeout=0.5)
    # Whether fs[0] made it within 0.5 s depends on the machine's load; the
    # answer must be consistent either way.
    assert all(f.done() for f in r.done)
    assert r.done <= {fs[0]}
    assert r.done | r.not_done == set(fs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("return_when", RETURN_WHENS)
def test_no_lost_wakeup_under_races(impl, return_when):
    """Completions racing with wait()'s installation of its waiter never get
    lost: every wait returns with everything done, long before its timeout."""
    import queue
    import threading

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
        for _ in range(300):
            fs = [impl.Future(), impl.Future()]
            q.put(fs)
            r = impl.wait(fs, timeout=LONG, return_when=return_when)
            if return_when == "FIRST_COMPLETED":
                assert r.done
                impl.wait(fs, timeout=LONG)
            else:
                assert r.not_done == set(), "lost wake-up"
            assert all(waiters_left(f) == 0 for f in fs)
    finally:
        q.put(None)
        t.join(LONG)
    assert not t.is_alive()


@pytest.mark.timeout(60)
def test_wait_is_bounded_even_with_many_futures(impl, threads):
    fs = [impl.Future() for _ in range(200)]

    def complete():
        for i, f in enumerate(fs):
            f.set_result(i)

    threads(complete, delay=SHORT_DELAY)
    r = run_bounded(impl.wait, fs, timeout=LONG)
    assert len(r.done) == 200 and not r.not_done
    assert sorted(f.result() for f in r.done) == list(range(200))


@pytest.mark.timeout(60)
def test_several_waiters_on_the_same_futures(impl):
    """wait() and as_completed() in several threads over the same futures,
    all woken by the same completions; every waiter is removed afterwards."""
    import threading

    fs = [impl.Future() for _ in range(50)]
    results = {}
    ready = threading.Barrier(5, timeout=LONG)

    def waiter(name, return_when):
        ready.wait()
        r = impl.wait(fs, timeout=LONG, return_when=return_when)
        results[name] = (len(r.done), len(r.not_done))

    def iterator(name):
        ready.wait()
        results[name] = len(list(impl.as_completed(fs, timeout=LONG)))

    ts = [threading.Thread(target=waiter, args=("all", impl.ALL_COMPLETED)),
          threading.Thread(target=waiter, args=("exc", impl.FIRST_EXCEPTION)),
          threading.Thread(target=iterator, args=("iter1",)),
          threading.Thread(target=iterator, args=("iter2",))]
    for t in ts:
        t.start()
    ready.wait()
    for i, f in enumerate(fs):
        f.set_result(i)
    for t in ts:
        t.join(LONG)
    assert not any(t.is_alive() for t in ts)
    assert results == {"all": (50, 0), "exc": (50, 0), "iter1": 50, "iter2": 50}
    assert all(waiters_left(f) == 0 for f in fs)
