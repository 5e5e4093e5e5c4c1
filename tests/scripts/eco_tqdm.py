"""tqdm's thread_map and process_map (tqdm.contrib.concurrent, built on
concurrent.futures): progress bars without timings, results, and whether
the stdlib's executors ran the calls (frames of concurrent/futures/ on the
worker's stack) on the last line.

    python eco_tqdm.py N             # N items per map
"""
import hashlib
import io
import os
import sys
import threading

from tqdm.contrib.concurrent import process_map, thread_map

STD_DIR = os.path.join("concurrent", "futures") + os.sep


def _stdlib_frames():
    f = sys._getframe(2)
    while f is not None:
        if STD_DIR in f.f_code.co_filename:
            return True
        f = f.f_back
    return False


def work(i):
    digest = hashlib.sha256(str(i).encode()).hexdigest()[:8]
    return digest, _stdlib_frames(), threading.current_thread().name.split("_")[0]


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    # Each bar's final state (its intermediate refreshes depend on timing:
    # tqdm skips one while its lock is busy).
    bars = []

    def bar():
        bars.append(io.StringIO())
        return dict(file=bars[-1], ascii=True, ncols=70,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}")

    t = thread_map(work, range(n), max_workers=4, desc="thread_map", **bar())
    p = process_map(work, range(n), max_workers=2, chunksize=1,
                    desc="process_map", **bar())
    for b in bars:
        print(b.getvalue().rstrip().rsplit("\r", 1)[-1])
    print([d for d, _, _ in t] == [d for d, _, _ in p], [d for d, _, _ in t[:3]], len(t), len(p))
    print(sorted({name for _, _, name in t}))
    print("stdlib executors:", any(s for _, s, _ in t), any(s for _, s, _ in p))
