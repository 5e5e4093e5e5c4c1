"""cfutures: concurrent.futures, reimplemented natively in C.

Change ``import concurrent.futures`` to ``import cfutures`` and the program
runs unchanged.
"""
import sys as _sys

from cfutures._base import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    InvalidStateError,
    TimeoutError,
    as_completed,
    wait,
)

__version__ = "0.1.0"

__all__ = [
    'FIRST_COMPLETED',
    'FIRST_EXCEPTION',
    'ALL_COMPLETED',
    'CancelledError',
    'TimeoutError',
    'InvalidStateError',
    'BrokenExecutor',
    'Future',
    'Executor',
    'wait',
    'as_completed',
    'ProcessPoolExecutor',
    'ThreadPoolExecutor',
    'InterpreterPoolExecutor',
]

# 3.14+, as the stdlib: no InterpreterPoolExecutor where _interpreters
# is unavailable.  (Before 3.14 the name is always there; the constructor
# explains what is missing.)
_HAVE_INTERPRETERS = True
if _sys.version_info >= (3, 14):
    try:
        import _interpreters  # noqa: F401
    except ImportError:
        _HAVE_INTERPRETERS = False
        __all__.remove('InterpreterPoolExecutor')
    else:
        del _interpreters


def __dir__():
    return __all__ + ['__author__', '__doc__']


def __getattr__(name):
    # Executors are imported lazily, as the stdlib does.
    if name == 'ProcessPoolExecutor':
        from .process import ProcessPoolExecutor
        return ProcessPoolExecutor
    if name == 'ThreadPoolExecutor':
        from .thread import ThreadPoolExecutor
        return ThreadPoolExecutor
    if name == 'InterpreterPoolExecutor' and _HAVE_INTERPRETERS:
        from .interpreter import InterpreterPoolExecutor
        return InterpreterPoolExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
