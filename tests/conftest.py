"""Shared fixtures and helpers for the cfutures test suite.

Every behavioural test runs twice through the ``impl`` fixture: once against
``concurrent.futures`` (id ``stdlib``, the reference answer) and once against
``cfutures`` (id ``cfutures``).  ``python -m pytest tests -k stdlib`` therefore
validates the tests themselves without needing the extension.

If ``import cfutures`` fails, the cfutures-parametrized tests ERROR (the import
happens inside the fixture and is not guarded): CI must go red, never skip.

``same_behaviour(scenario, impl)`` runs ``scenario(module)`` against the stdlib
and against ``impl`` and asserts that the normalised outcomes are equal:
exception types and messages, reprs with addresses/ids normalised, orderings.
Under the ``stdlib`` id it compares the stdlib with itself, which checks that the
scenario is deterministic after normalisation.
"""

import concurrent.futures
import importlib
import logging
import os
import re
import sys
import threading
import time

import pytest

STDLIB = concurrent.futures
LOGGER_NAME = "concurrent.futures"

# Generous bound for anything that waits for another thread of this test.
# Never an assertion on speed: only a bound so that a hang fails instead of
# waiting for ever.
LONG = 30.0
# Delay before a helper thread completes a future, so that the main thread is
# (very likely) already blocked.  Correctness never depends on it.
SHORT_DELAY = 0.05


# ---------------------------------------------------------------------------
# Fixtures selecting the implementation
# ---------------------------------------------------------------------------


def _load(name):
    if name == "stdlib":
        return STDLIB
    # Deliberately unguarded: an ImportError here makes the test ERROR.
    mod = importlib.import_module("cfutures")
    if getattr(mod, "__file__", None) is None:
        # An empty source directory imports as a namespace package.
        raise ImportError("cfutures is not built/installed (namespace package at %s)"
                          % list(getattr(mod, "__path__", [])))
    return mod


@pytest.fixture(params=["stdlib", "cfutures"])
def impl(request):
    """The module under test: ``concurrent.futures`` or ``cfutures``."""
    return _load(request.param)


@pytest.fixture(params=["cfutures"])
def cf(request):
    """``cfutures`` only (features the installed stdlib lacks, e.g. buffersize)."""
    return _load(request.param)


@pytest.fixture
def same(impl):
    """``same(scenario, **kw)``: same_behaviour bound to the current impl."""

    def check(scenario, **kwargs):
        return same_behaviour(scenario, impl, **kwargs)

    return check


@pytest.fixture
def threads():
    """Start helper threads through this fixture; they are joined (bounded) at
    teardown and a thread still alive fails the test."""
    started = []

    def start(target, *args, delay=0.0, **kwargs):
        def run():
            if delay:
                time.sleep(delay)
            target(*args, **kwargs)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        started.append(t)
        return t

    yield start
    for t in started:
        t.join(LONG)
    alive = [t for t in started if t.is_alive()]
    assert not alive, "helper threads still running: %r" % alive


# ---------------------------------------------------------------------------
# Normalisation and outcome capture
# ---------------------------------------------------------------------------

_HEX_RE = re.compile(r"0x[0-9a-fA-F]+")
# id() printed in decimal (LOGGER.critical('Future %s in unexpected state...')).
_ID_RE = re.compile(r"\b\d{9,}\b")


def norm_text(text):
    """Replace addresses and ids so that two runs can be compared."""
    return _ID_RE.sub("<id>", _HEX_RE.sub("0x?", text))


def norm(value):
    """Normalise a scenario's output recursively for comparison."""
    if isinstance(value, str):
        return norm_text(value)
    if isinstance(value, BaseException):
        return ("exc", type(value), norm_text(str(value)))
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return (type(value).__name__,) + tuple(norm(v) for v in value)
    if isinstance(value, (list, tuple)):
        return type(value)(norm(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(norm(v) for v in value)
    if isinstance(value, dict):
        return {norm(k): norm(v) for k, v in value.items()}
    return value


def outcome(fn, *args, **kwargs):
    """Call fn; return ('ok', value) or ('raise', type, message)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as e:  # noqa: BLE001 - that is the point
        return ("raise", type(e), str(e))


def raised(fn, *args, **kwargs):
    """Call fn, which must raise; return the exception."""
    try:
        value = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        return e
    pytest.fail("%r did not raise (returned %r)" % (fn, value))


def _types_only(value):
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "raise":
        return ("raise", value[1])
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "exc":
        return ("exc", value[1])
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_types_only(v) for v in value)
    return value


def same_behaviour(scenario, impl, messages=True):
    """Run ``scenario(module)`` for the stdlib and for ``impl``; assert that the
    normalised outputs are equal and return the reference output.

    With ``messages=False`` exception messages are ignored (types still count):
    for errors whose wording comes from the interpreter's argument parsing.
    """
    expected = norm(scenario(STDLIB))
    got = norm(scenario(impl))
    if not messages:
        expected, got = _types_only(expected), _types_only(got)
    assert got == expected, "%s differs from the stdlib" % impl.__name__
    return expected


# ---------------------------------------------------------------------------
# Logging capture usable inside scenarios (independent of caplog)
# ---------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Collects records of the "concurrent.futures" logger as
    (levelname, normalised message, exception type or None)."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        exc_type = record.exc_info[0] if record.exc_info else None
        self.records.append((record.levelname, norm_text(record.getMessage()), exc_type))

    def __enter__(self):
        self.logger = logging.getLogger(LOGGER_NAME)
        self.old_level = self.logger.level
        self.old_propagate = self.logger.propagate
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False  # keep pytest's output clean
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.old_level)
        self.logger.propagate = self.old_propagate
        return False


# ---------------------------------------------------------------------------
# Futures in each state
# ---------------------------------------------------------------------------

STATES = ("pending", "running", "cancelled", "cancelled_notified", "finished", "raised")


def make_future(mod, state, value=42, exc=None):
    """A ``mod.Future`` driven into one of STATES."""
    f = mod.Future()
    if state == "pending":
        pass
    elif state == "running":
        assert f.set_running_or_notify_cancel() is True
    elif state == "cancelled":
        assert f.cancel() is True
    elif state == "cancelled_notified":
        assert f.cancel() is True
        assert f.set_running_or_notify_cancel() is False
    elif state == "finished":
        f.set_result(value)
    elif state == "raised":
        f.set_exception(exc if exc is not None else ValueError("boom"))
    else:  # pragma: no cover
        raise AssertionError(state)
    return f


class RecordingWaiter:
    """Object with the waiter protocol the stdlib uses through f._waiters."""

    def __init__(self):
        self.calls = []

    def add_result(self, future):
        self.calls.append(("add_result", future))

    def add_exception(self, future):
        self.calls.append(("add_exception", future))

    def add_cancelled(self, future):
        self.calls.append(("add_cancelled", future))


def waiters_left(f):
    """Waiters still attached to ``f``, for either implementation: the stdlib's
    waiter objects in ``f._waiters``, plus cfutures' native waiter links (a
    blocked result(), wait() or as_completed()), which ``_waiters`` never
    holds.  Every "no waiter is left" assertion goes through this."""
    n = len(f._waiters)
    native = getattr(f, "_cf_native_waiters", None)
    if native is not None:
        n += native()
    return n


def run_bounded(fn, *args, _bound=LONG, **kwargs):
    """Run fn in a daemon thread; fail (instead of hanging the whole run) if it
    does not return within ``_bound`` seconds.  Returns fn's value or
    re-raises."""
    box = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(_bound)
    if t.is_alive():
        pytest.fail("%r did not return within %ss (hang)" % (fn, _bound))
    if "error" in box:
        raise box["error"]
    return box["value"]


def module_env(impl):
    """Environment for a subprocess that must import the same module."""
    import os

    env = dict(os.environ)
    if impl.__name__ != "concurrent.futures":
        root = os.path.dirname(os.path.dirname(os.path.abspath(impl.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def run_script(impl, code, timeout=60):
    """Run ``code`` in a fresh interpreter with ``cf`` bound to impl's module.
    Crashes (signals) and hangs become test failures, not a dead test run."""
    import subprocess
    import textwrap

    script = "import %s as cf\n%s" % (impl.__name__, textwrap.dedent(code))
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                              text=True, timeout=timeout, env=module_env(impl))
    except subprocess.TimeoutExpired as e:
        pytest.fail("script hung for %ss; stdout so far: %r" % (timeout, e.stdout))
    assert proc.returncode >= 0, "script killed by signal %d; stderr:\n%s" % (
        -proc.returncode, proc.stderr[-3000:])
    return proc


def py_version_id():
    return "%d.%d" % sys.version_info[:2]


# Under AddressSanitizer freed memory sits in a quarantine, so RSS keeps
# growing whatever the code does: RSS-based leak checks are skipped there
# (object-count and fd checks still run).
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
