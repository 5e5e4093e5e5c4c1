"""A long chain of done-callbacks (each sets the next future's result).

The stdlib's chain is Python frames: at the recursion limit it logs one
RecursionError ("exception calling callback for <Future ...>") and goes on,
the futures before the failing link done, the rest pending.  cfutures' chain
recurses in C: it must end the same way at the default limit (same futures
done, same record), and never overflow the C stack whatever the limit is set
to (it segfaulted with sys.setrecursionlimit(50000) on 3.11).  Subprocesses:
a crash must fail the test, not the run.
"""

import json
import sys

import pytest

from conftest import STDLIB, run_script

SCRIPT = r"""
import json, logging, re, sys, threading
N, LIMIT, STACK = {n}, {limit}, {stack}
recs = []
class H(logging.Handler):
    def emit(self, r):
        recs.append((r.levelname, r.msg, r.exc_info[0].__name__ if r.exc_info else None,
                     r.getMessage()))
lg = logging.getLogger("concurrent.futures")
lg.addHandler(H()); lg.propagate = False

def chain():
    fs = [cf.Future() for _ in range(N)]
    idx = {{id(f): i for i, f in enumerate(fs)}}
    for i in range(N - 1):
        fs[i].add_done_callback(lambda f, n=fs[i + 1]: n.set_result(f.result() + 1))
    fs[0].set_result(0)
    done = [f.done() for f in fs]
    first = done.index(False) if False in done else None
    named = []
    for r in recs:
        m = re.search(r"at (0x[0-9a-f]+)", r[3])
        named.append(idx.get(int(m.group(1), 16)) if m else None)
    out = dict(ndone=sum(done), first=first,
               prefix=first is None or not any(done[first:]),
               results=[fs[i].result() for i in range(min(3, sum(done)))],
               recs=[r[:3] for r in recs], named=named,
               pending_states=sorted({{fs[i]._state for i in range(first or N, N)}}))
    f = cf.Future(); f.set_result(7)         # the process goes on
    out["after"] = f.result()
    # Drop from the front: the pending tail's callbacks hold each next future,
    # and freeing that chain from its head recurses in CPython's own deallocs.
    fs.reverse()
    del fs
    return out

if LIMIT:
    sys.setrecursionlimit(LIMIT)
if STACK:
    threading.stack_size(STACK)
    box = {{}}
    t = threading.Thread(target=lambda: box.update(out=chain()))
    t.start(); t.join()
    out = box["out"]
else:
    out = chain()
print(json.dumps(out))
"""


def _run(mod, limit=0, stack=0, n=100000):
    proc = run_script(mod, SCRIPT.format(n=n, limit=limit, stack=stack), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _check_shape(out, n=100000):
    """One RecursionError logged for a done future just before the first pending
    one; a prefix of the chain done; the rest pending with its callbacks."""
    assert out["first"] is not None and 0 < out["first"] < n
    assert out["prefix"]
    assert out["results"] == list(range(len(out["results"])))
    assert out["recs"] == [["ERROR", "exception calling callback for %r", "RecursionError"]]
    assert out["named"][0] is not None and out["named"][0] < out["first"]
    assert out["pending_states"] == ["PENDING"]
    assert out["after"] == 7


def test_chain_default_limit_like_stdlib(impl):
    expected = _run(STDLIB)
    got = _run(impl)
    _check_shape(got)
    # Same futures done, same future named by the record.
    assert got == expected


@pytest.mark.parametrize("limit", [50000, 1000000])
def test_chain_raised_limit_never_crashes(impl, limit):
    if impl is STDLIB and sys.version_info < (3, 11):
        pytest.skip("3.10's stdlib chain is C recursion too: it segfaults here")
    out = _run(impl, limit=limit)
    if impl is STDLIB and limit > 300000:
        assert out["first"] is None     # no C recursion: the whole chain ran
        return
    _check_shape(out)


def test_chain_small_thread_stack_never_crashes(impl):
    """A worker with a 1 MiB stack and the limit raised: the stdlib on 3.11+
    recurses in Python frames only; cfutures must stop before the stack ends."""
    if impl is STDLIB and sys.version_info < (3, 11):
        pytest.skip("3.10's stdlib chain is C recursion too: it segfaults here")
    out = _run(impl, limit=50000, stack=1 << 20)
    _check_shape(out)
