"""black formatting a directory with a process pool (black.concurrency:
concurrent.futures.ProcessPoolExecutor driven through asyncio's
run_in_executor).  Prints black's report (lines sorted: files complete in any
order), a digest of the formatted files, and which ProcessPoolExecutor black
used (last line).

    python eco_black.py DIR WORKERS
"""
import hashlib
import os
import sys

import black
import black.concurrency


def digest(root):
    h = hashlib.sha256()
    for name in sorted(os.listdir(root)):
        with open(os.path.join(root, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


if __name__ == "__main__":
    root, workers = sys.argv[1], sys.argv[2]
    sys.argv = ["black", "--workers", workers, root]
    rc = None
    try:
        black.patched_main()
    except SystemExit as e:
        rc = e.code
    print("exit", rc, "files", len(os.listdir(root)), "digest", digest(root))
    print("ProcessPoolExecutor:", black.concurrency.ProcessPoolExecutor.__module__)
