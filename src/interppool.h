/* interppool: what the interpreter pool's files share.
 *
 * Native InterpreterPoolExecutor: worker threads that each own a
 * sub-interpreter with its own GIL (PEP 684; C API of CPython 3.12+).
 *
 * Shape
 * -----
 *   submit()  caller thread, main GIL:
 *       pickle (fn, args, kwargs); copy the bytes into a raw InterpTask;
 *       InterpCore_Push (mutex + condvar queue, pure C)
 *   worker    a threading.Thread whose target is interp_worker():
 *       main GIL  Py_NewInterpreterFromConfig(OWN_GIL) -> sub_ts
 *       sub GIL   import pickle, copy sys.path, run the initializer
 *       loop:
 *         no GIL    InterpCore_Pop (condvar wait)
 *         main GIL  set_running_or_notify_cancel(future)
 *         sub GIL   loads -> call -> dumps, into a raw InterpResult
 *         main GIL  loads the result (or rebuild the exception),
 *                   complete the future, try to pop the next task
 *       sub GIL   Py_EndInterpreter(sub_ts)
 *
 * Thread states
 * -------------
 * A worker thread owns two thread states: main_ts (made by threading for
 * the Thread) and sub_ts (made by Py_NewInterpreterFromConfig).  Exactly
 * one is attached at any time.  We switch with PyEval_SaveThread() then
 * PyEval_RestoreThread(other): one GIL is released before the other is
 * taken, so a worker never holds two GILs and no lock-order cycle exists
 * between interpreters.  (PyThreadState_Swap is not used: it takes no GIL
 * on 3.12 and does on 3.13.)
 *
 * Objects
 * -------
 * Nothing but raw memory crosses interpreters.  Pickle bytes and the
 * strings describing an exception live in PyMem_Raw memory.  A task
 * carries its future as an opaque pointer that only code holding the main
 * GIL dereferences.
 *
 * Locks
 * -----
 * core->mutex protects the queue, counters and flags.  It is held only
 * for short non-blocking sections (and inside pthread_cond_wait), never
 * while acquiring a GIL; taking it while holding a GIL is therefore safe.
 * The flags that submit() checks are written with the mutex held, and
 * Push re-checks them under the mutex (pickling may run Python code and
 * switch threads between the first check and the push).
 *
 * Lifetime
 * --------
 * An InterpCore is refcounted: one reference for the executor object,
 * one for each worker handle (a capsule in the worker Thread's args and
 * in the exit registry).  Pending tasks keep their futures alive.
 * Executor collected without shutdown(): like the stdlib's weakref
 * callback, the workers finish the queue, then exit.
 *
 * Files: interpcore.c (the pure-C queue and the raw buffers),
 * interppool.c (the type, submit/shutdown, completing futures, module
 * functions), interpworker.c (a worker thread and its sub-interpreter).
 */
#ifndef CF_INTERPPOOL_H
#define CF_INTERPPOOL_H

#include "cfutures.h"

#if PY_VERSION_HEX >= 0x030C0000
#  define CF_HAVE_SUBINTERPRETERS 1
#  define CF_WORKER_ONLY
#else
/* Before 3.12 there is no worker; its helpers still compile. */
#  define CF_WORKER_ONLY __attribute__((unused))
#endif

/* Error codes of the pure-C core. */
enum {
    CF_ERR_IP_OK = 0,
    CF_ERR_IP_NOMEM = -1,
    CF_ERR_IP_BROKEN = -2,
    CF_ERR_IP_SHUTDOWN = -3,
    CF_ERR_IP_EXITING = -4,
    CF_ERR_IP_FORKED = -5,
};



typedef struct InterpTask {
    struct InterpTask *next;
    void *future;               /* owned ref to a main-interpreter Future */
    size_t len;
    char data[];                /* pickle of (fn, args, kwargs) */
} InterpTask;

typedef struct InterpCore {
    pthread_mutex_t mutex;
    pthread_cond_t cond;        /* workers wait here for work or a stop */
    InterpTask *head, *tail;
    Py_ssize_t ntasks;
    int idle;                   /* workers between tasks (see SetIdle) */
    int nthreads;               /* workers started (names use it) */
    int max_workers;
    int shutdown;               /* shutdown() or executor collected */
    int exiting;                /* interpreter exit hook ran */
    int broken;                 /* an initializer failed */
    int forked;                 /* we are a fork child: no workers here */
    Py_ssize_t refcnt;
    char *init_data;            /* pickle of (initializer, initargs, {}) */
    size_t init_len;
    struct InterpCore *all_prev, *all_next;     /* all_cores list */
} InterpCore;

/* A length-counted PyMem_Raw buffer: pickles and UTF-8 text. */
typedef struct {
    char *data;
    size_t len;
} RawBuf;

/* What a task (or the initializer) produced, in raw memory. */
enum { RES_NONE = 0, RES_VALUE, RES_RAISED };

typedef struct {
    int kind;
    RawBuf pickled;         /* the result, or the exception (may be empty) */
    RawBuf type_name;       /* exception snapshot, as 3.14's excinfo */
    RawBuf type_qualname;
    RawBuf type_module;
    RawBuf msg;
    RawBuf errdisplay;
} InterpResult;

/* The argument of a worker Thread: a capsule owning one of these. */
typedef struct {
    InterpCore *core;       /* strong */
    RawBuf syspath;         /* pickle of the main interpreter's sys.path */
    RawBuf mainfile;        /* 3.14+: __main__.__file__ (UTF-8), or empty */
    PyObject *init_error;   /* main interpreter's; touched with its GIL */
} InterpWorker;

static const char WORKER_CAPSULE[] = "cfutures._cfutures.interp_worker";

/* interpcore.c */
/* The core whose future this worker thread is completing. */
extern _Thread_local InterpCore *cf_delivering;
InterpCore *InterpCore_New(int max_workers, const char *init, size_t init_len);
void InterpCore_Incref(InterpCore *c);
InterpTask *InterpCore_Decref(InterpCore *c);
int InterpCore_Push(InterpCore *c, InterpTask *t, int *spawn);
void InterpCore_Unspawn(InterpCore *c);
void InterpCore_SetIdle(InterpCore *c);
InterpTask *InterpCore_TryPop(InterpCore *c);
InterpTask *InterpCore_Pop(InterpCore *c);
InterpTask *InterpCore_Shutdown(InterpCore *c, int cancel);
void InterpCore_Exit(InterpCore *c);
InterpTask *InterpCore_Break(InterpCore *c);
void InterpCore_Flags(InterpCore *c, int *shutdown, int *broken);
void RawBuf_Clear(RawBuf *b);
int RawBuf_FromBytes(RawBuf *b, PyObject *bytes);
void RawBuf_FromStr(RawBuf *b, PyObject *s);
PyObject *RawBuf_AsStr(RawBuf *b);
void InterpResult_Clear(InterpResult *r);

/* interppool.c: main-GIL helpers the worker uses */
void interp_deliver(cf_state *st, FutureObject *fut, InterpResult *r);
void interp_task_free(InterpTask *t);
int interp_check_ready(cf_state *st);
void interp_log_worker_error(cf_state *st);
PyObject *interp_result_to_exception(cf_state *st, InterpResult *r);
void interp_worker_init_failed(cf_state *st, InterpCore *core, PyObject *exc);

/* interpworker.c */
PyObject *interp_worker(PyObject *mod, PyObject *handle);
extern const char interp_worker_doc[];

#endif /* CF_INTERPPOOL_H */
