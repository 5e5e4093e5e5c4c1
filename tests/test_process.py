"""ProcessPoolExecutor: cfutures against the stdlib (the reference answer).

Most tests use the fork context (cheap on 2 cores); the start method is
varied only where it matters.  Crash, Ctrl-C and interpreter-exit
scenarios run as scripts in a subprocess.  Timeouts bound hangs; nothing
asserts on speed.
"""
import concurrent.futures
import concurrent.futures.process as std_process
import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import process_helpers as h

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY311 = sys.version_info >= (3, 11)
FORK = mp.get_context("fork")
LONG = 30


@pytest.fixture(params=["stdlib", "cfutures"])
def impl(request):
    """The module under test: concurrent.futures or cfutures."""
    if request.param == "stdlib":
        return concurrent.futures
    import cfutures
    return cfutures


def is_cf(mod):
    return mod.__name__ == "cfutures"


def pool(mod, n=2, **kw):
    kw.setdefault("mp_context", FORK)
    return mod.ProcessPoolExecutor(n, **kw)


def run_script(body, mod, timeout=60, extra_env=None):
    """Run `body` in a fresh interpreter with `mod` imported as M (the same
    cfutures as this process: in-place build or installed package)."""
    import cfutures
    cf_root = os.path.dirname(os.path.dirname(os.path.abspath(
        cfutures.__file__)))
    paths = [cf_root, HERE]
    code = (f"import sys\nsys.path[:0] = {paths!r}\n"
            f"import {mod.__name__} as M\n" + textwrap.dedent(body))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    if extra_env:
        env.update(extra_env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


# ------------------------------------------------------------ layout


def test_names_and_classes():
    import cfutures
    import cfutures.process
    assert cfutures.ProcessPoolExecutor is cfutures.process.ProcessPoolExecutor
    assert cfutures.process.BrokenProcessPool is std_process.BrokenProcessPool
    with cfutures.ProcessPoolExecutor(1, mp_context=FORK) as ex:
        assert isinstance(ex, concurrent.futures.ProcessPoolExecutor)
        assert isinstance(ex, cfutures.Executor)
        f = ex.submit(h.sq, 3)
        assert isinstance(f, concurrent.futures.Future)
        assert f.result(timeout=LONG) == 9
    # no stdlib machinery was set up (_executor_manager_thread is the
    # dispatcher, None after shutdown as the stdlib's)
    assert ex._executor_manager_thread is None
    assert not hasattr(ex, "_call_queue")


def test_default_context_and_workers(impl):
    ex = impl.ProcessPoolExecutor()
    try:
        assert ex._mp_context is mp.get_context()
        cpus = (os.process_cpu_count() if hasattr(os, "process_cpu_count")
                else os.cpu_count())
        assert ex._max_workers == cpus
    finally:
        ex.shutdown()


# ------------------------------------------------------ argument errors


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(max_workers=0), ValueError, "max_workers must be greater than 0"),
    (dict(max_workers=-1), ValueError, "max_workers must be greater than 0"),
    (dict(initializer=5), TypeError, "initializer must be a callable"),
])
def test_argument_errors(impl, kwargs, exc, msg):
    with pytest.raises(exc) as info:
        impl.ProcessPoolExecutor(mp_context=FORK, **kwargs)
    assert str(info.value) == msg


@pytest.mark.skipif(not PY311, reason="stdlib has max_tasks_per_child from 3.11")
@pytest.mark.parametrize("value, ctx, exc, msg", [
    (0, "spawn", ValueError, "max_tasks_per_child must be >= 1"),
    ("3", "spawn", TypeError, "max_tasks_per_child must be an integer"),
    (2, "fork", ValueError,
     "max_tasks_per_child is incompatible with the 'fork' multiprocessing "
     "start method; supply a different mp_context."),
])
def test_max_tasks_per_child_errors(impl, value, ctx, exc, msg):
    with pytest.raises(exc) as info:
        impl.ProcessPoolExecutor(1, mp_context=mp.get_context(ctx),
                                 max_tasks_per_child=value)
    assert str(info.value) == msg


@pytest.mark.skipif(not PY311, reason="stdlib has max_tasks_per_child from 3.11")
def test_max_tasks_per_child_defaults_to_spawn(impl):
    ex = impl.ProcessPoolExecutor(1, max_tasks_per_child=3)
    try:
        assert ex._mp_context.get_start_method() == "spawn"
    finally:
        ex.shutdown()


def test_map_chunksize_error(impl):
    with pool(impl) as ex:
        with pytest.raises(ValueError, match=r"chunksize must be >= 1\."):
            ex.map(h.sq, [1], chunksize=0)


# ------------------------------------------------------------- basics


@pytest.mark.timeout(60)
def test_submit_args_kwargs(impl):
    with pool(impl) as ex:
        assert ex.submit(h.sq, 5).result(timeout=LONG) == 25
        assert ex.submit(h.add, 1, 2, c=3).result(timeout=LONG) == 6
        assert ex.submit(h.add, a=1).result(timeout=LONG) == 1
        with pytest.raises(TypeError):
            ex.submit()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunksize", [1, 3, 100])
def test_map_in_order(impl, chunksize):
    with pool(impl) as ex:
        assert list(ex.map(h.sq, range(50), chunksize=chunksize)) == \
            [x * x for x in range(50)]
        assert list(ex.map(h.add, range(5), range(10, 20),
                           chunksize=chunksize)) == [10 + 2 * i for i in range(5)]
        assert list(ex.map(h.sq, [], chunksize=chunksize)) == []


@pytest.mark.timeout(60)
def test_chunked_map_close_and_references(impl):
    with pool(impl) as ex:
        it = ex.map(h.sq, range(100), chunksize=10)
        assert next(it) == 0
        it.close()
        with pytest.raises(StopIteration):
            next(it)
        objs = list(ex.map(h.identity, [[i] for i in range(30)], chunksize=7))
        assert objs == [[i] for i in range(30)]


@pytest.mark.timeout(60)
def test_map_timeout(impl):
    with pool(impl) as ex:
        # started first: the timeout runs from map(), and a fork under
        # AddressSanitizer on a loaded machine took more than 0.5 s (CI)
        assert ex.submit(h.sq, 2).result(timeout=LONG) == 4
        it = ex.map(h.slow, [0.0, 3.0], timeout=2.0)
        assert next(it) == 0.0
        with pytest.raises(concurrent.futures.TimeoutError):
            next(it)


@pytest.mark.timeout(60)
def test_result_not_held_behind_next_task(impl):
    # One worker, a quick task then a long one (both may sit in its pipe):
    # the quick result must arrive while the long one runs.
    with pool(impl, n=1) as ex:
        ex.submit(h.sq, 1).result(timeout=LONG)
        quick = ex.submit(h.slow, 0.0, "quick")
        long_ = ex.submit(h.slow, 1.5)
        assert quick.result(timeout=1.0) == "quick"
        assert not long_.done()
        long_.cancel()


@pytest.mark.timeout(60)
def test_map_error_propagates(impl):
    with pool(impl) as ex:
        it = ex.map(h.raise_value_error, ["a"], chunksize=2)
        with pytest.raises(ValueError, match="a"):
            list(it)


@pytest.mark.timeout(60)
def test_map_buffersize():
    import cfutures
    with pool(cfutures) as ex:
        it = ex.map(h.sq, range(100), buffersize=4)
        assert list(it) == [x * x for x in range(100)]
        it = ex.map(h.sq, range(100), chunksize=7, buffersize=2)
        assert list(it) == [x * x for x in range(100)]
        with pytest.raises(ValueError, match="buffersize must be None or > 0"):
            ex.map(h.sq, range(3), buffersize=0)
        with pytest.raises(TypeError):
            ex.map(h.sq, range(3), buffersize=1.5)


@pytest.mark.timeout(60)
def test_map_buffersize_is_lazy():
    import cfutures

    def gen():
        for i in range(1000):
            consumed.append(i)
            yield i

    consumed = []
    with pool(cfutures) as ex:
        it = ex.map(h.sq, gen(), buffersize=3)
        assert next(it) == 0
        assert len(consumed) <= 5
        it.close()


@pytest.mark.timeout(60)
def test_large_payloads(impl):
    blob = os.urandom(3 * 1024 * 1024)
    with pool(impl) as ex:
        fs = [ex.submit(h.echo_bytes, blob) for _ in range(3)]
        assert all(f.result(timeout=LONG) == blob for f in fs)


@pytest.mark.timeout(60)
def test_many_small_tasks_and_as_completed(impl):
    with pool(impl) as ex:
        fs = [ex.submit(h.sq, i) for i in range(2000)]
        done = {f.result() for f in impl.as_completed(fs, timeout=LONG)}
        assert done == {i * i for i in range(2000)}


@pytest.mark.timeout(60)
def test_callbacks_run_and_may_submit(impl):
    results = []
    evt = threading.Event()
    with pool(impl) as ex:
        def cb(f):
            results.append(f.result())
            if len(results) == 1:
                g = ex.submit(h.sq, 4)
                g.add_done_callback(lambda g: (results.append(g.result()),
                                               evt.set()))
        ex.submit(h.sq, 3).add_done_callback(cb)
        assert evt.wait(LONG)
    assert results == [9, 16]


@pytest.mark.timeout(60)
def test_cancel_pending(impl):
    with pool(impl) as ex:
        fs = [ex.submit(h.slow, 0.3) for _ in range(12)]
        assert fs[-1].cancel()
        assert fs[-1].cancelled()
        assert not fs[0].cancel() or fs[0].cancelled()
        for f in fs[:-1]:
            if not f.cancelled():
                assert f.result(timeout=LONG) == 0.3


# ------------------------------------------------------ errors on futures


@pytest.mark.timeout(60)
def test_task_exception_has_remote_traceback(impl):
    with pool(impl) as ex:
        f = ex.submit(h.raise_value_error, "bad thing")
        exc = f.exception(timeout=LONG)
        assert type(exc) is ValueError and str(exc) == "bad thing"
        cause = exc.__cause__
        assert type(cause) is std_process._RemoteTraceback
        assert 'raise ValueError(msg)' in str(cause)
        assert str(cause).startswith('\n"""\nTraceback')
        with pytest.raises(ValueError):
            f.result()
        assert ex.submit(h.sq, 2).result(timeout=LONG) == 4


@pytest.mark.timeout(60)
def test_base_exception_from_task(impl):
    with pool(impl) as ex:
        exc = ex.submit(h.raise_keyboard_interrupt).exception(timeout=LONG)
        assert type(exc) is KeyboardInterrupt
        assert ex.submit(h.sq, 2).result(timeout=LONG) == 4


@pytest.mark.timeout(60)
def test_unpicklable_argument(impl):
    with pool(impl) as ex:
        f = ex.submit(h.identity, threading.Lock())
        exc = f.exception(timeout=LONG)
        assert isinstance(exc, TypeError)
        assert type(exc.__cause__) is std_process._RemoteTraceback
        assert ex.submit(h.sq, 3).result(timeout=LONG) == 9


@pytest.mark.timeout(60)
def test_unpicklable_function(impl):
    with pool(impl) as ex:
        f = ex.submit(lambda: 1)
        exc = f.exception(timeout=LONG)
        assert isinstance(exc, (AttributeError, TypeError,
                                __import__("pickle").PicklingError))
        assert ex.submit(h.sq, 3).result(timeout=LONG) == 9


@pytest.mark.timeout(60)
def test_unpicklable_result(impl):
    with pool(impl) as ex:
        exc = ex.submit(h.return_unpicklable).exception(timeout=LONG)
        assert type(exc) is TypeError
        assert "cannot be pickled" in str(exc)
        assert type(exc.__cause__) is std_process._RemoteTraceback
        assert ex.submit(h.sq, 3).result(timeout=LONG) == 9


@pytest.mark.timeout(60)
def test_unrebuildable_exception_stays_on_future():
    # The stdlib breaks the whole pool here; cfutures fails only the future.
    import cfutures
    with pool(cfutures) as ex:
        exc = ex.submit(h.raise_unrebuildable).exception(timeout=LONG)
        assert isinstance(exc, TypeError)
        assert ex.submit(h.sq, 3).result(timeout=LONG) == 9


@pytest.mark.timeout(60)
def test_task_unpickling_error_stays_on_future(tmp_path):
    # A function the worker cannot import: the stdlib's worker dies (and
    # the pool breaks); cfutures reports it on the future.
    import cfutures
    mod = tmp_path / "vanishing_mod.py"
    mod.write_text("def f():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import vanishing_mod
        ctx = mp.get_context("forkserver")
        with cfutures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
            assert ex.submit(h.sq, 2).result(timeout=LONG) == 4
            mod.unlink()
            exc = ex.submit(vanishing_mod.f).exception(timeout=LONG)
            assert isinstance(exc, ImportError)
            assert ex.submit(h.sq, 3).result(timeout=LONG) == 9
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_mod", None)


# ------------------------------------------------------------ lifecycle


@pytest.mark.timeout(60)
def test_initializer(impl):
    with pool(impl, initializer=h.set_init_value, initargs=("ready",)) as ex:
        assert set(ex.map(h.get_init_value, range(8))) == {"ready"}


@pytest.mark.timeout(60)
def test_initializer_failure_breaks_pool(impl):
    ex = pool(impl, initializer=h.failing_initializer)
    try:
        f = ex.submit(h.sq, 2)
        with pytest.raises(std_process.BrokenProcessPool):
            f.result(timeout=LONG)
        deadline = time.monotonic() + LONG
        while True:
            try:
                ex.submit(h.sq, 2)
            except std_process.BrokenProcessPool as e:
                assert str(e) == ("A child process terminated abruptly, the "
                                  "process pool is not usable anymore")
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        ex.shutdown()


@pytest.mark.timeout(60)
def test_shutdown_then_submit(impl):
    ex = pool(impl)
    ex.submit(h.sq, 1).result(timeout=LONG)
    ex.shutdown()
    with pytest.raises(RuntimeError,
                       match="cannot schedule new futures after shutdown"):
        ex.submit(h.sq, 1)
    ex.shutdown()           # idempotent
    ex2 = pool(impl)
    ex2.shutdown()          # never started
    with pytest.raises(RuntimeError):
        ex2.submit(h.sq, 1)


@pytest.mark.timeout(60)
def test_shutdown_wait_false_finishes_work(impl):
    ex = pool(impl)
    fs = [ex.submit(h.slow, 0.05, i) for i in range(10)]
    ex.shutdown(wait=False)
    assert [f.result(timeout=LONG) for f in fs] == list(range(10))


@pytest.mark.timeout(60)
def test_shutdown_cancel_futures(impl):
    ex = pool(impl)
    fs = [ex.submit(h.slow, 0.2) for _ in range(20)]
    time.sleep(0.1)
    ex.shutdown(wait=True, cancel_futures=True)
    cancelled = [f for f in fs if f.cancelled()]
    finished = [f for f in fs if not f.cancelled()]
    assert cancelled, "some pending futures must be cancelled"
    assert all(f.done() and f.result() == 0.2 for f in finished)


@pytest.mark.timeout(60)
def test_no_processes_after_shutdown(impl):
    ex = pool(impl)
    pids = set(ex.map(h.getpid, range(20)))
    ex.shutdown(wait=True)
    alive = {p for p, _ in h.child_pids()}
    assert not (pids & alive)


@pytest.mark.timeout(60)
def test_executor_dropped_without_shutdown(impl):
    ex = pool(impl)
    pids = set(ex.map(h.getpid, range(10)))
    del ex
    gc.collect()
    deadline = time.monotonic() + LONG
    while pids & {p for p, _ in h.child_pids()}:
        assert time.monotonic() < deadline, "workers outlived the executor"
        time.sleep(0.05)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_start_methods(impl, method):
    ctx = mp.get_context(method)
    with impl.ProcessPoolExecutor(2, mp_context=ctx,
                                  initializer=h.set_init_value,
                                  initargs=(method,)) as ex:
        assert list(ex.map(h.sq, range(20))) == [x * x for x in range(20)]
        assert ex.submit(h.get_init_value).result(timeout=LONG) == method


@pytest.mark.timeout(120)
@pytest.mark.skipif(not PY311, reason="stdlib has max_tasks_per_child from 3.11")
def test_max_tasks_per_child(impl):
    ctx = mp.get_context("forkserver")
    with impl.ProcessPoolExecutor(1, mp_context=ctx,
                                  max_tasks_per_child=2) as ex:
        pids = [ex.submit(h.getpid).result(timeout=LONG) for _ in range(6)]
    assert len(set(pids)) == 3
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]


@pytest.mark.timeout(120)
def test_max_tasks_per_child_no_hang_with_queued_work():
    # The stdlib (3.11/3.12) can hang here: work queued behind retiring
    # workers must be run by their replacements.
    import cfutures
    ctx = mp.get_context("forkserver")
    with cfutures.ProcessPoolExecutor(2, mp_context=ctx,
                                      max_tasks_per_child=3) as ex:
        assert list(ex.map(h.sq, range(40))) == [x * x for x in range(40)]
        fs = [ex.submit(h.getpid) for _ in range(30)]
        pids = [f.result(timeout=LONG) for f in fs]
    assert len(set(pids)) >= 10
    from collections import Counter
    assert max(Counter(pids).values()) <= 3


@pytest.mark.timeout(60)
def test_terminate_and_kill_workers(impl):
    if not hasattr(impl.ProcessPoolExecutor, "kill_workers"):
        pytest.skip("stdlib has terminate_workers/kill_workers from 3.14")
    for method in ("terminate_workers", "kill_workers"):
        ex = pool(impl)
        fs = [ex.submit(h.slow, 5) for _ in range(6)]
        time.sleep(0.3)
        getattr(ex, method)()
        for f in fs:
            assert f.cancelled() or isinstance(
                f.exception(timeout=LONG), std_process.BrokenProcessPool)
        with pytest.raises((RuntimeError, std_process.BrokenProcessPool)):
            ex.submit(h.sq, 1)
        ex.shutdown()


@pytest.mark.timeout(60)
def test_forked_child_cannot_use_parent_pool():
    import cfutures
    with pool(cfutures) as ex:
        assert ex.submit(h.sq, 2).result(timeout=LONG) == 4
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ex.submit(h.sq, 2)
            except RuntimeError:
                code = 0
            os._exit(code)
        os.close(w)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        assert ex.submit(h.sq, 3).result(timeout=LONG) == 9


# ------------------------------------------------- crashes (subprocess)

CRASH_SCRIPT = """
import os, signal, time, multiprocessing as mp
import process_helpers as h
from concurrent.futures.process import BrokenProcessPool
PHASE = {phase!r}
ex = M.ProcessPoolExecutor(2, mp_context=mp.get_context({method!r}))
assert ex.submit(h.sq, 2).result(timeout=30) == 4
t0 = time.monotonic()
if PHASE == "idle":
    # before reading a task: an idle worker dies
    os.kill(next(iter(ex._processes)), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        try:
            f = ex.submit(h.slow, 0.01)
        except BrokenProcessPool as e:
            print("SUBMIT-BROKEN", e)
            break
        try:
            f.result(timeout=10)
        except BrokenProcessPool:
            pass
        if time.monotonic() > deadline:
            print("NOT-BROKEN"); break
        time.sleep(0.02)
else:
    pending = [ex.submit(h.slow, 0.2) for _ in range(6)]
    if PHASE == "exit":
        f = ex.submit(h.exit_now, 3)
    elif PHASE == "sigkill":
        f = ex.submit(h.sigkill_self)
    elif PHASE == "segv":
        f = ex.submit(h.segfault)
    elif PHASE == "result":
        f = ex.submit(h.kill_self_soon_then_return_big, 0.02, 64 * 2**20)
    try:
        f.result(timeout=30)
        print("NO-ERROR")
    except BrokenProcessPool as e:
        print("FUTURE-BROKEN", e)
    outcomes = set()
    for p in pending:
        try:
            p.result(timeout=30); outcomes.add("ok")
        except BrokenProcessPool:
            outcomes.add("broken")
    print("PENDING", sorted(outcomes))
    try:
        ex.submit(h.sq, 1)
        print("SUBMIT-OK")
    except BrokenProcessPool as e:
        print("SUBMIT-BROKEN", e)
ex.shutdown(wait=True)
print("CHILDREN", len(h.stray_children()))
print("END")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("phase", ["idle", "exit", "sigkill", "segv", "result"])
def test_worker_crash(impl, phase):
    r = run_script(CRASH_SCRIPT.format(phase=phase, method="fork"), impl)
    out = r.stdout
    assert "END" in out, (out, r.stderr[-2000:])
    assert "SUBMIT-BROKEN A child process terminated abruptly, the process " \
           "pool is not usable anymore" in out
    if phase != "idle":
        assert "FUTURE-BROKEN A process in the process pool was terminated " \
               "abruptly while the future was running or pending." in out
    # no worker left (multiprocessing's resource tracker is not counted)
    assert "CHILDREN 0" in out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_worker_crash_other_start_methods(impl, method):
    r = run_script(CRASH_SCRIPT.format(phase="sigkill", method=method), impl)
    assert "FUTURE-BROKEN" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert "END" in r.stdout


CTRL_C_SCRIPT = """
import os, signal, threading, time, multiprocessing as mp
import process_helpers as h
ex = M.ProcessPoolExecutor(1, mp_context=mp.get_context("fork"))
assert ex.submit(h.sq, 2).result(timeout=30) == 4
f = ex.submit(h.slow, 20)
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    f.result()
    print("NO-INTERRUPT")
except KeyboardInterrupt:
    print("INTERRUPTED", "done" if f.done() else "not-done")
for p in list(ex._processes.values()):
    p.kill()
ex.shutdown(wait=True)
print("END")
"""


@pytest.mark.timeout(60)
def test_ctrl_c_while_waiting(impl):
    r = run_script(CTRL_C_SCRIPT, impl)
    assert "INTERRUPTED not-done" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert "END" in r.stdout


EXIT_SCRIPT = """
import multiprocessing as mp
import process_helpers as h
ex = M.ProcessPoolExecutor(2, mp_context=mp.get_context({method!r}))
for i in range(20):
    ex.submit(h.slow, 0.01)
ex.submit(h.append_line, {path!r}, "last")
print("LEAVING")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_interpreter_exit_runs_pending_work(impl, tmp_path, method):
    path = str(tmp_path / "out.txt")
    r = run_script(EXIT_SCRIPT.format(path=path, method=method), impl)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "LEAVING" in r.stdout
    with open(path) as f:
        assert f.read() == "last\n"


LEAK_SCRIPT = """
import gc, os, multiprocessing as mp
import process_helpers as h
from concurrent.futures.process import BrokenProcessPool
ctx = mp.get_context("fork")
def cycle(i):
    ex = M.ProcessPoolExecutor(2, mp_context=ctx)
    assert list(ex.map(h.sq, range(20))) == [x * x for x in range(20)]
    if i % 3 == 1:
        try:
            ex.submit(h.exit_now).result(timeout=30)
        except BrokenProcessPool:
            pass
    ex.shutdown(wait=True)
for i in range(3):
    cycle(i)
gc.collect()
fds0 = h.fd_count()
for i in range(24):
    cycle(i)
gc.collect()
print("FDS", fds0, h.fd_count())
print("CHILDREN", len(h.stray_children()))
"""


@pytest.mark.timeout(180)
def test_no_leaks_over_many_lifecycles(impl):
    r = run_script(LEAK_SCRIPT, impl, timeout=170)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "FDS" in lines, (r.stdout, r.stderr[-2000:])
    before, after = map(int, lines["FDS"].split())
    assert after <= before
    assert int(lines["CHILDREN"]) == 0      # the resource tracker is not counted


@pytest.mark.timeout(60)
def test_long_tasks_do_not_wait_behind_a_busy_worker(impl):
    """Once tasks are known to be long, the next one goes to the worker that
    frees up first, as with the stdlib's shared queue: C (queued after A and
    B) runs where B ran, not behind A."""
    with pool(impl, 2) as ex:
        list(ex.map(h.slow, [0.01] * 8))        # task times now measured
        a = ex.submit(h.pid_after, 0.5)
        b = ex.submit(h.pid_after, 0.05)
        c = ex.submit(h.pid_after, 0.05)
        pa, pb, pc = (f.result(timeout=30) for f in (a, b, c))
    assert pa != pb
    assert pc == pb
