"""Interpreter exit with a ThreadPoolExecutor that was never shut down.

    python thread_exit.py MODULE MODE

MODULE is ``concurrent.futures`` or ``cfutures``.  MODE:
  keep     the executor is still referenced when the main module ends
  deleted  ``del ex`` before the end (the executor is collected first)
  daemon   the last task is submitted from a (non-pool) daemon thread

Slow tasks are queued (more than max_workers); the script ends without
shutdown().  Every task prints "task <i>" when it finishes: the caller checks
that all of them ran and that the process exited with status 0.
"""
import importlib
import os
import sys
import threading
import time

mod = importlib.import_module(sys.argv[1])
mode = sys.argv[2]

N = 6


def task(i):
    time.sleep(0.05)
    os.write(1, b"task %d\n" % i)     # one write: lines never interleave
    return i


ex = mod.ThreadPoolExecutor(max_workers=2)
futures = [ex.submit(task, i) for i in range(N - 1)]
if mode == "daemon":
    t = threading.Thread(target=lambda: futures.append(ex.submit(task, N - 1)), daemon=True)
    t.start()
    t.join(30)
else:
    futures.append(ex.submit(task, N - 1))
os.write(1, b"main done\n")
if mode == "deleted":
    del ex
