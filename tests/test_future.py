"""Future: every public method, every state transition, misuse errors,
timeouts, repr, generics, callbacks, and the private attributes the stdlib's
wait()/as_completed() rely on.  Each test runs against the stdlib and cfutures.
"""

import concurrent.futures
import logging
import re
import threading
import time
import types
import weakref

import pytest

from conftest import (
    LONG,
    SHORT_DELAY,
    STATES,
    LogCapture,
    RecordingWaiter,
    make_future,
    norm_text,
    outcome,
    raised,
    run_bounded,
    waiters_left,
)


class CustomBaseError(BaseException):
    """A BaseException that is not an Exception (callbacks do not catch it)."""


# ---------------------------------------------------------------------------
# Construction, types, generics
# ---------------------------------------------------------------------------


def test_future_isinstance_concurrent_future(impl):
    f = impl.Future()
    assert isinstance(f, concurrent.futures.Future)
    assert issubclass(impl.Future, concurrent.futures.Future)
    assert type(f) is impl.Future


def test_future_class_getitem(impl):
    alias = impl.Future[int]
    assert isinstance(alias, types.GenericAlias)
    assert alias.__origin__ is impl.Future
    assert alias.__args__ == (int,)
    # The alias is callable and builds a plain future.
    f = alias()
    assert type(f) is impl.Future
    assert not f.done()


def test_future_constructor_takes_no_arguments(same):
    def scenario(m):
        return [outcome(m.Future, 1), outcome(m.Future, x=1)]

    out = same(scenario, messages=False)
    assert all(o[0] == "raise" and o[1] is TypeError for o in out)


def test_future_supports_attributes_and_weakrefs(impl):
    f = impl.Future()
    f.user_attribute = "x"
    assert f.user_attribute == "x"
    assert f.__dict__["user_attribute"] == "x"
    r = weakref.ref(f)
    assert r() is f


def test_future_subclass(impl):
    events = []

    class MyFuture(impl.Future):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def set_result(self, result):
            events.append(("set_result", result))
            super().set_result(result * 2)

    f = MyFuture("t")
    assert f.tag == "t"
    assert repr(f).startswith("<MyFuture at ")
    f.add_done_callback(lambda fut: events.append(("cb", fut.result())))
    f.set_result(21)
    assert f.result() == 42
    assert events == [("set_result", 21), ("cb", 42)]
    assert isinstance(f, concurrent.futures.Future)
    assert re.fullmatch(r"<MyFuture at 0x[0-9a-f]+ state=finished returned int>", repr(f))


# ---------------------------------------------------------------------------
# States, queries, private attributes
# ---------------------------------------------------------------------------


def test_state_queries_in_every_state(same, impl):
    def scenario(m):
        rows = []
        for state in STATES:
            f = make_future(m, state)
            rows.append((state, f._state, f.cancelled(), f.running(), f.done()))
        return rows

    rows = same(scenario)
    by_state = {r[0]: r[1:] for r in rows}
    assert by_state["pending"] == (impl._base.PENDING, False, False, False)
    assert by_state["running"] == (impl._base.RUNNING, False, True, False)
    assert by_state["cancelled"] == (impl._base.CANCELLED, True, False, True)
    assert by_state["cancelled_notified"] == (impl._base.CANCELLED_AND_NOTIFIED, True, False, True)
    assert by_state["finished"] == (impl._base.FINISHED, False, False, True)


def test_private_result_and_exception_attributes(same):
    def scenario(m):
        exc = KeyError("k")
        out = []
        f = m.Future()
        out.append((f._result, f._exception))
        f.set_result([1, 2])
        out.append((f._result, f._exception))
        g = m.Future()
        g.set_exception(exc)
        out.append((g._result, g._exception is exc))
        return out

    out = same(scenario)
    assert out[1] == ([1, 2], None)


@pytest.mark.parametrize("state", STATES)
def test_repr_in_every_state(same, impl, state):
    def scenario(m):
        f = make_future(m, state)
        r = repr(f)
        assert ("%#x" % id(f)) in r
        return r

    r = same(scenario)
    assert r.startswith("<Future at 0x? state=")
    f = make_future(impl, state)
    assert repr(f) == str(f)


def test_repr_result_and_exception_types(same):
    def scenario(m):
        out = []
        for value in (None, "s", 1.5, [], object()):
            f = m.Future()
            f.set_result(value)
            out.append(repr(f))

        class Custom(Exception):
            pass

        for exc in (KeyError("k"), Custom(), StopIteration()):
            f = m.Future()
            f.set_exception(exc)
            out.append(repr(f))
        return out

    out = same(scenario)
    assert "returned NoneType>" in out[0]
    assert out[-2].endswith("raised Custom>")


# ---------------------------------------------------------------------------
# cancel / set_running_or_notify_cancel / set_result / set_exception
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
def test_cancel_in_every_state(same, state):
    def scenario(m):
        f = make_future(m, state)
        calls = []
        if not f.done():
            f.add_done_callback(lambda fut: calls.append("cb"))
        first = f.cancel()
        second = f.cancel()
        return (first, second, f._state, f.cancelled(), f.done(), calls, repr(f))

    out = same(scenario)
    if state in ("running", "finished", "raised"):
        assert out[:2] == (False, False)
    else:
        assert out[:2] == (True, True)
    # A callback runs exactly once, even after a second cancel().
    assert out[5] in ([], ["cb"])


@pytest.mark.parametrize("state", STATES)
def test_set_running_or_notify_cancel_in_every_state(same, state):
    def scenario(m):
        f = make_future(m, state)
        with LogCapture() as logs:
            o = outcome(f.set_running_or_notify_cancel)
        return (o, f._state, logs.records)

    o, new_state, records = same(scenario)
    if state == "pending":
        assert o == ("ok", True) and new_state == "RUNNING" and records == []
    elif state == "cancelled":
        assert o == ("ok", False) and new_state == "CANCELLED_AND_NOTIFIED" and records == []
    else:
        assert o[0] == "raise" and o[1] is RuntimeError
        assert o[2] == "Future in unexpected state"
        assert [r[0] for r in records] == ["CRITICAL"]
        assert records[0][1].startswith("Future <id> in unexpected state: ")


@pytest.mark.parametrize("method", ["set_result", "set_exception"])
@pytest.mark.parametrize("state", STATES)
def test_set_result_or_exception_in_every_state(same, impl, method, state):
    def scenario(m):
        f = make_future(m, state)
        before = repr(f)
        arg = 7 if method == "set_result" else OSError(2, "nope")
        o = outcome(getattr(f, method), arg)
        return (before, o, f._state, repr(f))

    before, o, new_state, after = same(scenario)
    if state in ("pending", "running"):
        assert o == ("ok", None)
        assert new_state == "FINISHED"
    else:
        assert o[0] == "raise"
        assert o[1] is impl.InvalidStateError
        assert o[1] is concurrent.futures.InvalidStateError
        # '{state}: {repr}' exactly like the stdlib.
        assert o[2] == "%s: %s" % (new_state, before)
        assert after == before


def test_invalid_state_error_message_exact(impl):
    f = impl.Future()
    f.set_result(1)
    e = raised(f.set_result, 2)
    assert type(e) is impl.InvalidStateError
    assert str(e) == "FINISHED: %r" % (f,)
    g = impl.Future()
    g.cancel()
    e = raised(g.set_exception, ValueError())
    assert str(e) == "CANCELLED: %r" % (g,)
    assert re.fullmatch(r"CANCELLED: <Future at 0x[0-9a-f]+ state=cancelled>", str(e))


def test_set_result_after_running(impl):
    f = impl.Future()
    assert f.set_running_or_notify_cancel() is True
    assert f.cancel() is False
    f.set_result("done")
    assert f.result() == "done"
    assert f.exception() is None


def test_set_exception_with_class_and_instance(same):
    def scenario(m):
        out = []
        f = m.Future()
        f.set_exception(ValueError)
        out.append(outcome(f.result, 0))
        out.append(f.exception(0) is ValueError)
        out.append(repr(f))
        g = m.Future()
        exc = ValueError("x")
        g.set_exception(exc)
        out.append(outcome(g.result))
        out.append(g.exception() is exc)
        return out

    out = same(scenario)
    assert out[0][:2] == ("raise", ValueError)


def test_result_raises_the_stored_exception_object(impl):
    exc = ZeroDivisionError("zero")
    f = impl.Future()
    f.set_exception(exc)
    for _ in range(3):
        with pytest.raises(ZeroDivisionError) as info:
            f.result()
        assert info.value is exc
    assert f.exception() is exc
    assert f.exception(timeout=0) is exc


def test_set_result_keeps_object_identity(impl):
    value = object()
    f = impl.Future()
    f.set_result(value)
    assert f.result() is value
    assert f.result(0) is value
    assert f.exception() is None


def test_falsey_exception_is_raised(cf):
    """gh-132063: an exception whose bool() is False must still be raised.

    The installed stdlib 3.10-3.13.0 returns None here (fixed upstream in
    3.14): cfutures follows the fixed behaviour, so this test is cfutures-only."""

    class Falsey(Exception):
        def __bool__(self):
            return False

    exc = Falsey("f")
    f = cf.Future()
    f.set_exception(exc)
    with pytest.raises(Falsey) as info:
        f.result()
    assert info.value is exc
    assert f.exception() is exc


# ---------------------------------------------------------------------------
# result() / exception() and timeouts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["result", "exception"])
@pytest.mark.parametrize("state", STATES)
def test_result_and_exception_without_waiting(same, impl, method, state):
    def scenario(m):
        f = make_future(m, state)
        return [outcome(getattr(f, method), t) for t in (0, -1, 0.001)] + [
            outcome(getattr(f, method), timeout=0)
        ]

    out = same(scenario)
    kinds = {o[1] if o[0] == "raise" else "ok" for o in out}
    assert len(kinds) == 1
    kind = kinds.pop()
    if state in ("pending", "running"):
        assert kind is impl.TimeoutError
        assert out[0][2] == ""
    elif state.startswith("cancelled"):
        assert kind is impl.CancelledError
        assert out[0][2] == ""
    elif state == "raised" and method == "result":
        assert kind is ValueError
    else:
        assert kind == "ok"


@pytest.mark.parametrize("method", ["result", "exception"])
def test_timeout_error_class(impl, method):
    f = impl.Future()
    e = raised(getattr(f, method), timeout=0)
    assert type(e) is impl.TimeoutError
    assert type(e) is concurrent.futures.TimeoutError
    assert isinstance(e, concurrent.futures.TimeoutError)


@pytest.mark.parametrize("method", ["result", "exception"])
def test_invalid_timeout_on_pending_future(same, method):
    def scenario(m):
        f = m.Future()
        return [outcome(getattr(f, method), t) for t in ("1", 1e100)]

    out = same(scenario, messages=False)
    assert out == [("raise", TypeError), ("raise", OverflowError)]


@pytest.mark.parametrize("method", ["result", "exception"])
def test_timeout_not_inspected_when_done(same, method):
    """The stdlib never looks at the timeout of a future that is done."""

    def scenario(m):
        f = make_future(m, "finished", value=5)
        return [outcome(getattr(f, method), t) for t in ("junk", 1e100, -5)]

    out = same(scenario)
    assert out[0][0] == "ok"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, LONG])
def test_result_waits_for_other_thread(impl, threads, timeout):
    f = impl.Future()
    threads(f.set_result, "late", delay=SHORT_DELAY)
    assert f.result(timeout) == "late"
    assert f.done()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, LONG])
def test_exception_waits_for_other_thread(impl, threads, timeout):
    f = impl.Future()
    exc = KeyError("late")
    threads(f.set_exception, exc, delay=SHORT_DELAY)
    assert f.exception(timeout=timeout) is exc
    with pytest.raises(KeyError):
        f.result(0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["result", "exception"])
def test_cancel_from_other_thread_wakes_waiter(impl, threads, method):
    f = impl.Future()
    threads(f.cancel, delay=SHORT_DELAY)
    with pytest.raises(impl.CancelledError) as info:
        getattr(f, method)(LONG)
    assert type(info.value) is concurrent.futures.CancelledError


@pytest.mark.timeout(60)
def test_running_then_result_from_other_thread(impl, threads):
    f = impl.Future()

    def work():
        assert f.set_running_or_notify_cancel()
        f.set_result(99)

    threads(work, delay=SHORT_DELAY)
    assert f.result() == 99


@pytest.mark.timeout(60)
def test_small_positive_timeout_expires(impl):
    f = impl.Future()
    with pytest.raises(impl.TimeoutError):
        f.result(0.02)
    with pytest.raises(impl.TimeoutError):
        f.exception(0.02)
    assert not f.done()
    f.set_result(1)
    assert f.result(0.02) == 1


@pytest.mark.timeout(60)
def test_many_threads_waiting_are_all_woken(impl):
    f = impl.Future()
    results = []
    lock = threading.Lock()
    started = threading.Barrier(4, timeout=LONG)

    def waiter():
        started.wait()
        value = f.result(LONG)
        with lock:
            results.append(value)

    ts = [threading.Thread(target=waiter, daemon=True) for _ in range(3)]
    for t in ts:
        t.start()
    started.wait()
    f.set_result("all")
    for t in ts:
        t.join(LONG)
    assert not any(t.is_alive() for t in ts)
    assert results == ["all"] * 3


# ---------------------------------------------------------------------------
# Concurrent completion: exactly one winner
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_concurrent_set_result_has_one_winner(impl):
    n = 2000
    fs = [impl.Future() for _ in range(n)]
    calls = [0] * n
    for i, f in enumerate(fs):
        f.add_done_callback(lambda fut, i=i: calls.__setitem__(i, calls[i] + 1))
    wins = {0: 0, 1: 0}
    errors = []
    barrier = threading.Barrier(2, timeout=LONG)

    def racer(tid):
        barrier.wait()
        for f in fs:
            try:
                f.set_result(tid)
                wins[tid] += 1
            except impl.InvalidStateError:
                pass
            except Exception as e:  # noqa: BLE001
                errors.append(e)

    ts = [threading.Thread(target=racer, args=(i,)) for i in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(LONG)
    assert not any(t.is_alive() for t in ts)
    assert errors == []
    assert wins[0] + wins[1] == n
    assert calls == [1] * n
    assert all(f.result() in (0, 1) for f in fs)


@pytest.mark.timeout(60)
def test_concurrent_cancel_versus_run_is_consistent(impl):
    n = 2000
    fs = [impl.Future() for _ in range(n)]
    cancel_ret = [None] * n
    run_ret = [None] * n
    barrier = threading.Barrier(2, timeout=LONG)

    def canceller():
        barrier.wait()
        for i, f in enumerate(fs):
            cancel_ret[i] = f.cancel()

    def runner():
        barrier.wait()
        for i, f in enumerate(fs):
            run_ret[i] = f.set_running_or_notify_cancel()
            if run_ret[i]:
                f.set_result(i)

    ts = [threading.Thread(target=canceller), threading.Thread(target=runner)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(LONG)
    assert not any(t.is_alive() for t in ts)
    for i, f in enumerate(fs):
        assert cancel_ret[i] == f.cancelled()
        assert run_ret[i] == (not f.cancelled())
        if f.cancelled():
            assert f._state == "CANCELLED_AND_NOTIFIED"
        else:
            assert f.result() == i


# ---------------------------------------------------------------------------
# Done callbacks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["set_result", "set_exception", "cancel"])
def test_callbacks_called_in_order_exactly_once(impl, how):
    f = impl.Future()
    calls = []
    for i in range(5):
        f.add_done_callback(lambda fut, i=i: calls.append((i, fut)))
    assert calls == []
    if how == "set_result":
        f.set_result(1)
    elif how == "set_exception":
        f.set_exception(ValueError())
    else:
        f.cancel()
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4]
    assert all(c[1] is f for c in calls)
    # Nothing more happens on later calls.
    f.cancel()
    if how == "cancel":
        f.set_running_or_notify_cancel()
        with pytest.raises(impl.InvalidStateError):
            f.set_result(2)
    else:
        with pytest.raises(impl.InvalidStateError):
            f.set_result(2)
    assert len(calls) == 5


@pytest.mark.parametrize("state", ["finished", "raised", "cancelled", "cancelled_notified"])
def test_callback_called_at_once_when_done(impl, state):
    f = make_future(impl, state)
    calls = []
    ret = f.add_done_callback(lambda fut: calls.append((fut, threading.get_ident())))
    assert ret is None
    assert calls == [(f, threading.get_ident())]


def test_callback_added_to_running_future_waits(impl):
    f = make_future(impl, "running")
    calls = []
    f.add_done_callback(calls.append)
    assert calls == []
    f.set_result(3)
    assert calls == [f]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["set_result", "set_exception", "cancel"])
def test_callback_runs_in_completing_thread(impl, how):
    f = impl.Future()
    seen = []
    f.add_done_callback(lambda fut: seen.append(threading.get_ident()))
    idents = []

    def complete():
        idents.append(threading.get_ident())
        if how == "set_result":
            f.set_result(1)
        elif how == "set_exception":
            f.set_exception(ValueError())
        else:
            f.cancel()

    t = threading.Thread(target=complete)
    t.start()
    t.join(LONG)
    assert not t.is_alive()
    assert seen == idents
    assert seen[0] != threading.get_ident()


def test_callback_exception_is_logged_and_others_run(impl, caplog):
    f = impl.Future()
    calls = []

    def bad(fut):
        calls.append("bad")
        raise ValueError("callback failed")

    f.add_done_callback(lambda fut: calls.append("first"))
    f.add_done_callback(bad)
    f.add_done_callback(lambda fut: calls.append("last"))
    with caplog.at_level(logging.DEBUG, logger="concurrent.futures"):
        f.set_result(5)
    assert calls == ["first", "bad", "last"]
    records = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelno == logging.ERROR
    assert rec.getMessage() == "exception calling callback for %r" % (f,)
    assert rec.exc_info is not None and rec.exc_info[0] is ValueError
    assert str(rec.exc_info[1]) == "callback failed"
    assert f.result() == 5


def test_callback_exception_logged_when_added_after_done(impl, caplog):
    f = make_future(impl, "raised")

    def bad(fut):
        raise RuntimeError("late callback")

    with caplog.at_level(logging.DEBUG, logger="concurrent.futures"):
        assert f.add_done_callback(bad) is None
    records = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].getMessage() == "exception calling callback for %r" % (f,)
    assert records[0].exc_info[0] is RuntimeError


def test_callback_logging_matches_reference(same):
    def scenario(m):
        out = []
        with LogCapture() as logs:
            f = m.Future()
            f.add_done_callback(5)  # not callable: fails when called
            f.add_done_callback(lambda fut: 1 / 0)
            f.add_done_callback(lambda fut: out.append("ran"))
            f.set_exception(KeyError("x"))
            g = m.Future()
            g.cancel()
            g.add_done_callback(lambda fut: [][1])
        return out, logs.records

    out, records = same(scenario, messages=False)
    assert out == ["ran"]
    assert [r[2] for r in records] == [TypeError, ZeroDivisionError, IndexError]


@pytest.mark.parametrize("how", ["set_result", "set_exception", "cancel", "add_after_done"])
def test_base_exception_in_callback_propagates(same, how):
    """Callbacks only catch Exception: a BaseException escapes and stops the
    remaining callbacks, like the stdlib."""

    def scenario(m):
        f = m.Future()
        calls = []

        def boom(fut):
            calls.append("boom")
            raise CustomBaseError("stop")

        if how == "add_after_done":
            f.set_result(1)
            try:
                f.add_done_callback(boom)
            except CustomBaseError as e:
                return ("propagated", str(e), calls, f._state)
            return ("swallowed", calls, f._state)
        f.add_done_callback(lambda fut: calls.append("a"))
        f.add_done_callback(boom)
        f.add_done_callback(lambda fut: calls.append("c"))
        try:
            if how == "set_result":
                f.set_result(1)
            elif how == "set_exception":
                f.set_exception(ValueError())
            else:
                f.cancel()
        except CustomBaseError as e:
            return ("propagated", str(e), calls, f._state)
        return ("swallowed", calls, f._state)

    out = same(scenario)
    assert out[0] == "propagated"


@pytest.mark.timeout(60)
def test_reentrant_callback(same):
    """A callback may call every method of the future it is attached to."""

    def scenario(m):
        log = []

        def inner(fut):
            log.append(("inner", fut.done()))

        def reenter(fut):
            log.append(("done", fut.done(), fut.cancelled(), fut.running()))
            log.append(("result", outcome(fut.result)))
            log.append(("result0", outcome(fut.result, 0)))
            log.append(("exception", outcome(fut.exception, 0)))
            log.append(("repr", repr(fut)))
            log.append(("cancel", fut.cancel()))
            log.append(("set_result", outcome(fut.set_result, 2)))
            log.append(("set_exception", outcome(fut.set_exception, KeyError())))
            log.append(("srnc", outcome(fut.set_running_or_notify_cancel)))
            with fut._condition:
                log.append(("state", fut._state))
            fut.add_done_callback(inner)
            log.append(("after-inner",))

        out = []
        for how in ("set_result", "set_exception", "cancel"):
            log.clear()
            f = m.Future()
            f.add_done_callback(reenter)
            with LogCapture() as logs:
                if how == "set_result":
                    f.set_result(1)
                elif how == "set_exception":
                    f.set_exception(ValueError("v"))
                else:
                    f.cancel()
            out.append((how, list(log), logs.records))
        return out

    out = run_bounded(same, scenario)
    for how, log, records in out:
        assert ("inner", True) in log
        assert log.index(("inner", True)) < log.index(("after-inner",))
        assert [r[0] for r in records] == (["CRITICAL"] if how != "cancel" else [])


def test_callback_added_from_inside_callback(same):
    def scenario(m):
        out = []
        f = m.Future()
        other = m.Future()

        def first(fut):
            out.append("first-start")
            fut.add_done_callback(lambda g: out.append("nested"))
            other.add_done_callback(lambda g: out.append("on-other"))
            out.append("first-end")

        f.add_done_callback(first)
        f.add_done_callback(lambda fut: out.append("second"))
        f.set_result(None)
        out.append("--")
        other.set_result(None)
        return out

    out = same(scenario)
    assert out.index("first-start") < out.index("nested") < out.index("second")
    assert out[-1] == "on-other"


def test_non_callable_callback_is_accepted(same):
    def scenario(m):
        f = m.Future()
        with LogCapture() as logs:
            r1 = outcome(f.add_done_callback, None)
            r2 = outcome(f.set_result, 1)
            r3 = outcome(f.add_done_callback, "x")
        return (r1, r2, r3, logs.records)

    out = same(scenario, messages=False)
    assert out[0] == ("ok", None)
    assert [r[2] for r in out[3]] == [TypeError, TypeError]


@pytest.mark.timeout(60)
def test_waiters_woken_before_callbacks_run(impl):
    """notify happens before the callbacks: a thread blocked in result() gets
    the value while a (slow) callback is still running in the completing
    thread."""
    f = impl.Future()
    got_result = threading.Event()
    callback_saw = []

    def slow_callback(fut):
        callback_saw.append(got_result.wait(10))

    f.add_done_callback(slow_callback)

    def complete():
        time.sleep(0.1)  # let the main thread block in result() first
        f.set_result("v")

    t = threading.Thread(target=complete)
    t.start()
    assert f.result(LONG) == "v"
    got_result.set()
    t.join(LONG)
    assert not t.is_alive()
    assert callback_saw == [True]


# ---------------------------------------------------------------------------
# The waiter protocol and _condition used by the stdlib's wait()/as_completed()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["set_result", "set_exception", "cancel_notify"])
def test_waiters_protocol(impl, how):
    f = impl.Future()
    assert list(f._waiters) == []
    w = RecordingWaiter()
    order = []
    f._waiters.append(w)
    f.add_done_callback(lambda fut: order.append(("callback", len(w.calls))))
    if how == "set_result":
        f.set_result(1)
        expected = "add_result"
    elif how == "set_exception":
        f.set_exception(ValueError())
        expected = "add_exception"
    else:
        f.cancel()
        # cancel() alone does not notify waiters; the executor does, later.
        assert w.calls == []
        assert f.set_running_or_notify_cancel() is False
        expected = "add_cancelled"
    assert w.calls == [(expected, f)]
    if how != "cancel_notify":
        # The waiter was told before the callbacks ran.
        assert order == [("callback", 1)]
    f._waiters.remove(w)
    assert list(f._waiters) == []


def test_waiters_persist_and_many(impl):
    f = impl.Future()
    ws = [RecordingWaiter() for _ in range(3)]
    for w in ws:
        f._waiters.append(w)
    assert len(f._waiters) == 3
    f._waiters.remove(ws[1])
    f.set_result(0)
    assert [len(w.calls) for w in ws] == [1, 0, 1]


def test_condition_is_usable(impl):
    f = impl.Future()
    cond = f._condition
    assert cond.acquire() in (True, None)
    cond.release()
    with f._condition:
        assert f._state == "PENDING"
    f.set_result(1)
    with f._condition:
        assert f._state == "FINISHED"


# ---------------------------------------------------------------------------
# More races and odd inputs
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_add_done_callback_racing_completion(impl):
    """A callback added while another thread completes the future is called
    exactly once: by the completer or at once by add_done_callback."""
    n = 3000
    fs = [impl.Future() for _ in range(n)]
    counts = [0] * n
    lock = threading.Lock()
    barrier = threading.Barrier(2, timeout=LONG)

    def adder():
        barrier.wait()
        for i, f in enumerate(fs):
            def cb(fut, i=i):
                with lock:
                    counts[i] += 1
            f.add_done_callback(cb)

    def completer():
        barrier.wait()
        for i, f in enumerate(fs):
            f.set_result(i)

    ts = [threading.Thread(target=adder), threading.Thread(target=completer)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(LONG)
    assert not any(t.is_alive() for t in ts)
    assert counts == [1] * n


def test_many_callbacks_in_order(impl):
    f = impl.Future()
    calls = []
    for i in range(10000):
        f.add_done_callback(lambda fut, i=i: calls.append(i))
    f.set_result(None)
    assert calls == list(range(10000))


def test_class_getitem_any_arguments(same):
    def scenario(m):
        return [m.Future[int, str].__origin__ is m.Future,
                m.Future[int, str].__args__, m.Future[()].__args__]

    same(scenario)


@pytest.mark.parametrize("value", [float("nan"), 0.0, -0.0, False],
                         ids=["nan", "zero", "negzero", "false"])
@pytest.mark.parametrize("method", ["result", "exception"])
def test_odd_zero_like_timeouts(same, impl, value, method):
    """These never block: the stdlib treats anything not > 0 as a poll."""

    def scenario(m):
        return outcome(getattr(m.Future(), method), value)[:2]

    assert same(scenario) == ("raise", impl.TimeoutError)


@pytest.mark.parametrize("kind", ["fraction", "decimal", "int"])
def test_numeric_timeout_types(same, impl, kind):
    """int works; the stdlib rejects Fraction/Decimal timeouts with TypeError
    (its lock's timeout parser wants a float or an int)."""
    import decimal
    import fractions

    def scenario(m):
        t = {"fraction": fractions.Fraction(1, 100), "decimal": decimal.Decimal("0.01"),
             "int": 0}[kind]
        out = [outcome(m.Future().result, t)[:2], outcome(m.Future().exception, t)[:2]]
        r = outcome(m.wait, [m.Future()], timeout=t)
        out.append(r[:2] if r[0] == "raise" else len(r[1].not_done))
        return out

    out = same(scenario, messages=False)
    if kind == "int":
        assert out == [("raise", impl.TimeoutError)] * 2 + [1]


def test_pickle_raises_typeerror(same):
    import pickle

    def scenario(m):
        return [outcome(pickle.dumps, make_future(m, s))[:2] for s in ("pending", "finished")]

    out = same(scenario)
    assert out[0] == ("raise", TypeError)


# ---------------------------------------------------------------------------
# Hostile re-entrancy: run in a subprocess so that a crash is a clean failure
# ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_callback_reinitialising_future(impl):
    """A callback calling fut.__init__() (or otherwise dropping the callback
    list) while the callbacks are being run: no crash; same outcome as the
    stdlib."""
    from conftest import run_script

    code = """
    calls = []
    f = cf.Future()
    def evil(fut):
        calls.append("evil")
        fut.__init__()
        calls.append(fut._state)
    for i in range(3):
        f.add_done_callback(lambda fut, i=i: calls.append(i))
    f.add_done_callback(evil)
    for i in range(3, 6):
        f.add_done_callback(lambda fut, i=i: calls.append(i))
    f.set_result(1)
    calls.append(f.done())
    f.set_result(2)
    calls.append(f.result())
    print(calls)
    """
    ref = run_script(concurrent.futures, code)
    got = run_script(impl, code)
    assert got.returncode == 0, got.stderr
    assert got.stdout == ref.stdout


@pytest.mark.timeout(90)
def test_waiter_mutating_waiters_during_notification(impl):
    """A waiter that removes itself from f._waiters while being notified, and
    one that raises: no crash, and the future ends up finished."""
    from conftest import run_script

    code = """
    class SelfRemoving:
        def __init__(self, f): self.f = f; self.calls = 0
        def add_result(self, fut):
            self.calls += 1
            self.f._waiters.remove(self)
        add_exception = add_cancelled = add_result

    class Raising:
        def add_result(self, fut): raise KeyError("waiter")
        add_exception = add_cancelled = add_result

    f = cf.Future()
    ws = [SelfRemoving(f) for _ in range(4)]
    for w in ws:
        f._waiters.append(w)
    f.set_result(1)
    print("calls", sum(w.calls for w in ws) > 0, f.result())

    g = cf.Future()
    g._waiters.append(Raising())
    try:
        g.set_result(1)
    except KeyError:
        pass
    print("state", g._state, g.done())
    """
    proc = run_script(impl, code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == ["calls True 1", "state FINISHED True"], proc.stdout


@pytest.mark.timeout(120)
def test_deep_callback_chain_does_not_crash(impl):
    """Each callback completes the next future: a deep recursion through
    set_result.  The stdlib logs a RecursionError at some depth; a C
    implementation must not overflow the C stack."""
    from conftest import run_script

    code = """
    import logging, sys
    logging.getLogger("concurrent.futures").disabled = True
    n = 100000
    fs = [cf.Future() for _ in range(n)]
    for a, b in zip(fs, fs[1:]):
        a.add_done_callback(lambda fut, b=b: b.set_result(fut.result() + 1))
    fs[0].set_result(0)
    done = sum(f.done() for f in fs)
    print("OK", done > 0, all(f.result() == i for i, f in enumerate(fs) if f.done()))
    """
    proc = run_script(impl, code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK True True" in proc.stdout.splitlines()


@pytest.mark.timeout(90)
def test_concurrent_next_on_one_as_completed_iterator(impl):
    """Two threads calling next() on the same as_completed iterator: no
    crash, no future yielded twice, and once it is exhausted neither thread
    stays blocked (the stdlib generator raises ValueError 'generator already
    executing' in one of them, then StopIteration).  The iterator's own
    timeout (30 s) is far above the 10 s join bound, so a thread left waiting
    on an exhausted iterator shows up as "alive True"."""
    from conftest import run_script

    code = """
    import os, sys, threading, time
    fs = [cf.Future() for _ in range(300)]
    it = cf.as_completed(fs, timeout=30)
    got, errors = [], []
    lock = threading.Lock()
    def consume():
        while True:
            try:
                f = next(it)
            except StopIteration:
                return
            except ValueError as e:
                with lock:
                    errors.append(type(e))
                time.sleep(0.0005)
                continue
            with lock:
                got.append(f)
    ts = [threading.Thread(target=consume, daemon=True) for _ in range(2)]
    for t in ts: t.start()
    for f in fs: f.set_result(None)
    for t in ts: t.join(10)
    print("alive", any(t.is_alive() for t in ts))
    print("unique", len(got) == len(set(map(id, got))), len(got))
    print("errors", set(errors) <= {ValueError})
    sys.stdout.flush()
    os._exit(0)
    """
    proc = run_script(impl, code, timeout=75)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["alive False", "unique True 300", "errors True"]


# ---------------------------------------------------------------------------
# copy.copy(), and __init__() again on a future another thread waits on
# ---------------------------------------------------------------------------


def test_copy_like_stdlib(same):
    """The stdlib's copy.copy() copies the instance __dict__: the copy has the
    state and outcome, and shares _condition, _waiters and _done_callbacks;
    deepcopy fails on the condition's RLock."""
    import copy

    def scenario(mod):
        out = []
        for state in ("pending", "running", "finished", "raised", "cancelled"):
            f = make_future(mod, state)
            g = copy.copy(f)
            out.append((state, type(g) is type(f), g._state, g._condition is f._condition,
                        g._waiters is f._waiters, g._done_callbacks is f._done_callbacks,
                        outcome(g.exception, 0), outcome(g.result, 0)))
        f = mod.Future()
        g = copy.copy(f)
        calls = []
        g.add_done_callback(lambda x: calls.append(x is g))
        f.set_result(1)
        out.append((g._state, f._state, list(calls)))
        g.set_result(2)
        out.append((g.result(), f.result(), list(calls)))
        out.append(outcome(copy.deepcopy, f))
        return out

    same(scenario)


def _reinit_while_blocked(impl, threads, call, visible):
    """Thread A blocks in call(f); then f.__init__() and f.set_result('x')."""
    f = impl.Future()
    box = {}
    t = threads(lambda: box.setdefault("r", outcome(call, f)))
    deadline = time.monotonic() + LONG
    if visible:
        while waiters_left(f) == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert waiters_left(f) == 1
    else:
        time.sleep(SHORT_DELAY)     # the outcome is the same if A is late
    f.__init__()
    assert f._state == "PENDING"
    f.set_result("x")
    t.join(LONG)
    assert waiters_left(f) == 0
    return box["r"]


def test_reinit_while_result_waits(impl, threads):
    """The stdlib's __init__ makes a new _condition: the blocked result() is
    not woken, sleeps out its timeout, then reads the (new) state."""
    r = _reinit_while_blocked(impl, threads, lambda f: f.result(0.3), visible=False)
    assert r == ("ok", "x")


def test_reinit_while_wait_waits(impl, threads):
    """wait() is not woken either, then fails to remove its waiter from the
    new _waiters list: ValueError, as the stdlib's."""
    r = _reinit_while_blocked(impl, threads, lambda f: impl.wait([f], 0.3), visible=True)
    assert r == ("raise", ValueError, "list.remove(x): x not in list")


def test_reinit_while_as_completed_waits(impl, threads):
    r = _reinit_while_blocked(impl, threads, lambda f: list(impl.as_completed([f], 0.3)),
                              visible=True)
    assert r == ("raise", ValueError, "list.remove(x): x not in list")
