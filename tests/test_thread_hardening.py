"""ThreadPoolExecutor under fork, garbage collection, races and exotic input
(issue 8: defects 5, 6, the thread-pool part of 9, initargs, Ctrl-C).

Behavioural tests run through the ``impl`` fixture; the stdlib is the
reference.  Fork, exit and signal scenarios run as scripts in tests/scripts/
in a subprocess with a timeout; the tests assert markers, never timings.
"""

import concurrent.futures
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest

from conftest import LONG
from test_thread import SCRIPTS, is_std, join_all, module_env, run_script

STD = concurrent.futures
BROKEN_MSG = "A thread initializer failed, the thread pool is not usable anymore"
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


# ---------------------------------------------------------------------------
# Defect 5: a task (or initializer) that forks
# ---------------------------------------------------------------------------


@needs_fork
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["return", "inside", "initializer"])
def test_fork_inside_a_task(impl, mode):
    # In the child the forking worker's task goes on (its future still
    # running, then completed by its return), the child can use a new
    # executor and (cfutures) the inherited one; the parent gets its result.
    submit = "none" if is_std(impl) else "inherited"
    proc = run_script("thread_fork_in_task.py", impl.__name__, mode, submit, timeout=100)
    lines = proc.stdout.splitlines()
    assert [line for line in lines if line.startswith("child")][:1] \
        and all(line.startswith("child OK") for line in lines if line.startswith("child")), \
        (proc.stdout, proc.stderr)
    assert "parent OK" in lines, (proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "Error" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------
# Defect 6: fork while pools are in use must not deadlock
# ---------------------------------------------------------------------------


@needs_fork
@pytest.mark.timeout(150)
def test_fork_stress_while_pools_are_used(impl):
    proc = run_script("thread_fork_stress.py", impl.__name__, 200, timeout=120)
    lines = proc.stdout.splitlines()
    assert "forked 200" in lines, (proc.stdout, proc.stderr)
    assert lines[-1:] == ["OK"], (proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr


@needs_fork
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="forks under AddressSanitizer are too slow for "
                           "this many")
@pytest.mark.timeout(300)
def test_fork_child_submits_to_an_inherited_pool(cf):
    # A pool's start lock, held at the fork by a thread still waiting for
    # the GIL (its owner not yet recorded), blocked the child's submit()
    # for ever (7 of 60 children before the fix).  (The bound is for slow
    # forks under a sanitizer, not a timing.)
    proc = run_script("thread_fork_start_lock.py", cf.__name__, 80,
                      timeout=270)
    assert proc.stdout.strip() == "bad children: 0 of 80", (
        proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------------------
# Defect 9: reference cycles through initializer / initargs
# ---------------------------------------------------------------------------


class _CallableHolder:
    def __call__(self, *args):
        pass


def _make_cycle(mod, through):
    """An executor in a cycle through its initializer or its initargs."""
    if through == "initializer":
        init = _CallableHolder()
        ex = mod.ThreadPoolExecutor(max_workers=2, initializer=init)
        init.executor = ex
    else:
        box = []
        ex = mod.ThreadPoolExecutor(max_workers=2, initializer=_CallableHolder(),
                                    initargs=(box,))
        box.append(ex)
    return ex


def _collect_until(ref, rounds=10):
    for _ in range(rounds):
        gc.collect()
        if ref() is None:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("through", ["initializer", "initargs"])
def test_cycle_through_initializer_is_collected(impl, through):
    ex = _make_cycle(impl, through)
    ref = weakref.ref(ex)
    del ex
    assert _collect_until(ref)


@pytest.mark.parametrize("through", ["initializer", "initargs"])
def test_cycle_through_initializer_with_idle_workers_is_collected(cf, through):
    # The stdlib never collects this one (each worker's frame holds the
    # initializer, hence the executor, for ever; README "What differs"):
    # cfutures' workers hold the initializer only while they call it.
    ex = _make_cycle(cf, through)
    assert ex.submit(pow, 2, 5).result(timeout=LONG) == 32
    workers = list(ex._threads)
    ref = weakref.ref(ex)
    del ex
    assert _collect_until(ref)
    assert not join_all(workers), "idle workers of a collected executor still alive"


def test_initializer_runs_although_the_executor_is_collected_first(impl):
    # A worker started for a submit whose executor is then collected (in a
    # cycle) still runs its initializer before the task.
    ran = []
    started = threading.Event()
    gate = threading.Event()

    class Init:
        def __call__(self):
            started.set()
            gate.wait(LONG)
            ran.append("init")

    init = Init()
    ex = impl.ThreadPoolExecutor(max_workers=1, initializer=init)
    init.executor = ex
    f = ex.submit(ran.append, "task")
    assert started.wait(LONG)
    workers = list(ex._threads)
    del ex, init
    gc.collect()
    gate.set()
    assert f.result(timeout=LONG) is None
    assert ran == ["init", "task"]
    if not is_std(impl):
        # (the stdlib's workers keep such an executor alive for ever)
        gc.collect()
        assert not join_all(workers)


# ---------------------------------------------------------------------------
# Defect 9: submit() racing shutdown() must never lose a future
# ---------------------------------------------------------------------------


def _noop():
    return 9


@pytest.mark.timeout(120)
def test_submit_interleaved_with_a_whole_shutdown_loses_nothing(impl):
    # On 3.10/3.11 the future's allocation inside submit() can run the GC,
    # hence Python code (a gc callback here, a __del__ in real programs)
    # that lets other threads run: shutdown(wait=True) then completes in
    # the middle of submit().  The item must then be refused or run.
    fired = []
    state = {"in_submit": False, "submitter": None}
    in_window = threading.Event()
    shut = threading.Event()

    def callback(phase, info):
        if (phase == "start" and state["in_submit"] and not in_window.is_set()
                and threading.current_thread() is state["submitter"]):
            in_window.set()
            fired.append(True)
            shut.wait(2)        # the stdlib holds its lock here: bounded

    outcomes = []

    def submitter(ex):
        for _ in range(200):
            state["in_submit"] = True
            try:
                f = ex.submit(_noop)
            except RuntimeError as e:
                outcomes.append(e)
                return
            finally:
                state["in_submit"] = False
            outcomes.append(f)
        in_window.set()         # the collection never came inside submit()

    old = gc.get_threshold()
    gc.callbacks.append(callback)
    try:
        for _ in range(3):
            in_window.clear()
            shut.clear()
            del outcomes[:]
            ex = impl.ThreadPoolExecutor(max_workers=1)
            assert ex.submit(pow, 2, 2).result(timeout=LONG) == 4   # all threads exist
            t = threading.Thread(target=submitter, args=(ex,))
            state["submitter"] = t
            gc.collect()
            gc.set_threshold(1)
            t.start()
            assert in_window.wait(LONG)
            ex.shutdown(wait=True)
            shut.set()
            t.join(LONG)
            gc.set_threshold(*old)
            assert not t.is_alive()
            futures = [o for o in outcomes if not isinstance(o, Exception)]
            errors = [o for o in outcomes if isinstance(o, Exception)]
            assert [str(e) for e in errors] in ([], ["cannot schedule new futures after shutdown"])
            done, not_done = impl.wait(futures, timeout=10)
            assert not not_done, "%d accepted futures were never run" % len(not_done)
            assert all(f.result() == 9 for f in futures)
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*old)
    if sys.version_info < (3, 12):
        assert fired, "the collection never happened inside submit()"


@pytest.mark.timeout(120)
def test_stress_submitters_racing_shutdown_with_gc_switches(impl):
    # Every collection in a submitter thread yields the GIL; three
    # submitters race shutdown(wait=True) on a full pool, 20 times.
    def callback(phase, info):
        if phase == "start" and threading.current_thread().name.startswith("submitter"):
            time.sleep(0.0002)

    old = gc.get_threshold()
    gc.callbacks.append(callback)
    try:
        for _ in range(20):
            ex = impl.ThreadPoolExecutor(max_workers=2)
            for f in [ex.submit(pow, 2, 2) for _ in range(4)]:
                f.result(timeout=LONG)
            accepted = []
            refused = []

            def submitter():
                for _ in range(5000):
                    try:
                        accepted.append(ex.submit(_noop))
                    except RuntimeError as e:
                        refused.append(str(e))
                        return

            threads = [threading.Thread(target=submitter, name="submitter-%d" % k)
                       for k in range(3)]
            gc.set_threshold(3)
            for t in threads:
                t.start()
            time.sleep(0.02)
            ex.shutdown(wait=True)
            assert not join_all(threads)
            gc.set_threshold(*old)
            assert set(refused) <= {"cannot schedule new futures after shutdown"}
            done, not_done = impl.wait(accepted, timeout=10)
            assert not not_done, "%d accepted futures were never run" % len(not_done)
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*old)


# ---------------------------------------------------------------------------
# Exotic input: initargs that is not a tuple
# ---------------------------------------------------------------------------


class _ExcCapture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        self.records.append((record.levelname, record.getMessage(),
                             type(exc).__name__ if exc else None, str(exc) if exc else None))


def _init_f(*args):
    pass


def _initargs_scenario(mod, initializer, initargs):
    logger = logging.getLogger("concurrent.futures")
    handler = _ExcCapture()
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        ex = mod.ThreadPoolExecutor(max_workers=1, initializer=initializer,
                                    initargs=initargs)
        f = ex.submit(pow, 2, 3)
        try:
            first = ("ok", f.result(timeout=LONG))
        except Exception as e:  # noqa: BLE001
            first = ("raise", type(e).__name__, str(e))
        try:
            ex.submit(pow, 2, 3).result(timeout=LONG)
            second = ("ok",)
        except Exception as e:  # noqa: BLE001
            second = ("raise", type(e).__name__, str(e))
        ex.shutdown(wait=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
    return first, second, handler.records


@pytest.mark.parametrize("initializer", [None, _init_f, _CallableHolder(), print],
                         ids=["none", "function", "callable-object", "builtin"])
def test_initargs_not_iterable(same, initializer):
    # The stdlib constructs it; with an initializer, the worker's
    # initializer(*initargs) fails: logged, the pool breaks.
    out = same(lambda mod: _initargs_scenario(mod, initializer, 5))
    if initializer is None:
        assert out == (("ok", 8), ("ok",), [])
    else:
        assert out[0] == ("raise", "BrokenThreadPool", BROKEN_MSG)
        assert out[2][0][:3] == ("CRITICAL", "Exception in initializer:", "TypeError")


def test_initargs_iterator_is_consumed_per_worker(same):
    # Each worker unpacks initargs itself: an iterator serves the first one.
    def scenario(mod):
        got = []
        lock = threading.Lock()
        gate = threading.Event()

        def init(*args):
            with lock:
                got.append(args)

        ex = mod.ThreadPoolExecutor(max_workers=2, initializer=init,
                                    initargs=iter([1, 2]))
        fs = [ex.submit(gate.wait, LONG) for _ in range(2)]
        time.sleep(0.05)
        gate.set()
        [f.result(timeout=LONG) for f in fs]
        ex.shutdown(wait=True)
        return sorted(got)

    assert same(scenario) == [(), (1, 2)]


# ---------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("busy", ["idle-task", "busy-task"])
@pytest.mark.parametrize("op", ["wait", "wait-first", "as_completed", "map-timeout",
                                "exception"])
def test_ctrl_c_interrupts_more_blocking_calls(impl, op, busy):
    proc = run_script("thread_sigint.py", impl.__name__, op, busy)
    lines = proc.stdout.splitlines()
    assert "INTERRUPTED" in lines, (proc.stdout, proc.stderr)
    assert "AFTER result 1" in lines, (proc.stdout, proc.stderr)
    assert "AFTER shutdown True" in lines, (proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr


def _exit_sigint(mod_name, case, nsig):
    """Run thread_exit_sigint.py; send SIGINT once it printed "main done",
    then again each second while it runs, up to nsig times."""
    cmd = [sys.executable, os.path.join(SCRIPTS, "thread_exit_sigint.py"), mod_name, case]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=module_env())
    try:
        first = proc.stdout.readline()
        sent = 0
        while sent < nsig:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            sent += 1
            try:
                proc.wait(1.0)
                break
            except subprocess.TimeoutExpired:
                pass
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - failure path
        proc.kill()
        proc.communicate()
        pytest.fail("%s %s did not exit after %d SIGINT" % (mod_name, case, nsig))
    return proc.returncode, first + out, err, sent


def _shape(err):
    """The lines of a stderr that do not depend on paths or line numbers."""
    return [line for line in err.splitlines()
            if line and not line.startswith(" ") and not line.startswith("Traceback")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["exit", "with-block"])
def test_ctrl_c_at_interpreter_exit_matches_stdlib(impl, case):
    # "exit": the main thread ended while a worker runs a long task; the
    # first Ctrl-C interrupts the exit-time join.  "with-block": the first
    # Ctrl-C interrupts the with block's shutdown(wait=True), the second
    # the join at exit.  Same exit status, output and number of Ctrl-C.
    nsig = 1 if case == "exit" else 2
    expected = _exit_sigint("concurrent.futures", case, nsig)
    got = _exit_sigint(impl.__name__, case, nsig)
    assert got[0] == expected[0], (got, expected)
    assert got[1] == expected[1] == "main done\n", (got, expected)
    assert _shape(got[2]) == _shape(expected[2]), (got[2], expected[2])
    assert got[3] == expected[3] == nsig
