"""cfutures.thread: a native ThreadPoolExecutor.

Workers are real threading.Thread objects named like the stdlib's, whose
body is a C loop: it waits for work with the GIL released and takes the GIL
only to run a task and complete its future.
"""
import os
import threading
import weakref
import concurrent.futures.thread as _std_thread

from concurrent.futures.thread import BrokenThreadPool  # noqa: F401

from . import _cfutures
from ._base import Executor

__all__ = ["ThreadPoolExecutor", "BrokenThreadPool"]

# Every worker ever started, for the exit hook.
_workers = weakref.WeakSet()


def _ft_tick():
    # Free-threaded builds: workers call this now and then.  Entering Python
    # code is where a thread frees the objects it allocated that other
    # threads released (biased reference counting merges them there); a
    # worker running only C callables (sum, len, ...) would keep them all.
    pass


_cfutures._tp_configure(threading.Thread, _workers, _ft_tick)


def _python_exit():
    # Runs before threading joins non-daemon threads (like the stdlib's
    # hook): refuse new work, let workers finish what is queued, join.
    _cfutures._tp_interpreter_exit()
    me = threading.current_thread()
    for t in list(_workers):
        # A worker that forked runs this in the child (multiprocessing's
        # fork start method calls threading._shutdown()): not itself.
        if t is not me:
            t.join()


threading._register_atexit(_python_exit)

if hasattr(os, "register_at_fork"):
    # The pool locks are taken and released by pthread_atfork handlers in
    # C, inside fork(); this settles the futures of the vanished workers.
    os.register_at_fork(after_in_child=_cfutures._tp_after_fork_child)


def _cpu_count():
    # Looked up at each construction, as the stdlib does (3.13+:
    # process_cpu_count).
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count()
    return os.cpu_count()


# 3.14 added ThreadPoolExecutor(..., **ctxkwargs), passed to prepare_context().
_HAS_CTXKWARGS = hasattr(_std_thread.ThreadPoolExecutor, "prepare_context")


class _WorkQueueView:
    """Read-only stand-in for the stdlib's executor._work_queue, which
    code in the wild inspects with qsize()/empty()."""

    __slots__ = ("_executor",)

    def __init__(self, executor):
        self._executor = executor

    def qsize(self):
        return self._executor._qsize

    def empty(self):
        return self._executor._qsize == 0


class ThreadPoolExecutor(_cfutures.ThreadPool, Executor,
                         _std_thread.ThreadPoolExecutor):
    """A thread pool whose queueing, dispatch and completion are C.

    An instance of concurrent.futures.ThreadPoolExecutor (asyncio's
    set_default_executor accepts it); shares no machinery with it.
    """

    __module__ = "cfutures"

    if _HAS_CTXKWARGS:
        def __init__(self, max_workers=None, thread_name_prefix='',
                     initializer=None, initargs=(), **ctxkwargs):
            """Initializes a new ThreadPoolExecutor instance.

            Args:
                max_workers: The maximum number of threads that can be used to
                    execute the given calls.
                thread_name_prefix: An optional name prefix to give our threads.
                initializer: A callable used to initialize worker threads.
                initargs: A tuple of arguments to pass to the initializer.
                ctxkwargs: Additional arguments to cls.prepare_context().
            """
            self._cf_init(max_workers, thread_name_prefix, initializer, initargs,
                       ctxkwargs)
    else:
        def __init__(self, max_workers=None, thread_name_prefix='',
                     initializer=None, initargs=()):
            """Initializes a new ThreadPoolExecutor instance.

            Args:
                max_workers: The maximum number of threads that can be used to
                    execute the given calls.
                thread_name_prefix: An optional name prefix to give our threads.
                initializer: A callable used to initialize worker threads.
                initargs: A tuple of arguments to pass to the initializer.
            """
            self._cf_init(max_workers, thread_name_prefix, initializer, initargs,
                       None)

    def _cf_init(self, max_workers, thread_name_prefix, initializer, initargs,
              ctxkwargs):
        if max_workers is None:
            max_workers = min(32, (_cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")

        if _HAS_CTXKWARGS:
            # 3.14+: the stdlib hands these to prepare_context(), which
            # checks the initializer and refuses what it does not take.
            # The C workers need no context object: only its errors count.
            type(self).prepare_context(initializer, initargs, **ctxkwargs)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")

        self._max_workers = max_workers
        self._thread_name_prefix = (thread_name_prefix or
                                    ("ThreadPoolExecutor-%d" % self._counter()))
        self._initializer = initializer
        self._initargs = initargs
        # The C pool counts threads in a Py_ssize_t; a bigger (or float)
        # max_workers behaves the same as the stdlib's comparison.
        limit = max_workers
        if not isinstance(limit, int):
            import math
            limit = math.ceil(limit)
        self._pool_init(min(limit, 1 << 30), str(self._thread_name_prefix),
                        initializer, initargs)

    @property
    def _work_queue(self):
        return _WorkQueueView(self)

    def _adjust_thread_count(self):     # stdlib-private; the C pool does it
        pass

    def _initializer_failed(self):      # stdlib-private; the C pool does it
        pass
