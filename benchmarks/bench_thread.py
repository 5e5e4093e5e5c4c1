"""ThreadPoolExecutor: throughput, latency, realistic tasks.

Every case runs on a fresh pool with 2 workers, both threads started before
the clock starts; the implementations alternate inside every round (which
one goes first alternates too); median over the rounds.

  submit + result      submit 100,000 trivial tasks, then result() on each
  map                  consume ex.map(trivial, range(100,000))
  submit().result()    one round trip at a time (latency), 20,000 times
  sha256 ~10 us        tasks hashing a few 4 KiB blocks (hashlib releases
                       the GIL for them), ~10 us of work each, submit+result
  sleep(10 us)         tasks calling time.sleep(1e-5), submit+result

Targets: >= 10x for the first two, >= 3x for the latency case; the
realistic cases have none.  pebble.ThreadPool runs the same cases when
pebble is installed.

    python3 benchmarks/bench_thread.py [--quick] [--rounds N] [...]
    (the thread part of benchmarks/run.py, the same options)
"""

import concurrent.futures
import hashlib
import sys
import threading
import time

from _common import run_alternating

TITLE = "ThreadPoolExecutor (2 workers)"
ROUNDS = (5, 3)
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


class PebbleThreads:
    """pebble.ThreadPool behind the executor calls the cases make."""

    def __init__(self, pebble):
        self.pebble = pebble

    def ThreadPoolExecutor(self, max_workers):
        return _PebbleExecutor(self.pebble.ThreadPool(max_workers=max_workers))


class _PebbleExecutor:
    def __init__(self, pool):
        self.pool = pool

    def submit(self, fn, *args):
        return self.pool.schedule(fn, args=args)

    def map(self, fn, iterable):
        return self.pool.map(fn, iterable).result()

    def shutdown(self, wait=True):
        self.pool.close()
        if wait:
            self.pool.join()


class _PebbleFailed(Exception):
    pass


def plan(ctx):
    global HASH_BLOCKS
    mods = {"stdlib": concurrent.futures}
    if ctx.cf is not None:
        mods["cfutures"] = ctx.cf
    if "pebble" in ctx.libs:
        mods["pebble"] = PebbleThreads(ctx.libs["pebble"])
    scale = 5 if ctx.quick else 1
    HASH_BLOCKS, per_block = calibrate_hash()
    n_bulk, n_rt, n_hash, n_sleep = (100_000 // scale, 20_000 // scale,
                                     20_000 // scale, 10_000 // scale)
    ctx.note("ThreadPoolExecutor(max_workers=%d)%s, both threads started "
             "before the clock starts; median over %d rounds, the "
             "implementations alternating." % (
                 WORKERS, " and pebble.ThreadPool" if "pebble" in mods else "",
                 ctx.rounds))

    def guarded(fn):
        def call(mod, n):
            try:
                return fn(mod, n)
            except Exception as e:
                if "pebble" in mods and mod is mods["pebble"]:
                    raise _PebbleFailed("%s: %s" % (type(e).__name__, e))
                raise
        return call

    def step(name, unit, fn, n, target):
        def run():
            try:
                med = run_alternating(guarded(fn), mods, ctx.rounds, n)
            except _PebbleFailed as e:
                # like bench_process: a failing third-party pool loses its
                # column, the stdlib and cfutures rows still run
                del mods["pebble"]
                ctx.note("pebble failed, left out: %s" % e)
                med = run_alternating(fn, mods, ctx.rounds, n)
            us = {k: v * 1e6 for k, v in med.items()}
            return [ctx.row(name, unit, us["stdlib"], us.get("cfutures"),
                            target, {k: v for k, v in us.items()
                                     if k not in ("stdlib", "cfutures")})]
        return name, run

    return [
        step("submit %s, then result() each" % format(n_bulk, ","), "us/task",
             bench_submit_all, n_bulk, 10.0),
        step("map over %s items" % format(n_bulk, ","), "us/task",
             bench_map, n_bulk, 10.0),
        step("submit().result() one at a time", "us/trip",
             bench_round_trip, n_rt, 3.0),
        step("sha256 ~%.0f us/task (%d x 4 KiB)"
             % (HASH_BLOCKS * per_block * 1e6, HASH_BLOCKS), "us/task",
             bench_hash, n_hash, None),
        step("time.sleep(10 us)/task", "us/task", bench_sleep, n_sleep, None),
    ]


if __name__ == "__main__":
    import run
    sys.exit(run.main(part="thread"))
