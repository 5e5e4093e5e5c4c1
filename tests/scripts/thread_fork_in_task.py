"""A pool task (or initializer) that calls os.fork() itself.

    python thread_fork_in_task.py MODULE MODE SUBMIT

ThreadPoolExecutor(2): one worker runs a blocking task, the other the task
that forks; a third task is queued behind them.  In the child the forking
worker is the only thread left.

MODE:
  return       the child returns from the task; a done-callback (it runs
               in the child on that same thread) does the child's checks
  inside       the child does its checks inside the task, then os._exit
  initializer  the initializer forks; the child checks inside it

The child checks that a new executor works and, with SUBMIT == "inherited"
(cfutures: the README's fork semantics), that the inherited executor works
too, that its own task is still running ("inside"), that the other running
task failed with BrokenThreadPool and the queued one was cancelled in its
copy.  It reports "child OK ..." or "child BAD ..." with os.write and leaves
with os._exit.  The parent checks the forking task's result and the child's
exit status, and prints "parent OK".  A child that hangs is killed and
reported as "child HUNG".
"""
import importlib
import os
import signal
import sys
import threading
import time
import warnings

# 3.12+: "This process is multi-threaded, use of fork() may lead to deadlocks"
warnings.simplefilter("ignore", DeprecationWarning)

mod = importlib.import_module(sys.argv[1])
mode = sys.argv[2]
inherited = sys.argv[3] == "inherited"
PARENT = os.getpid()
TIMEOUT = 10        # bounds a hang in the child; never reached when it works

gate = threading.Event()
release = threading.Event()
blocker_started = threading.Event()
fork_pid = []


def blocker():
    blocker_started.set()
    release.wait(60)
    return "blocker"


def child_checks(step_prefix, own=None):
    """Runs in the child; returns the list of observations."""
    got = []
    if own is not None:
        got.append(("own running", own.running()))
    # the forking worker is still one of the pool's threads
    got.append(("own thread", threading.current_thread() in ex._threads))
    new = mod.ThreadPoolExecutor(max_workers=2)
    got.append(("new", new.submit(pow, 3, 2).result(timeout=TIMEOUT)))
    new.shutdown(wait=True)
    if inherited:
        got.append(("inherited", ex.submit(pow, 2, 5).result(timeout=TIMEOUT)))
        got.append(("inherited map", list(ex.map(abs, [-1, -2], timeout=TIMEOUT))))
        if mode != "initializer":
            got.append(("blocker", type(fb.exception(timeout=TIMEOUT)).__name__))
            got.append(("queued cancelled", fq.cancelled()))
    return got


def expected(own):
    exp = []
    if own:
        exp.append(("own running", True))
    exp.append(("own thread", True))
    exp.append(("new", 9))
    if inherited:
        exp += [("inherited", 32), ("inherited map", [1, 2])]
        if mode != "initializer":
            exp += [("blocker", "BrokenThreadPool"), ("queued cancelled", True)]
    return exp


def report(ok, what):
    os.write(1, ("child %s %r\n" % ("OK" if ok else "BAD", what)).encode())
    os._exit(0 if ok else 1)


def forking_task():
    assert gate.wait(60)
    pid = os.fork()
    if pid != 0:
        fork_pid.append(pid)
        return pid
    # child
    if mode == "inside":
        try:
            got = child_checks("inside", own=fork_future)
            report(got == expected(True), got)
        except BaseException as e:  # noqa: BLE001
            report(False, e)
    return "child"


def on_done(f):
    if os.getpid() == PARENT or mode != "return":
        return
    try:
        got = [("result", f.result(timeout=0))] + child_checks("return")
        report(got == [("result", "child")] + expected(False), got)
    except BaseException as e:  # noqa: BLE001
        report(False, e)


def initializer():
    # (only in the parent: a child's new workers must not fork again)
    if os.getpid() == PARENT and threading.current_thread().name.endswith("_0"):
        # The submitter adds the thread to ex._threads after start():
        # fork once it did, so that the child's copy has it.
        deadline = time.monotonic() + 30
        while (threading.current_thread() not in ex._threads
               and time.monotonic() < deadline):
            time.sleep(0.001)
        pid = os.fork()
        if pid == 0:
            try:
                got = child_checks("initializer")
                report(got == expected(False), got)
            except BaseException as e:  # noqa: BLE001
                report(False, e)
        fork_pid.append(pid)


def wait_child(pid):
    deadline = time.monotonic() + 30
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("child HUNG", flush=True)
            return None
        time.sleep(0.005)


if mode == "initializer":
    ex = mod.ThreadPoolExecutor(max_workers=2, initializer=initializer)
    first = ex.submit(pow, 2, 2)
    assert first.result(timeout=60) == 4
    status = wait_child(fork_pid[0])
else:
    ex = mod.ThreadPoolExecutor(max_workers=2)
    fb = ex.submit(blocker)
    assert blocker_started.wait(60)
    fork_future = ex.submit(forking_task)
    fork_future.add_done_callback(on_done)
    fq = ex.submit(pow, 2, 3)
    gate.set()
    pid = fork_future.result(timeout=60)
    assert pid == fork_pid[0], (pid, fork_pid)
    status = wait_child(pid)
    release.set()
    assert fb.result(timeout=60) == "blocker"
    assert fq.result(timeout=60) == 8
sys.stdout.flush()
if status is not None and status != 0:
    print("child STATUS %d" % status, flush=True)
assert ex.submit(pow, 2, 6).result(timeout=60) == 64
ex.shutdown(wait=True)
print("parent OK", flush=True)
