"""Implements InterpreterPoolExecutor (natively; CPython 3.13+).

Each worker is a thread that owns a sub-interpreter with its own GIL, so
pure-Python CPU work runs in parallel inside one process.  The callable,
its arguments and its result cross between interpreters as pickles copied
through C buffers; nothing else is shared.

The hot path (submit, queueing, running, completing futures) is C, in
cfutures._cfutures.InterpreterPool.  This module holds the parts that are
not hot: argument checks, the exception classes, the exit hook.
"""
import os
import pickle
import sys
import threading
import types
import weakref
from concurrent.futures import thread as _std_thread

from . import _cfutures
from ._base import Executor

__all__ = [
    'BrokenInterpreterPool',
    'ExecutionFailed',
    'InterpreterPoolExecutor',
]

# The oldest CPython this pool runs on.  3.12 has the API, but 3.12.1
# aborts at exit ("free(): invalid pointer") once an own-GIL
# sub-interpreter has imported hashlib, ssl or asyncio -- CPython's own
# _xxsubinterpreters too -- so it is refused (README, InterpreterPoolExecutor).
_MIN_VERSION = (3, 13)


# --------------------------------------------------------------- exceptions

try:
    # 3.14+: the stdlib's own classes, so except clauses match either way.
    from concurrent.futures.interpreter import BrokenInterpreterPool
    from concurrent.interpreters import ExecutionFailed
except ImportError:
    try:
        from _interpreters import InterpreterError as _InterpreterError
    except ImportError:
        class _InterpreterError(Exception):
            """A cross-interpreter operation failed."""

    class BrokenInterpreterPool(_std_thread.BrokenThreadPool):
        """
        Raised when a worker thread in an InterpreterPoolExecutor failed initializing.
        """

    _EXEC_FAILURE_STR = """
{superstr}

Uncaught in the interpreter:

{formatted}
""".strip()

    class ExecutionFailed(_InterpreterError):
        """An unhandled exception happened during execution.

        The ``__cause__`` of an exception re-raised from a worker
        interpreter.  ``excinfo`` has ``type`` (``__name__``,
        ``__qualname__``, ``__module__``), ``msg``, ``formatted`` and
        ``errdisplay`` (the traceback text from the worker).
        """

        def __init__(self, excinfo):
            msg = excinfo.formatted
            if not msg:
                if excinfo.type and excinfo.msg:
                    msg = f'{excinfo.type.__name__}: {excinfo.msg}'
                else:
                    msg = excinfo.type.__name__ or excinfo.msg
            super().__init__(msg)
            self.excinfo = excinfo

        def __str__(self):
            try:
                formatted = self.excinfo.errdisplay
            except Exception:
                return super().__str__()
            else:
                return _EXEC_FAILURE_STR.format(
                    superstr=super().__str__(),
                    formatted=formatted,
                )

    ExecutionFailed.__module__ = __name__
    BrokenInterpreterPool.__module__ = __name__


def _make_execution_failed(name, qualname, module, msg, errdisplay):
    """Build an ExecutionFailed from the strings a worker sent (C calls it).

    The excinfo has 3.14's shape; ``formatted`` drops the module for
    builtins and __main__, as 3.14 does.
    """
    if name is None:
        exctype = None
        formatted = msg
    else:
        exctype = types.SimpleNamespace(
            __name__=name, __qualname__=qualname or name, __module__=module)
        shown = qualname or name
        if module and module not in ('builtins', '__main__'):
            shown = f'{module}.{shown}'
        formatted = f'{shown}: {msg}' if msg is not None else shown
    excinfo = types.SimpleNamespace(type=exctype, msg=msg, formatted=formatted)
    if errdisplay is not None:
        excinfo.errdisplay = errdisplay
    return ExecutionFailed(excinfo)


# ---------------------------------------------------------- __main__ check

class _MainRefFinder(pickle.Pickler):
    """Pickle to nowhere, raising at the first class or function that
    lives in __main__ (reducer_override sees every class and function)."""

    def reducer_override(self, obj):
        if isinstance(obj, (type, types.FunctionType,
                            types.BuiltinFunctionType)):
            if getattr(obj, '__module__', None) == '__main__':
                name = getattr(obj, '__qualname__', None) or repr(obj)
                kind = 'class' if isinstance(obj, type) else 'function'
                raise pickle.PicklingError(
                    f"cannot run {kind} {name!r} in an "
                    f"InterpreterPoolExecutor: it is defined in __main__, "
                    f"which worker interpreters do not share; move it "
                    f"into an importable module")
        return NotImplemented


class _NullWriter:
    def write(self, data):
        return len(data)


def _check_main(call):
    """Raise PicklingError if the (fn, args, kwargs) call refers to
    __main__.  C calls this only when the pickle mentions __main__."""
    _MainRefFinder(_NullWriter(), pickle.HIGHEST_PROTOCOL).dump(call)


# ----------------------------------------------------------- exit handling

# Worker Thread -> handle, for the exit hook (as the stdlib's
# _threads_queues).  Weak keys: an entry lives as long as its Thread.
_threads_handles = weakref.WeakKeyDictionary()


def _python_exit():
    # Runs from threading._shutdown() before the non-daemon threads are
    # joined: refuse new work, let each pool finish its queue, join.
    _cfutures._interp_exiting()
    items = list(_threads_handles.items())
    for t, handle in items:
        _cfutures._interp_wake_exit(handle)
    for t, handle in items:
        t.join()


# Plain atexit runs too late: after the join of non-daemon threads.
threading._register_atexit(_python_exit)

_cfutures._interp_setup(BrokenInterpreterPool, _make_execution_failed,
                        _check_main, _threads_handles)


# ---------------------------------------------------------------- executor

def _check_supported():
    if sys.implementation.name != 'cpython':
        raise NotImplementedError(
            "cfutures.InterpreterPoolExecutor requires CPython")
    if sys.version_info < _MIN_VERSION or not _cfutures._HAVE_SUBINTERPRETERS:
        need = '.'.join(map(str, _MIN_VERSION))
        have = '.'.join(map(str, sys.version_info[:3]))
        raise NotImplementedError(
            f"cfutures.InterpreterPoolExecutor requires CPython {need} or "
            f"newer (sub-interpreters with their own GIL); this is Python "
            f"{have}")


if hasattr(os, 'process_cpu_count'):
    _cpu_count = os.process_cpu_count
else:
    _cpu_count = os.cpu_count


class InterpreterPoolExecutor(_cfutures.InterpreterPool, Executor,
                              _std_thread.ThreadPoolExecutor):
    """An Executor running each call in a worker sub-interpreter.

    A drop-in for 3.14's concurrent.futures.InterpreterPoolExecutor: like
    it, an instance of concurrent.futures.ThreadPoolExecutor (so asyncio's
    set_default_executor accepts it), though none of the stdlib's thread
    pool code runs.
    """

    __module__ = 'cfutures'

    BROKEN = BrokenInterpreterPool

    def __init__(self, max_workers=None, thread_name_prefix='',
                 initializer=None, initargs=()):
        """Initializes a new InterpreterPoolExecutor instance.

        Args:
            max_workers: The maximum number of interpreters that can be used to
                execute the given calls.
            thread_name_prefix: An optional name prefix to give our threads.
            initializer: A callable used to initialize each worker
                interpreter.
            initargs: A tuple of arguments to pass to the initializer.
        """
        _check_supported()
        thread_name_prefix = (thread_name_prefix or
                              (f"InterpreterPoolExecutor-{self._counter()}"))
        if max_workers is None:
            max_workers = min(32, (_cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None:
            if isinstance(initializer, str):
                raise TypeError('scripts not supported')
            initdata = _cfutures._interp_pickle_call(
                initializer, tuple(initargs), {})
        else:
            initdata = None
        self._setup(max_workers, thread_name_prefix, initdata)

    submit = _cfutures.InterpreterPool.submit
    shutdown = _cfutures.InterpreterPool.shutdown
