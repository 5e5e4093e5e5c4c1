"""Side-by-side benchmark: concurrent.futures.ThreadPoolExecutor vs cfutures'.

    python benchmarks/bench_thread.py [--rounds N] [--quick]

Every case runs on a fresh executor with 2 workers, both threads started
before the clock starts; the two implementations alternate inside every
round (which one goes first alternates too) and the table reports the median
over the rounds of the cost per task.

  submit + result      submit 100,000 trivial tasks, then result() on each
  map                  consume ex.map(trivial, range(100,000))
  submit().result()    one round trip at a time (latency), 20,000 times
  sha256 ~10 us        tasks hashing a few 4 KiB blocks (hashlib releases
                       the GIL for them), ~10 us of work each, submit+result
  sleep(10 us)         tasks calling time.sleep(1e-5), submit+result

The ratio is stdlib / cfutures (higher is better for cfutures).  Targets:
>= 10x for the first two, >= 3x for the latency case; the realistic cases
are reported without a target.  The script always exits 0: it reports, it
does not judge a build (timings on a shared machine are not test material).
"""

import argparse
import concurrent.futures
import hashlib
import os
import platform
import sys
import threading
import time

from _common import import_cfutures, run_alternating

WORKERS = 2


def trivial(x):
    return x + 1


BLOCK = b"\x5a" * 4096      # >= 2048 bytes: hashlib releases the GIL
HASH_BLOCKS = 4             # recalibrated in main() to make ~10 us


def hash_task(x):
    h = hashlib.sha256()
    for _ in range(HASH_BLOCKS):
        h.update(BLOCK)
    return h.digest()


def sleep_task(x):
    time.sleep(1e-5)
    return x


def calibrate_hash(target=10e-6):
    h = hashlib.sha256()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        h.update(BLOCK)
    per_block = (time.perf_counter() - t0) / n
    return max(1, round(target / per_block)), per_block


def started_executor(mod):
    """A fresh executor whose WORKERS threads are already running."""
    ex = mod.ThreadPoolExecutor(max_workers=WORKERS)
    barrier = threading.Barrier(WORKERS)
    for f in [ex.submit(barrier.wait, 30) for _ in range(WORKERS)]:
        f.result(timeout=30)
    return ex


def bench_submit_all(mod, n, task=trivial):
    ex = started_executor(mod)
    try:
        submit = ex.submit
        t0 = time.perf_counter()
        fs = [submit(task, i) for i in range(n)]
        for f in fs:
            f.result()
        elapsed = time.perf_counter() - t0
    finally:
        ex.shutdown(wait=True)
    return elapsed / n


def bench_map(mod, n):
    ex = started_executor(mod)
    try:
        t0 = time.perf_counter()
        count = 0
        for _ in ex.map(trivial, range(n)):
            count += 1
        elapsed = time.perf_counter() - t0
    finally:
        ex.shutdown(wait=True)
    assert count == n
    return elapsed / n


def bench_round_trip(mod, n):
    ex = started_executor(mod)
    try:
        submit = ex.submit
        t0 = time.perf_counter()
        for i in range(n):
            submit(trivial, i).result()
        elapsed = time.perf_counter() - t0
    finally:
        ex.shutdown(wait=True)
    return elapsed / n


def bench_hash(mod, n):
    return bench_submit_all(mod, n, hash_task)


def bench_sleep(mod, n):
    return bench_submit_all(mod, n, sleep_task)


def fmt_time(seconds):
    if seconds < 1e-6:
        return "%.0f ns" % (seconds * 1e9)
    if seconds < 1e-3:
        return "%.2f us" % (seconds * 1e6)
    return "%.2f ms" % (seconds * 1e3)


def main(argv=None):
    global HASH_BLOCKS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per case (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="workloads 5x smaller and 3 rounds (smoke run)")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be >= 1")
    scale = 5 if args.quick else 1

    mods = {"stdlib": concurrent.futures}
    cfutures = import_cfutures('ThreadPoolExecutor')
    if cfutures is not None:
        mods["cfutures"] = cfutures

    HASH_BLOCKS, per_block = calibrate_hash()
    n_bulk, n_rt, n_hash, n_sleep = (100_000 // scale, 20_000 // scale,
                                     20_000 // scale, 10_000 // scale)
    cases = [
        ("submit %s, then result() each" % format(n_bulk, ","), bench_submit_all, n_bulk, 10.0),
        ("map over %s items" % format(n_bulk, ","), bench_map, n_bulk, 10.0),
        ("submit().result() one at a time", bench_round_trip, n_rt, 3.0),
        ("sha256 ~%.0f us/task (%d x 4 KiB)" % (HASH_BLOCKS * per_block * 1e6, HASH_BLOCKS),
         bench_hash, n_hash, None),
        ("time.sleep(10 us)/task", bench_sleep, n_sleep, None),
    ]

    print("Python %s (%s), %s, %d CPUs" % (
        platform.python_version(), platform.python_implementation(), platform.machine(),
        os.cpu_count() or 0))
    print("ThreadPoolExecutor(max_workers=%d), %d rounds, median cost per task; "
          "ratio = stdlib / cfutures" % (WORKERS, rounds))
    print()
    cols = [("case", 36, "<"), ("stdlib", 10, ">"), ("cfutures", 10, ">"),
            ("ratio", 7, ">"), ("target", 6, ">"), ("result", 6, "<")]
    fmt = "|" + "|".join(" %%%s%ds " % ("-" if a == "<" else "", w) for _, w, a in cols) + "|"
    print(fmt % tuple(name for name, _, _ in cols))
    print("|" + "|".join("-" * (w + 2) if a == "<" else "-" * (w + 1) + ":"
                         for _, w, a in cols) + "|")
    sys.stdout.flush()
    for label, fn, n, target in cases:
        med = run_alternating(fn, mods, rounds, n)
        std = fmt_time(med["stdlib"])
        if "cfutures" in med:
            ratio = med["stdlib"] / med["cfutures"]
            cf = fmt_time(med["cfutures"])
            ratio_s = "%.1fx" % ratio
            if target is None:
                target_s, verdict = "-", "-"
            else:
                target_s = ">=%gx" % target
                verdict = "PASS" if ratio >= target else "FAIL"
        else:
            cf, ratio_s, target_s, verdict = "-", "-", "-", "n/a"
        print(fmt % (label, std, cf, ratio_s, target_s, verdict))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
