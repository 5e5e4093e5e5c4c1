"""cfutures: concurrent.futures, reimplemented natively in C.

Change ``import concurrent.futures`` to ``import cfutures`` and the program
runs unchanged.
"""
import sys as _sys


def _require_extension():
    # Without the compiled module the first import below fails with a
    # misleading "partially initialized module ... circular import" error.
    try:
        from . import _cfutures  # noqa: F401
    except ImportError:
        import os
        from importlib.machinery import EXTENSION_SUFFIXES
        here = os.path.dirname(os.path.abspath(__file__))
        if any(os.path.exists(os.path.join(here, '_cfutures' + suffix))
               for suffix in EXTENSION_SUFFIXES):
            raise       # built, but it does not load: that error is the real one
        msg = ("cfutures was imported from %s, which has no built extension "
               "module (_cfutures%s). " % (here, EXTENSION_SUFFIXES[0]))
        if os.path.exists(os.path.join(os.path.dirname(here), 'setup.py')):
            msg += ("This is the source tree of a cfutures checkout, found on "
                    "sys.path (the current directory?) before the installed "
                    "package. Run Python from another directory to use the "
                    "installed cfutures, or build the extension in place with "
                    "`pip install -e .` (or `python setup.py build_ext --inplace`).")
        else:
            msg += "Reinstall cfutures (pip install --force-reinstall cfutures)."
        raise ImportError(msg, name=__name__, path=__file__) from None


_require_extension()
del _require_extension

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


from cfutures._install import install, uninstall  # noqa: E402


def __dir__():
    # Only names that exist; install/uninstall stay out of __all__ so that
    # `from cfutures import *` binds what `from concurrent.futures import *` does.
    return __all__ + ['__doc__', '__version__', 'install', 'uninstall']


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
