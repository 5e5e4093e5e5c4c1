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
    # The future is unharmed by the interruption.
    f.set_result(42)
    print("AFTER", f.result(timeout=5), f.done(), flush=True)
    """
)

OPS = ["result", "result-timeout", "exception", "exception-timeout", "wait",
       "wait-first-completed", "as_completed", "as_completed-timeout"]


def module_env(impl):
    env = dict(os.environ)
    if impl.__name__ != "concurrent.futures":
        # Make the subprocess import the very same cfutures as this process.
        root = os.path.dirname(os.path.dirname(os.path.abspath(impl.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


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
