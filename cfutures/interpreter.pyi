# cfutures' InterpreterPoolExecutor (3.14's API; runs on 3.13+, refused
# with NotImplementedError on older versions): an instance of the stdlib's
# ThreadPoolExecutor, not of cfutures'.
import sys
from collections.abc import Callable
from concurrent.futures import thread as _std_thread
from typing import ParamSpec, TypeVar, overload
from typing_extensions import TypeVarTuple, Unpack

from ._base import Executor, Future

_T = TypeVar("_T")
_P = ParamSpec("_P")
_Ts = TypeVarTuple("_Ts")

if sys.version_info >= (3, 14):
    from concurrent.futures.interpreter import BrokenInterpreterPool as BrokenInterpreterPool
    from concurrent.interpreters import ExecutionFailed as ExecutionFailed
else:
    class BrokenInterpreterPool(_std_thread.BrokenThreadPool): ...
    class ExecutionFailed(Exception):
        excinfo: object

class InterpreterPoolExecutor(Executor, _std_thread.ThreadPoolExecutor):
    @overload
    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[[], object] | None = None,
        initargs: tuple[()] = (),
    ) -> None: ...
    @overload
    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        *,
        initializer: Callable[[Unpack[_Ts]], object],
        initargs: tuple[Unpack[_Ts]],
    ) -> None: ...
    @overload
    def __init__(
        self,
        max_workers: int | None,
        thread_name_prefix: str,
        initializer: Callable[[Unpack[_Ts]], object],
        initargs: tuple[Unpack[_Ts]],
    ) -> None: ...
    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]: ...
