"""Allocation failures (MemoryError) on the paths of wait() and map().

_testcapi.set_nomemory(i, i + 1) makes the i-th allocation fail; the scripts
step i over every allocation of one call, so each error path runs once.  A
crash (a NULL Py_DECREF in wait() once did) fails the test through the
subprocess; a future lost by map() when its result ring could not grow is
seen as one never freed.
"""

import pytest

from conftest import run_script

try:
    import _testcapi
    HAVE_NOMEMORY = hasattr(_testcapi, "set_nomemory")
except ImportError:  # pragma: no cover
    HAVE_NOMEMORY = False

pytestmark = pytest.mark.skipif(not HAVE_NOMEMORY, reason="needs _testcapi.set_nomemory")

WAIT_SCRIPT = r"""
import _testcapi, concurrent.futures as std
done = [cf.Future() for _ in range(3)]
for f in done:
    f.set_result(1)
foreign = std.Future()
foreign.set_result(2)
errors = 0
for i in range(400):
    fs = done + [foreign, cf.Future()]
    _testcapi.set_nomemory(i, i + 1)
    try:
        cf.wait(fs, timeout=0)
    except Exception:  # MemoryError, or what a failed allocation became
        errors += 1
    finally:
        _testcapi.remove_mem_hooks()
print("OK", errors)
"""


def test_wait_memory_errors_do_not_crash(cf):
    # cfutures only: 3.13.0's own stdlib wait() segfaults under this script.
    proc = run_script(cf, WAIT_SCRIPT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK"), proc.stdout


MAP_SCRIPT = r"""
import _testcapi, gc

class F(cf.Future):
    pass

class Ex(cf.Executor):
    def submit(self, fn, *args):
        f = F()
        f.set_result(None)
        return f

def alive():
    return sum(type(o) is F for o in gc.get_objects())

ex = Ex()
errors = 0
for i in range(300):
    _testcapi.set_nomemory(i, i + 1)
    try:
        it = ex.map(abs, range(40))
    except Exception:  # MemoryError, or what a failed allocation became
        errors += 1
        it = None
    finally:
        _testcapi.remove_mem_hooks()
    del it
    gc.collect()
    if alive():
        print("LOST", i, alive())
        break
else:
    print("OK", errors)
"""


def test_map_memory_errors_lose_no_future(impl):
    proc = run_script(impl, MAP_SCRIPT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK"), proc.stdout
