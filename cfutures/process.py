"""cfutures.process: ProcessPoolExecutor with a C dispatch and result path.

Workers are started through the executor's multiprocessing context (fork,
spawn or forkserver, the stdlib's default on the running Python), so
``__main__``, sys.path and initializers behave as in the stdlib.  After
that, tasks and results travel as framed pickles over one pipe per
direction per worker: a C thread in this process writes and reads them
without the GIL, and each worker runs a C loop.

This module is thin: signatures, the argument checks that must raise
exactly like the stdlib's, starting workers and the dispatcher thread.
"""
import copyreg  # noqa: F401  (ForkingPickler's table comes from it)
import itertools
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import sys
import threading
import traceback
import weakref
from functools import partial

import concurrent.futures.process as _std
from concurrent.futures import _base as _std_base
from concurrent.futures.process import BrokenProcessPool
# The stdlib's own objects, so that code (and CPython's tests) reading them
# from either module sees the same ones: `isinstance(e.__cause__,
# _RemoteTraceback)` and pickles holding them work across both.
from concurrent.futures.process import (  # noqa: F401
    EXTRA_QUEUED_CALLS, _MAX_WINDOWS_WORKERS, _ExceptionWithTraceback,
    _RemoteTraceback, _ThreadWakeup, _check_system_limits, _rebuild_exc)
from multiprocessing.reduction import ForkingPickler

from . import _cfutures
from ._base import Executor

__all__ = ["ProcessPoolExecutor", "BrokenProcessPool"]

_cfutures._process_init(
    broken=BrokenProcessPool,
    remote_traceback=_RemoteTraceback,
    pickler=pickle.Pickler,
    loads=pickle.loads,
    protocol=pickle.DEFAULT_PROTOCOL,   # what ForkingPickler.dumps() uses
    copyreg_table=ForkingPickler._copyreg_dispatch_table,
    extra_reducers=ForkingPickler._extra_reducers,
    format_exception=traceback.format_exception,
)

# Dispatcher threads of live pools, joined at interpreter exit.
_io_threads = weakref.WeakKeyDictionary()


def _python_exit():
    # Like the stdlib's hook: refuse new work, let queued work finish, stop
    # the workers, join the dispatchers -- before non-daemon threads are
    # joined, or they would wait for each other forever.
    _cfutures._process_global_shutdown()
    items = list(_io_threads.items())
    for _, core in items:
        core._exit_wakeup()
    try:
        for _, core in items:
            core._wait_done()       # interruptible; joins the thread
    except BaseException:
        # Ctrl-C while exit waits for queued work: drop it and stop the
        # workers now, wait for them to be reaped, then let it propagate.
        for _, core in items:
            core._abort()
        for _, core in items:
            core._wait_done()
        raise


threading._register_atexit(_python_exit)


def _start_thread(core):
    t = threading.Thread(target=core._run, name="cfutures-process-dispatcher",
                         daemon=False)
    _io_threads[t] = core       # first: once it runs, the pool is started
    try:
        t.start()
    except BaseException:
        _io_threads.pop(t, None)
        raise
    return t


def _worker_main(task_conn, result_conn, initializer, initargs, max_tasks,
                 shm_conns=(None, None)):
    """Body of a worker process (runs in the child)."""
    task_fd = os.dup(task_conn.fileno())
    result_fd = os.dup(result_conn.fileno())
    task_conn.close()
    result_conn.close()
    shm_fds = []
    for c in shm_conns:
        shm_fds.append(-1 if c is None else os.dup(c.fileno()))
        if c is not None:
            c.close()
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException:
            _std_base.LOGGER.critical('Exception in initializer:',
                                      exc_info=True)
            # The parent sees this process end without having said
            # goodbye, and marks the pool broken.  The pipes stay open
            # until the process is gone: EOF must not tell the parent
            # (which then terminates the workers) before multiprocessing's
            # exit handlers have flushed what the initializer set up
            # (queues behind logging handlers, ...), as the stdlib's
            # worker, seen only by its exit, does.
            return
    # The loop owns (and closes) the shared memory fds.
    try:
        _cfutures._process_worker_loop(task_fd, result_fd, max_tasks or 0,
                                       *shm_fds)
    finally:
        os.close(task_fd)
        os.close(result_fd)


def _launch_worker(ctx, task_r, result_w, initializer, initargs, max_tasks,
                   tshm_fd=-1, rshm_fd=-1):
    """Start one worker through the mp context (called by the C core).

    task_r/result_w are the child's ends of its two pipes, tshm_fd/rshm_fd
    its shared memory regions (memfds, -1: none); they are closed here once
    the child has them (inherited with fork, passed by multiprocessing's
    reduction with spawn and forkserver).
    """
    task_conn = mp.connection.Connection(task_r, writable=False)
    result_conn = mp.connection.Connection(result_w, readable=False)
    shm_conns = tuple(None if fd < 0 else
                      mp.connection.Connection(fd, writable=False)
                      for fd in (tshm_fd, rshm_fd))
    try:
        p = ctx.Process(target=_worker_main,
                        args=(task_conn, result_conn, initializer, initargs,
                              max_tasks, shm_conns))
        p.start()
    finally:
        task_conn.close()
        result_conn.close()
        for c in shm_conns:
            if c is not None:
                c.close()
    return p


def _process_chunk(fn, chunk):
    """Runs fn over a chunk of map()'s arguments (in a worker)."""
    return [fn(*args) for args in chunk]


if sys.version_info >= (3, 12):
    def _get_chunks(iterables, chunksize):
        return itertools.batched(zip(*iterables), chunksize)
else:
    def _get_chunks(iterables, chunksize):
        it = zip(*iterables)
        while True:
            chunk = tuple(itertools.islice(it, chunksize))
            if not chunk:
                return
            yield chunk


# itertools.chain.from_iterable for lists, dropping its references to the
# yielded objects as it goes (the stdlib's generator, in C).
_chain_from_iterable_of_lists = _cfutures._chain_lists


if hasattr(os, "process_cpu_count"):            # 3.13
    _cpu_count = os.process_cpu_count
else:
    _cpu_count = os.cpu_count

# gh-90622 (in 3.11 and late 3.10 releases, e.g. 3.10.13): with fork, the
# stdlib starts every worker at the first submit(); before, it forked one
# more per submit() from its threaded process.  Follow the running stdlib.
_STD_FORK_PRESTARTS = ("_safe_to_dynamically_spawn_children" in
                       _std.ProcessPoolExecutor._start_executor_manager_thread
                       .__code__.co_names)

_TERMINATE = "terminate"
_KILL = "kill"
_SHUTDOWN_CALLBACK_OPERATION = {_TERMINATE, _KILL}


class ProcessPoolExecutor(_cfutures.ProcessPool, Executor,
                          _std.ProcessPoolExecutor):
    """An Executor that runs calls in a pool of worker processes.

    A native implementation of concurrent.futures.ProcessPoolExecutor (and
    an instance of it).
    """

    __module__ = "cfutures"

    def __init__(self, max_workers=None, mp_context=None,
                 initializer=None, initargs=(), *, max_tasks_per_child=None):
        """Initializes a new ProcessPoolExecutor instance.

        Args:
            max_workers: The maximum number of processes that can be used to
                execute the given calls. If None or not given then as many
                worker processes will be created as the machine has processors.
            mp_context: A multiprocessing context to launch the workers created
                using the multiprocessing.get_context('start method') API. This
                object should provide SimpleQueue, Queue and Process.
            initializer: A callable used to initialize worker processes.
            initargs: A tuple of arguments to pass to the initializer.
            max_tasks_per_child: The maximum number of tasks a worker process
                can complete before it will exit and be replaced with a fresh
                worker process. The default of None means worker process will
                live as long as the executor. Requires a non-'fork' mp_context
                start method. When given, we default to using 'spawn' if no
                mp_context is supplied.
        """
        _check_system_limits()

        if max_workers is None:
            max_workers = _cpu_count() or 1
        else:
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")

        if mp_context is None:
            if max_tasks_per_child is not None:
                mp_context = mp.get_context("spawn")
            else:
                mp_context = mp.get_context()
        start_method = mp_context.get_start_method(allow_none=False)

        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")

        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            elif max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if start_method == "fork":
                raise ValueError("max_tasks_per_child is incompatible with"
                                 " the 'fork' multiprocessing start method;"
                                 " supply a different mp_context.")

        self._max_workers = max_workers
        self._mp_context = mp_context
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child
        if start_method != "fork":
            fork_mode = 0
        elif _STD_FORK_PRESTARTS:
            fork_mode = 1       # all workers before the dispatcher starts
        else:
            fork_mode = 2       # older stdlib: one more per submit
        self._start(max_workers, mp_context, initializer, initargs,
                    max_tasks_per_child, fork_mode,
                    _launch_worker, _start_thread)

    # submit() and shutdown() are the native ones (_cfutures.ProcessPool).

    @property
    def _executor_manager_thread(self):
        """The dispatcher thread, where the stdlib has its manager thread:
        None before the first submit() and after shutdown(), as there."""
        if self._processes is None:
            return None
        core = self._core
        for t, c in list(_io_threads.items()):
            if c is core:
                return t
        return None

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Returns an iterator equivalent to map(fn, iter).

        Args:
            fn: A callable that will take as many arguments as there are
                passed iterables.
            timeout: The maximum number of seconds to wait. If None, then there
                is no limit on the wait time.
            chunksize: If greater than one, the iterables will be chopped into
                chunks of size chunksize and submitted to the process pool.
                If set to one, the items in the list will be sent one at a time.
            buffersize: The number of submitted tasks whose results have not
                yet been yielded. If the buffer is full, iteration over the
                iterables pauses until a result is yielded from the buffer.
                If None, all input elements are eagerly collected, and a task is
                submitted for each.

        Returns:
            An iterator equivalent to: map(func, *iterables) but the calls may
            be evaluated out-of-order.

        Raises:
            TimeoutError: If the entire result iterator could not be generated
                before the given timeout.
            Exception: If fn(*args) raises for any values.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            # One call per task: no chunk lists to build and flatten.
            return _cfutures._map(self, fn, iterables, timeout, buffersize)
        results = _cfutures._map(self, partial(_process_chunk, fn),
                                 (_get_chunks(iterables, chunksize),),
                                 timeout, buffersize)
        return _chain_from_iterable_of_lists(results)

    def _force_shutdown(self, operation):
        """Attempts to terminate or kill the executor's workers based off the
        given operation. Iterates through all of the current processes and
        performs the relevant task if the process is still alive.

        After terminating workers, the pool will be in a broken state
        and no longer usable (for instance, new tasks should not be
        submitted).
        """
        if operation not in _SHUTDOWN_CALLBACK_OPERATION:
            raise ValueError(f"Unsupported operation: {operation!r}")

        processes = {}
        if self._processes:
            processes = self._processes.copy()

        # shutdown will invalidate ._processes, so we copy it right before
        # calling. If we waited here, we would deadlock if a process decides
        # not to exit.
        self.shutdown(wait=False, cancel_futures=True)

        for proc in processes.values():
            try:
                if not proc.is_alive():
                    continue
            except ValueError:
                # The process is already exited/closed out.
                continue
            try:
                if operation == _TERMINATE:
                    proc.terminate()
                elif operation == _KILL:
                    proc.kill()
            except (ProcessLookupError, ValueError):
                # The process just ended (and was reaped and closed by the
                # dispatcher) before our signal
                continue

    def terminate_workers(self):
        """Attempts to terminate the executor's workers.
        Iterates through all of the current worker processes and terminates
        each one that is still alive.

        After terminating workers, the pool will be in a broken state
        and no longer usable (for instance, new tasks should not be
        submitted).
        """
        return self._force_shutdown(operation=_TERMINATE)

    def kill_workers(self):
        """Attempts to kill the executor's workers.
        Iterates through all of the current worker processes and kills
        each one that is still alive.

        After killing workers, the pool will be in a broken state
        and no longer usable (for instance, new tasks should not be
        submitted).
        """
        return self._force_shutdown(operation=_KILL)
