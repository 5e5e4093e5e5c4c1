"""Every timeout-taking entry point reads its timeout as the running stdlib does.

result(), exception() and wait() hand the timeout to Condition.wait(); map()
and as_completed() compute ``end_time = timeout + time.monotonic()`` and wait
on what is left.  The table crosses odd values (inf, nan, huge, bool, Decimal,
Fraction, non-numbers) with each entry point and compares outcomes (types and
messages) with the stdlib's.  A future that must not complete in time never
completes (a helper completes it only after LONG, as a safety net, and is
stopped at the end); for values that wait, a helper completes the future after
SHORT_DELAY and the result must come back instead of TimeoutError.
"""

import threading
from decimal import Decimal
from fractions import Fraction

import pytest

from conftest import LONG, SHORT_DELAY, STDLIB, norm, outcome

TM = threading.TIMEOUT_MAX


class _Comparable:
    def __gt__(self, other):
        return True

    def __lt__(self, other):
        return False


# (id, value, waits): waits=True where the stdlib blocks until completion.
VALUES = [
    ("0", 0, False), ("0.0", 0.0, False), ("-1", -1, False), ("-1.0", -1.0, False),
    ("0.01", 0.01, False), ("False", False, False), ("-inf", float("-inf"), False),
    ("nan", float("nan"), False), ("-1e300", -1e300, False), ("-10**30", -10**30, False),
    ("inf", float("inf"), False), ("1e300", 1e300, False), ("TM*2", TM * 2, False),
    ("1e10", 1e10, False), ("9.3e9", 9.3e9, False), ("10**30", 10**30, False),
    ("2**63", 2**63, False), ("10**10", 10**10, False), ("9223372037", 9223372037, False),
    ("Decimal(0.01)", Decimal("0.01"), False), ("Decimal(-1)", Decimal(-1), False),
    ("Fraction(1,100)", Fraction(1, 100), False), ("Fraction(-1)", Fraction(-1), False),
    ("str", "abc", False), ("list", [], False), ("complex", 1j, False),
    ("comparable", _Comparable(), False),
    ("True", True, True), ("TIMEOUT_MAX", TM, True), ("9*10**9", 9 * 10**9, True),
    ("9223372036", 9223372036, True), ("1e9", 1e9, True), ("2.5", 2.5, True),
]


def _controlled(mod, waits):
    """A pending future and a stop function.  With waits, a helper completes it
    after SHORT_DELAY; else only after LONG (never, unless something hangs)."""
    f = mod.Future()
    stop = threading.Event()

    def run():
        if not stop.wait(SHORT_DELAY if waits else LONG) or waits:
            if not f.done():
                f.set_result("late")

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def finish():
        stop.set()
        t.join(LONG)

    return f, finish


def _ep_result(mod, value, waits):
    f, finish = _controlled(mod, waits)
    try:
        return outcome(f.result, value)
    finally:
        finish()


def _ep_exception(mod, value, waits):
    f, finish = _controlled(mod, waits)
    try:
        return outcome(f.exception, value)
    finally:
        finish()


def _ep_wait(mod, value, waits):
    f, finish = _controlled(mod, waits)
    g = mod.Future()
    try:
        res = outcome(mod.wait, [f, g], value, mod.FIRST_COMPLETED)
        if res[0] == "ok":
            res = ("ok", len(res[1].done), len(res[1].not_done))
        return res
    finally:
        finish()


def _ep_as_completed(mod, value, waits):
    f, finish = _controlled(mod, waits or (isinstance(value, float) and value != value))
    g = mod.Future()
    g.set_result("early")
    got = []

    def run():
        for x in mod.as_completed([f, g], value):
            got.append(x.result())

    try:
        return outcome(run), got
    finally:
        finish()


def _ep_map(mod, value, waits):
    finishers = []

    class Ex(mod.Executor):
        def submit(self, fn, *args):
            f, finish = _controlled(mod, waits)
            finishers.append(finish)
            return f

    try:
        return outcome(lambda: list(Ex().map(abs, [1, 2], timeout=value)))
    finally:
        for finish in finishers:
            finish()


ENTRY_POINTS = {
    "result": _ep_result, "exception": _ep_exception, "wait": _ep_wait,
    "as_completed": _ep_as_completed, "map": _ep_map,
}


@pytest.mark.parametrize("ep", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("name,value,waits", VALUES, ids=[v[0] for v in VALUES])
def test_timeout_values_like_stdlib(impl, ep, name, value, waits):
    run = ENTRY_POINTS[ep]
    expected = norm(run(STDLIB, value, waits))
    got = norm(run(impl, value, waits))
    assert got == expected, "%s(timeout=%s)" % (ep, name)


def test_result_timeout_max_waits(impl):
    """Future.result(timeout=threading.TIMEOUT_MAX) waits for the result
    (cfutures used to raise TimeoutError at once: now + secs*1e9 overflowed)."""
    f, finish = _controlled(impl, True)
    try:
        assert f.result(timeout=TM) == "late"
    finally:
        finish()


def test_as_completed_inf_raises_overflow(impl):
    f, finish = _controlled(impl, False)
    try:
        it = impl.as_completed([f], timeout=float("inf"))
        with pytest.raises(OverflowError):
            next(it)
    finally:
        finish()
