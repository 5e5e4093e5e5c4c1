"""InterpreterPoolExecutor: a CPU-bound pure-Python job on 2 workers.

In this part the cfutures column is always cfutures.InterpreterPoolExecutor
and the stdlib column is what the row names: a serial loop in one thread,
the stdlib's ThreadPoolExecutor, its ProcessPoolExecutor (default start
method) or, on 3.14+, its own InterpreterPoolExecutor.

  N x spin(n)        a job of N pure-Python loops of n iterations, on a
                     started pool; the best of the rounds (run interleaved,
                     the order reversed every other round)
  start-up           constructor until both workers answered a trivial
                     task, then shutdown excluded; median of the rounds
  round trip         submit(trivial).result(), one at a time; median of 200

Targets: the big job >= 1.8x faster than serial, and every job no slower
than the stdlib's pools.  Needs CPython 3.13+ (else the part is skipped).

    python3 benchmarks/bench_interpreter.py [--quick] [--rounds N] [...]
    (the interpreter part of benchmarks/run.py, the same options)
"""
import concurrent.futures as cf
import multiprocessing
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)    # _interp_work: importable by the workers too

from _interp_work import noop_arg, spin  # noqa: E402

TITLE = "InterpreterPoolExecutor (2 workers)"
ROUNDS = (3, 1)
WORKERS = 2


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


def on(ex, work, expected):
    def run():
        assert list(ex.map(spin, work)) == expected
    return run


def short(n):
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return "%dM" % (n // 1_000_000)
    if n >= 1000 and n % 1000 == 0:
        return "%dk" % (n // 1000)
    return str(n)


def plan(ctx):
    if ctx.cf is None:
        ctx.skip("cfutures does not import")
    try:
        probe = ctx.cf.InterpreterPoolExecutor(1)
    except NotImplementedError as e:
        ctx.skip(str(e))
    probe.shutdown()

    if ctx.quick:
        jobs = [(4, 1_000_000), (100, 30_000)]
    else:
        jobs = [(8, 3_000_000), (400, 30_000)]
    repeat = ctx.rounds
    method = multiprocessing.get_start_method()
    # Order matters: CPython 3.13.0 aborts a fork() child while any
    # sub-interpreter exists, so every forking pool is started (its
    # workers forked) before the first interpreter pool exists.
    kinds = [("ThreadPool", lambda: cf.ThreadPoolExecutor(WORKERS)),
             ("ProcessPool", lambda: cf.ProcessPoolExecutor(WORKERS))]
    std_interp = getattr(cf, "InterpreterPoolExecutor", None)   # 3.14+
    if std_interp is not None:
        kinds.append(("InterpreterPool", lambda: std_interp(WORKERS)))
    mine = "cfutures"
    kinds.append((mine, lambda: ctx.cf.InterpreterPoolExecutor(WORKERS)))
    ctx.note("cfutures column: cfutures.InterpreterPoolExecutor; stdlib "
             "column: the stdlib executor the row names (ProcessPool starts "
             "with %r), or a serial loop; jobs best of %d rounds, start-up "
             "median of %d fresh pools." % (method, repeat, repeat))

    startup, times, trips = {}, {}, {}
    pools = []

    def close():
        while pools:
            pools.pop()[1].shutdown(wait=True)
    ctx.cleanup(close)

    steps = []
    for name, make in kinds:
        def measure(name=name, make=make):
            startup[name] = startup_cost(make, repeat)
            return []
        steps.append(("start-up, %s" % name, measure))

    def start_all():
        for name, make in kinds:
            pools.append((name, start_pool(make)))
        return []
    steps.append(("starting the pools", start_all))

    for r in range(repeat):
        for ntasks, n in jobs:
            def one(r=r, ntasks=ntasks, n=n):
                work = [n] * ntasks
                expected = [spin(n)] * ntasks

                def serial():
                    assert [spin(x) for x in work] == expected
                runners = [("serial", serial)] + [
                    (name, on(ex, work, expected)) for name, ex in pools]
                if r % 2:
                    runners.reverse()   # no executor always runs last
                for name, fn in runners:
                    t0 = time.perf_counter()
                    fn()
                    t = time.perf_counter() - t0
                    key = (ntasks, n, name)
                    times[key] = min(times.get(key, t), t)
                return []
            steps.append(("round %d/%d, %d x spin(%s)"
                          % (r + 1, repeat, ntasks, short(n)), one))

    def rows():
        for name, ex in pools:
            trips[name] = round_trip(ex)
        close()
        out = []
        for ntasks, n in jobs:
            label = "%d x spin(%s)" % (ntasks, short(n))
            for base in ["serial"] + [k for k, _ in kinds if k != mine]:
                target = 1.8 if base == "serial" and ntasks == jobs[0][0] \
                    else (None if base == "serial" else 1.0)
                out.append(ctx.row(
                    "%s: vs %s" % (label, base), "ms/job",
                    times[ntasks, n, base] * 1e3,
                    times[ntasks, n, mine] * 1e3, target))
        for base, _ in kinds[1:-1]:
            out.append(ctx.row("start-up: vs %s" % base, "ms/pool",
                               startup[base] * 1e3, startup[mine] * 1e3))
        for base, _ in kinds[:-1]:
            out.append(ctx.row("round trip: vs %s" % base, "us/trip",
                               trips[base] * 1e6, trips[mine] * 1e6))
        return out
    steps.append(("round trips", rows))
    return steps


if __name__ == "__main__":
    import run
    sys.exit(run.main(part="interpreter"))
