"""A task of a 1-worker thread pool starts a multiprocessing fork Process
(bpo-43944; CPython's test_process_fork_from_a_threadpool).  The child runs
threading._shutdown(), and so the pool's exit hook, on the forking worker's
own thread: it must exit 0.  argv[1]: module name."""
import importlib
import multiprocessing as mp
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
mod = importlib.import_module(sys.argv[1])


def start_and_join():
    p = mp.get_context("fork").Process(target=int)
    p.start()
    p.join()
    return p.exitcode


with mod.ThreadPoolExecutor(1) as pool:
    print("EXITCODE", pool.submit(start_and_join).result(timeout=60))
