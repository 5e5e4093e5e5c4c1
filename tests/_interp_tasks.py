"""Task functions for tests/test_interpreter.py.

They run inside InterpreterPoolExecutor workers, which import them by
module name, so they live here rather than in the test module (which would
drag pytest into every worker interpreter).
"""
import os
import sys
import threading
import time


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def identity(x):
    return x


def spin(n):
    """Pure-Python CPU work."""
    total = 0
    for i in range(n):
        total += i
    return total


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


class CustomError(Exception):
    pass


def raise_value_error(msg):
    raise ValueError(msg)


def raise_custom(msg):
    raise CustomError(msg)


class Unpicklable(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


def raise_unpicklable(msg):
    raise Unpicklable(msg)


def return_unpicklable():
    return threading.Lock()


def raise_system_exit():
    raise SystemExit(3)


def interp_info():
    """Facts about the interpreter running the task."""
    try:
        import _interpreters
        interp_id = _interpreters.get_current()
        if isinstance(interp_id, tuple):
            interp_id = interp_id[0]
        interp_id = int(interp_id)
    except ImportError:
        interp_id = None
    return {
        'interp_id': interp_id,
        'pid': os.getpid(),
        'thread_ident': threading.get_ident(),
        'main_module': sys.modules['__main__'].__dict__.get('__file__'),
    }


def import_module(name):
    __import__(name)
    return name in sys.modules


def use_cfutures():
    """The extension imports cleanly in a worker and its Future works."""
    import cfutures
    import cfutures._cfutures as native
    f = cfutures.Future()
    f.set_result(41)
    done, _ = cfutures.wait([f])
    return native.__name__, f.result() + 1, len(done)


# ------------------------------------------------------------ initializers

_INIT_STATE = []


def init_record(value):
    _INIT_STATE.append(value)


def init_state():
    return list(_INIT_STATE)


def init_fail():
    raise RuntimeError('initializer boom')


def rendezvous(directory, me, other, timeout=30.0):
    """Announce `me`, wait until `other` has announced too; return this
    interpreter's id.  Two calls return only if they run at the same time."""
    open(os.path.join(directory, me), 'w').close()
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(directory, other)):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.002)
    return interp_info()['interp_id']


class UnpicklesBadly:
    """Pickles fine, fails to unpickle (as CPython's PickleShenanigans)."""

    def __init__(self, value):
        if value == 1:
            raise RuntimeError("gotcha")

    def __reduce__(self):
        return (self.__class__, (1,))
