"""Task and initializer functions for tests/test_process_conformance.py
(importable, so that spawn and forkserver workers can unpickle them)."""
import logging
import os
import time
from logging.handlers import QueueHandler


def getpid(_=None):
    return os.getpid()


def slow(t, value=None):
    time.sleep(t)
    return value


def raise_runtime_error():
    raise RuntimeError(123)  # the line the remote traceback must show


def log_then_fail(log_queue):
    """A failing initializer whose log record travels through a queue, as
    in CPython's test_init.FailingInitializerMixin."""
    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(QueueHandler(log_queue))
    logger.setLevel("CRITICAL")
    logger.propagate = False
    time.sleep(0.1)
    raise ValueError("error in initializer")
