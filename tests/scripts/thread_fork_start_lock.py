"""Fork while other threads submit to pools being started and shut down;
each child submits to an inherited pool (cfutures only: the stdlib's child
pool never runs work).  A child that inherited a pool's start lock held by
a thread that was waiting for the GIL (owner not yet recorded) blocked for
ever in submit().  argv: module name, number of forks.  Prints
'bad children: N of M'.  Pools are small, short-lived and fed a bounded
number of short tasks, so that threads keep starting without piling up;
only the last few pools are kept (thousands of 8 MB stacks made fork() fail
with ENOMEM on 3.14)."""
import faulthandler
import importlib
import os
import sys
import threading
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
mod = importlib.import_module(sys.argv[1])
N = int(sys.argv[2])
stop = threading.Event()
shared = []


def submitter():
    last, n = None, 0
    while not stop.is_set():
        ex = shared[-1] if shared else None
        if ex is not last:
            last, n = ex, 0
        if ex is None or n >= 12:
            time.sleep(0.0005)
            continue
        n += 1
        try:
            ex.submit(time.sleep, 0.01)
        except RuntimeError:
            pass


def maker():
    while not stop.is_set():
        ex = mod.ThreadPoolExecutor(16)
        shared.append(ex)
        time.sleep(0.005)
        ex.shutdown(wait=False)
        if len(shared) > 8:
            # Drop old pools: from 3.14 a Thread object kept alive keeps its
            # thread's 8 MB stack mapped (not detached), and fork() then
            # fails with ENOMEM once those add up.
            shared.pop(0).shutdown(wait=True)


ts = [threading.Thread(target=submitter) for _ in range(3)]
ts.append(threading.Thread(target=maker))
for t in ts:
    t.start()
bad = 0
try:
    for i in range(N):
        time.sleep(0.002)
        ex = shared[-1] if shared else None
        pid = os.fork()
        if pid == 0:
            faulthandler.dump_traceback_later(4, exit=True)
            if ex is not None:
                try:
                    ex.submit(int).result(timeout=3)
                except RuntimeError:
                    pass        # that pool was shut down
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            bad += 1
finally:
    # An error above must not leave the threads running.  (No watchdog
    # before here: each child arms its own, and faulthandler's thread held
    # at a fork deadlocks the child's.)
    stop.set()
    faulthandler.dump_traceback_later(60, exit=True)
for t in ts:
    t.join()
for ex in shared:
    ex.shutdown(wait=True)
print("bad children: %d of %d" % (bad, N), flush=True)
