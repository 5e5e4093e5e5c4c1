"""cfutures.thread: ThreadPoolExecutor (native implementation pending)."""
from concurrent.futures.thread import BrokenThreadPool  # noqa: F401

from ._base import Executor

__all__ = ["ThreadPoolExecutor", "BrokenThreadPool"]


class ThreadPoolExecutor(Executor):
    """Placeholder: the native thread pool has not landed yet."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "cfutures.ThreadPoolExecutor is not implemented yet")
