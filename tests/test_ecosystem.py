"""Third-party programs that use concurrent.futures internally give the same
output with `python -m cfutures` as without it.

Skipped when the package is not installed; `pip install -e ".[ecosystem]"`
brings them (CI does).
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import module_env

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "scripts")


def _run(cf, args, env=None, timeout=300):
    full_env = module_env(cf)
    full_env.update(env or {})
    try:
        proc = subprocess.run([sys.executable] + args, capture_output=True,
                              text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as e:
        pytest.fail("%s hung; stdout so far: %r" % (args, e.stdout))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.timeout(330)
def test_tqdm_thread_map_and_process_map(cf):
    pytest.importorskip("tqdm.contrib.concurrent")
    script = os.path.join(SCRIPTS, "eco_tqdm.py")
    plain = _run(cf, [script, "300"]).stdout.splitlines()
    inst = _run(cf, ["-m", "cfutures", script, "300"]).stdout.splitlines()
    # the last line says which executors ran the calls
    assert plain[-1] == "stdlib executors: True True", plain
    assert inst[-1] == "stdlib executors: False False", inst
    assert plain[:-1] == inst[:-1]
    assert plain[0].startswith("thread_map: 100%") and plain[0].endswith("300/300")
    assert plain[2].startswith("True ")


@pytest.mark.timeout(330)
def test_black_process_pool(cf, tmp_path):
    pytest.importorskip("black")
    src = os.path.dirname(shutil.__file__)
    files = ["concurrent/futures/thread.py", "asyncio/futures.py",
             "asyncio/locks.py", "queue.py"]
    out = {}
    for label, prefix in (("plain", []), ("cfutures", ["-m", "cfutures"])):
        d = tmp_path / label
        d.mkdir()
        for f in files:
            shutil.copy(os.path.join(src, f), d / f.replace("/", "_"))
        proc = _run(cf, prefix + [os.path.join(SCRIPTS, "eco_black.py"), str(d), "2"],
                    env={"BLACK_CACHE_DIR": str(tmp_path / ("cache-" + label))})
        report = sorted(line.replace(str(d), "DIR")
                        for line in proc.stderr.splitlines())
        out[label] = (proc.stdout.splitlines(), report)
    (p_out, p_rep), (c_out, c_rep) = out["plain"], out["cfutures"]
    assert p_out[-1] == "ProcessPoolExecutor: concurrent.futures.process"
    assert c_out[-1] == "ProcessPoolExecutor: cfutures"
    assert p_out[:-1] == c_out[:-1]
    assert p_out[0].startswith("exit 0 files %d digest" % len(files))
    assert p_rep == c_rep
    assert "%d files reformatted." % len(files) in p_rep
