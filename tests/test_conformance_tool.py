"""tests/conformance/run_cpython_suite.py: the import rewriting it applies to
CPython's test_concurrent_futures before running it against cfutures."""

import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "conformance"))
import run_cpython_suite as tool  # noqa: E402

del sys.path[0]


def rewrite(src):
    fallbacks = set()
    return tool.rewrite_source(textwrap.dedent(src), fallbacks), fallbacks


def test_imports_point_at_cfutures():
    out, fallbacks = rewrite("""\
        from concurrent import futures
        import concurrent.futures
        from concurrent.futures._base import (
            PENDING, RUNNING,
            Future)
        from concurrent.futures import ThreadPoolExecutor as TPE
        x = concurrent.futures.process.BrokenProcessPool
        """)
    assert out == textwrap.dedent("""\
        import cfutures as futures
        import cfutures
        from cfutures._base import PENDING, RUNNING, Future
        from cfutures import ThreadPoolExecutor as TPE
        x = cfutures.process.BrokenProcessPool
        """)
    assert fallbacks == set()


def test_names_cfutures_lacks_stay_on_the_stdlib():
    out, fallbacks = rewrite("""\
        if True:
            from concurrent.futures.process import BrokenProcessPool, _ExecutorManagerThread
        """)
    assert out == textwrap.dedent("""\
        if True:
            from cfutures.process import BrokenProcessPool
            from concurrent.futures.process import _ExecutorManagerThread  # not in cfutures
        """)
    assert fallbacks == {"concurrent.futures.process._ExecutorManagerThread"}


def test_strings_logger_name_kept_scripts_rewritten():
    out, _ = rewrite('''\
        logger = logging.getLogger('concurrent.futures')
        patch("concurrent.futures.process._ThreadWakeup")
        script = """if 1:
            from concurrent.futures import {executor_type}
            from test.test_concurrent_futures.test_shutdown import sleep_and_print
        """
        ''')
    assert "getLogger('concurrent.futures')" in out
    assert 'patch("cfutures.process._ThreadWakeup")' in out
    assert "from cfutures import {executor_type}" in out
    # the helper module the scripts import stays the stdlib's copy
    assert "from test.test_concurrent_futures.test_shutdown import" in out


@pytest.mark.skipif(tool.find_suite() is not None,
                    reason="this interpreter ships test_concurrent_futures")
def test_missing_suite_skips_or_fails_with_require():
    script = os.path.join(HERE, "conformance", "run_cpython_suite.py")
    proc = subprocess.run([sys.executable, script], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "not available for this interpreter" in proc.stdout
    proc = subprocess.run([sys.executable, script, "--require"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
