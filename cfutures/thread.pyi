# The constructor is the stdlib's of the running version (inherited).
from collections.abc import Callable
from concurrent.futures import thread as _std_thread
from concurrent.futures.thread import BrokenThreadPool as BrokenThreadPool
from typing import ParamSpec, TypeVar

from ._base import Executor, Future

_T = TypeVar("_T")
_P = ParamSpec("_P")

class ThreadPoolExecutor(Executor, _std_thread.ThreadPoolExecutor):
    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]: ...
