# Checked by tests/test_typing.py with `mypy --strict`, once as is (the
# stdlib) and once with the import below changed to `import cfutures as cf`:
# the revealed types must be the same (module names aside), and those
# marked `# cfutures:` exactly that with cfutures.
import concurrent.futures as cf
import multiprocessing
from collections.abc import Iterator


def square(x: int) -> int:
    return x * x


def greet(name: str, punct: str = "!") -> str:
    return "hi " + name + punct


def init(a: int, b: str) -> None:
    pass


def run() -> None:
    with cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="t") as ex:
        reveal_type(ex)  # cfutures: cfutures.thread.ThreadPoolExecutor
        f = ex.submit(square, 3)
        reveal_type(f)  # cfutures: cfutures._base.Future[int]
        reveal_type(f.result())
        reveal_type(f.result(timeout=1.0))
        reveal_type(f.exception())
        reveal_type(ex.submit(greet, "x", punct="?"))
        reveal_type(ex.map(square, [1, 2]))
        reveal_type(ex.map(greet, ["a"], ["b"], timeout=2))
        fs = [ex.submit(square, i) for i in range(3)]
        reveal_type(cf.as_completed(fs))
        reveal_type(cf.as_completed(fs, timeout=1))
        done = cf.wait(fs, timeout=1, return_when=cf.FIRST_COMPLETED)
        reveal_type(done)  # cfutures: tuple[set[concurrent.futures._base.Future[int]], set[concurrent.futures._base.Future[int]], fallback=concurrent.futures._base.DoneAndNotDoneFutures[int]]
        reveal_type(done.done)
        reveal_type(done.not_done)
        it: Iterator[int] = ex.map(square, range(3))
        reveal_type(it)
        f.add_done_callback(lambda fut: reveal_type(fut))
        reveal_type(f.cancel())
        reveal_type(ex.shutdown(wait=False, cancel_futures=True))
    with cf.ProcessPoolExecutor(2, multiprocessing.get_context("spawn"), init, (1, "a")) as pex:
        reveal_type(pex)  # cfutures: cfutures.process.ProcessPoolExecutor
        reveal_type(pex.submit(square, 2))  # cfutures: cfutures._base.Future[int]
        reveal_type(pex.map(square, [1], chunksize=4))
    pex2 = cf.ProcessPoolExecutor(initializer=init, initargs=(1, "a"))
    reveal_type(pex2)
    t = cf.ThreadPoolExecutor(None, "", init, (1, "b"))
    reveal_type(t)
    fut: cf.Future[str] = cf.Future()
    reveal_type(fut)  # cfutures: cfutures._base.Future[str]
    fut.set_result("x")
    reveal_type(cf.wait([fut]).done)  # cfutures: set[concurrent.futures._base.Future[str]]
    e: cf.Executor = t
    reveal_type(e.submit(square, 1))
    reveal_type(cf.CancelledError())
    reveal_type(cf.ALL_COMPLETED)
