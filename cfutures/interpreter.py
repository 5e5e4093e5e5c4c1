"""cfutures.interpreter: InterpreterPoolExecutor (native implementation pending)."""
from ._base import Executor

__all__ = ["InterpreterPoolExecutor"]


class InterpreterPoolExecutor(Executor):
    """Placeholder: the native interpreter pool has not landed yet."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "cfutures.InterpreterPoolExecutor is not implemented yet")
