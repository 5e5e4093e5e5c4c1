"""cfutures.install() / uninstall(): route concurrent.futures to cfutures.

install() sets the public names that cfutures implements (Future, Executor,
wait, as_completed and the executors) as attributes of the stdlib's modules
``concurrent.futures``, ``._base``, ``.thread``, ``.process`` (and
``.interpreter`` where the running Python has InterpreterPoolExecutor).
Every later lookup of those attributes -- ``concurrent.futures.X`` at call
time, ``from concurrent.futures import X`` executed after install(), and the
stdlib's own ``_base.Future()`` in its executors' submit() -- gets cfutures'
object.  A name some module bound before install() keeps the stdlib's
object: it cannot be reached without rewriting other modules' globals.

While installed, the multiprocessing children started with spawn or
forkserver install it before they import anything of the parent's
``__main__`` (a hook in the preparation data their bootstrap unpickles
first); fork children inherit the patched modules.
"""
import os
import threading

_lock = threading.Lock()


def _after_fork_in_child():
    # A fork while another thread was inside install()/uninstall() must not
    # leave the child's lock held for ever.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
_saved = None       # [(module, name, old value or _MISSING, new value)] while installed
_MISSING = object()

# Runs in a spawn/forkserver child while it unpickles its preparation data
# (before sys.path is set from the parent's: import from where the parent
# found cfutures if the child's default path does not have it).
_CHILD_SRC = """\
import sys
try:
    sys.path.insert(0, _dir)    # the parent's cfutures, not another one
    try:
        import cfutures
    finally:
        sys.path.remove(_dir)
    cfutures.install()
except Exception as e:          # never kill a multiprocessing child for it
    try:                        # (-W error makes the warning raise)
        import warnings
        warnings.warn("cfutures.install() in a child process failed: %r"
                      % (e,), RuntimeWarning)
    except Exception:
        pass
"""


class _InstallInChild:
    """Placed in multiprocessing's preparation data; unpickling it installs."""

    def __reduce__(self):
        import os
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return (exec, (_CHILD_SRC, {"_dir": here}))


def _routes():
    import concurrent.futures as std
    import concurrent.futures._base as std_base
    import concurrent.futures.process as std_process
    import concurrent.futures.thread as std_thread
    import multiprocessing.spawn as mp_spawn

    # interpreter too, on every version: its class derives from the stdlib's
    # ThreadPoolExecutor, which must not be cfutures' by the time it is
    # first imported (a lazy import after install() failed).
    from . import _base, interpreter, process, thread  # noqa: F401

    routes = []
    for mod in (std, std_base):
        routes += [(mod, "Future", _base.Future),
                   (mod, "Executor", _base.Executor),
                   (mod, "wait", _base.wait),
                   (mod, "as_completed", _base.as_completed)]
    routes += [(std, "ThreadPoolExecutor", thread.ThreadPoolExecutor),
               (std_thread, "ThreadPoolExecutor", thread.ThreadPoolExecutor),
               (std, "ProcessPoolExecutor", process.ProcessPoolExecutor),
               (std_process, "ProcessPoolExecutor", process.ProcessPoolExecutor)]
    # Only where the stdlib has it (3.14+ with _interpreters): cfutures'
    # 3.13 pool is not added to a stdlib that has none.
    if "InterpreterPoolExecutor" in std.__all__:
        import concurrent.futures.interpreter as std_interp

        routes += [(std, "InterpreterPoolExecutor",
                    interpreter.InterpreterPoolExecutor)]
        for name in ("InterpreterPoolExecutor", "BrokenInterpreterPool",
                     "ExecutionFailed"):
            if hasattr(std_interp, name):
                routes.append((std_interp, name, getattr(interpreter, name)))

    orig_prep = mp_spawn.get_preparation_data

    def get_preparation_data(name):
        d = orig_prep(name)
        d["cfutures_install"] = _InstallInChild()
        return d

    get_preparation_data.__wrapped__ = orig_prep
    routes.append((mp_spawn, "get_preparation_data", get_preparation_data))
    return routes


def install():
    """Route concurrent.futures' public names to cfutures, for every module.

    After install(), ``concurrent.futures.ThreadPoolExecutor`` (and
    ``ProcessPoolExecutor``, ``Future``, ``Executor``, ``wait``,
    ``as_completed``, likewise in ``concurrent.futures._base``, ``.thread``,
    ``.process``, and ``InterpreterPoolExecutor`` where the stdlib has it)
    are cfutures' objects: for code that looks them up later, imports them
    later, and asyncio's default executor.  Names bound before install()
    (``from concurrent.futures import X`` already executed) keep the
    stdlib's objects.  Worker processes of process pools started while
    installed (fork, spawn or forkserver) are installed too.

    Idempotent and thread-safe; uninstall() undoes it.
    """
    global _saved
    with _lock:
        if _saved is not None:
            return
        saved = []
        for mod, name, new in _routes():
            old = mod.__dict__.get(name, _MISSING)
            saved.append((mod, name, old, new))
        # recorded first: a fork child forked midway can still uninstall()
        _saved = saved
        for mod, name, old, new in saved:
            setattr(mod, name, new)


def uninstall():
    """Undo install(): the stdlib's modules get back exactly what they had.

    A name that someone else re-assigned since install() is left as they
    set it.  Idempotent and thread-safe.
    """
    global _saved
    with _lock:
        if _saved is None:
            return
        for mod, name, old, new in reversed(_saved):
            if mod.__dict__.get(name, _MISSING) is not new:
                continue
            if old is _MISSING:
                # e.g. concurrent.futures.ProcessPoolExecutor before its
                # first lookup: the stdlib's lazy __getattr__ finds it again.
                delattr(mod, name)
            else:
                setattr(mod, name, old)
        _saved = None


def _installed():
    return _saved is not None

