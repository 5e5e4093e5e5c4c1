"""os.fork() while a ThreadPoolExecutor has live workers.

    python thread_fork.py MODULE SUBMIT

Two workers are busy (a loop that keeps taking and dropping the GIL) and a
third has just finished a task (it may still be looking for more work) each
time the process forks, 16 times.  Each child creates a new executor and
uses it; with SUBMIT == "inherited" it also submits to the executor
inherited from the parent (cfutures supports that; the stdlib's child
silently never runs such work, so the caller passes "none" for it).
A second executor is full at each fork (one task running, one queued):
with "inherited", the child also checks cfutures' documented settlement
(running -> BrokenThreadPool, queued -> cancelled in the child's copy).
The child reports with os.write and leaves with os._exit; the parent waits
for it with a deadline (a hung child is killed and reported).

Output lines: "child <i> OK", "child <i> BAD ...", "child <i> HUNG",
"child <i> STATUS <n>" (the script stops forking after a failed child),
then "parent OK" if the parent's pool still works.
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
submit_inherited = sys.argv[2] == "inherited"
FORKS = 16
# Generous for a trivial task in a fresh child; only bounds a lost wake-up.
TIMEOUT = 5

stop = threading.Event()


def busy():
    n = 0
    while not stop.is_set():
        n += sum(range(200))
    return "busy done"


def child(i):
    try:
        step = "start"
        expected = []
        got = []
        if submit_inherited:
            # Several submit-and-wait rounds: the inherited pool must keep
            # waking its (new) workers, not only start them.
            for k in range(10):
                step = "inherited submit %d" % k
                got.append(ex.submit(pow, 2, k).result(timeout=TIMEOUT))
                expected.append(2 ** k)
            step = "inherited map"
            got.append(list(ex.map(abs, [-1, -2, -3], timeout=TIMEOUT)))
            expected.append([1, 2, 3])
            # cfutures' documented child semantics: in the child's copy, a
            # task that was running at the fork fails with BrokenThreadPool
            # and a task that was queued is cancelled (the parent runs both).
            step = "settled futures"
            got.append([type(f.exception(timeout=TIMEOUT)).__name__
                        for f in busy_futures + [blocked]])
            expected.append(["BrokenThreadPool"] * 3)
            got.append(queued.cancelled())
            expected.append(True)
        step = "new executor"
        new = mod.ThreadPoolExecutor(max_workers=2)
        got.append(new.submit(pow, 3, 2).result(timeout=TIMEOUT))
        expected.append(9)
        new.shutdown(wait=True)
        ok = got == expected
        line = "child %d %s %r\n" % (i, "OK" if ok else "BAD", got)
        os.write(1, line.encode())
        os._exit(0 if ok else 1)
    except BaseException as e:  # noqa: BLE001
        os.write(1, ("child %d BAD %r at %s\n" % (i, e, step)).encode())
        os._exit(2)


ex = mod.ThreadPoolExecutor(max_workers=3)
busy_futures = [ex.submit(busy) for _ in range(2)]
assert ex.submit(pow, 2, 3).result(timeout=30) == 8   # a third, idle worker

# A second pool, full: one task running (blocked), one queued behind it.
ex2 = mod.ThreadPoolExecutor(max_workers=1)
gate = threading.Event()
started = threading.Event()
blocked = ex2.submit(lambda: (started.set(), gate.wait(60))[1])
assert started.wait(30)
queued = ex2.submit(pow, 2, 2)
for i in range(FORKS):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(i)
    deadline = time.monotonic() + 30
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            failed = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
            if failed:
                print("child %d STATUS %d" % (i, status), flush=True)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("child %d HUNG" % i, flush=True)
            failed = True
            break
        time.sleep(0.005)
    if failed:
        break           # one failure is enough; do not pay more timeouts
    # The parent's pool keeps working between forks.
    assert ex.submit(pow, 2, i).result(timeout=30) == 2 ** i

stop.set()
gate.set()
assert [f.result(timeout=30) for f in busy_futures] == ["busy done"] * 2
assert blocked.result(timeout=30) is True and queued.result(timeout=30) == 4
ex.shutdown(wait=True)
ex2.shutdown(wait=True)
print("parent OK", flush=True)
