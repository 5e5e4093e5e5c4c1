"""python -m cfutures: run a program with cfutures installed.

    python -m cfutures script.py [args]
    python -m cfutures -m module [args]
    python -m cfutures -c command [args]

The program runs as ``python script.py`` (``-m module``, ``-c command``)
would run it -- sys.argv, sys.path[0], a fresh ``__main__`` module with its
``__file__``/``__spec__``, exit status, tracebacks -- with
cfutures.install() done first, so every concurrent.futures executor,
future, wait() and as_completed() it uses (asyncio's default executor and
libraries' included) is cfutures'.
"""
import io
import os
import runpy
import sys
import types

USAGE = """\
usage: python -m cfutures script.py [args ...]
       python -m cfutures -m module [args ...]
       python -m cfutures -c command [args ...]

Run a Python program with cfutures.install() in effect: its uses of
concurrent.futures (and those of the libraries it uses, asyncio's default
executor included) get cfutures' executors, futures, wait() and
as_completed(). The program otherwise runs as `python script.py`
(`python -m module`, `python -c command`) runs it: same sys.argv, __main__,
exit status and tracebacks. Worker processes of its process pools are
installed too.
"""

_HERE = os.path.abspath(__file__)     # frames to leave out of tracebacks


def _fresh_main():
    # The program gets its own __main__, as under `python script.py`, not
    # this module's namespace.
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = sys.modules["builtins"]
    if sys.version_info < (3, 14):
        main.__dict__["__annotations__"] = {}
    sys.modules["__main__"] = main
    return main


def _run_script(path):
    # Absolute as Python makes it (joined to the cwd, not normalised).
    abspath = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    if os.path.isdir(path) or _is_zip(path):
        # `python dir_or_zip`: its __main__ module, found on sys.path[0]
        if getattr(sys.flags, "safe_path", False):
            sys.path.insert(0, abspath)
        else:
            sys.path[0] = abspath
        _fresh_main()
        runpy._run_module_as_main("__main__", False)
        return
    try:
        with io.open_code(abspath) as f:
            source = f.read()
    except OSError as e:
        sys.stderr.write("%s -m cfutures: can't open file %r: [Errno %s] %s\n"
                         % (sys.executable, abspath, e.errno, e.strerror))
        sys.exit(2)
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0] = os.path.dirname(os.path.realpath(abspath))
    code = compile(source, abspath, "exec", dont_inherit=True)
    from importlib.machinery import SourceFileLoader
    main = _fresh_main()
    main.__dict__.update(__file__=abspath, __package__=None, __spec__=None,
                         __loader__=SourceFileLoader("__main__", abspath))
    if sys.version_info < (3, 15):
        main.__cached__ = None
    exec(code, main.__dict__)


def _run_command(command):
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0] = ""
    main = _fresh_main()
    main.__dict__.update(__package__=None, __spec__=None)
    from importlib.machinery import BuiltinImporter
    main.__loader__ = BuiltinImporter
    exec(compile(command, "<string>", "exec", dont_inherit=True), main.__dict__)


def _is_zip(path):
    import zipfile
    try:
        return os.path.isfile(path) and zipfile.is_zipfile(path)
    except OSError:
        return False


def _report(exc):
    # Show the traceback from the program's first frame, without ours.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _HERE:
        tb = tb.tb_next
    exc.__traceback__ = tb      # the default hook prints this one
    sys.excepthook(type(exc), exc, tb)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(USAGE)
        return 0 if argv else 2
    if argv[0] in ("-m", "-c"):
        if len(argv) < 2:
            sys.stderr.write("Argument expected for the %s option\n%s"
                             % (argv[0], USAGE))
            return 2
        kind, target, rest = argv[0], argv[1], argv[2:]
    elif argv[0].startswith("-"):
        sys.stderr.write("unknown option %s\n%s" % (argv[0], USAGE))
        return 2
    else:
        kind, target, rest = "script", argv[0], argv[1:]

    import cfutures
    cfutures.install()

    try:
        if kind == "-m":
            sys.argv[:] = ["-m"] + rest      # runpy puts the module's path first
            _fresh_main()
            runpy._run_module_as_main(target, True)
        elif kind == "-c":
            sys.argv[:] = ["-c"] + rest
            _run_command(target)
        else:
            sys.argv[:] = [target] + rest
            _run_script(target)
    except SystemExit:
        raise
    except KeyboardInterrupt as e:
        _report(e)
        # Re-raised so that the interpreter exits as it does on an
        # unhandled Ctrl-C (killed by SIGINT); already reported.
        sys.excepthook = lambda *args: None
        raise
    except BaseException as e:
        _report(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
