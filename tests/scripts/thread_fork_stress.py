"""os.fork() 200 times from one thread while other threads use thread pools.

    python thread_fork_stress.py MODULE [FORKS]

Two threads keep creating pools, submitting to them, collecting the results
and shutting them down; a third keeps taking logging's module lock (as
logger.setLevel() does).  logging's before-fork hook runs after the pool's
(it was registered first) and waits for that lock with the GIL released:
a pool lock held across it from a Python-level hook is then taken, with
the GIL, by a worker or a submitter, and nothing moves (the caller's
timeout reports the hang).  Each child checks a trivial thing and leaves
with os._exit; the parent reaps it with a deadline.

Output: "forked <n>" then "OK" (or "child <i> STATUS <n>", "child <i>
HUNG").
"""
import logging      # first: its at-fork hooks run after the pool's
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
FORKS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
PARENT = os.getpid()

stop = threading.Event()
errors = []
loggers = [logging.getLogger("cfutures-fork-stress.%d" % i) for i in range(500)]


def logging_churn():
    # setLevel() clears every logger's cache under logging's module lock;
    # with many loggers it holds the lock across GIL switches.
    i = 0
    while not stop.is_set():
        loggers[i % len(loggers)].setLevel(logging.DEBUG if i & 1 else logging.INFO)
        i += 1


def pool_churn(k):
    try:
        while not stop.is_set():
            with mod.ThreadPoolExecutor(max_workers=2) as ex:
                fs = [ex.submit(pow, k, i) for i in range(50)]
                assert [f.result(timeout=60) for f in fs] == [k ** i for i in range(50)]
                assert list(ex.map(abs, range(-20, 0), timeout=60)) == list(range(20, 0, -1))
    except BaseException as e:  # noqa: BLE001
        errors.append(e)


threads = [threading.Thread(target=logging_churn)]
threads += [threading.Thread(target=pool_churn, args=(k,)) for k in (2, 3)]
for t in threads:
    t.start()

# A long-lived pool with a worker that keeps finishing tasks.
ex = mod.ThreadPoolExecutor(max_workers=2)
feeder_futures = []


def feeder():
    while not stop.is_set():
        feeder_futures.append(ex.submit(sum, range(100)))
        if len(feeder_futures) > 1000:
            for f in feeder_futures:
                f.result(timeout=60)
            del feeder_futures[:]


threads.append(threading.Thread(target=feeder))
threads[-1].start()

failed = False
for i in range(FORKS):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if os.getpid() != PARENT else 1)
    deadline = time.monotonic() + 30
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            if status != 0:
                print("child %d STATUS %d" % (i, status), flush=True)
                failed = True
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("child %d HUNG" % i, flush=True)
            failed = True
            break
        time.sleep(0.001)
    if failed:
        break
print("forked %d" % (i + 1), flush=True)
stop.set()
for t in threads:
    t.join(60)
assert not any(t.is_alive() for t in threads), "a churn thread hangs"
assert not errors, errors
assert ex.submit(pow, 2, 10).result(timeout=60) == 1024
ex.shutdown(wait=True)
print("OK" if not failed else "FAILED", flush=True)
