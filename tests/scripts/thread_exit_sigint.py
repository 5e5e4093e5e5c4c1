"""Ctrl-C while the interpreter exits with pool workers running long tasks.

    python thread_exit_sigint.py MODULE CASE

CASE ``exit``: the main thread submits a long task and ends; the caller
sends SIGINT while the exit hook joins the worker.  CASE ``with-block``:
three long tasks on two workers inside ``with``; the first SIGINT arrives
in the with block's shutdown(wait=True), the second in the join at exit.
Prints "main done" once the tasks run; the caller compares the exit status
and stderr with the stdlib's.
"""
import importlib
import sys
import threading
import time

mod = importlib.import_module(sys.argv[1])
case = sys.argv[2]
started = threading.Semaphore(0)


def long_task():
    started.release()
    time.sleep(30)
    print("task done", flush=True)      # never reached: the caller interrupts


if case == "exit":
    ex = mod.ThreadPoolExecutor(max_workers=2)
    ex.submit(long_task)
    started.acquire()
    print("main done", flush=True)
else:
    with mod.ThreadPoolExecutor(max_workers=2) as ex:
        fs = [ex.submit(long_task) for _ in range(3)]
        started.acquire()
        started.acquire()
        print("main done", flush=True)
