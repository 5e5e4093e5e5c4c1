"""Process pools side by side: cfutures vs the stdlib (and loky, mpire).

Five cases, 2 workers, a trivial task unless said otherwise; every round
runs each implementation in turn (alternating order), the table shows the
median over rounds and, per implementation, the speed-up over the stdlib
(stdlib time / its time; >1 means faster).

    map1       map() over 20,000 items, chunksize=1
    submit     submit 20,000 tasks, then wait for each result
    chunked    map() over 200,000 items, chunksize=1000
    startup    pool start + first result + shutdown
    payload    64 tasks taking and returning 1 MB bytes objects

Pools are warm (every worker has run a task) except in `startup`.  The
default multiprocessing context of the running Python is used for all.
loky and mpire are optional: their columns appear when importable.

    python benchmarks/bench_process.py [--quick] [--rounds N]
"""
import argparse
import concurrent.futures
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

from _common import import_cfutures

HERE = os.path.dirname(os.path.abspath(__file__))
cfutures = import_cfutures("ProcessPoolExecutor")

WORKERS = 2


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


class Stdlib(Impl):
    name = "stdlib"

    def start(self):
        return concurrent.futures.ProcessPoolExecutor(WORKERS)


class CFutures(Impl):
    name = "cfutures"

    def start(self):
        return cfutures.ProcessPoolExecutor(WORKERS)


class Loky(Impl):
    name = "loky"

    def __init__(self):
        import loky
        self.loky = loky

    def start(self):
        return self.loky.ProcessPoolExecutor(WORKERS)


class Mpire(Impl):
    name = "mpire"

    def __init__(self):
        import mpire
        self.mpire = mpire

    def start(self):
        pool = self.mpire.WorkerPool(n_jobs=WORKERS, keep_alive=True,
                                     start_method=mp.get_start_method())
        return pool

    def map(self, ex, fn, it, chunksize):
        return ex.map(fn, it, chunk_size=chunksize, progress_bar=False)

    def submit_all(self, ex, fn, items):
        fs = [ex.apply_async(fn, (x,)) for x in items]
        return [f.get() for f in fs]

    def stop(self, ex):
        ex.stop_and_join()


def implementations():
    impls = [Stdlib(), CFutures()]
    for cls in (Loky, Mpire):
        try:
            impls.append(cls())
        except ImportError:
            pass
    return impls


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


def case_payload(impl, ex, n):
    blob = b"\x5a" * (1 << 20)
    out = impl.submit_all(ex, echo, [blob] * n)
    assert len(out) == n and out[-1] == blob


def run_round(impl, sizes, results):
    t0 = time.perf_counter()
    ex = impl.start()
    if isinstance(impl, Mpire):
        impl.submit_all(ex, trivial, [1])
    else:
        ex.submit(trivial, 1).result()
    impl.stop(ex)
    results.setdefault("startup", []).append(time.perf_counter() - t0)

    ex = impl.start()
    try:
        impl.warm(ex)
        for name, fn in (("map1", case_map1), ("submit", case_submit),
                         ("chunked", case_chunked), ("payload", case_payload)):
            t = time.perf_counter()
            fn(impl, ex, sizes[name])
            results.setdefault(name, []).append(time.perf_counter() - t)
    finally:
        impl.stop(ex)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds, a tenth of the sizes")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    if cfutures is None:
        return 1
    sizes = {"map1": 20000, "submit": 20000, "chunked": 200000, "payload": 64}
    rounds = 5
    if args.quick:
        sizes = {k: max(v // 10, 8) for k, v in sizes.items()}
        sizes["chunked"] = 20000
        rounds = 2
    if args.rounds:
        rounds = args.rounds

    impls = implementations()
    print(f"Python {platform.python_version()}, start method "
          f"{mp.get_start_method()}, {WORKERS} workers, {os.cpu_count()} CPUs, "
          f"{rounds} rounds, median; implementations: "
          f"{', '.join(i.name for i in impls)}", flush=True)
    results = {i.name: {} for i in impls}
    for r in range(rounds):
        order = impls if r % 2 == 0 else impls[::-1]
        for impl in order:
            run_round(impl, sizes, results[impl.name])
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)

    cases = [("map1", f"map {sizes['map1']:,} items, chunksize=1"),
             ("submit", f"submit {sizes['submit']:,}, wait each"),
             ("chunked", f"map {sizes['chunked']:,} items, chunksize=1000"),
             ("startup", "start + first result + shutdown"),
             ("payload", f"{sizes['payload']} tasks, 1 MB in and out")]
    header = ["case"] + [i.name for i in impls]
    rows = []
    for key, label in cases:
        base = statistics.median(results["stdlib"][key])
        row = [label]
        for impl in impls:
            t = statistics.median(results[impl.name][key])
            cell = f"{t * 1000:9.1f} ms"
            if impl.name != "stdlib":
                cell += f" ({base / t:5.2f}x)"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header])
              for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
