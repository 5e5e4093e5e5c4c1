"""ProcessPoolExecutor: cfutures, the stdlib, and loky, mpire, pebble's
ProcessPool when installed, on the same workloads.

2 workers, a trivial task unless said otherwise; every round runs each
implementation in turn (the order reversed every other round); median over
the rounds.  Pools are warm (every worker has run a task) except in
start-up.  All use the running Python's default start method, except loky,
which always starts its workers its own way (spawn-like, cloudpickle).

  map, chunksize=1      map() over 20,000 items
  submit, wait each     submit 20,000 tasks, then wait for each result
  map, chunksize=1000   map() over 200,000 items
  CPU job               map() of 8 pure-Python loops of ~0.1 s each
  start-up              constructor + first result + shutdown (each
                        round: the implementations in turn, 3 times)
  1 MB payloads         64 tasks taking and returning 1 MB bytes objects

Targets: >= 10x at chunksize 1 (map and submit), >= 1.5x at chunksize
1000, start-up and payloads no slower than the stdlib.

    python3 benchmarks/bench_process.py [--quick] [--rounds N] [...]
    (the process part of benchmarks/run.py, the same options)
"""
import concurrent.futures
import multiprocessing as mp
import statistics
import sys
import time

from _interp_work import spin

TITLE = "ProcessPoolExecutor (2 workers)"
ROUNDS = (5, 2)
WORKERS = 2
PAYLOAD = 1 << 20


def trivial(x):
    return x


def echo(b):
    return b


# ------------------------------------------------------------ adapters


class Impl:
    name = ""

    def start(self):
        raise NotImplementedError

    def warm(self, ex):
        list(self.map(ex, trivial, range(WORKERS * 4), 1))

    def map(self, ex, fn, it, chunksize):
        return ex.map(fn, it, chunksize=chunksize)

    def submit_all(self, ex, fn, items):
        fs = [ex.submit(fn, x) for x in items]
        return [f.result() for f in fs]

    def stop(self, ex):
        ex.shutdown(wait=True)


class Std(Impl):
    def __init__(self, name, mod):
        self.name, self.mod = name, mod

    def start(self):
        return self.mod.ProcessPoolExecutor(WORKERS)


class Loky(Impl):
    name = "loky"

    def __init__(self, loky):
        self.loky = loky

    def start(self):
        return self.loky.ProcessPoolExecutor(WORKERS)


class Mpire(Impl):
    name = "mpire"

    def __init__(self, mpire):
        self.mpire = mpire

    def start(self):
        return self.mpire.WorkerPool(n_jobs=WORKERS, keep_alive=True,
                                     start_method=mp.get_start_method())

    def map(self, ex, fn, it, chunksize):
        return ex.map(fn, it, chunk_size=chunksize, progress_bar=False)

    def submit_all(self, ex, fn, items):
        fs = [ex.apply_async(fn, (x,)) for x in items]
        return [f.get() for f in fs]

    def stop(self, ex):
        ex.stop_and_join()


class Pebble(Impl):
    name = "pebble"

    def __init__(self, pebble):
        self.pebble = pebble

    def start(self):
        return self.pebble.ProcessPool(max_workers=WORKERS)

    def map(self, ex, fn, it, chunksize):
        return ex.map(fn, it, chunksize=chunksize).result()

    def submit_all(self, ex, fn, items):
        fs = [ex.schedule(fn, args=(x,)) for x in items]
        return [f.result() for f in fs]

    def stop(self, ex):
        ex.close()
        ex.join()


# --------------------------------------------------------------- cases


def case_map1(impl, ex, n):
    out = list(impl.map(ex, trivial, range(n), 1))
    assert len(out) == n and out[-1] == n - 1


def case_submit(impl, ex, n):
    out = impl.submit_all(ex, trivial, range(n))
    assert len(out) == n and out[-1] == n - 1


def case_chunked(impl, ex, n):
    out = list(impl.map(ex, trivial, range(n), 1000))
    assert len(out) == n and out[-1] == n - 1


def case_cpu(impl, ex, n):
    out = list(impl.map(ex, spin, [n] * 8, 1))
    assert len(out) == 8 and len(set(out)) == 1


def case_payload(impl, ex, n):
    blob = b"\x5a" * PAYLOAD
    out = impl.submit_all(ex, echo, [blob] * n)
    assert len(out) == n and out[-1] == blob


CASES = [("map1", case_map1), ("submit", case_submit),
         ("chunked", case_chunked), ("cpu", case_cpu),
         ("payload", case_payload)]


STARTS = 3     # start-ups per implementation per round


def run_startup(impl, results):
    t0 = time.perf_counter()
    ex = impl.start()
    try:
        impl.submit_all(ex, trivial, [1])
    finally:
        impl.stop(ex)
    results.setdefault("startup", []).append(time.perf_counter() - t0)


def run_first_startup(impl, results):
    """Untimed: the first pool of a run may also start a forkserver."""
    run_startup(impl, {})


def run_round(impl, sizes, results):
    ex = impl.start()
    try:
        impl.warm(ex)
        for name, fn in CASES:
            t = time.perf_counter()
            fn(impl, ex, sizes[name])
            results.setdefault(name, []).append(time.perf_counter() - t)
    finally:
        impl.stop(ex)


def plan(ctx):
    impls = [Std("stdlib", concurrent.futures)]
    if ctx.cf is not None:
        impls.append(Std("cfutures", ctx.cf))
    for name, cls in (("loky", Loky), ("mpire", Mpire), ("pebble", Pebble)):
        if name in ctx.libs:
            impls.append(cls(ctx.libs[name]))
    sizes = {"map1": 20000, "submit": 20000, "chunked": 200000,
             "cpu": 1_000_000, "payload": 64}
    if ctx.quick:
        sizes = {"map1": 2000, "submit": 2000, "chunked": 20000,
                 "cpu": 200_000, "payload": 8}
    ctx.note("Start method %r; median over %d rounds; implementations: %s."
             % (mp.get_start_method(), ctx.rounds,
                ", ".join(i.name for i in impls)))
    results = {i.name: {} for i in impls}
    failed = {}

    def attempt(impl, fn, *args):
        if impl.name in failed:
            return
        try:
            fn(impl, *args, results[impl.name])
        except Exception as e:
            if impl.name in ("stdlib", "cfutures"):
                raise
            # a third-party pool that fails here loses its column
            failed[impl.name] = "%s: %s" % (type(e).__name__, e)
            ctx.note("%s failed, left out: %s" % (impl.name,
                                                 failed[impl.name]))

    def step(impl):
        def run():
            attempt(impl, run_round, sizes)
            return []
        return run

    def startups(order):
        # Start-up is fork- (or spawn-) bound and so sensitive to what ran
        # just before: the implementations take turns back to back, STARTS
        # times each, so that each sees the same process state.
        def run():
            for _ in range(STARTS):
                for impl in order:
                    attempt(impl, run_startup)
            return []
        return run

    def first_starts():
        for impl in impls:
            attempt(impl, run_first_startup)
        return []

    steps = [("first start-ups (not timed)", first_starts)]
    for r in range(ctx.rounds):
        order = impls if r % 2 == 0 else impls[::-1]
        steps.append(("round %d/%d, start-up" % (r + 1, ctx.rounds),
                      startups(order)))
        for impl in order:
            steps.append(("round %d/%d, %s" % (r + 1, ctx.rounds, impl.name),
                          step(impl)))

    def rows():
        def med(name, key):
            if name in failed or name not in results:
                return None
            return statistics.median(results[name][key])
        n = sizes
        spec = [
            ("map1", "map %s items, chunksize=1" % format(n["map1"], ","),
             "us/task", lambda t: t / n["map1"] * 1e6, 10.0),
            ("submit", "submit %s, wait each" % format(n["submit"], ","),
             "us/task", lambda t: t / n["submit"] * 1e6, 10.0),
            ("chunked", "map %s items, chunksize=1000"
             % format(n["chunked"], ","),
             "us/task", lambda t: t / n["chunked"] * 1e6, 1.5),
            ("cpu", "CPU job, 8 x spin(%s)" % format(n["cpu"], ","),
             "ms/job", lambda t: t * 1e3, None),
            ("startup", "start + first result + shutdown", "ms/pool",
             lambda t: t * 1e3, 1.0),
            ("payload", "%d tasks, 1 MB in and out" % n["payload"], "MB/s",
             lambda t: n["payload"] * PAYLOAD / 1e6 / t, 1.0),
        ]
        out = []
        for key, label, unit, conv, target in spec:
            vals = {}
            for impl in impls:
                t = med(impl.name, key)
                vals[impl.name] = None if t is None else conv(t)
            out.append(ctx.row(label, unit, vals.pop("stdlib"),
                               vals.pop("cfutures", None), target, vals))
        return out

    steps.append(("medians", rows))
    return steps


if __name__ == "__main__":
    import run
    sys.exit(run.main(part="process"))
