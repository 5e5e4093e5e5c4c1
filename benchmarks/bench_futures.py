"""Future, wait, as_completed: the per-operation cost, no pool involved.

  create+set_result+result  Future(), set_result(), result(), per future
  as_completed N finished   as_completed() over N finished futures, per
                            future it yields
  wait FIRST_COMPLETED      wait() over 1,000 pending futures + 1 finished
                            one, return_when=FIRST_COMPLETED, per call

Target: >= 10x each.

    python3 benchmarks/bench_futures.py [--quick] [--rounds N] [...]
    (the futures part of benchmarks/run.py, the same options)
"""

import concurrent.futures
import sys
import time

from _common import run_alternating

TITLE = "Future, as_completed, wait"
ROUNDS = (5, 3)
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


def plan(ctx):
    mods = {"stdlib": concurrent.futures}
    if ctx.cf is not None:
        mods["cfutures"] = ctx.cf
    if ctx.quick:
        n_create, n_ac, n_wait = 20_000, 20_000, 100
    else:
        n_create, n_ac, n_wait = 200_000, 200_000, 1_000
    ctx.note("Median over %d rounds, the two implementations alternating."
             % ctx.rounds)

    def step(name, fn, n):
        def run():
            med = run_alternating(fn, mods, ctx.rounds, n)
            return [ctx.row(name, "us/op", med["stdlib"] * 1e6,
                            med["cfutures"] * 1e6 if "cfutures" in med else None,
                            TARGET)]
        return name, run

    return [
        step("create+set_result+result", bench_create, n_create),
        step("as_completed %s finished" % format(n_ac, ","),
             bench_as_completed, n_ac),
        step("wait FIRST_COMPLETED 1,000+1", bench_wait, n_wait),
    ]


if __name__ == "__main__":
    import run
    sys.exit(run.main(part="futures"))
