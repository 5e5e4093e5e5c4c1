"""The main job: every side-by-side benchmark against the stdlib, in turn.

    python3 benchmarks/run.py            # full run
    python3 benchmarks/run.py --quick    # fewer rounds, smaller sizes

Each bench_*.py script measures cfutures and concurrent.futures
alternately in one process and prints per-operation cost and the ratio
(stdlib / cfutures; higher is better for cfutures).
"""
import os
import subprocess
import sys
import time

ORDER = ["bench_futures.py", "bench_thread.py", "bench_process.py",
         "bench_interpreter.py"]


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    scripts = [s for s in ORDER if os.path.exists(os.path.join(here, s))]
    scripts += sorted(s for s in os.listdir(here)
                      if s.startswith("bench_") and s.endswith(".py")
                      and s not in ORDER)
    print("cfutures benchmarks on Python %s, %d CPUs"
          % (sys.version.split()[0], os.cpu_count() or 1), flush=True)
    failed = []
    for script in scripts:
        print("\n### %s\n" % script, flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, os.path.join(here, script)]
                             + argv)
        print("(%s: %.0f s)" % (script, time.monotonic() - t0), flush=True)
        if rc != 0:
            failed.append(script)
    if failed:
        print("\nbenchmark scripts that failed to run: %s" % ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
