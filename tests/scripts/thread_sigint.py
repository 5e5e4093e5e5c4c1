"""Ctrl-C while the main thread is blocked on a ThreadPoolExecutor.

    python thread_sigint.py MODULE OP [idle-task|busy-task]

OP: ``result`` (f.result()), ``result-timeout`` (f.result(timeout=600)),
``shutdown`` (shutdown(wait=True)), ``map`` (iterating ex.map(...)),
``map-timeout``, ``wait``, ``wait-first`` (FIRST_COMPLETED), ``as_completed``,
``exception``, ``context`` (leaving a ``with`` block, which shuts down with
wait=True).

A pool task blocks on an event (``busy-task``: spins in Python until it is
set); a helper thread sends SIGINT to the process after 0.3 s.  The script prints INTERRUPTED when KeyboardInterrupt arrives
in the blocking call, then releases the task and checks that the pool still
finishes its work ("AFTER ..." lines).  The caller asserts the markers, never
timings.
"""
import importlib
import os
import signal
import sys
import threading
import time

mod = importlib.import_module(sys.argv[1])
op = sys.argv[2]
busy = len(sys.argv) > 3 and sys.argv[3] == "busy-task"

gate = threading.Event()
started = threading.Event()


def blocked(x=0):
    started.set()
    if busy:
        # holds the GIL most of the time: the handler still gets its turn
        while not gate.is_set():
            sum(range(1000))
    else:
        gate.wait(60)
    return x + 1


def kill_later():
    started.wait(30)
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGINT)


killer = threading.Thread(target=kill_later, daemon=True)
ex = mod.ThreadPoolExecutor(max_workers=1)
f = ex.submit(blocked)
killer.start()
try:
    if op == "result":
        f.result()
    elif op == "result-timeout":
        f.result(timeout=600)
    elif op == "shutdown":
        ex.shutdown(wait=True)
    elif op == "map":
        for _ in ex.map(blocked, range(3)):
            pass
    elif op == "wait":
        mod.wait([f])
    elif op == "wait-first":
        mod.wait([f], timeout=600, return_when=mod.FIRST_COMPLETED)
    elif op == "as_completed":
        for _ in mod.as_completed([f]):
            pass
    elif op == "map-timeout":
        for _ in ex.map(blocked, range(3), timeout=600):
            pass
    elif op == "exception":
        f.exception()
    elif op == "context":
        with ex:
            pass
    else:
        raise AssertionError(op)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
else:
    print("RETURNED WITHOUT INTERRUPT", flush=True)
killer.join(30)
gate.set()
print("AFTER result", f.result(timeout=30), flush=True)
ex.shutdown(wait=True)
print("AFTER shutdown", all(not t.is_alive() for t in ex._threads), flush=True)
