"""Implements InterpreterPoolExecutor (natively; CPython 3.13+).

Each worker is a thread that owns a sub-interpreter with its own GIL, so
pure-Python CPU work runs in parallel inside one process.  The callable,
its arguments and its result cross between interpreters as pickles copied
through C buffers; nothing else is shared.

The hot path (submit, queueing, running, completing futures) is C, in
cfutures._cfutures.InterpreterPool.  This module holds the parts that are
not hot: argument checks, the exception classes, the exit hook.
"""
import dis
import io
import marshal
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


# ------------------------------------------------------ slow-path pickling

# 3.14+: what cannot be pickled plainly crosses as the stdlib's
# cross-interpreter data does -- a "stateless" function (no closure,
# defaults or globals) as its code, run with the worker's __main__
# globals; a reference into __main__ by name (the worker re-runs the main
# script as "<fake __main__>", src/interppool.c) -- and what cannot cross
# fails with the stdlib's NotShareableError.  3.13: __main__ is refused.
_XI = sys.version_info >= (3, 14)
if _XI:
    from concurrent.interpreters import NotShareableError
else:
    NotShareableError = None


def _main_file():
    main = sys.modules.get('__main__')
    f = getattr(main, '__file__', None)
    return f if isinstance(f, str) else None


def _stateless_code(fn):
    """fn's code if 3.14 would share fn as code (no closure, no defaults,
    no globals but builtins), else None."""
    if fn.__closure__ or fn.__defaults__ or fn.__kwdefaults__:
        return None
    code = fn.__code__
    glob, builtins = fn.__globals__, fn.__builtins__
    for ins in dis.get_instructions(code):
        if ins.opname in _GLOBAL_OPS and (ins.argval in glob
                                          or ins.argval not in builtins):
            return None
    return code


# As 3.14, only names read count (a function that only assigns a global
# is "stateless" and assigns the worker's __main__ global).
_GLOBAL_OPS = frozenset(['LOAD_GLOBAL'])


class _Ref:
    """Stands for an object the worker looks up itself (callable: pickle
    accepts it as the callable of a reduce value)."""
    def __init__(self, reduced):
        self.reduced = reduced

    def __call__(self, *args):
        raise TypeError("a placeholder for pickling")


_TYPES = _Ref((__import__, ('types',)))
_FUNCTION_TYPE = _Ref((getattr, (_TYPES, 'FunctionType')))
_WORKER_MAIN = _Ref((__import__, ('__main__',)))
_WORKER_MAIN_GLOBALS = _Ref((vars, (_WORKER_MAIN,)))


def _refused(obj):
    name = getattr(obj, '__qualname__', None) or repr(obj)
    kind = 'class' if isinstance(obj, type) else 'function'
    return pickle.PicklingError(
        f"cannot run {kind} {name!r} in an "
        f"InterpreterPoolExecutor: it is defined in __main__, "
        f"which worker interpreters do not share; move it "
        f"into an importable module")


class _MainRefFinder(pickle.Pickler):
    """3.13: pickle to nowhere, raising at the first class or function
    that lives in __main__ (reducer_override sees every one)."""

    def reducer_override(self, obj):
        if isinstance(obj, (type, types.FunctionType,
                            types.BuiltinFunctionType)):
            if getattr(obj, '__module__', None) == '__main__':
                raise _refused(obj)
        return NotImplemented


class _XIPickler(pickle.Pickler):
    """3.14+: stateless functions as code; __main__ by name when the
    workers can re-run a main script, else refused."""

    main_file = None

    def reducer_override(self, obj):
        if isinstance(obj, _Ref):
            return obj.reduced
        if isinstance(obj, types.CodeType):
            return marshal.loads, (marshal.dumps(obj),)
        if isinstance(obj, types.FunctionType):
            code = _stateless_code(obj)
            if code is not None:
                return _FUNCTION_TYPE, (code, _WORKER_MAIN_GLOBALS)
        if (isinstance(obj, (type, types.FunctionType,
                             types.BuiltinFunctionType))
                and getattr(obj, '__module__', None) == '__main__'
                and self.main_file is None):
            raise _refused(obj)
        return NotImplemented


class _NullWriter:
    def write(self, data):
        return len(data)


def _xi_dumps(obj, out):
    p = _XIPickler(out, pickle.HIGHEST_PROTOCOL)
    p.main_file = _main_file()
    p.dump(obj)


def _not_shareable(call, exc):
    """The stdlib's NotShareableError for a call that cannot cross, naming
    the part (callable, args or kwargs) that failed."""
    culprit = call
    for part in call:
        try:
            _xi_dumps(part, _NullWriter())
        except Exception:
            culprit = part
            break
    try:
        shown = repr(culprit)
    except Exception:
        shown = object.__repr__(culprit)
    err = NotShareableError(f"{shown} does not support cross-interpreter data")
    err.__cause__ = exc
    return err


def _check_main(call, failed):
    """C calls this when pickle.dumps(call) failed (3.14+; failed is
    True) or its bytes mention __main__.  Returns the bytes to send, None
    to keep the plain pickle, or raises."""
    if not _XI:
        _MainRefFinder(_NullWriter(), pickle.HIGHEST_PROTOCOL).dump(call)
        return None
    out = io.BytesIO()
    try:
        _xi_dumps(call, out)
    except Exception as exc:
        raise _not_shareable(call, exc)
    return out.getvalue()


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
        init_error = None
        if initializer is not None:
            if isinstance(initializer, str):
                raise TypeError('scripts not supported')
            try:
                initdata = _cfutures._interp_pickle_call(
                    initializer, tuple(initargs), {})
            except Exception as exc:
                if not _XI:
                    raise
                # As 3.14: each worker fails initializing (logged), which
                # breaks the pool; the constructor succeeds.
                initdata = None
                init_error = exc
        else:
            initdata = None
        self._setup(max_workers, thread_name_prefix, initdata, init_error)

    submit = _cfutures.InterpreterPool.submit

    def shutdown(self, wait=True, *, cancel_futures=False):
        # (A Python def only for the stdlib's signature: `self` by keyword.)
        return _cfutures.InterpreterPool.shutdown(
            self, wait, cancel_futures=cancel_futures)
    shutdown.__doc__ = _cfutures.InterpreterPool.shutdown.__doc__

    if _XI:
        @classmethod
        def prepare_context(cls, initializer, initargs):
            """The stdlib's (3.14): cfutures' own workers do not use it."""
            from concurrent.futures.interpreter import WorkerContext
            return WorkerContext.prepare(initializer, initargs)
