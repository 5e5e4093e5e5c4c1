"""ProcessPoolExecutor with large payloads (cfutures carries them through
shared memory): exact round trips in every start method, payloads larger
than a region, a worker killed mid-transfer, no fd or /dev/shm leak.

Every scenario runs against the stdlib and cfutures (the `impl` fixture);
those that can hang or crash run as scripts in a subprocess with a timeout.
"""
import multiprocessing as mp
import os
import sys
import time

import pytest

import process_helpers as h
from test_process import is_cf, run_script

METHODS = ["fork", "spawn", "forkserver"]
KiB = 1024
MiB = 1024 * KiB


def echo(x):
    return x


def call_args(*args, **kwargs):
    return args, kwargs


def payloads():
    """Sizes around the shared-memory threshold (64 KiB) and far beyond
    any region's first size."""
    out = []
    for size in (10, 64 * KiB - 1, 64 * KiB, MiB + 7, 16 * MiB):
        data = os.urandom(size)
        out += [data, bytearray(data)]
    out.append("é" + "s" * (3 * MiB))                  # a large str
    return out


def check_same(got, want):
    assert type(got) is type(want)
    assert got == want


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
def test_large_args_and_results_round_trip(impl, method):
    ctx = mp.get_context(method)
    with impl.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        items = payloads()
        fs = [ex.submit(h.identity, x) for x in items]
        for f, x in zip(fs, items):
            check_same(f.result(timeout=60), x)
        # Several large arguments, keyword arguments, nested, shared.
        a, b = bytes(200 * KiB), bytearray(b"\x01" * (300 * KiB))
        got = ex.submit(h.identity, [a, b, b, (a, {"k": b})]).result(60)
        assert got == [a, b, b, (a, {"k": b})]
        assert got[1] is got[2] is got[3][1]["k"]     # one bytearray
        assert type(got[0]) is bytes and type(got[1]) is bytearray
        got = ex.submit(call_args, a, b, k=b).result(60)
        assert got == ((a, b), {"k": b}) and got[0][1] is got[1]["k"]
        # map() chunks: payloads nested in the chunk and its result list
        big = [os.urandom(100 * KiB) for _ in range(6)]
        assert list(ex.map(echo, big, chunksize=2)) == big
        # a memoryview does not pickle, in either implementation
        f = ex.submit(h.identity, memoryview(a))
        with pytest.raises(TypeError, match="memoryview"):
            f.result(60)


@pytest.mark.timeout(120)
def test_payload_mutated_after_submit_is_a_snapshot(impl):
    # cfutures copies arguments at submit(); the stdlib pickles later (its
    # feeder thread), so only cfutures is held to the snapshot.
    with impl.ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as ex:
        ex.submit(h.sq, 2).result(60)
        data = bytearray(b"a" * MiB)
        f = ex.submit(h.identity, data)
        if is_cf(impl):
            data[:] = b"b" * MiB
            assert f.result(60) == b"a" * MiB
        else:
            f.result(60)


LARGER_THAN_REGION = """
import os, multiprocessing as mp
import process_helpers as h
ctx = mp.get_context({method!r})
with M.ProcessPoolExecutor(2, mp_context=ctx) as ex:
    items = [os.urandom(n) for n in (100 * 1024, 3 * 2**20, 200 * 1024)]
    items += [bytearray(x) for x in items]
    # more than a region holds at once, queued together
    fs = [ex.submit(h.identity, x) for x in items * 3]
    for f, x in zip(fs, items * 3):
        r = f.result(timeout=60)
        assert r == x and type(r) is type(x), (len(x), type(r))
    r = ex.submit(os.urandom, 5 * 2**20).result(timeout=60)
    assert type(r) is bytes and len(r) == 5 * 2**20
print("OK")
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_payload_larger_than_the_region(impl, method):
    # CFUTURES_SHM_MAX caps each region at 1 MiB: a larger payload goes
    # through the pipe, and a full region is never waited for.
    r = run_script(LARGER_THAN_REGION.format(method=method), impl,
                   timeout=170, extra_env={"CFUTURES_SHM_MAX": str(2**20)})
    assert r.stdout.strip() == "OK", r.stderr[-3000:]


KILLED_MID_TRANSFER = """
import os, signal, threading, multiprocessing as mp
import process_helpers as h
from concurrent.futures.process import BrokenProcessPool
ctx = mp.get_context({method!r})
ex = M.ProcessPoolExecutor(2, mp_context=ctx)
ex.submit(h.sq, 1).result(timeout=60)
blob = os.urandom(8 * 2**20)
outcomes = set()
fs = []
calls = [(h.echo_bytes, blob)] * 16
calls.append((h.kill_self_soon_then_return_big, 0.01, 32 * 2**20))
calls += [(h.echo_bytes, bytearray(blob))] * 16
for fn, *args in calls:
    try:
        fs.append(ex.submit(fn, *args))
    except BrokenProcessPool:
        outcomes.add("broken")
for f in fs:
    try:
        outcomes.add("ok" if f.result(timeout=60) == blob else "WRONG")
    except BrokenProcessPool:
        outcomes.add("broken")
print("DONE", all(f.done() for f in fs))
print("OUTCOMES", sorted(outcomes))
ex.shutdown(wait=True)
print("CHILDREN", len(h.stray_children()))
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", METHODS)
def test_worker_killed_during_large_transfers(impl, method):
    if impl.__name__ != "cfutures" and sys.version_info < (3, 11):
        pytest.skip("the 3.10 stdlib hangs here (its manager thread, on a "
                    "worker killed mid-transfer)")
    r = run_script(KILLED_MID_TRANSFER.format(method=method), impl,
                   timeout=170)
    out = r.stdout
    assert "DONE True" in out, (out, r.stderr[-3000:])
    assert "broken" in out and "WRONG" not in out, out
    assert "CHILDREN 0" in out, out


LEAKS = """
import gc, os, signal, multiprocessing as mp
import process_helpers as h
from concurrent.futures.process import BrokenProcessPool
ctx = mp.get_context({method!r})
def memfds():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "memfd:" in os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass
    return n
def cached():
    from cfutures import _cfutures
    return _cfutures._shm_cache()[0]
blob = os.urandom(2**20)
def cycle(i):
    ex = M.ProcessPoolExecutor(2, mp_context=ctx)
    assert ex.submit(h.identity, blob).result(timeout=60) == blob
    fs = [ex.submit(h.identity, blob) for _ in range(8)]
    if i % 2:
        fs.append(ex.submit(h.sigkill_self))
    for f in fs:
        try:
            f.result(timeout=60)
        except BrokenProcessPool:
            pass
    alive = memfds()
    ex.shutdown(wait=True)
    return alive
cycle(0)
gc.collect()
fds0, shm0 = h.fd_count(), sorted(os.listdir("/dev/shm"))
cached0 = cached()
alive = [cycle(i) for i in range(6)]
gc.collect()
# regions kept for the next pool (cfutures) are the only fds added
print("FDS", fds0, h.fd_count() - (cached() - cached0))
print("MEMFDS", min(alive), memfds() - cached())
# other programs' multiprocessing semaphores come and go in /dev/shm
new = set(os.listdir("/dev/shm")) - set(shm0)
print("DEVSHM", not [n for n in new if not n.startswith("sem.mp-")])
print("CHILDREN", len(h.stray_children()))
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", METHODS)
def test_no_fd_or_shared_memory_leak(impl, method):
    r = run_script(LEAKS.format(method=method), impl, timeout=170)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "FDS" in lines, (r.stdout, r.stderr[-3000:])
    before, after = map(int, lines["FDS"].split())
    assert after <= before
    used, left = map(int, lines["MEMFDS"].split())
    assert left == 0
    if is_cf(impl):
        assert used >= 1        # large payloads did use shared memory
    assert lines["DEVSHM"] == "True"
    assert lines["CHILDREN"] == "0"


KILLED_PROGRAM = """
import os, sys, multiprocessing as mp
import process_helpers as h
ex = M.ProcessPoolExecutor(2, mp_context=mp.get_context({method!r}))
blob = os.urandom(4 * 2**20)
fs = [ex.submit(h.identity, blob) for _ in range(64)]
fs[0].result(timeout=60)
print("WORKERS", *ex._processes, flush=True)
os.kill(os.getpid(), 9)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_program_killed_mid_transfer_leaves_no_shared_memory(impl, method):
    if not is_cf(impl):
        # its workers, orphaned, wait for ever on a queue whose write end
        # they hold themselves (and keep this test's pipes open)
        pytest.skip("the stdlib's orphaned workers never exit")
    shm0 = set(os.listdir("/dev/shm"))
    r = run_script(KILLED_PROGRAM.format(method=method), impl, timeout=100)
    assert "WORKERS" in r.stdout, r.stderr[-3000:]
    assert r.returncode == -9
    # The regions are memfds: they go with the last process holding them.
    pids = [int(p) for p in r.stdout.split("WORKERS", 1)[1].split()]
    deadline = time.monotonic() + 60
    while any(os.path.exists("/proc/%d" % p) for p in pids):
        assert time.monotonic() < deadline, "orphaned workers still run"
        time.sleep(0.05)
    new = set(os.listdir("/dev/shm")) - shm0
    assert not [n for n in new if not n.startswith("sem.mp-")]


# ------------------------------------------------ regions kept across pools

CACHE_HELPERS = """
import gc, os, multiprocessing as mp
import process_helpers as h
from cfutures import _cfutures
ctx = mp.get_context({method!r})
blob = os.urandom(2**20)
def inodes(pid):
    # the memfds a process holds, by inode
    out, d = set(), "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            if "memfd:" in os.readlink(d + "/" + fd):
                out.add(os.stat(d + "/" + fd).st_ino)
        except OSError:
            pass
    return out
def pool_inodes(ex):
    # every region the pool's workers map
    seen = set()
    for pid in list(ex._processes):
        seen |= inodes(pid)
    return seen
def run_pool(n=2):
    with M.ProcessPoolExecutor(n, mp_context=ctx) as ex:
        assert list(ex.map(h.identity, [blob] * 8)) == [blob] * 8
        return pool_inodes(ex)
"""

REUSED = CACHE_HELPERS + """
first = run_pool()
gc.collect()
cached = inodes(os.getpid())
print("CACHE", _cfutures._shm_cache()[0], len(cached), len(first))
second = run_pool()
print("REUSED", len(cached & second), len(second))
"""


def cf_only(impl):
    if not is_cf(impl):
        pytest.skip("the stdlib has no shared memory regions")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
def test_regions_are_reused_by_the_next_pool(impl, method):
    cf_only(impl)
    r = run_script(REUSED.format(method=method), impl, timeout=100)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "REUSED" in lines, (r.stdout, r.stderr[-3000:])
    # a task region and two result regions, kept mapped in the parent
    assert lines["CACHE"].split() == ["3", "3", "3"]
    # the next pool's workers were given exactly those
    assert lines["REUSED"].split() == ["3", "3"]


NO_WAIT = CACHE_HELPERS + """
import tempfile, time
run_pool()                              # the cache holds regions now
gc.collect()
gate = os.path.join(tempfile.mkdtemp(), "go")
ex1 = M.ProcessPoolExecutor(2, mp_context=ctx)
blobs1 = [os.urandom(2**20) for _ in range(6)]
fs1 = [ex1.submit(h.when_exists, gate, b) for b in blobs1]
fs1.append(ex1.submit(h.identity, blob))
# Both workers hold their regions.  Polled until all three are seen: a
# worker starting up dup()s and closes its region fds, and a listing of
# /proc/PID/fd taken meanwhile can miss one.
deadline = time.monotonic() + 25
while True:
    in1 = pool_inodes(ex1) if len(ex1._processes) == 2 else set()
    if len(in1) >= 3 or time.monotonic() > deadline:
        break
    time.sleep(0.01)
print("IN1", len(in1), flush=True)
pids1 = list(ex1._processes)
ex1.shutdown(wait=False)
del ex1
gc.collect()
# ex1's workers are blocked on the gate: its regions must stay its own
in2 = run_pool()
print("ALIVE", all(os.path.exists("/proc/%d" % p) for p in pids1))
print("OVERLAP", len(in1 & in2), len(in1), len(in2))
open(gate, "w").close()
print("OK1", [f.result(timeout=60) for f in fs1] == blobs1 + [blob])
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_shut_down_without_wait_keeps_its_regions(impl, method):
    cf_only(impl)
    r = run_script(NO_WAIT.format(method=method), impl, timeout=100)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "OK1" in lines, (r.stdout, r.stderr[-3000:])
    assert lines["ALIVE"] == "True"
    overlap, n1, n2 = map(int, lines["OVERLAP"].split())
    assert n1 == 3 and n2 == 3 and overlap == 0
    assert lines["OK1"] == "True"


MANY = CACHE_HELPERS + """
bound = max(4, 2 * os.cpu_count())
run_pool()
gc.collect()
fds0 = h.fd_count()
for i in range(8):
    # two pools at once: more regions than the cache keeps
    exs = [M.ProcessPoolExecutor(3, mp_context=ctx) for _ in range(2)]
    fs = [ex.submit(h.identity, blob) for _ in range(4) for ex in exs]
    assert [f.result(timeout=60) for f in fs] == [blob] * len(fs)
    for ex in exs:
        ex.shutdown()
    del exs, ex
    gc.collect()
n, nbytes = _cfutures._shm_cache()
print("CACHE", n, bound, len(inodes(os.getpid())))
print("FDS", h.fd_count() - fds0, bound)
_cfutures._shm_cache(True)
print("DROPPED", len(inodes(os.getpid())), _cfutures._shm_cache()[0])
"""


@pytest.mark.timeout(180)
def test_region_cache_is_bounded(impl):
    cf_only(impl)
    r = run_script(MANY.format(method="fork"), impl, timeout=170)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "DROPPED" in lines, (r.stdout, r.stderr[-3000:])
    n, bound, held = map(int, lines["CACHE"].split())
    assert 3 <= n <= bound and held == n
    grown, bound = map(int, lines["FDS"].split())
    assert grown <= bound
    assert lines["DROPPED"] == "0 0"


FORK_CHILD = CACHE_HELPERS + """
run_pool()
gc.collect()
parent = inodes(os.getpid())
assert len(parent) == 3, parent
pid = os.fork()
if pid == 0:
    code = 0
    try:
        if _cfutures._shm_cache()[0] != 0 or inodes(os.getpid()):
            code = 3            # the parent's regions were kept
        elif run_pool() & parent:
            code = 4            # and handed to a pool
    except BaseException:
        code = 5
    os._exit(code)
print("CHILD", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
# the parent still has them, for its own next pool
print("PARENT", len(run_pool() & parent))
"""


@pytest.mark.timeout(120)
def test_fork_child_does_not_reuse_the_parents_regions(impl):
    cf_only(impl)
    r = run_script(FORK_CHILD.format(method="fork"), impl, timeout=100)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "PARENT" in lines, (r.stdout, r.stderr[-3000:])
    assert lines["CHILD"] == "0"
    assert lines["PARENT"] == "3"


PINNED = """
import os, tempfile, multiprocessing as mp
import process_helpers as h
def largest_memfd():
    big = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "memfd:" in os.readlink("/proc/self/fd/" + fd):
                big = max(big, os.fstat(int(fd)).st_size)
        except OSError:
            pass
    return big
blob = os.urandom(2**20)
gate = os.path.join(tempfile.mkdtemp(), "go")
with M.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
    # the task region comes with the first worker: start both
    assert list(ex.map(h.identity, [blob] * 4)) == [blob] * 4
    held = ex.submit(h.when_exists, gate, blob)     # holds its 1 MiB span
    for _ in range(64):
        assert ex.submit(h.identity, blob).result(timeout=60) == blob
    print("LARGEST", largest_memfd())
    open(gate, "w").close()
    assert held.result(timeout=60) == blob
"""


@pytest.mark.timeout(120)
def test_one_held_span_does_not_grow_the_region(impl):
    # Only 2 MiB are ever live: the region must not grow with each task
    # behind the one held (64 MiB without the live-bytes bound).
    r = run_script(PINNED, impl, timeout=110)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "LARGEST" in lines, (r.stdout, r.stderr[-3000:])
    assert int(lines["LARGEST"]) <= 16 * MiB


FORK_CHILD_MAPS = """
import os, multiprocessing as mp
import process_helpers as h
def mapped():
    with open("/proc/self/maps") as f:
        return sum("memfd:" in line for line in f)
blob = os.urandom(2**20)
with M.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
    assert list(ex.map(h.identity, [blob] * 4)) == [blob] * 4
    print("PARENT", mapped())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, str(mapped()).encode())
        os._exit(0)
    os.close(w)
    print("CHILD", os.read(r, 100).decode())
    os.waitpid(pid, 0)
"""


@pytest.mark.timeout(120)
def test_fork_child_does_not_map_the_pools_regions(impl):
    # a fork child (a later pool's fork worker too) would keep the pages
    r = run_script(FORK_CHILD_MAPS, impl, timeout=110)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "CHILD" in lines, (r.stdout, r.stderr[-3000:])
    if is_cf(impl):
        assert int(lines["PARENT"]) >= 2
    assert lines["CHILD"] == "0"


MAPPED_SIZES = """
import os, resource, multiprocessing as mp
import process_helpers as h
limit = {limit!r}
if limit:
    with open("/proc/self/status") as f:
        vm = [l for l in f if l.startswith("VmSize:")][0]
    limit += int(vm.split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
blob = os.urandom(2**20)
with M.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
    assert list(ex.map(h.identity, [blob] * 4)) == [blob] * 4
    with open("/proc/self/maps") as f:
        spans = [l.split()[0].split("-") for l in f if "memfd:" in l]
    print("LIMIT", limit)
    print("LARGEST", max([int(b, 16) - int(a, 16) for a, b in spans] or [0]))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("limit, env", [
    (0, {"CFUTURES_SHM_MAX": str(2**40)}),  # clamped to the 1 GiB cap
    (3 * 2**30, {}),                        # RLIMIT_AS: a small reservation
])
def test_region_reservation_is_bounded(impl, limit, env):
    r = run_script(MAPPED_SIZES.format(limit=limit), impl, timeout=110,
                   extra_env=env)
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    assert "LARGEST" in lines, (r.stdout, r.stderr[-3000:])
    largest, limit = int(lines["LARGEST"]), int(lines["LIMIT"])
    assert largest <= (limit // 256 if limit else 2**30)
    if is_cf(impl) and limit:
        assert largest > 0      # still shared memory, in smaller regions
