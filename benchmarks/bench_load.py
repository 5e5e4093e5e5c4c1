"""Side-by-side benchmark at every load: light load with idle gaps, CPU spent
per request, an oversubscribed machine, large payloads.

    python benchmarks/bench_load.py [--rounds N] [--quick]

  light load     one trivial task at a time on a 4-worker pool: submit, wait
                 for its result, sleep for the gap, repeat (a server handing
                 each request to a pool).  Median round trip, and the whole
                 process's CPU time per request (workers' processes included
                 for the process pool), over every request of the round.
  oversubscribed two other busy processes on the machine's cores while the
                 thread pool's throughput and latency rows run.
  large payloads 64 tasks taking and returning 1 MB (process pool), against
                 what one memory copy of those bytes costs on this machine.

Ratios are stdlib / cfutures (higher is better for cfutures), for time and
for CPU.  Targets (issue 11): light-load latency ratio >= 1 with gaps of
0.5 ms and more; CPU ratio >= 0.5 at every gap (cfutures spends at most
twice the stdlib's CPU); every oversubscribed row >= 1; large payloads
>= 2.  The script always exits 0: it reports, it does not judge a build.
"""

import argparse
import concurrent.futures
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time

from _common import import_cfutures, run_alternating
# the oversubscribed rows are bench_thread's own cases, run beside busy processes
from bench_thread import bench_map, bench_round_trip, bench_submit_all

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


def fmt_time(seconds):
    if seconds < 1e-6:
        return "%.0f ns" % (seconds * 1e9)
    if seconds < 1e-3:
        return "%.1f us" % (seconds * 1e6)
    return "%.2f ms" % (seconds * 1e3)


def table(cols):
    fmt = "|" + "|".join(" %%%s%ds " % ("-" if a == "<" else "", w)
                         for _, w, a in cols) + "|"
    print(fmt % tuple(name for name, _, _ in cols))
    print("|" + "|".join("-" * (w + 2) if a == "<" else "-" * (w + 1) + ":"
                         for _, w, a in cols) + "|")
    return fmt


def verdict(ratio, target):
    return "PASS" if ratio >= target else "FAIL"


class Hogs:
    """`n` busy Python processes, for the length of a with-block."""

    def __init__(self, n):
        self.n = n
        self.procs = []

    def __enter__(self):
        for _ in range(self.n):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", "while True: pass"]))
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per case (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer requests and 3 rounds (smoke run)")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be >= 1")
    scale = 5 if args.quick else 1

    mods = {"stdlib": concurrent.futures}
    cf = import_cfutures("ThreadPoolExecutor")
    if cf is None:
        return 0
    mods["cfutures"] = cf
    start = mp.get_start_method()
    print("Python %s (%s), %s, %d CPUs, process pools start with %r" % (
        platform.python_version(), platform.python_implementation(),
        platform.machine(), os.cpu_count() or 0, start))

    # -- light load
    n_light = 1500 // scale
    print()
    print("Light load: one request at a time, %d requests per round, "
          "%d workers; median round trip and CPU per request "
          "(ratio = stdlib / cfutures)" % (n_light, LIGHT_WORKERS))
    print()
    fmt = table([("pool, gap", 18, "<"), ("stdlib", 8, ">"), ("cfutures", 8, ">"),
                 ("ratio", 6, ">"), ("CPU stdlib", 10, ">"),
                 ("CPU cfutures", 12, ">"), ("ratio", 6, ">"), ("result", 6, "<")])
    sys.stdout.flush()
    for kind in ("thread", "process"):
        for gap in (0.0, 1e-4, 5e-4, 2e-3):
            n = n_light if kind == "thread" or gap else n_light
            samples = {k: [] for k in mods}
            for r in range(rounds):
                order = list(mods.items())
                if r % 2:
                    order.reverse()
                for name, mod in order:
                    samples[name].append(light_load(mod, kind, gap, n))
            lat = {k: statistics.median(s[0] for s in v) for k, v in samples.items()}
            cpu = {k: statistics.median(s[1] for s in v) for k, v in samples.items()}
            lr = lat["stdlib"] / lat["cfutures"]
            cr = cpu["stdlib"] / cpu["cfutures"]
            ok = cr >= 0.5 and (gap < 5e-4 or lr >= 1.0)
            print(fmt % ("%s, %s" % (kind, "none" if not gap else fmt_time(gap)),
                         fmt_time(lat["stdlib"]), fmt_time(lat["cfutures"]),
                         "%.2fx" % lr, fmt_time(cpu["stdlib"]),
                         fmt_time(cpu["cfutures"]), "%.2fx" % cr,
                         "PASS" if ok else "FAIL"))
            sys.stdout.flush()

    # -- oversubscribed
    n_bulk, n_rt = 20_000 // scale, 5_000 // scale
    ncpu = os.cpu_count() or 1
    print()
    print("Oversubscribed: %d busy processes beside the benchmark on %d CPUs; "
          "thread pool, 2 workers, median cost per task" % (ncpu, ncpu))
    print()
    fmt = table([("case", 32, "<"), ("stdlib", 9, ">"), ("cfutures", 9, ">"),
                 ("ratio", 6, ">"), ("result", 6, "<")])
    sys.stdout.flush()
    with Hogs(ncpu):
        for label, fn, n in [
                ("submit %s, then result() each" % format(n_bulk, ","),
                 bench_submit_all, n_bulk),
                ("map over %s items" % format(n_bulk, ","), bench_map, n_bulk),
                ("submit().result() one at a time", bench_round_trip, n_rt)]:
            med = run_alternating(fn, mods, rounds, n)
            ratio = med["stdlib"] / med["cfutures"]
            print(fmt % (label, fmt_time(med["stdlib"]), fmt_time(med["cfutures"]),
                         "%.2fx" % ratio, verdict(ratio, 1.0)))
            sys.stdout.flush()

    # -- large payloads
    n_large = 64
    copy = memcpy_time()
    print()
    print("Large payloads: %d tasks taking and returning 1 MB, process pool "
          "(2 workers); one 1 MB copy costs %s here (%.1f GB/s)"
          % (n_large, fmt_time(copy), PAYLOAD / copy / 1e9))
    print()
    fmt = table([("case", 32, "<"), ("stdlib", 9, ">"), ("cfutures", 9, ">"),
                 ("ratio", 6, ">"), ("copies", 12, ">"), ("result", 6, "<")])
    med = run_alternating(bench_large, mods, rounds, n_large)
    ratio = med["stdlib"] / med["cfutures"]
    print(fmt % ("map(echo, 1 MB) per task", fmt_time(med["stdlib"]),
                 fmt_time(med["cfutures"]), "%.2fx" % ratio,
                 "%.1f vs %.1f" % (med["stdlib"] / copy, med["cfutures"] / copy),
                 verdict(ratio, 2.0)))
    print("(copies: each implementation's time per task in 1 MB memory copies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
