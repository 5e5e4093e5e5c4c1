"""Free-threaded CPython (3.13t): what cfutures' ThreadPoolExecutor gives
without a GIL, against serial code and the stdlib's pool on the same
interpreter.

    PYTHON_GIL=0 python benchmarks/bench_freethreaded.py [--rounds N] [--quick]

  pure-Python CPU tasks      a 2-worker pool vs the same calls one after the
                             other in this thread (target >= 1.8x); beside
                             it what 2 processes and 2 plain threads get
                             (the machine's and the interpreter's ceiling)
  submit + result, map       trivial tasks, cfutures vs the stdlib's pool
                             (target >= 10x)
  4 submitting threads       4 threads submit trivial tasks to one 2-worker
                             pool at once: tasks/s, and the process's CPU
                             time over the wall time (more than 1.0: more
                             than one core's worth of work was done)

Runs on GIL builds too (the CPU row then shows ~1x).  Medians over the
rounds, implementations alternating; the CPU row's ratios are taken within
each round (all its columns back to back), then the median.  The script
reports, it never fails.
"""

import argparse
import concurrent.futures
import gc
import os
import platform
import statistics
import sys
import threading
import time

from _common import import_cfutures, run_alternating
from bench_thread import started_executor  # 2 workers, both running

WORKERS = 2
CPU_LOOPS = 20000       # ~1 ms of pure Python per task on these machines


def cpu_task(n):
    s = 0
    for i in range(n):
        s += i * i % 7
    return s


def trivial(x):
    return x + 1


def bench_serial_cpu(mod, n):
    t0 = time.perf_counter()
    for _ in range(n):
        cpu_task(CPU_LOOPS)
    return (time.perf_counter() - t0) / n


def _take_tasks(take):
    # Each takes the next task while any is left, as a pool's workers do
    # (a fixed half each would wait for the slower vCPU of this VM).
    while take():
        cpu_task(CPU_LOOPS)


def _time_workers(workers, n):
    """Seconds per task for started-then-joined workers running n tasks."""
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (time.perf_counter() - t0) / n


def bench_threads_cpu(mod, n):
    """The interpreter's ceiling: the same calls on WORKERS plain threads."""
    import queue
    todo = queue.SimpleQueue()
    for _ in range(n):
        todo.put(1)

    def take():
        try:
            return todo.get_nowait()
        except queue.Empty:
            return 0

    return _time_workers([threading.Thread(target=_take_tasks, args=(take,))
                          for _ in range(WORKERS)], n)


class _Counter:
    """Tasks left, shared between processes."""

    def __init__(self, ctx, n):
        self.left = ctx.Value("i", n)

    def __call__(self):
        with self.left.get_lock():
            if self.left.value == 0:
                return 0
            self.left.value -= 1
            return 1


def bench_procs_cpu(mod, n):
    """The machine's ceiling without the interpreter's: WORKERS processes
    (fork; start-up included, a few ms)."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    take = _Counter(ctx, n)
    return _time_workers([ctx.Process(target=_take_tasks, args=(take,))
                          for _ in range(WORKERS)], n)


def bench_pool_cpu(mod, n):
    ex = started_executor(mod)
    try:
        t0 = time.perf_counter()
        for f in [ex.submit(cpu_task, CPU_LOOPS) for _ in range(n)]:
            f.result()
        return (time.perf_counter() - t0) / n
    finally:
        ex.shutdown(wait=True)


def bench_submit_all(mod, n):
    ex = started_executor(mod)
    try:
        submit = ex.submit
        t0 = time.perf_counter()
        for f in [submit(trivial, i) for i in range(n)]:
            f.result()
        return (time.perf_counter() - t0) / n
    finally:
        ex.shutdown(wait=True)


def bench_map(mod, n):
    ex = started_executor(mod)
    try:
        t0 = time.perf_counter()
        for _ in ex.map(trivial, range(n)):
            pass
        return (time.perf_counter() - t0) / n
    finally:
        ex.shutdown(wait=True)


def multi_submit(mod, n, nthreads=4):
    """(seconds per task, CPU seconds / wall seconds)."""
    ex = started_executor(mod)
    per = n // nthreads
    barrier = threading.Barrier(nthreads + 1)

    def body():
        barrier.wait()
        fs = [ex.submit(trivial, i) for i in range(per)]
        for f in fs:
            f.result()

    threads = [threading.Thread(target=body) for _ in range(nthreads)]
    for t in threads:
        t.start()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        ex.shutdown(wait=True)
    return wall / (per * nthreads), cpu / wall


def fmt_time(seconds):
    if seconds < 1e-3:
        return "%.2f us" % (seconds * 1e6)
    return "%.2f ms" % (seconds * 1e3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    scale = 5 if args.quick else 1
    cf = import_cfutures("ThreadPoolExecutor")
    mods = {"stdlib": concurrent.futures}
    if cf is not None:
        mods["cfutures"] = cf
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print("Python %s, %s, %d CPUs, GIL %s" % (
        platform.python_version(), platform.machine(), os.cpu_count() or 0,
        "enabled" if gil else "disabled"))
    print("ThreadPoolExecutor(max_workers=%d), median of %d rounds" % (
        WORKERS, rounds))
    print()

    # The CPU row: the four measured back to back in each round (the order
    # rotating), and each ratio taken within its round: this VM's speed
    # drifts by tens of percent within a minute, which separate medians of
    # serial and pool runs would book as scaling.
    n_cpu = 100 if args.quick else 200
    cpu = {"serial": lambda: bench_serial_cpu(None, n_cpu),
           "threads": lambda: bench_threads_cpu(None, n_cpu),
           "procs": lambda: bench_procs_cpu(None, n_cpu)}
    for name, mod in mods.items():
        cpu[name] = (lambda m: lambda: bench_pool_cpu(m, n_cpu))(mod)
    names = list(cpu)
    times = {k: [] for k in names}
    for r in range(rounds + 2):
        for k in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            gc.disable()
            try:
                times[k].append(cpu[k]())
            finally:
                gc.enable()
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = {k: statistics.median(s / t for s, t in zip(times["serial"],
                                                          times[k]))
               for k in names}
    print("| pure-Python tasks, per task | serial | %d processes | "
          "%d plain threads | stdlib pool | cfutures pool | "
          "cfutures vs serial | target |" % (WORKERS, WORKERS))
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    has_cf = "cfutures" in med

    def cell(k):
        return "%s (%.2fx)" % (fmt_time(med[k]), speedup[k])

    print("| ~%s of Python each | %s | %s | %s | %s | %s | %s | >= 1.8x |" % (
        fmt_time(med["serial"]), fmt_time(med["serial"]), cell("procs"),
        cell("threads"), cell("stdlib"),
        fmt_time(med["cfutures"]) if has_cf else "-",
        "%.2fx" % speedup["cfutures"] if has_cf else "-"))
    print("(each ratio: the median over %d rounds of the serial time / that "
          "round's time; %d processes and %d plain threads show what the "
          "machine and the interpreter allow)" % (rounds + 2, WORKERS,
                                                  WORKERS))
    print()

    n = 100_000 // scale
    print("| trivial tasks | stdlib | cfutures | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    for label, fn in (("submit %s, then result() each" % format(n, ","),
                       bench_submit_all),
                      ("map over %s items" % format(n, ","), bench_map)):
        med = run_alternating(fn, mods, rounds, n)
        c = med.get("cfutures")
        print("| %s | %s | %s | %s | >= 10x |" % (
            label, fmt_time(med["stdlib"]), fmt_time(c) if c else "-",
            "%.1fx" % (med["stdlib"] / c) if c else "-"))
    print()

    print("| 4 threads submit %s tasks at once | tasks/s | CPU time / wall "
          "time |" % format(n, ","))
    print("|---|---:|---:|")
    for name, mod in mods.items():
        runs = sorted(multi_submit(mod, n) for _ in range(rounds))
        per, load = runs[len(runs) // 2]
        print("| %s | %s | %.2f |" % (name, format(int(1 / per), ","), load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
