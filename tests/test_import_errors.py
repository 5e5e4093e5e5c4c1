"""Importing a cfutures package that has no built extension (a clone's
source tree shadowing the installed package) says what is wrong and what to
do, instead of Python's "partially initialized module ... circular import"."""

import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES

import cfutures

PKG = os.path.dirname(cfutures.__file__)


def _fake_clone(tmp_path, with_so=None):
    """A clone's root: setup.py and the package's .py files, no built .so."""
    dst = tmp_path / "cfutures"
    dst.mkdir()
    for name in os.listdir(PKG):
        if name.endswith(".py"):
            shutil.copy(os.path.join(PKG, name), dst / name)
    (tmp_path / "setup.py").write_text("# not run\n")
    if with_so is not None:
        (dst / ("_cfutures" + EXTENSION_SUFFIXES[0])).write_bytes(with_so)
    return tmp_path


def _import_from(cwd):
    # python -c puts the current directory first on sys.path, as a REPL
    # started from the clone's root does; -S keeps an editable install's
    # import hook (site-packages) from finding the real package first.
    return subprocess.run(
        [sys.executable, "-S", "-c", "import cfutures"], cwd=cwd,
        capture_output=True, text=True, timeout=60)


def test_source_tree_without_extension(tmp_path):
    proc = _import_from(_fake_clone(tmp_path))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: cfutures was imported from "), proc.stderr
    assert str(tmp_path / "cfutures") in last
    assert "no built extension module" in last
    assert "source tree" in last
    assert "pip install -e ." in last
    assert "circular import" not in proc.stderr


def test_broken_extension_keeps_the_real_error(tmp_path):
    # A .so that is there but does not load: its own error, not ours.
    proc = _import_from(_fake_clone(tmp_path, with_so=b"not an ELF file"))
    assert proc.returncode == 1
    assert "no built extension module" not in proc.stderr
    assert "ImportError" in proc.stderr
