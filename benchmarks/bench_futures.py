"""Side-by-side micro-benchmarks: concurrent.futures vs cfutures.

    python benchmarks/bench_futures.py [--rounds N] [--quick]

Operations (each reported as the median per-operation cost over the rounds,
the two implementations alternating inside every round):

  create+set_result+result  Future(), set_result(), result()       per future
  as_completed finished     as_completed() over 200,000 finished futures
                                                                   per future
  wait FIRST_COMPLETED      wait() over 1,000 pending + 1 finished future,
                            return_when=FIRST_COMPLETED            per call

The ratio column is stdlib / cfutures (higher is better for cfutures); the
target is >= 10x.  The script always exits 0: it reports, it does not judge a
build (timings on a shared machine are not test material).
"""

import argparse
import concurrent.futures
import sys
import time

from _common import import_cfutures, run_alternating

TARGET = 10.0


def bench_create(mod, n):
    Future = mod.Future
    t0 = time.perf_counter()
    for i in range(n):
        f = Future()
        f.set_result(i)
        f.result()
    return (time.perf_counter() - t0) / n


def bench_as_completed(mod, n):
    fs = []
    for i in range(n):
        f = mod.Future()
        f.set_result(i)
        fs.append(f)
    as_completed = mod.as_completed
    t0 = time.perf_counter()
    count = 0
    for _ in as_completed(fs):
        count += 1
    elapsed = time.perf_counter() - t0
    assert count == n
    return elapsed / n


def bench_wait(mod, calls, pending=1000):
    fs = [mod.Future() for _ in range(pending)]
    done = mod.Future()
    done.set_result(None)
    fs.append(done)
    wait, first = mod.wait, mod.FIRST_COMPLETED
    t0 = time.perf_counter()
    for _ in range(calls):
        r = wait(fs, return_when=first)
    elapsed = time.perf_counter() - t0
    assert r.done == {done} and len(r.not_done) == pending
    return elapsed / calls


def fmt_time(seconds):
    if seconds < 1e-6:
        return "%7.1f ns" % (seconds * 1e9)
    if seconds < 1e-3:
        return "%7.2f us" % (seconds * 1e6)
    return "%7.2f ms" % (seconds * 1e3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per case (default 5, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads and 3 rounds (smoke run)")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be >= 1")

    mods = {"stdlib": concurrent.futures}
    cfutures = import_cfutures()
    if cfutures is not None:
        mods["cfutures"] = cfutures

    if args.quick:
        sizes = {"create": 20_000, "as_completed": 20_000, "wait": 100}
    else:
        sizes = {"create": 200_000, "as_completed": 200_000, "wait": 1_000}

    cases = [
        ("create+set_result+result", "per future", bench_create, sizes["create"]),
        ("as_completed %d finished" % sizes["as_completed"], "per future",
         bench_as_completed, sizes["as_completed"]),
        ("wait FIRST_COMPLETED 1000+1", "per call", bench_wait, sizes["wait"]),
    ]

    print("Python %s, %d rounds, median per operation" % (sys.version.split()[0], rounds))
    header = "%-30s %-11s %11s %11s %8s  %s" % (
        "operation", "unit", "stdlib", "cfutures", "ratio", "target %gx" % TARGET)
    print(header)
    print("-" * len(header))
    for label, unit, fn, arg in cases:
        med = run_alternating(fn, mods, rounds, arg)
        if "cfutures" in med:
            ratio = med["stdlib"] / med["cfutures"]
            verdict = "PASS" if ratio >= TARGET else "FAIL"
            print("%-30s %-11s %11s %11s %7.1fx  %s" % (
                label, unit, fmt_time(med["stdlib"]), fmt_time(med["cfutures"]), ratio, verdict))
        else:
            print("%-30s %-11s %11s %11s %8s  %s" % (
                label, unit, fmt_time(med["stdlib"]), "-", "-", "n/a"))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
