"""Task functions for tests/test_process.py.

They live in an importable module (not in the test file) so that spawn and
forkserver workers can unpickle them.
"""
import os
import signal
import sys
import threading
import time

_init_value = None


def sq(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def identity(x):
    return x


def getpid(_=None):
    return os.getpid()


def slow(t, value=None):
    time.sleep(t)
    return value if value is not None else t


def raise_value_error(msg):
    raise ValueError(msg)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def set_init_value(v):
    global _init_value
    _init_value = v


def get_init_value(_=None):
    return _init_value


def failing_initializer():
    raise RuntimeError("initializer failed on purpose")


def blocked_signals(_=None):
    return sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))


def exit_now(code=3):
    os._exit(code)


def sigkill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def segfault():
    import ctypes
    ctypes.string_at(0)


class _DieWhenPickled:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)


def kill_self_soon_then_return_big(delay, size):
    """Die (SIGKILL) while the worker pickles/writes a big result: after
    `delay` seconds, or at the latest once its `size` bytes are written
    (however fast that is)."""
    pid = os.getpid()
    threading.Timer(delay, os.kill, (pid, signal.SIGKILL)).start()
    return [b"x" * size, _DieWhenPickled()]


class Unpicklable:
    def __reduce__(self):
        raise TypeError("Unpicklable cannot be pickled")


def return_unpicklable():
    return Unpicklable()


class ErrorWithoutArgsRebuild(Exception):
    """Pickles, but cannot be unpickled (its __init__ needs two args)."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def raise_unrebuildable():
    raise ErrorWithoutArgsRebuild(1, 2)


def echo_bytes(b):
    return bytes(b)


def append_line(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def when_exists(path, value):
    """Return value once path exists (the test creates it; no timing)."""
    deadline = time.monotonic() + 100
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def child_pids():
    """PIDs of this process's live (non-zombie) children."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if int(rest[1]) == me:
            out.append((int(d), rest[0]))
    return out


def stray_children():
    """child_pids() less multiprocessing's own long-lived helpers (the
    resource tracker, the forkserver), which outlive every pool by design:
    what is left is a worker that was not reaped."""
    import multiprocessing.forkserver as fs
    import multiprocessing.resource_tracker as rt
    keep = {getattr(rt._resource_tracker, "_pid", None),
            getattr(fs._forkserver, "_forkserver_pid", None)}
    return [c for c in child_pids() if c[0] not in keep]


def fd_count():
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def corrupt_result_stream(how):
    """In a cfutures worker: write a bogus frame to the result pipe (found
    in _worker_main's frame, which called the C worker loop), then stay
    alive, so that the parent sees a broken stream, not a dead worker."""
    import struct
    f = sys._getframe(1)
    while f is not None and f.f_code.co_name != "_worker_main":
        f = f.f_back
    fd = f.f_locals["result_fd"]
    if how == "header":         # a length no frame can have
        frame = struct.pack("=QQII", 1 << 62, 0, 4, 0)
    else:                       # a well-formed frame of a task's kind
        frame = struct.pack("=QQII", 0, 0, 1, 0)
    os.write(fd, frame)
    time.sleep(30)


if __name__ == "__main__":
    sys.exit("helper module, not a script")


def close_fds_then_sleep(seconds):
    """A worker that closes every fd (its pipes, its sentinel) yet runs on,
    for `seconds` or until its parent is gone (no orphan left behind)."""
    parent = os.getppid()
    os.closerange(3, 65536)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.05)


def pid_after(t):
    """Sleep t, then return this worker's pid."""
    time.sleep(t)
    return os.getpid()
