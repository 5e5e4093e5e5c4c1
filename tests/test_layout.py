"""Module layout: cfutures is a drop-in for concurrent.futures (names,
submodules, exception identity, signatures)."""

import concurrent.futures
import concurrent.futures._base as std_base
import inspect
import logging
import sys

import pytest

STD = concurrent.futures

BASE_NAMES = [
    "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED",
    "PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED",
    "DoneAndNotDoneFutures", "Executor", "Future", "wait", "as_completed",
    "Error", "CancelledError", "TimeoutError", "InvalidStateError",
    "BrokenExecutor", "LOGGER",
]
SHARED_OBJECTS = [
    "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED",
    "PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED",
    "DoneAndNotDoneFutures", "Error", "CancelledError", "TimeoutError",
    "InvalidStateError", "BrokenExecutor", "LOGGER",
]
EXCEPTIONS = ["CancelledError", "TimeoutError", "InvalidStateError", "BrokenExecutor"]


def test_top_level_names(impl):
    for name in STD.__all__:
        assert hasattr(impl, name), name
    assert set(STD.__all__) <= set(impl.__all__) | {"InterpreterPoolExecutor"}
    assert set(STD.__all__) <= set(dir(impl))


@pytest.mark.skipif(sys.version_info < (3, 13), reason="interpreter pools need 3.13+")
def test_interpreter_pool_executor_name(cf):
    assert "InterpreterPoolExecutor" in cf.__all__
    assert hasattr(cf, "InterpreterPoolExecutor")


def test_interpreter_pool_executor_listed(cf):
    assert "InterpreterPoolExecutor" in cf.__all__


def test_base_names(impl):
    base = impl._base
    for name in BASE_NAMES:
        assert hasattr(base, name), name
    assert base.Future is impl.Future
    assert base.Executor is impl.Executor
    assert base.wait is impl.wait
    assert base.as_completed is impl.as_completed


@pytest.mark.parametrize("name", SHARED_OBJECTS)
def test_base_objects_are_shared(impl, name):
    value = getattr(impl._base, name)
    assert value is getattr(std_base, name) or (isinstance(value, str) and value == getattr(std_base, name))


def test_logger(impl):
    assert impl._base.LOGGER is logging.getLogger("concurrent.futures")


@pytest.mark.parametrize("name", EXCEPTIONS)
def test_exception_identity(impl, name):
    assert getattr(impl, name) is getattr(STD, name)
    assert getattr(impl._base, name) is getattr(STD, name)


def test_timeout_error_per_version(impl):
    if sys.version_info >= (3, 11):
        assert impl.TimeoutError is TimeoutError
    else:
        assert issubclass(impl.TimeoutError, impl._base.Error)


def test_executor_specific_exceptions(cf):
    import cfutures.process
    import cfutures.thread
    import concurrent.futures.process
    import concurrent.futures.thread

    assert cfutures.thread.BrokenThreadPool is concurrent.futures.thread.BrokenThreadPool
    assert cfutures.process.BrokenProcessPool is concurrent.futures.process.BrokenProcessPool


def test_class_hierarchy(impl):
    assert issubclass(impl.Future, STD.Future)
    assert issubclass(impl.Executor, STD.Executor)
    assert issubclass(impl.CancelledError, impl._base.Error)
    assert issubclass(impl.InvalidStateError, impl._base.Error)
    assert issubclass(impl.BrokenExecutor, RuntimeError)


def _raise_from(mod, which):
    if which == "cancelled":
        f = mod.Future()
        f.cancel()
        f.result()
    elif which == "timeout":
        mod.Future().result(timeout=0)
    elif which == "invalid":
        f = mod.Future()
        f.set_result(1)
        f.set_result(2)
    elif which == "as_completed-timeout":
        next(iter(mod.as_completed([mod.Future()], timeout=0)))


CATCH = {"cancelled": "CancelledError", "timeout": "TimeoutError",
         "invalid": "InvalidStateError", "as_completed-timeout": "TimeoutError"}


@pytest.mark.parametrize("which", sorted(CATCH))
@pytest.mark.parametrize("catcher", ["catch-std", "catch-impl"])
def test_except_clause_written_for_either_module(impl, which, catcher):
    mod = STD if catcher == "catch-std" else impl
    exc_class = getattr(mod, CATCH[which])
    for source in (STD, impl):
        try:
            _raise_from(source, which)
        except exc_class as e:
            assert isinstance(e, getattr(STD, CATCH[which]))
        else:
            pytest.fail("nothing raised")
    # The common base class catches them too.
    try:
        _raise_from(impl, which)
    except (STD._base.Error if CATCH[which] != "TimeoutError" or sys.version_info < (3, 11)
            else OSError):
        pass


def _sig(obj):
    # A C method's self is positional-only; nobody passes self by keyword.
    return str(inspect.signature(obj)).replace("(self, /", "(self")


@pytest.mark.parametrize("name", ["wait", "as_completed"])
def test_function_signatures(impl, name):
    assert _sig(getattr(impl, name)) == _sig(getattr(STD, name))


@pytest.mark.parametrize("name", ["cancel", "cancelled", "running", "done", "result",
                                  "exception", "add_done_callback",
                                  "set_running_or_notify_cancel", "set_result",
                                  "set_exception"])
def test_future_method_signatures(impl, name):
    assert _sig(getattr(impl.Future, name)) == _sig(getattr(STD.Future, name))
    assert getattr(impl.Future, name).__doc__


def test_executor_signatures(impl):
    for name in ("submit", "shutdown", "__enter__", "__exit__"):
        assert _sig(getattr(impl.Executor, name)) == _sig(getattr(STD.Executor, name)), name


def test_executor_map_signature(cf):
    expected = "(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None)"
    assert _sig(cf.Executor.map) == expected


def test_keyword_arguments(impl):
    f = impl.Future()
    f.add_done_callback(fn=lambda fut: None)
    f.set_result(result=3)
    assert f.result(timeout=0) == 3
    assert f.exception(timeout=0) is None
    g = impl.Future()
    g.set_exception(exception=KeyError())
    assert isinstance(g.exception(timeout=None), KeyError)
    r = impl.wait(fs=[f], timeout=0, return_when=impl.ALL_COMPLETED)
    assert r.done == {f}
    assert list(impl.as_completed(fs=[f], timeout=0)) == [f]


def test_docstrings(impl):
    for obj in (impl.wait, impl.as_completed, impl.Future, impl.Executor, impl.Executor.map):
        assert obj.__doc__ and obj.__doc__.strip()
