"""cfutures.process: ProcessPoolExecutor (native implementation pending)."""
from concurrent.futures.process import BrokenProcessPool  # noqa: F401

from ._base import Executor

__all__ = ["ProcessPoolExecutor", "BrokenProcessPool"]


class ProcessPoolExecutor(Executor):
    """Placeholder: the native process pool has not landed yet."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "cfutures.ProcessPoolExecutor is not implemented yet; "
            "use concurrent.futures.ProcessPoolExecutor")
