"""Side by side, one run: a CPU-bound pure-Python job run serially and on
2 workers of the stdlib's ThreadPoolExecutor, the stdlib's
ProcessPoolExecutor and cfutures.InterpreterPoolExecutor; plus each
pool's start-up cost.

    nice python benchmarks/bench_interpreter.py [--tasks 8] [--n 3000000]
                                                [--repeat 3] [--quick]

Job time is measured on a started (warmed-up) pool; start-up is the time
from the constructor to both workers having answered a trivial task.
Job times are the best of --repeat interleaved rounds; start-up is
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
sys.path[:0] = [os.path.dirname(HERE), HERE]

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
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="smaller job, one round (benchmarks/run.py --quick)")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.n, args.repeat = 4, 1_000_000, 1

    try:
        import cfutures
        probe = cfutures.InterpreterPoolExecutor(1)
    except NotImplementedError as e:
        print(f"bench_interpreter: skipped: {e}")
        return 0
    probe.shutdown()

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{cpus} CPUs available; {args.tasks} tasks x spin({args.n:,}), "
          f"{WORKERS} workers, best of {args.repeat} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f}")
    work = [args.n] * args.tasks
    expected = [spin(args.n)] * args.tasks

    def serial():
        assert [spin(n) for n in work] == expected

    def on(ex):
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
        ("cfutures.InterpreterPoolExecutor",
         lambda: cfutures.InterpreterPoolExecutor(WORKERS)),
    ]
    startup = {name: startup_cost(make, args.repeat) for name, make in kinds}
    pools = [(name, start_pool(make)) for name, make in kinds]

    # Interleave the runs (one of each per round, best kept) so that a
    # shared, noisy machine penalises every executor alike.
    runners = [("serial (1 thread)", serial)] + [(n, on(ex)) for n, ex in pools]
    times = {name: float("inf") for name, _ in runners}
    try:
        for _ in range(args.repeat):
            for name, run in runners:
                times[name] = min(times[name], best(run, 1))
        trips = {name: round_trip(ex) for name, ex in pools}
    finally:
        for _, ex in pools:
            ex.shutdown(wait=True)
    rows = [(name, times[name], startup.get(name)) for name, _ in runners]

    base = rows[0][1]
    proc_start = rows[2][2]
    print()
    print("| executor (2 workers) | job time | speed-up vs serial "
          "| pool start-up | start-up vs ProcessPool (fork) "
          "| trivial task round trip |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t, startup in rows:
        s = "-" if startup is None else f"{startup * 1e3:.1f} ms"
        rel = "-" if startup is None else f"{startup / proc_start:.2f}x"
        rt = f"{trips[name] * 1e6:.0f} us" if name in trips else "-"
        print(f"| {name} | {t:.3f} s | {base / t:.2f}x | {s} | {rel} | {rt} |")
    print(f"(load average at the end: {os.getloadavg()[0]:.2f}; "
          f"start-up is the median of {args.repeat})")
    interp = rows[-1][1]
    others = {name: t for name, t, _ in rows[1:-1]}
    print()
    print(f"InterpreterPoolExecutor speed-up vs serial: {base / interp:.2f}x"
          f" (target >= 1.8x); faster than "
          + ", ".join(f"{k} ({v / interp:.2f}x)" for k, v in others.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
