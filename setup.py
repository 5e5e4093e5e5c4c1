"""Build script for the cfutures C extension.

Build modes, chosen by environment variables:

  CFUTURES_DEBUG=1     -O0 -g, asserts on (Py_DEBUG-independent)
  CFUTURES_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer
  CFUTURES_WERROR=1    -Werror (CI)
"""
import glob
import os
import sys

from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "").strip() not in ("", "0", "no", "false")


extra_compile_args = ["-Wall", "-Wextra", "-Wno-unused-parameter",
                      "-Wno-missing-field-initializers", "-std=c11",
                      "-fno-strict-aliasing"]
extra_link_args = []
undef_macros = []
define_macros = [("_GNU_SOURCE", "1")]

if _flag("CFUTURES_DEBUG"):
    extra_compile_args += ["-O0", "-g3"]
    undef_macros.append("NDEBUG")
else:
    extra_compile_args += ["-O2"]

if _flag("CFUTURES_SANITIZE"):
    # float-cast-overflow is not part of "undefined" in GCC's set: a
    # double-to-int64 cast of inf/NaN/huge timeouts must trap too.
    san = ["-fsanitize=address,undefined,float-cast-overflow",
           "-fno-omit-frame-pointer",
           "-fno-sanitize-recover=undefined"]
    extra_compile_args += san + ["-O1", "-g"]
    extra_link_args += san
    undef_macros.append("NDEBUG")

if _flag("CFUTURES_WERROR"):
    extra_compile_args.append("-Werror")

if sys.platform.startswith("linux"):
    extra_link_args.append("-pthread")

ext = Extension(
    "cfutures._cfutures",
    sources=sorted(glob.glob(os.path.join("src", "*.c"))),
    depends=sorted(glob.glob(os.path.join("src", "*.h"))),
    include_dirs=["src"],
    define_macros=define_macros,
    undef_macros=undef_macros,
    extra_compile_args=extra_compile_args,
    extra_link_args=extra_link_args,
)

setup(ext_modules=[ext])
