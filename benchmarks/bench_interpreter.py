"""Side by side, one run: a CPU-bound pure-Python job run serially and on
2 workers of the stdlib's ThreadPoolExecutor, the stdlib's
ProcessPoolExecutor, the stdlib's own InterpreterPoolExecutor (3.14+) and
cfutures.InterpreterPoolExecutor; plus each pool's start-up cost and
trivial-task round trip.

    nice python benchmarks/bench_interpreter.py [--tasks 8] [--n 3000000]
                                                [--repeat 3] [--quick]

Job time is measured on a started (warmed-up) pool; start-up is the time
from the constructor to both workers having answered a trivial task.
Job times are the best of --repeat interleaved rounds (the order
reversed every other round); start-up is
the median of --repeat fresh pools.  Exits 0; on Pythons where the
interpreter pool is unsupported it says so and stops.
"""
import argparse
import concurrent.futures as cf
import multiprocessing
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)    # _interp_work: importable by the workers too

from _common import import_cfutures  # noqa: E402
from _interp_work import noop_arg, spin  # noqa: E402

WORKERS = 2


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def start_pool(make):
    """Create a pool and wait until WORKERS workers answered."""
    ex = make()
    # More trivial tasks than workers so every worker gets started.
    list(ex.map(noop_arg, range(4 * WORKERS)))
    return ex


def round_trip(ex, n=200):
    """Median seconds for submit(trivial).result(), one at a time."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ex.submit(noop_arg, None).result()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def startup_cost(make, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ex = start_pool(make)
        times.append(time.perf_counter() - t0)
        ex.shutdown(wait=True)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--n", type=int, default=3_000_000,
                    help="loop iterations per task")
    ap.add_argument("--small-tasks", type=int, default=400,
                    help="second job: many short tasks (0 to skip)")
    ap.add_argument("--small-n", type=int, default=30_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="smaller job, one round (benchmarks/run.py --quick)")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.n, args.repeat = 4, 1_000_000, 1
        args.small_tasks, args.small_n = 100, 30_000

    cfutures = import_cfutures("InterpreterPoolExecutor")
    if cfutures is None:
        return 1
    try:
        probe = cfutures.InterpreterPoolExecutor(1)
    except NotImplementedError as e:
        print(f"bench_interpreter: skipped: {e}")
        return 0
    probe.shutdown()

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    jobs = [(f"{args.tasks} x spin({args.n:,})", args.tasks, args.n)]
    if args.small_tasks:
        jobs.append((f"{args.small_tasks} x spin({args.small_n:,})",
                     args.small_tasks, args.small_n))
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{cpus} CPUs available; {WORKERS} workers; jobs: "
          + ", ".join(j[0] for j in jobs)
          + f"; best of {args.repeat} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f}")

    def serial(work, expected):
        def run():
            assert [spin(n) for n in work] == expected
        return run

    def on(ex, work, expected):
        def run():
            assert list(ex.map(spin, work)) == expected
        return run

    # Order matters: CPython 3.13.0 aborts a fork() child while any
    # sub-interpreter exists, so every forking pool is started (its
    # workers forked) before the first interpreter pool exists.
    fork_ctx = multiprocessing.get_context("fork")
    spawn_ctx = multiprocessing.get_context("spawn")
    kinds = [
        ("stdlib ThreadPoolExecutor",
         lambda: cf.ThreadPoolExecutor(WORKERS)),
        ("stdlib ProcessPoolExecutor (fork)",
         lambda: cf.ProcessPoolExecutor(WORKERS, mp_context=fork_ctx)),
        ("stdlib ProcessPoolExecutor (spawn)",
         lambda: cf.ProcessPoolExecutor(WORKERS, mp_context=spawn_ctx)),
    ]
    std_interp = getattr(cf, "InterpreterPoolExecutor", None)   # 3.14+
    if std_interp is not None:
        kinds.append(("stdlib InterpreterPoolExecutor",
                      lambda: std_interp(WORKERS)))
    kinds.append(("cfutures.InterpreterPoolExecutor",
                  lambda: cfutures.InterpreterPoolExecutor(WORKERS)))
    startup = {name: startup_cost(make, args.repeat) for name, make in kinds}
    pools = [(name, start_pool(make)) for name, make in kinds]

    # Interleave the runs (one of each per round, best kept) so that a
    # shared, noisy machine penalises every executor alike.
    names = ["serial (1 thread)"] + [n for n, _ in pools]
    times = {}
    try:
        for r in range(args.repeat):
            for label, ntasks, n in jobs:
                work = [n] * ntasks
                expected = [spin(n)] * ntasks
                runners = [(names[0], serial(work, expected))] + [
                    (name, on(ex, work, expected)) for name, ex in pools]
                if r % 2:
                    runners.reverse()   # no executor always runs last
                for name, run in runners:
                    t = best(run, 1)
                    times[label, name] = min(times.get((label, name), t), t)
        trips = {name: round_trip(ex) for name, ex in pools}
    finally:
        for _, ex in pools:
            ex.shutdown(wait=True)

    proc = "stdlib ProcessPoolExecutor (fork)"
    interp = "cfutures.InterpreterPoolExecutor"
    print()
    print("| executor (2 workers) | "
          + " | ".join(f"{label}: time (speed-up)" for label, _, _ in jobs)
          + " | pool start-up (vs ProcessPool fork) | trivial task round trip |")
    print("|---|" + "---:|" * (len(jobs) + 2))
    for name in names:
        cells = []
        for label, _, _ in jobs:
            t = times[label, name]
            cells.append(f"{t:.3f} s ({times[label, names[0]] / t:.2f}x)")
        if name in startup:
            cells.append(f"{startup[name] * 1e3:.1f} ms "
                         f"({startup[name] / startup[proc]:.2f}x)")
            cells.append(f"{trips[name] * 1e6:.0f} us")
        else:
            cells += ["-", "-"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"(load average at the end: {os.getloadavg()[0]:.2f}; "
          f"start-up is the median of {args.repeat} fresh pools)")
    print()
    for label, _, _ in jobs:
        mine = times[label, interp]
        others = ", ".join(f"{name} {times[label, name] / mine:.2f}x"
                           for name in names[1:] if name != interp)
        print(f"{label}: InterpreterPoolExecutor {times[label, names[0]] / mine:.2f}x"
              f" faster than serial; vs {others}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
