"""cfutures._base: the names of concurrent.futures._base, backed by C.

The constants, exceptions and DoneAndNotDoneFutures are the stdlib's own
objects, so code written against either module interoperates: an
``except concurrent.futures.CancelledError`` catches cfutures' too.
"""
import concurrent.futures._base as _std

from concurrent.futures._base import (  # noqa: F401  (re-exported)
    ALL_COMPLETED,
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    LOGGER,
    PENDING,
    RUNNING,
    BrokenExecutor,
    CancelledError,
    DoneAndNotDoneFutures,
    Error,
    InvalidStateError,
    TimeoutError,
)

from . import _cfutures

__all__ = [
    "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED",
    "PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED",
    "Error", "CancelledError", "TimeoutError", "InvalidStateError",
    "BrokenExecutor", "DoneAndNotDoneFutures", "Future", "Executor", "wait",
    "as_completed", "LOGGER",
]


class Future(_cfutures.CFuture, _std.Future):
    """Represents the result of an asynchronous computation.

    A C implementation of concurrent.futures.Future (and an instance of
    it, so asyncio.wrap_future and run_in_executor accept it).
    """

    __module__ = "cfutures"

    def __copy__(self):
        # The stdlib's copy.copy() copies the instance __dict__: the copy
        # has the state and outcome as they are, and the same _condition,
        # _waiters and _done_callbacks objects.
        cls = self.__class__
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)
        new._cf_copy_state(self)
        return new

    def __deepcopy__(self, memo):
        # The stdlib's deepcopy fails on its _condition's RLock, first in
        # its __dict__: fail there the same way.
        import copy
        copy.deepcopy(self._condition, memo)
        raise TypeError("cannot pickle %r object" % type(self).__name__)


_cfutures._set_future_class(Future)

wait = _cfutures.wait
as_completed = _cfutures.as_completed


class Executor(_std.Executor):
    """This is an abstract base class for concrete asynchronous executors."""

    __module__ = "cfutures"

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Returns an iterator equivalent to map(fn, iter).

        Args:
            fn: A callable that will take as many arguments as there are
                passed iterables.
            timeout: The maximum number of seconds to wait. If None, then there
                is no limit on the wait time.
            chunksize: The size of the chunks the iterable will be broken into
                before being passed to a child process. This argument is only
                used by ProcessPoolExecutor; it is ignored by
                ThreadPoolExecutor.
            buffersize: The number of submitted tasks whose results have not
                yet been yielded. If the buffer is full, iteration over the
                iterables pauses until a result is yielded from the buffer.
                If None, all input elements are eagerly collected, and a task
                is submitted for each.

        Returns:
            An iterator equivalent to: map(func, *iterables) but the calls may
            be evaluated out-of-order.

        Raises:
            TimeoutError: If the entire result iterator could not be generated
                before the given timeout.
            Exception: If fn(*args) raises for any values.
        """
        return _cfutures._map(self, fn, iterables, timeout, buffersize)
