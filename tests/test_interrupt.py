"""Blocking calls stay interruptible: SIGINT raises KeyboardInterrupt in the
main thread blocked in result(), exception(), wait() or as_completed().

Each case runs in a subprocess: a helper thread sends SIGINT to the process
after 0.3 s; the script prints a marker when KeyboardInterrupt arrives in the
blocking call, then checks that the future still works.  The test asserts the
markers, never timings; the subprocess timeout only bounds a hang.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import module_env, run_script

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import {module} as cf

    def kill_later():
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    f = cf.Future()
    op = {op!r}
    killer = threading.Thread(target=kill_later, daemon=True)
    killer.start()
    try:
        if op == "result":
            f.result()
        elif op == "result-timeout":
            f.result(timeout=600)
        elif op == "exception":
            f.exception()
        elif op == "exception-timeout":
            f.exception(600)
        elif op == "wait":
            cf.wait([f])
        elif op == "wait-first-completed":
            cf.wait([f, cf.Future()], timeout=600, return_when=cf.FIRST_COMPLETED)
        elif op == "as_completed":
            for _ in cf.as_completed([f]):
                pass
        elif op == "as_completed-timeout":
            next(iter(cf.as_completed([f], timeout=600)))
        else:
            raise AssertionError(op)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
    else:
        print("RETURNED WITHOUT INTERRUPT", flush=True)
    killer.join(30)
    if op.startswith("as_completed"):
        # The abandoned iterator removed its waiter (the stdlib's generator
        # runs its finally clause when the exception leaves it).
        import gc
        gc.collect()
    # No waiter is left: stdlib-style ones, and cfutures' native links.
    print("WAITERS", len(f._waiters) + getattr(f, "_cf_native_waiters", lambda: 0)(),
          flush=True)
    # The future is unharmed by the interruption.
    f.set_result(42)
    print("AFTER", f.result(timeout=5), f.done(), flush=True)
    """
)

OPS = ["result", "result-timeout", "exception", "exception-timeout", "wait",
       "wait-first-completed", "as_completed", "as_completed-timeout"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("op", OPS)
def test_sigint_interrupts_blocking_call(impl, op):
    script = SCRIPT.format(module=impl.__name__, op=op)
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                              text=True, timeout=60, env=module_env(impl))
    except subprocess.TimeoutExpired as e:  # pragma: no cover - failure path
        pytest.fail("blocked call was not interrupted (subprocess hung); output: %r"
                    % (e.stdout,))
    out = proc.stdout.splitlines()
    assert "INTERRUPTED" in out, (proc.stdout, proc.stderr)
    assert "AFTER 42 True" in out, (proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    if impl.__name__ == "concurrent.futures" and op.startswith("wait"):
        # The stdlib's wait() has no finally: its waiter stays in _waiters.
        assert "WAITERS 1" in out, proc.stdout
    else:
        assert "WAITERS 0" in out, proc.stdout


HANDLER_SCRIPT = """
import signal, threading

ran = threading.Event()
handler_ran_while_blocked = []

def handler(signum, frame):
    ran.set()

signal.signal(signal.SIGUSR1, handler)
f = cf.Future()
main = threading.get_ident()

def helper():
    import time
    time.sleep(0.3)
    signal.pthread_kill(main, signal.SIGUSR1)
    # The handler must run while the main thread is still blocked; only then
    # is the future completed.  10 s bounds the failing case.
    handler_ran_while_blocked.append(ran.wait(10))
    f.set_result(42)

t = threading.Thread(target=helper)
t.start()
op = %r
if op == "result":
    value = f.result()
elif op == "result-timeout":
    value = f.result(timeout=60)
elif op == "exception":
    value = f.exception() is None and 42
elif op == "wait":
    value = len(cf.wait([f]).done) * 42
elif op == "wait-first-completed":
    value = len(cf.wait([f, cf.Future()], timeout=60, return_when=cf.FIRST_COMPLETED).done) * 42
elif op == "as_completed":
    value = [g.result() for g in cf.as_completed([f])][0]
t.join(30)
print("VALUE", value, "HANDLER", handler_ran_while_blocked)
"""

HANDLER_OPS = ["result", "result-timeout", "exception", "wait", "wait-first-completed",
               "as_completed"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("op", HANDLER_OPS)
def test_signal_handler_runs_while_blocked(impl, op):
    """A Python signal handler that does not raise runs while the main thread
    is blocked (the wait is retried afterwards): the blocking call returns
    the value once the future completes."""
    proc = run_script(impl, HANDLER_SCRIPT % op)
    assert proc.returncode == 0, proc.stderr
    assert "VALUE 42 HANDLER [True]" in proc.stdout.splitlines(), (proc.stdout, proc.stderr)
