"""submit() while the interpreter is exiting.

    python thread_exit_submit.py MODULE HOOK USED

HOOK says where the submitting hook runs:
  atexit         an ``atexit`` handler (runs after threading joined the
                 non-daemon threads, so after the pools' exit hook)
  thread-before  ``threading._register_atexit`` before the pool module is
                 imported (hooks run in reverse order: after the pool's hook)
  thread-after   ``threading._register_atexit`` after the import (runs
                 before the pool's hook: submitting still works)
USED is "used" (the executor ran a task, so it has workers) or "unused".

The hook submits to the existing executor and to a new one and prints one
line per attempt: "<which> SUBMITTED <result>" or "<which> RAISED <type>
<message>".  The caller compares the output with the stdlib's.
"""
import atexit
import importlib
import sys
import threading

modname, hook_mode, used = sys.argv[1], sys.argv[2], sys.argv[3] == "used"


def hook():
    for which in ("old", "new"):
        try:
            ex = executor if which == "old" else mod.ThreadPoolExecutor(max_workers=2)
            f = ex.submit(pow, 2, 5)
            print(which, "SUBMITTED", f.result(timeout=30), flush=True)
        except Exception as e:  # noqa: BLE001
            print(which, "RAISED", type(e).__name__, e, flush=True)


if hook_mode == "thread-before":
    threading._register_atexit(hook)

mod = importlib.import_module(modname)
executor = mod.ThreadPoolExecutor(max_workers=2)
if used:
    assert executor.submit(pow, 3, 2).result(timeout=30) == 9

if hook_mode == "thread-after":
    threading._register_atexit(hook)
elif hook_mode == "atexit":
    atexit.register(hook)
print("main done", flush=True)
