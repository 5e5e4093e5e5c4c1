/* procpool: what the process pool's GIL-side files share.
 *
 * A task's path, file by file:
 *
 *   processpool.c   submit(): builds (fn, args, kwargs), pickles it
 *                   (procpickle.c) straight into a frame, then marks the
 *                   future RUNNING and queues the frame for the
 *                   dispatcher (room in flight), or parks it in the
 *                   backlog (future stays PENDING, cancel() still works).
 *   processcore.c   makes sure workers and the dispatcher thread run
 *                   (launch), and runs that thread's body, _run().
 *   procdispatch.c  (no GIL) hands the frame to the least loaded worker,
 *                   writes it, ppoll()s result pipes, pidfds and a wake-up
 *                   eventfd, reads results in large chunks, splits frames.
 *   procworker.c    (in the worker process) reads the frame, unpickles,
 *                   calls, pickles the result and writes it at once.
 *   procdispatch.c  reads the result frame into the batch.
 *   processcore.c   GIL phase, once per batch: unpickles each result
 *                   (procpickle.c) and completes its future (future.c),
 *                   promotes backlog tasks, handles the workers' ends
 *                   (reap, replace, or break the pool).
 *
 * In-flight depth
 * ---------------
 * Each worker is given up to `depth` tasks at once so it never idles on a
 * wake-up.  depth adapts to the measured service time (workers report it
 * in each result frame): enough queued work for ~1 ms, at least 2, at most
 * 64.  Long tasks therefore behave like the stdlib (one running, one
 * queued per worker) and do not pile up behind a busy worker; trivial
 * tasks travel 64 at a time.
 *
 * Locking
 * -------
 * ProcShared (procdispatch.h, pure C) is protected by sh->mutex.
 * Everything made of PyObjects lives in ProcessCoreObject and is
 * protected by the GIL; on free-threaded builds by the core's critical
 * section too (Py_BEGIN_CRITICAL_SECTION(core) around submit(),
 * shutdown(), the dispatcher's GIL phase, _wait_done() and the
 * executor's getters): like the GIL, it is let go whenever the holder
 * blocks, so code written for GIL switches stays right.  Nobody holds
 * sh->mutex while taking the GIL or calling Python.
 *
 * Worker states
 * -------------
 *      launched --adopt--> BOOTING --READY frame--> READY
 *      READY: gets tasks while inflight < depth and budget remains
 *      exit_announced (max_tasks_per_child reached) or stop_sent: its end
 *      is expected; EOF/exit without either breaks the pool at once, and
 *      so does a broken stream (err), with its cause.
 *      exited (sentinel readable) --GIL--> reaped: join(), fds closed.
 *
 * Pool: running -> shutting down (shutdown(), executor collected or
 * interpreter exit: queued work still runs) -> STOP sent once nothing is
 * left -> every worker reaped -> dispatcher returns.  Broken (a worker
 * died or its stream broke): every pending future gets BrokenProcessPool,
 * survivors get SIGTERM (SIGKILL after a second), all are reaped,
 * dispatcher returns.
 */
#ifndef CF_PROCPOOL_H
#define CF_PROCPOOL_H

#include "cfutures.h"
#include "procdispatch.h"

/* ------------------------------------------------------ procpickle.c */

/* A reusable pickle.Pickler with ForkingPickler's dispatch table, writing
 * straight into a ProcBuf (one copy, no BytesIO). */
typedef struct {
    PyObject *writer;
    PyObject *pickler;
    PyObject *dump;             /* bound pickler.dump */
    PyObject *clear_memo;       /* bound pickler.clear_memo */
    uint64_t v_copyreg, v_extra;    /* tables_version() when copied */
    int synced;                     /* dispatch_table holds that copy */
    int busy;
} ProcPickler;

int cf_procpickle_module_init(PyObject *mod, cf_state *st);
int ProcPickler_Init(cf_state *st, ProcPickler *pp);
void ProcPickler_Clear(ProcPickler *pp);
int ProcPickler_Traverse(ProcPickler *pp, visitproc visit, void *arg);
/* Append pickle(obj) to *target.  On error the buffer is truncated back
 * and -1 is returned with an exception set.  DumpShm: large writes go to
 * shm as holes when there is room (shm may be NULL). */
int ProcPickler_Dump(cf_state *st, ProcPickler *pp, PyObject *obj,
                     ProcBuf *target);
/* Reducer tables were (re)registered by _process_init: watch them (3.12+);
 * module state cleared: stop watching. */
void cf_proc_tables_watch(cf_state *st);
void cf_proc_tables_unwatch(cf_state *st);
int ProcPickler_DumpShm(cf_state *st, ProcPickler *pp, PyObject *obj,
                        ProcBuf *target, ProcShm *shm);
/* pickle.loads over raw memory, without copying it into bytes. */
PyObject *cf_proc_loads(cf_state *st, const char *p, size_t n);
/* The same for a payload that may have holes in shm (procio.h); publish:
 * tell the writer (a worker) that these spans are read. */
PyObject *cf_proc_loads_shm(cf_state *st, const char *p, size_t n,
                            ProcShm *shm, int publish);
/* '\n"""\n' + ''.join(format_exception(type(e), e, tb)) + '"""' */
PyObject *cf_proc_format_tb(cf_state *st, PyObject *exc);
/* exc.__cause__ = _RemoteTraceback(text) */
int cf_proc_attach_tb(cf_state *st, PyObject *exc, PyObject *text);

/* ----------------------------------------------------- processcore.c */

typedef struct {
    PyObject_HEAD
    ProcShared *sh;
    PyObject *module;
    PyObject *ctx;
    PyObject *initializer;
    PyObject *initargs;
    PyObject *max_tasks;        /* int or None */
    PyObject *launch;           /* cfutures.process._launch_worker */
    PyObject *start_thread;     /* cfutures.process._start_thread */
    PyObject *thread;           /* threading.Thread running _run, or NULL */
    PyObject *procs;            /* pid -> Process, every worker not reaped */
    /* The executor's _processes (the stdlib's): pid -> Process of the live
     * workers; a worker leaves it when it announces its exit or is reaped.
     * Only read here (never for reaping): callers may change it. */
    PyObject *processes;
    PyObject *work_items;       /* dict id -> future (not yet completed) */
    PyObject *broken;           /* str (stdlib's _broken) or NULL */
    ProcPickler pickler;
    ProcMsgQueue backlog;       /* PENDING tasks, FIFO */
    uint64_t next_id;
    Py_ssize_t running;         /* RUNNING futures in the pipeline */
    int max_workers;
    int is_fork;                /* fork context: never launch from the dispatcher */
    int fork_lazy;              /* older stdlib: fork on demand in submit() */
    int nprocs_active;          /* launched, not retiring, not reaped */
    int depth;                  /* GIL-side copy of sh->depth */
    double ewma_us;
    int shutdown;               /* shutdown() called (or broken) */
    int executor_gone;
    int stop_sent;
    int launch_failed;
    /* Dispatcher start-up is single-flight: set before any Python runs
     * (it may release the GIL), so that a racing submit() neither starts
     * a second dispatcher nor launches workers of its own. */
    int starting;
    unsigned long starter;      /* the thread setting starting */
    int started;                /* a dispatcher was started: done_ev posts */
    int in_run;                 /* _run() is running on thread run_ident */
    unsigned long run_ident;
    int processes_dropped;      /* shutdown() called: _processes is None */
    /* Submits whose call failed to pickle.  The stdlib learns that only in
     * its feeder thread, after submit() started a worker for the task, and
     * such a task never frees its worker's idle slot: count them as work
     * when deciding to start workers, so that as many are started. */
    int unpicklable;
} ProcessCoreObject;

static inline cf_state *
core_state(ProcessCoreObject *core)
{
    return cf_get_state(core->module);
}

static inline int
core_shutting_down(ProcessCoreObject *core)
{
    return core->shutdown || core->executor_gone
           || core_state(core)->proc.global_shutdown;
}

/* A fork child's copy of its parent's pool.  Checked before any critical
 * section on the core: free-threaded, its object mutex can have been
 * copied locked (by the thread that forked, or handed to a thread that
 * was waiting to re-attach), and nobody in the child will unlock it. */
static inline int
core_inherited(ProcessCoreObject *core)
{
    return core->sh == NULL || core->sh->inherited;
}

static inline Py_ssize_t
core_capacity(ProcessCoreObject *core)
{
    return (Py_ssize_t)core->max_workers * core->depth;
}

int cf_processcore_module_init(PyObject *mod, cf_state *st);
/* The future of task id, removed from work_items; NULL (maybe with an
 * exception) if there is none. */
PyObject *cf_core_pop_item(ProcessCoreObject *core, uint64_t id);
/* Move backlog tasks to the send queue while there is room (GIL). */
int cf_core_promote(ProcessCoreObject *core, int wake);
/* Start the dispatcher and workers, or one more worker, as the running
 * stdlib would at a submit(). */
int cf_core_ensure_started(ProcessCoreObject *core);
/* Wait (interruptibly) until the dispatcher has reaped every worker. */
int cf_core_wait_done(ProcessCoreObject *core);

/* ------------------------------------------------------- procbreak.c */

/* BrokenProcessPool(msg), __cause__ = cause, note added when not NULL
 * (3.11+).  New reference or NULL with an exception. */
PyObject *cf_proc_broken_error(cf_state *st, PyObject *cause, const char *msg,
                               PyObject *note);
/* Why w's stream failed, as the exception to chain (new reference), or
 * NULL when it did not (the worker died).  Never leaves an exception set. */
PyObject *cf_proc_stream_error(ProcWorker *w);
/* "Process N terminated abruptly with exit code C" lines for the workers
 * in procs_dict (pid -> Process) that died, or NULL; waits up to 1 s, GIL
 * released, for gone workers' exit status.  No pool mutex held. */
PyObject *cf_proc_dead_workers_text(ProcShared *sh, PyObject *procs_dict);

/* ------------------------------------------------------ procworker.c */

PyObject *cf_process_worker_loop(PyObject *mod, PyObject *args);
extern const char cf_process_worker_loop_doc[];

#endif /* CF_PROCPOOL_H */
