"""The C sources stay readable: one concern per file, none over 1,200
lines, and each is named in the README's "How it works"."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 1200


def _sources():
    return sorted(glob.glob(os.path.join(ROOT, "src", "*.[ch]")))


def _how_it_works():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## How it works\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README has no 'How it works' section"
    return m.group(1)


def test_no_c_file_over_the_limit():
    too_long = {}
    for path in _sources():
        if path.endswith(".c"):
            with open(path, encoding="utf-8") as f:
                n = sum(1 for _ in f)
            if n > MAX_LINES:
                too_long[os.path.basename(path)] = n
    assert not too_long, "split these by concern: %r" % too_long


def test_every_source_file_is_in_how_it_works():
    section = _how_it_works()
    missing = [os.path.basename(p) for p in _sources()
               if "src/" + os.path.basename(p) not in section]
    assert not missing, "name these in README 'How it works': %r" % missing


def test_setup_builds_every_c_file():
    # setup.py globs src/*.c: a new file needs no edit there.
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        assert 'glob.glob(os.path.join("src", "*.c"))' in f.read()
