"""cfutures.install()/uninstall() and `python -m cfutures`.

Each scenario runs in a fresh interpreter (install() changes process-wide
state), bounded by a timeout.
"""
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import module_env

HERE = os.path.dirname(os.path.abspath(__file__))

# Shared by the scenarios: the stdlib modules install() routes, a snapshot
# of their namespaces, and the check that every public class or function of
# each that cfutures implements is cfutures' object.
PRELUDE = """\
import sys, types
import concurrent.futures as std
import concurrent.futures._base, concurrent.futures.thread, concurrent.futures.process
import multiprocessing.spawn
import cfutures, cfutures._base, cfutures.thread, cfutures.process

PAIRS = [(std, cfutures), (std._base, cfutures._base),
         (std.thread, cfutures.thread), (std.process, cfutures.process)]
if "InterpreterPoolExecutor" in std.__all__:
    import concurrent.futures.interpreter, cfutures.interpreter
    PAIRS.append((std.interpreter, cfutures.interpreter))
MODS = [s for s, _ in PAIRS] + [multiprocessing.spawn]

def snapshot():
    return [dict(m.__dict__) for m in MODS]

def same_snapshot(a, b):
    return all(x.keys() == y.keys() and all(x[k] is y[k] for k in x)
               for x, y in zip(a, b))

def routed():
    # Every public class/function of a stdlib module that cfutures' module
    # also has: (name, is cfutures' object).  Read from the namespace, not
    # getattr(): the stdlib's lazy __getattr__ would add names to it.
    out = []
    for s, c in PAIRS:
        for name in sorted(set(vars(s)) | set(getattr(s, "__all__", ()))):
            if name.startswith("_") or not hasattr(c, name):
                continue
            obj = vars(s).get(name)
            if obj is None:             # lazy, not looked up yet: the stdlib's
                out.append((s.__name__ + "." + name, False))
                continue
            if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
                out.append((s.__name__ + "." + name, obj is getattr(c, name)))
    return out

def all_routed():
    r = routed()
    return all(ok for _, ok in r), [n for n, ok in r if not ok]
"""


def run(cf, code, *args, timeout=60, cwd=None, argv=None):
    cmd = argv or [sys.executable, "-c", PRELUDE + textwrap.dedent(code)]
    try:
        return subprocess.run(cmd + list(args), capture_output=True, text=True,
                              timeout=timeout, env=module_env(cf), cwd=cwd)
    except subprocess.TimeoutExpired as e:
        pytest.fail("hung for %ss; stdout so far: %r" % (timeout, e.stdout))


def check(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_install_routes_names_and_uninstall_restores(cf, tmp_path):
    (tmp_path / "later.py").write_text(
        "import concurrent.futures\n"
        "from concurrent.futures import ThreadPoolExecutor, wait\n"
        "from concurrent.futures.process import ProcessPoolExecutor\n")
    out = check(run(cf, """
        from concurrent.futures import ThreadPoolExecutor as Before
        before = snapshot()
        lazy_ppe = "ProcessPoolExecutor" in std.__dict__
        ok, missing = all_routed()
        assert not ok and missing, missing          # (the check can fail)
        cfutures.install()
        ok, missing = all_routed()
        assert ok, missing
        names = [n for n, _ in routed()]
        for n in ("concurrent.futures.ThreadPoolExecutor",
                  "concurrent.futures.ProcessPoolExecutor",
                  "concurrent.futures.Future", "concurrent.futures.Executor",
                  "concurrent.futures.wait", "concurrent.futures.as_completed",
                  "concurrent.futures._base.Future",
                  "concurrent.futures.thread.ThreadPoolExecutor",
                  "concurrent.futures.process.ProcessPoolExecutor"):
            assert n in names, n
        if sys.version_info >= (3, 14) and "InterpreterPoolExecutor" in std.__all__:
            assert std.InterpreterPoolExecutor is cfutures.InterpreterPoolExecutor
            assert std.interpreter.InterpreterPoolExecutor is cfutures.InterpreterPoolExecutor
        if "InterpreterPoolExecutor" not in std.__all__:
            assert "InterpreterPoolExecutor" not in std.__dict__
        # names bound before install() keep the stdlib's objects
        assert Before is not cfutures.ThreadPoolExecutor
        assert Before.__module__ == "concurrent.futures.thread"
        # ... but the stdlib's executors now make cfutures' futures
        with Before(1) as ex:
            assert type(ex.submit(int)) is cfutures.Future
        # names imported after install(), here and in a module imported later
        from concurrent.futures import ThreadPoolExecutor as After, Future
        assert After is cfutures.ThreadPoolExecutor and Future is cfutures.Future
        ns = {}
        exec("from concurrent.futures import *", ns)
        assert ns["ProcessPoolExecutor"] is cfutures.ProcessPoolExecutor
        assert ns["as_completed"] is cfutures.as_completed
        import later
        assert later.ThreadPoolExecutor is cfutures.ThreadPoolExecutor
        assert later.ProcessPoolExecutor is cfutures.ProcessPoolExecutor
        assert later.wait is cfutures.wait
        with later.concurrent.futures.ThreadPoolExecutor(2) as ex:
            assert list(ex.map(abs, [-1, -2])) == [1, 2]
        cfutures.uninstall()
        assert same_snapshot(before, snapshot())
        assert ("ProcessPoolExecutor" in std.__dict__) == lazy_ppe
        assert std.ProcessPoolExecutor.__module__ == "concurrent.futures.process"
        assert std.ThreadPoolExecutor is Before
        ok, missing = all_routed()
        assert not ok
        print("ok")
    """, cwd=str(tmp_path)))
    assert out == "ok\n"


def test_install_idempotent(cf):
    out = check(run(cf, """
        before = snapshot()
        cfutures.uninstall()                   # not installed: nothing
        assert same_snapshot(before, snapshot())
        cfutures.install(); cfutures.install()
        installed = snapshot()
        assert all_routed()[0]
        cfutures.install()
        assert same_snapshot(installed, snapshot())
        cfutures.uninstall()
        assert same_snapshot(before, snapshot())   # one uninstall undoes all
        cfutures.uninstall()
        assert same_snapshot(before, snapshot())
        # someone else's assignment after install() is left alone
        cfutures.install()
        mine = object()
        std.thread.ThreadPoolExecutor = mine
        cfutures.uninstall()
        assert std.thread.ThreadPoolExecutor is mine
        assert std.process.ProcessPoolExecutor.__module__ == "concurrent.futures.process"
        print("ok")
    """))
    assert out == "ok\n"


def test_interpreter_module_imports_after_install(cf):
    # cfutures.interpreter's class derives from the stdlib's thread pool; a
    # first import after install() (lazy on 3.10-3.13) once failed with a
    # base lay-out conflict, and so did `from cfutures import *`.
    out = check(run(cf, """
        cfutures.install()
        from cfutures import *
        import cfutures.interpreter as ci
        print(ci.InterpreterPoolExecutor.__name__)
    """))
    assert out == "InterpreterPoolExecutor\n"


def test_install_thread_safe(cf):
    # Many threads installing and uninstalling at once: the end state is
    # always exactly installed or exactly the original.
    out = check(run(cf, """
        import random, threading
        sys.setswitchinterval(1e-6)         # switch threads inside install()
        before = snapshot()
        for rnd in range(30):
            barrier = threading.Barrier(8)
            def churn(seed):
                r = random.Random(seed)
                barrier.wait()
                for _ in range(50):
                    (cfutures.install if r.random() < 0.5 else cfutures.uninstall)()
            ts = [threading.Thread(target=churn, args=(rnd * 8 + i,)) for i in range(8)]
            for t in ts: t.start()
            for t in ts: t.join()
            cfutures.install()
            assert all_routed()[0], all_routed()[1]
            cfutures.uninstall()
            assert same_snapshot(before, snapshot()), rnd
        print("ok")
    """, timeout=120))
    assert out == "ok\n"


CHILD = """\
import multiprocessing as mp, sys
import concurrent.futures

def probe():
    import concurrent.futures as cf, concurrent.futures.process as p
    return "%s %s %s" % (cf.ThreadPoolExecutor.__module__, cf.Future.__module__,
                         p.ProcessPoolExecutor.__module__)

def nested():
    # a pool started in a worker: its own workers are installed too
    import concurrent.futures as cf
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return type(ex).__module__ + " " + ex.submit(probe).result()

def main(install):
    import cfutures
    if install == "install":
        cfutures.install()
    elif install == "uninstall":
        cfutures.install(); cfutures.uninstall()
    for method in ("fork", "spawn", "forkserver"):
        ctx = mp.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
            print(method, "pool", type(ex).__module__, ex.submit(probe).result())
            if method == "spawn":
                print(method, "nested", ex.submit(nested).result())
        p = ctx.Process(target=probe)
        p.start(); p.join()
        with ctx.Pool(1) as pool:
            print(method, "mp.Pool", pool.apply(probe))

if __name__ == "__main__":
    main(sys.argv[1])
"""


@pytest.mark.parametrize("how", ["install", "uninstall", "python -m cfutures"])
def test_process_pool_workers_inherit(cf, tmp_path, how):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    if how == "python -m cfutures":
        argv = [sys.executable, "-m", "cfutures", str(script), "none"]
    else:
        argv = [sys.executable, str(script), how]
    out = check(run(cf, None, argv=argv, timeout=120))
    lines = out.splitlines()
    assert len(lines) == 7, out
    if how == "uninstall":
        std = ("concurrent.futures.thread concurrent.futures._base "
               "concurrent.futures.process")
        assert all(line.endswith(std) for line in lines), out
        assert "pool concurrent.futures.process" in lines[0]
    else:
        assert all(line.endswith("cfutures cfutures cfutures") for line in lines), out
        assert "pool cfutures" in lines[0]
        assert "spawn nested cfutures cfutures cfutures cfutures" in lines, out


def test_asyncio_default_executor(cf):
    out = check(run(cf, """
        import asyncio, threading
        cfutures.install()
        async def main():
            loop = asyncio.get_running_loop()
            name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
            ex = loop._default_executor
            assert type(ex) is cfutures.ThreadPoolExecutor, type(ex)
            assert name.startswith("asyncio_"), name
            # wrap_future / run_coroutine_threadsafe with cfutures' futures
            f = ex.submit(pow, 2, 10)
            assert isinstance(f, std.Future) and type(f) is cfutures.Future
            assert await asyncio.wrap_future(f) == 1024
            cf_fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "x"), loop)
            assert type(cf_fut) is cfutures.Future
            with std.ProcessPoolExecutor(1) as pex:
                assert await loop.run_in_executor(pex, pow, 3, 3) == 27
            await asyncio.sleep(0)
            return await asyncio.wrap_future(cf_fut)
        assert asyncio.run(main()) == "x"
        print("ok")
    """))
    assert out == "ok\n"


# ------------------------------------------------------------ python -m cfutures

SCRIPT = """\
import sys, concurrent.futures
print(repr(sys.argv), __name__, repr(__spec__), __file__, __package__,
      type(__loader__).__name__, sys.path[0], sorted(globals()))
print("impl", concurrent.futures.ThreadPoolExecutor.__module__)

def fail(kind):
    if kind == "raise":
        raise ValueError("boom")
    if kind == "kbi":
        raise KeyboardInterrupt
    if kind == "exit":
        sys.exit(int(sys.argv[2]))
    if kind == "exitmsg":
        sys.exit("message")

if __name__ == "__main__" and len(sys.argv) > 1:
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        print(ex.submit(sum, [1, 2]).result())
    fail(sys.argv[1])
"""


def _both(cf, cwd, args, module=False):
    """(python ARGS, python -m cfutures ARGS), outputs with the one line that
    says which implementation ran taken out (checked)."""
    base = [sys.executable] + (["-m"] if module else [])
    plain = run(cf, None, argv=base + args, cwd=cwd)
    inst = run(cf, None, argv=[sys.executable, "-m", "cfutures"]
               + (["-m"] if module else []) + args, cwd=cwd)
    assert "impl concurrent.futures.thread\n" in plain.stdout, plain.stderr
    assert "impl cfutures\n" in inst.stdout, inst.stderr
    plain.stdout = plain.stdout.replace("impl concurrent.futures.thread\n", "")
    inst.stdout = inst.stdout.replace("impl cfutures\n", "")
    for p in (plain, inst):
        p.stdout = re.sub(r" at 0x[0-9a-f]+", " at 0x?", p.stdout)
    return plain, inst


@pytest.mark.parametrize("args,code", [
    ([], 0), (["none", "a b"], 0), (["raise"], 1), (["exit", "3"], 3),
    (["exit", "0"], 0), (["exitmsg"], 1), (["kbi"], -signal.SIGINT)])
def test_run_script_like_python(cf, tmp_path, args, code):
    (tmp_path / "prog.py").write_text(SCRIPT)
    sub = tmp_path / "sub"
    sub.mkdir()
    # relative script path, from another directory: argv[0] as typed
    plain, inst = _both(cf, str(sub), ["../prog.py"] + args)
    assert plain.returncode == code, plain.stderr
    assert (inst.returncode, inst.stdout, inst.stderr) == \
        (plain.returncode, plain.stdout, plain.stderr)
    if args == ["raise"]:
        assert inst.stderr.startswith("Traceback (most recent call last):\n"
                                      '  File "%s", line 19' % (sub / ".." / "prog.py"))


@pytest.mark.parametrize("args,code", [([], 0), (["raise"], 1), (["exit", "4"], 4)])
def test_run_module_like_python(cf, tmp_path, args, code):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "prog.py").write_text(SCRIPT)
    plain, inst = _both(cf, str(tmp_path), ["pkg.prog"] + args, module=True)
    assert plain.returncode == code, plain.stderr
    assert (inst.returncode, inst.stdout, inst.stderr) == \
        (plain.returncode, plain.stdout, plain.stderr)
    assert "ModuleSpec(name='pkg.prog'" in inst.stdout


def test_run_errors_and_usage(cf, tmp_path):
    p = run(cf, None, argv=[sys.executable, "-m", "cfutures"])
    assert p.returncode == 2 and p.stderr.startswith("usage: python -m cfutures")
    for opt in ("-h", "--help"):
        p = run(cf, None, argv=[sys.executable, "-m", "cfutures", opt])
        assert p.returncode == 0 and p.stdout.startswith("usage: python -m cfutures")
    p = run(cf, None, argv=[sys.executable, "-m", "cfutures", "missing.py"],
            cwd=str(tmp_path))
    assert p.returncode == 2 and "can't open file" in p.stderr
    p = run(cf, None, argv=[sys.executable, "-m", "cfutures", "-m", "no_such_mod_x"])
    assert p.returncode == 1 and "No module named no_such_mod_x" in p.stderr
    p = run(cf, None, argv=[sys.executable, "-m", "cfutures", "-m"])
    assert p.returncode == 2


def test_run_script_spawn_pool_in_main_guard(cf, tmp_path):
    # A spawn pool re-imports the script as __mp_main__ in each worker: the
    # __main__ guard must hold there, and the workers are installed.
    (tmp_path / "spawner.py").write_text(textwrap.dedent("""\
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        print("imported as", __name__)
        def probe(x):
            return (__name__, ProcessPoolExecutor.__module__, x * 2)
        if __name__ == "__main__":
            with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
                print(list(ex.map(probe, range(3))))
        """))
    p = run(cf, None, argv=[sys.executable, "-m", "cfutures", "spawner.py"],
            cwd=str(tmp_path), timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "imported as __main__"
    assert p.stdout.splitlines()[-1] == (
        "[('__mp_main__', 'cfutures', 0), ('__mp_main__', 'cfutures', 2), "
        "('__mp_main__', 'cfutures', 4)]"), p.stdout


def test_dir_lists_only_existing_names(cf):
    import cfutures
    names = dir(cfutures)
    missing = [n for n in names if not hasattr(cfutures, n)]
    assert missing == []
    assert "install" in names and "uninstall" in names
    assert "install" not in cfutures.__all__
