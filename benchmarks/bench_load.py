"""At every load: light load with idle gaps, CPU spent per request, an
oversubscribed machine, large payloads.

  light load     one trivial task at a time on a 4-worker pool: submit, wait
                 for its result, sleep for the gap, repeat (a server handing
                 each request to a pool).  Median round trip, and the whole
                 process's CPU time per request (workers' processes included
                 for the process pool), over every request of the round.
  oversubscribed two other busy processes on the machine's cores while the
                 thread pool's throughput and latency rows run.
  large payloads 64 tasks taking and returning 1 MB (process pool), against
                 what one memory copy of those bytes costs on this machine.

Targets (issue 11): light-load round trip >= 1x with gaps of 0.5 ms and
more; CPU >= 0.5x at every gap (cfutures spends at most twice the stdlib's
CPU); every oversubscribed row >= 1x; large payloads >= 2x.

    python3 benchmarks/bench_load.py [--quick] [--rounds N] [...]
    (the load part of benchmarks/run.py, the same options)
"""

import concurrent.futures
import os
import statistics
import subprocess
import sys
import time

from _common import run_alternating
# the oversubscribed rows are bench_thread's own cases, run beside busy processes
from bench_thread import bench_map, bench_round_trip, bench_submit_all

TITLE = "light load, an oversubscribed machine, large payloads"
ROUNDS = (5, 3)
LIGHT_WORKERS = 4


def trivial(x):
    return x + 1


def echo(b):
    return b


def proc_cpu(pids):
    """utime + stime of other processes, in seconds (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def worker_pids(ex):
    procs = getattr(ex, "_processes", None) or {}
    return [p.pid if hasattr(p, "pid") else int(k) for k, p in procs.items()]


def light_load(mod, kind, gap, n):
    """(median latency, CPU per request) for n requests `gap` apart."""
    if kind == "thread":
        ex = mod.ThreadPoolExecutor(LIGHT_WORKERS)
    else:
        ex = mod.ProcessPoolExecutor(LIGHT_WORKERS)
    try:
        list(ex.map(trivial, range(4 * LIGHT_WORKERS)))   # workers up
        pids = worker_pids(ex) if kind == "process" else []
        lat = []
        cpu0 = time.process_time() + proc_cpu(pids)
        for i in range(n):
            t0 = time.perf_counter()
            ex.submit(trivial, i).result()
            lat.append(time.perf_counter() - t0)
            if gap:
                time.sleep(gap)
        cpu = time.process_time() + proc_cpu(pids) - cpu0
    finally:
        ex.shutdown(wait=True)
    return statistics.median(lat), cpu / n


PAYLOAD = 1 << 20


def bench_large(mod, n):
    ex = mod.ProcessPoolExecutor(2)
    try:
        list(ex.map(trivial, range(4)))
        data = [bytes([i % 256]) * PAYLOAD for i in range(n)]
        t0 = time.perf_counter()
        out = list(ex.map(echo, data))
        elapsed = time.perf_counter() - t0
        assert all(len(b) == PAYLOAD for b in out)
        return elapsed / n
    finally:
        ex.shutdown(wait=True)


def memcpy_time(size=PAYLOAD, reps=200):
    """Seconds for one copy of `size` bytes (bytearray slice copies)."""
    src = bytearray(size)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            bytes(src)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


class Hogs:
    """`n` busy Python processes, for the length of a with-block (each also
    ends by itself when its parent is gone)."""

    def __init__(self, n):
        self.n = n
        self.procs = []

    def __enter__(self):
        code = ("import os\np = os.getppid()\n"
                "while os.getppid() == p:\n    pass\n")
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", code]))
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def gap_name(gap):
    if not gap:
        return "no gap"
    if gap < 1e-3:
        return "gap %g us" % (gap * 1e6)
    return "gap %g ms" % (gap * 1e3)


def plan(ctx):
    if ctx.cf is None:
        ctx.skip("cfutures does not import")
    mods = {"stdlib": concurrent.futures, "cfutures": ctx.cf}
    rounds = ctx.rounds
    scale = 5 if ctx.quick else 1
    n_light = 1500 // scale
    n_bulk, n_rt = 20_000 // scale, 5_000 // scale
    n_large = 64
    ncpu = os.cpu_count() or 1
    ctx.note("Light load: one request at a time, %d per round, %d workers, "
             "median round trip; CPU per request counts the whole process and "
             "the pool's worker processes. Oversubscribed: %d busy processes "
             "beside the benchmark on %d CPUs, thread pool, 2 workers. "
             "Median over %d rounds, the implementations alternating."
             % (n_light, LIGHT_WORKERS, ncpu, ncpu, rounds))
    steps = []

    for kind in ("thread", "process"):
        for gap in (0.0, 1e-4, 5e-4, 2e-3):
            def light(kind=kind, gap=gap):
                samples = {k: [] for k in mods}
                for r in range(rounds):
                    order = list(mods.items())
                    if r % 2:
                        order.reverse()
                    for name, mod in order:
                        samples[name].append(light_load(mod, kind, gap, n_light))
                lat = {k: statistics.median(s[0] for s in v) * 1e6
                       for k, v in samples.items()}
                cpu = {k: statistics.median(s[1] for s in v) * 1e6
                       for k, v in samples.items()}
                name = "%s pool, %s" % (kind, gap_name(gap))
                return [ctx.row(name + ": round trip", "us/trip",
                                lat["stdlib"], lat["cfutures"],
                                1.0 if gap >= 5e-4 else None),
                        ctx.row(name + ": CPU", "us CPU/req",
                                cpu["stdlib"], cpu["cfutures"], 0.5)]
            steps.append(("light load, %s pool, %s" % (kind, gap_name(gap)),
                          light))

    for label, unit, fn, n in [
            ("submit+result %s" % format(n_bulk, ","), "us/task",
             bench_submit_all, n_bulk),
            ("map %s items" % format(n_bulk, ","), "us/task", bench_map, n_bulk),
            ("submit().result()", "us/trip", bench_round_trip, n_rt)]:
        def busy(label=label, unit=unit, fn=fn, n=n):
            with Hogs(ncpu):
                med = run_alternating(fn, mods, rounds, n)
            return [ctx.row("oversubscribed: " + label, unit,
                            med["stdlib"] * 1e6, med["cfutures"] * 1e6, 1.0)]
        steps.append(("oversubscribed, " + label, busy))

    def large():
        copy = memcpy_time()
        med = run_alternating(bench_large, mods, rounds, n_large)
        mbs = {k: PAYLOAD / 1e6 / v for k, v in med.items()}
        ctx.note("Large payloads: one 1 MB memory copy costs %.1f us here "
                 "(%.1f GB/s); per task the stdlib spends %.0f copies' time, "
                 "cfutures %.0f." % (copy * 1e6, PAYLOAD / copy / 1e9,
                                     med["stdlib"] / copy,
                                     med["cfutures"] / copy))
        return [ctx.row("large payloads: map(echo, 1 MB) x %d" % n_large,
                        "MB/s", mbs["stdlib"], mbs["cfutures"], 2.0)]
    steps.append(("large payloads", large))
    return steps


if __name__ == "__main__":
    import run
    sys.exit(run.main(part="load"))
