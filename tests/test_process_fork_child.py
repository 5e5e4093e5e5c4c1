"""A fork child's copy of its parent's process pools.

Free-threaded, a pool's state and an executor's pool pointer are guarded
by their objects' critical sections, and a fork child's copy of such a lock
can be held by a thread the child does not have: a thread waiting for it
is handed it, then stopped by fork() before it runs on.  A child must never
wait on such a lock.  Run on every build (the first against the stdlib
too: its executor hangs in the second's children itself); only
free-threaded builds had the hang, and these tests reproduce it there.
"""

import os
import subprocess
import sys
import sysconfig

import pytest

from conftest import LONG

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


# Every fork worker passes through the interpreter-exit hook, which visits
# every started pool (here pool A, while other threads contend for its
# lock): it must not wait on A's lock (3.13t hung within 2 s here, every
# time).
HANDOFF = """
import os, threading, multiprocessing as mp
import {mod} as M
ctx = mp.get_context("fork")
blob = os.urandom(4 << 20)
ex_a = M.ProcessPoolExecutor(1, mp_context=ctx)
ex_a.submit(abs, -1).result()        # started: registered for interpreter exit
stop = False
def poke():
    while not stop:
        ex_a._processes              # takes pool A's lock (free-threaded)
pokers = [threading.Thread(target=poke) for _ in range(3)]
for t in pokers:
    t.start()
try:
    for n in range({rounds}):
        fa = ex_a.submit(len, blob)  # holds A's lock while it pickles
        with M.ProcessPoolExecutor(2, mp_context=ctx) as ex_b:
            assert ex_b.submit(abs, -2).result(timeout=60) == 2
        assert fa.result(timeout=60) == len(blob)
        print(n, flush=True)
finally:
    stop = True
    for t in pokers:
        t.join()
ex_a.shutdown()
print("ROUNDS", n + 1)
"""


def run_group(code, timeout):
    """Run code in a fresh interpreter in a session of its own: a hang
    fails, and kills what it forked too."""
    import signal
    p = subprocess.Popen([sys.executable, "-W", "ignore", "-c", code],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("hung; stdout so far: %r" % out[-500:])
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)    # workers left behind
        except OSError:
            pass
    assert p.returncode == 0, err[-3000:]
    return out


def need_fork():
    import multiprocessing as mp
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork start method")


@pytest.mark.timeout(LONG * 4)
def test_fork_children_pass_a_lock_held_at_fork(impl):
    need_fork()
    # Where the race is (ours, free-threaded) 100 rounds, else 10: the
    # stdlib's rounds are slow, and on GIL builds the pokers take turns
    # with the main thread for the GIL.  The hang showed within 20 rounds.
    rounds = 10
    if FREE_THREADED and impl.__name__ == "cfutures":
        rounds *= 10
    out = run_group(HANDOFF.format(mod=impl.__name__, rounds=rounds),
                    LONG * 3)
    assert out.split()[-2:] == ["ROUNDS", str(rounds)]


# The same for an executor (its own lock guards which pool it has) in a
# child of os.fork() that uses it: the attributes, shutdown(), submit()
# (refused) and __init__() again (then a pool of the child's own) must not
# wait.
FORKS = """
import os, signal, threading, multiprocessing as mp
import {mod} as M
ctx = mp.get_context("fork")
ex = M.ProcessPoolExecutor(1, mp_context=ctx)
ex.submit(abs, -1).result()
stop = False
def poke():
    while not stop:
        ex._processes                # the executor's lock, then the pool's
pokers = [threading.Thread(target=poke) for _ in range(4)]
for t in pokers:
    t.start()
hung = failed = 0
try:
    for n in range({forks}):
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                signal.alarm(10)     # a hang dies of SIGALRM
                ex._processes, ex._broken
                if n % 2:
                    ex.__init__(1, mp_context=ctx)   # a pool of its own
                    ex._processes
                    if n == 1:
                        assert ex.submit(abs, -3).result(timeout=5) == 3
                else:
                    try:
                        ex.submit(abs, 1)
                    except RuntimeError:
                        pass
                ex.shutdown()
                code = 0
            finally:
                os._exit(code)       # never back into this loop
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        hung += code == -signal.SIGALRM
        failed += code not in (0, -signal.SIGALRM)
finally:
    stop = True
    for t in pokers:
        t.join()
ex.shutdown()
print("HUNG", hung, "FAILED", failed, "OF", n + 1)
"""


@pytest.mark.timeout(LONG * 4)
def test_fork_child_uses_an_inherited_executor(impl):
    need_fork()
    if impl.__name__ != "cfutures":
        pytest.skip("the stdlib's executor hangs in such children itself "
                    "(3.10: 3-6 of 100; 3.13t: 1 of 700)")
    # free-threaded, before the fix: 1 or 2 of 1,000 children hung
    forks = 1000 if FREE_THREADED and impl.__name__ == "cfutures" else 100
    out = run_group(FORKS.format(mod=impl.__name__, forks=forks), LONG * 3)
    assert out.split()[-6:] == ["HUNG", "0", "FAILED", "0", "OF",
                                str(forks)]
