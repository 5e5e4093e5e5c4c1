# Stubs for cfutures._base: the stdlib's names, with cfutures' Future and
# Executor (subclasses of the stdlib's) and wait()/as_completed(), which
# accept any concurrent.futures.Future.
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import _base as _std
from concurrent.futures._base import (
    ALL_COMPLETED as ALL_COMPLETED,
    CANCELLED as CANCELLED,
    CANCELLED_AND_NOTIFIED as CANCELLED_AND_NOTIFIED,
    FINISHED as FINISHED,
    FIRST_COMPLETED as FIRST_COMPLETED,
    FIRST_EXCEPTION as FIRST_EXCEPTION,
    LOGGER as LOGGER,
    PENDING as PENDING,
    RUNNING as RUNNING,
    BrokenExecutor as BrokenExecutor,
    CancelledError as CancelledError,
    DoneAndNotDoneFutures as DoneAndNotDoneFutures,
    Error as Error,
    InvalidStateError as InvalidStateError,
    TimeoutError as TimeoutError,
    _AsCompletedFuture,
)
from typing import Any, TypeVar

_T = TypeVar("_T")

class Future(_std.Future[_T]): ...

class Executor(_std.Executor):
    # buffersize (3.14's) on every version
    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[_T]: ...

def as_completed(fs: Iterable[_AsCompletedFuture[_T]], timeout: float | None = None) -> Iterator[_std.Future[_T]]: ...
def wait(
    fs: Iterable[_std.Future[_T]], timeout: float | None = None, return_when: str = "ALL_COMPLETED"
) -> DoneAndNotDoneFutures[_T]: ...
