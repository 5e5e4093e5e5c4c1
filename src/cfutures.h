/* cfutures: shared declarations for the _cfutures extension.
 *
 * Locking model
 * -------------
 * Every Future field is protected by the GIL of the interpreter that owns
 * the future (free-threaded: by the future's lock, fut_mutex, below).  A
 * thread that must block (result(), wait(), as_completed()) links a
 * cf_waiter into the future's list while holding the GIL (free-threaded:
 * the future's lock), releases it and sleeps on the waiter's semaphore.
 * Completion (always holding the same) walks the list and posts the
 * semaphores.  The waiter unlinks itself after re-taking it, so a link is
 * never freed while a completer may see it.
 *
 * Pure-C pieces (cf_event, the thread pool queue) hold no PyObject they
 * touch without the GIL, and never take the GIL while holding a pool mutex.
 *
 * Free-threaded builds (Py_GIL_DISABLED, 3.13t/3.14t) add a lock wherever
 * the GIL did the excluding; on GIL builds they all compile to nothing.
 *   fut_mutex   (PyMutex, per future) state, result, exception, callbacks
 *               list, _condition/_waiters pointers, the C waiter links
 *   w_mutex     (PyMutex, per wait()/as_completed() waiter) fired queue,
 *               counters, sleep flags
 *   run_mu      (PyMutex, per thread pool) the running-task list
 *   tp_mutex    (PyMutex, per module state) the interpreter's pool list
 *   critical sections (Py_BEGIN_CRITICAL_SECTION) on the process pool's
 *               executor (its core pointer) and _ProcessCore (every field)
 *   atomics     the "one thread inside" flags of the map / as_completed /
 *               chain iterators, pool refcounts and shutdown flags
 * Lock order (take only rightwards; a critical section may be held while
 * calling Python, since CPython lets it go whenever its holder blocks,
 * like the GIL it stands in for):
 *   critical sections -> start_lock -> tp_mutex -> tp_reg_mu
 *       -> pool->mu | sh->mutex | InterpCore mutex
 *   critical sections -> fut_mutex -> w_mutex
 *   run_mu: a leaf
 * fut_mutex, w_mutex, run_mu and tp_mutex cover plain C only: no Python,
 * no decref (a __del__), no other lock but the one to their right.  One
 * exception: add_done_callback's PyList_Append on the future's callbacks
 * list under fut_mutex (may take the list's critical section; runs no
 * Python).
 * Callbacks, pickling and logging run with no cfutures mutex held.
 */
#ifndef CF_CFUTURES_H
#define CF_CFUTURES_H

#include "compat.h"
#include <stdint.h>
#include <semaphore.h>
#include <pthread.h>
#include <sched.h>

/* ---------------------------------------------------------------- time */

/* Monotonic nanoseconds; CF_FOREVER means no deadline. */
typedef int64_t cf_time_t;
#define CF_FOREVER ((cf_time_t)-1)

cf_time_t cf_monotonic_ns(void);

/* Read a Python timeout exactly as the running version's
 * Condition.wait(timeout) does: None -> *deadline = CF_FOREVER; "timeout
 * > 0" false (NaN too) -> a poll (deadline now); else now + timeout,
 * saturated.  TypeError/OverflowError/... are the stdlib's own (see sync.c).
 * Returns 0 or -1 with an exception set. */
int cf_timeout_to_deadline(PyObject *timeout, cf_time_t *deadline);

/* as_completed() and map() (timeout not None): end_time = timeout +
 * time.monotonic(), computed once (its TypeError is the stdlib's); each
 * wait is Condition.wait(end_time - time.monotonic()).
 * cf_end_time_deadline: with check_expired, returns 1 when the time left
 * is negative (as_completed's TimeoutError) and sleeps for ever on NaN
 * (the stdlib polls for ever); else 0, or -1 with an exception. */
PyObject *cf_end_time(PyObject *timeout);
PyObject *cf_end_time_left(PyObject *end);
int cf_end_time_deadline(PyObject *end, int check_expired, cf_time_t *deadline);

/* 1 when this thread's C stack is nearly used up (stacks grow down on
 * every platform we build for): native recursion (a done-callback that
 * completes another future) stops there with RecursionError, whatever
 * sys.setrecursionlimit() says. */
int cf_stack_low(void);

#include "block.h"      /* cf_event, every blocking wait, the spin policy */

/* -------------------------------------------------------------- states */

enum {
    CF_PENDING = 0,          /* zeroed memory is a pending future */
    CF_RUNNING,
    CF_CANCELLED,
    CF_CANCELLED_AND_NOTIFIED,
    CF_FINISHED,
    CF_NSTATES
};

/* Events a cf_waiter can ask for. */
#define CF_EV_CANCEL  0x1   /* cancel(): PENDING -> CANCELLED */
#define CF_EV_FINISH  0x2   /* set_result / set_exception */
#define CF_EV_NOTIFY  0x4   /* set_running_or_notify_cancel on CANCELLED */

typedef struct cf_link cf_link;
typedef struct cf_waiter cf_waiter;

/* Called with the GIL (free-threaded: the future's lock) held from inside
 * a state change; must not call
 * Python, must not unlink anything. */
typedef void (*cf_waiter_fn)(cf_waiter *w, cf_link *link, int event);

struct cf_waiter {
    cf_waiter_fn notify;
    int events;             /* mask of CF_EV_* wanted */
};

struct cf_link {
    cf_link *prev, *next;
    cf_waiter *waiter;
    PyObject *future;       /* strong ref owned by whoever owns the link */
    Py_ssize_t index;       /* owner's bookkeeping */
    int linked;
    int fired;
    int orphaned;           /* detached by Future.__init__() (see there) */
};

/* -------------------------------------------------------------- future */

typedef struct {
    PyObject_HEAD
    int fut_state;
    PyObject *fut_result;       /* NULL == None */
    PyObject *fut_exception;    /* NULL == None */
    PyObject *fut_callbacks;    /* list or NULL */
    PyObject *fut_condition;    /* lazily made threading.Condition, or NULL */
    PyObject *fut_waiters;      /* lazily made list of stdlib-style waiters */
    cf_link *fut_links;         /* C waiters, doubly linked */
    CF_FT_MUTEX(fut_mutex)      /* free-threaded: every field above */
} FutureObject;

/* The future's own lock (free-threaded builds; nothing with the GIL).
 * Held only over plain C: no Python, no decref, no other lock but a
 * waiter's (see the lock order at the top). */
#define CF_FUT_LOCK(fut) CF_FT_LOCK((fut)->fut_mutex)
#define CF_FUT_UNLOCK(fut) CF_FT_UNLOCK((fut)->fut_mutex)

/* A strong reference to one of fut's object fields (NULL if unset), read
 * under the future's lock. */
static inline PyObject *
cf_fut_field_ref(FutureObject *fut, PyObject *const *field)
{
    CF_FUT_LOCK(fut);
    PyObject *o = Py_XNewRef(*field);
    CF_FUT_UNLOCK(fut);
    return o;
}

/* Unlocked peek at a field that is only tested against NULL before the
 * locked read (a lazily made object: _condition, _waiters, callbacks). */
#define CF_FUT_PEEK(fut, field) \
    __atomic_load_n(&(fut)->field, __ATOMIC_RELAXED)

/* ------------------------------------------------------- module state */

/* Main-interpreter objects the interpreter pool needs; registered by
 * cfutures.interpreter through _cfutures._interp_setup(). */
typedef struct {
    PyObject *broken;           /* cfutures.interpreter.BrokenInterpreterPool */
    PyObject *make_failed;      /* strings -> ExecutionFailed */
    PyObject *check_main;       /* raises if a call refers to __main__ */
    PyObject *registry;         /* WeakKeyDictionary: worker Thread -> handle */
    PyObject *worker_fn;        /* _cfutures._interp_worker */
    PyObject *Thread;           /* threading.Thread */
    PyObject *dumps;            /* pickle.dumps */
    PyObject *loads;            /* pickle.loads */
    PyObject *protocol;         /* pickle.HIGHEST_PROTOCOL */
    int exiting;                /* the threading atexit hook has run */
} cf_interp_state;

/* The process pool's (processpool.c, processcore.c, procpickle.c): its
 * types, the objects cfutures.process hands over through _process_init()
 * (by name), and the interpreter-exit flag its atexit hook sets. */
typedef struct {
    PyTypeObject *ProcessPool_type;
    PyTypeObject *ProcessCore_type;
    PyTypeObject *FrameWriter_type;
    PyTypeObject *FrameReader_type;     /* procpickle.c */
    PyObject *BrokenProcessPool;        /* concurrent.futures.process's */
    PyObject *RemoteTraceback;          /* concurrent.futures.process's */
    PyObject *Pickler;                  /* pickle.Pickler */
    PyObject *loads;                    /* pickle.loads */
    PyObject *protocol;                 /* ForkingPickler's protocol */
    PyObject *copyreg_table;            /* ForkingPickler._copyreg_dispatch_table */
    PyObject *extra_reducers;           /* ForkingPickler._extra_reducers */
    PyObject *format_exception;         /* traceback.format_exception */
    int global_shutdown;                /* interpreter exit began */
    int watcher;                        /* dict watcher id + 1 (3.12+), 0: none */
} cf_proc_state;

typedef struct {
    PyTypeObject *Future_type;          /* _cfutures.Future (C base) */
    PyTypeObject *Waiter_type;          /* native wait()/as_completed() */
    PyTypeObject *AsCompleted_type;
    PyTypeObject *MapIterator_type;
    PyTypeObject *ThreadPool_type;
    PyTypeObject *ChainLists_type;
    PyTypeObject *InterpPool_type;      /* interppool.c */

    PyTypeObject *future_class;         /* cfutures.Future, set by package */

    /* Borrowed from concurrent.futures so except clauses match. */
    PyObject *CancelledError;
    PyObject *TimeoutError;
    PyObject *InvalidStateError;
    PyObject *BrokenThreadPool;
    PyObject *DoneAndNotDoneFutures;
    PyObject *stdlib_Future;
    PyObject *logger;                   /* logging.getLogger("concurrent.futures") */
    PyObject *Condition;                /* threading.Condition */
    PyObject *state_names[CF_NSTATES];  /* 'PENDING', ... (stdlib's objects) */
    PyObject *state_desc[CF_NSTATES];   /* 'pending', ... */
    PyObject *str_FIRST_COMPLETED;
    PyObject *str_FIRST_EXCEPTION;
    PyObject *str_ALL_COMPLETED;
    PyObject *str_submit;
    PyObject *str_acquire;
    PyObject *str_release;
    PyObject *str_notify_all;
    PyObject *str_add_result;
    PyObject *str_add_exception;
    PyObject *str_add_cancelled;
    PyObject *str_state;                /* "_state" */
    PyObject *str_condition;            /* "_condition" */
    PyObject *str_waiters;              /* "_waiters" */
    PyObject *str_remove;
    PyObject *str_append;
    PyObject *str_exception;
    PyObject *str_cancelled;
    PyObject *str_error;
    PyObject *str_critical;
    PyObject *str_exc_info;
    PyObject *empty_tuple;

    /* threadpool.c: registry for fork/exit hooks, set up by _tp_configure */
    struct cf_pool *tp_pools;
    CF_FT_MUTEX(tp_mutex)               /* free-threaded: tp_pools links */
    int tp_exiting;                     /* interpreter shutdown began */
    PyObject *tp_Thread;                /* threading.Thread */
    PyObject *tp_all_threads;           /* WeakSet of every worker */
    PyObject *tp_worker_fn;             /* _thread_worker */
    PyObject *tp_tick;                  /* free-threaded: a Python no-op */

    cf_proc_state proc;                 /* the process pool */

    cf_interp_state interp;             /* interppool.c */
} cf_state;

extern PyModuleDef cf_module_def;

static inline cf_state *
cf_get_state(PyObject *module)
{
    void *st = PyModule_GetState(module);
    assert(st != NULL);
    return (cf_state *)st;
}

static inline cf_state *
cf_state_from_type(PyTypeObject *tp)
{
    PyObject *mod = cf_PyType_GetModuleByDef(tp, &cf_module_def);
    if (mod == NULL) {
        return NULL;
    }
    return cf_get_state(mod);
}

static inline int
cf_is_future(cf_state *st, PyObject *op)
{
    return PyObject_TypeCheck(op, st->Future_type);
}

/* future.c */
cf_state *future_state(PyObject *self);     /* NULL with an exception */
/* Post the C waiters linked to fut that want event (GIL). */
void notify_links(FutureObject *fut, int event);
/* futcallbacks.c: run fut's callbacks once (list moved out first), or one
 * callback fn; log what they raise like the stdlib.  0, or -1 with an
 * exception that must propagate. */
int cf_invoke_callbacks(cf_state *st, FutureObject *fut);
int cf_call_callback(cf_state *st, PyObject *fut, PyObject *fn);
/* futattrs.c: the private attributes (_state, _condition, ...) */
extern PyGetSetDef cf_future_getset[];
/* Make (lazily) and return the shared _condition / _waiters /
 * _done_callbacks objects; new references. */
PyObject *Future_get_condition(PyObject *self, void *closure);
PyObject *Future_get_waiters(PyObject *self, void *closure);
PyObject *Future_get_done_callbacks(PyObject *self, void *closure);
int cf_future_module_init(PyObject *mod, cf_state *st);
PyObject *cf_future_new(cf_state *st);
/* 1: now RUNNING, 0: was cancelled (now notified), -1: error. */
int cf_future_set_running_or_notify_cancel(cf_state *st, FutureObject *fut);
/* Complete with a result (exc == NULL) or an exception; runs callbacks.
 * -1 with an exception on InvalidStateError or a BaseException escaping a
 * callback. */
int cf_future_complete(cf_state *st, FutureObject *fut, PyObject *result,
                       PyObject *exc);
int cf_future_cancel(cf_state *st, FutureObject *fut);
/* A pool failing a task: complete fut with exc_type(msg); if that
 * exception cannot be built, with the error raised building it, so the
 * future never stays pending.  Never raises (reports unraisable). */
void cf_future_fail(cf_state *st, PyObject *fut, PyObject *exc_type,
                    PyObject *msg);
void cf_future_link(FutureObject *fut, cf_link *link);
void cf_future_unlink(FutureObject *fut, cf_link *link);
/* Get the result or set the exception (CancelledError, stored exc). */
PyObject *cf_future_result_nowait(cf_state *st, FutureObject *fut);
/* result(timeout) semantics with a precomputed deadline. */
PyObject *cf_future_result_deadline(cf_state *st, FutureObject *fut,
                                    cf_time_t deadline);

/* fut_state is written under the future's lock (the GIL on GIL builds)
 * and may be read without it (done(), a spinner). */
#define CF_SET_STATE(fut, s) \
    __atomic_store_n(&(fut)->fut_state, (s), __ATOMIC_RELEASE)
#define CF_LOAD_STATE(fut) __atomic_load_n(&(fut)->fut_state, __ATOMIC_ACQUIRE)

static inline int
cf_state_is_done(int s)
{
    return s >= CF_CANCELLED;
}

/* "Finished" the way wait()/as_completed() count it. */
static inline int
cf_state_is_waited(int s)
{
    return s == CF_CANCELLED_AND_NOTIFIED || s == CF_FINISHED;
}

/* waiters.c */
int cf_waiters_module_init(PyObject *mod, cf_state *st);

/* mapiter.c */
int cf_mapiter_module_init(PyObject *mod, cf_state *st);

/* threadpool.c */
int cf_threadpool_module_init(PyObject *mod, cf_state *st);

/* processpool.c */
int cf_processpool_module_init(PyObject *mod, cf_state *st);
int cf_processpool_traverse(cf_state *st, visitproc visit, void *arg);
void cf_processpool_clear(cf_state *st);
/* interppool.c */
int cf_interppool_module_init(PyObject *mod, cf_state *st);
int cf_interppool_traverse(cf_state *st, visitproc visit, void *arg);
void cf_interppool_clear(cf_state *st);

/* sync.c: shared by the pools */
void cf_log_exc(cf_state *st, PyObject *level, PyObject *args, PyObject *exc);
void cf_log_critical(cf_state *st, const char *msg, PyObject *exc);
int cf_join_threads(PyObject *threads);

/* Traverse/clear helpers for module state. */
int cf_state_traverse(cf_state *st, visitproc visit, void *arg);
int cf_state_clear(cf_state *st);
int cf_future_traverse(cf_state *st, visitproc visit, void *arg);
void cf_future_clear(cf_state *st);
int cf_mapiter_traverse(cf_state *st, visitproc visit, void *arg);
void cf_mapiter_clear(cf_state *st);
int cf_waiters_traverse(cf_state *st, visitproc visit, void *arg);
void cf_waiters_clear(cf_state *st);
int cf_threadpool_traverse(cf_state *st, visitproc visit, void *arg);
void cf_threadpool_clear(cf_state *st);

#endif /* CF_CFUTURES_H */
