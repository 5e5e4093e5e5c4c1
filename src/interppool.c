/* Native InterpreterPoolExecutor: worker threads that each own a
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
 */
#include "cfutures.h"

#include <string.h>

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

static const char BROKEN_MSG[] =
    "A thread initializer failed, the thread pool is not usable anymore";

/* ================================================================ core
 *
 * Pure C: no PyObject is touched here; the future pointer is carried,
 * never dereferenced.
 */

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

/* Every live core, for the fork handlers.  Lock order: all_lock, then a
 * core's mutex. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static InterpCore *all_cores = NULL;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Before fork: hold every pool mutex so the child never inherits one
 * locked by a worker.  Pool mutexes are never held while waiting for a
 * GIL, so the forking thread (holding its GIL) cannot deadlock here. */
static void
atfork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
    for (InterpCore *c = all_cores; c != NULL; c = c->all_next) {
        pthread_mutex_lock(&c->mutex);
    }
}

static void
atfork_parent(void)
{
    for (InterpCore *c = all_cores; c != NULL; c = c->all_next) {
        pthread_mutex_unlock(&c->mutex);
    }
    pthread_mutex_unlock(&all_lock);
}

/* The child has none of the worker threads: re-create the locks.  A pool
 * that had started workers refuses new work with a clear error rather
 * than queue it for workers that do not exist; one that never started
 * any just works in the child.  (CPython 3.13.0 itself aborts a child
 * forked while any sub-interpreter exists, so in practice the refusal is
 * seen once the parent's workers have gone, e.g. after an initializer
 * failure.) */
static void
atfork_child(void)
{
    for (InterpCore *c = all_cores; c != NULL; c = c->all_next) {
        pthread_mutex_init(&c->mutex, NULL);
        pthread_cond_init(&c->cond, NULL);
        c->idle = 0;
        if (c->nthreads > 0) {
            c->forked = 1;
        }
    }
    pthread_mutex_init(&all_lock, NULL);
}

static void
atfork_register(void)
{
    (void)pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static InterpCore *
InterpCore_New(int max_workers, const char *init, size_t init_len)
{
    InterpCore *c = PyMem_RawCalloc(1, sizeof(InterpCore));
    if (c == NULL) {
        return NULL;
    }
    if (init != NULL) {
        c->init_data = PyMem_RawMalloc(init_len ? init_len : 1);
        if (c->init_data == NULL) {
            PyMem_RawFree(c);
            return NULL;
        }
        memcpy(c->init_data, init, init_len);
        c->init_len = init_len;
    }
    pthread_mutex_init(&c->mutex, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->max_workers = max_workers;
    c->refcnt = 1;
    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&all_lock);
    c->all_next = all_cores;
    if (all_cores != NULL) {
        all_cores->all_prev = c;
    }
    all_cores = c;
    pthread_mutex_unlock(&all_lock);
    return c;
}

static void
InterpCore_Incref(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->refcnt++;
    pthread_mutex_unlock(&c->mutex);
}

/* Drop a reference.  On the last one, return the tasks still queued (the
 * caller releases their futures under the GIL) and free the core. */
static InterpTask *
InterpCore_Decref(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    Py_ssize_t left = --c->refcnt;
    pthread_mutex_unlock(&c->mutex);
    if (left > 0) {
        return NULL;
    }
    pthread_mutex_lock(&all_lock);
    if (c->all_prev != NULL) {
        c->all_prev->all_next = c->all_next;
    }
    else {
        all_cores = c->all_next;
    }
    if (c->all_next != NULL) {
        c->all_next->all_prev = c->all_prev;
    }
    pthread_mutex_unlock(&all_lock);
    InterpTask *rest = c->head;
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mutex);
    PyMem_RawFree(c->init_data);
    PyMem_RawFree(c);
    return rest;
}

/* The core whose future this worker thread is completing (deliver()):
 * the worker counts as idle then, but not for a submit() from its own
 * done-callbacks -- it cannot take that task before they return. */
static _Thread_local InterpCore *cf_delivering;

/* Queue a task.  *spawn is set to the index of a worker to start (the
 * caller must start it or call InterpCore_Unspawn), or -1.  A new worker
 * is wanted when queued tasks outnumber the idle workers. */
static int
InterpCore_Push(InterpCore *c, InterpTask *t, int *spawn)
{
    *spawn = -1;
    pthread_mutex_lock(&c->mutex);
    int err = CF_ERR_IP_OK;
    if (c->broken) {
        err = CF_ERR_IP_BROKEN;
    }
    else if (c->shutdown) {
        err = CF_ERR_IP_SHUTDOWN;
    }
    else if (c->exiting) {
        err = CF_ERR_IP_EXITING;
    }
    else if (c->forked) {
        err = CF_ERR_IP_FORKED;
    }
    if (err != CF_ERR_IP_OK) {
        pthread_mutex_unlock(&c->mutex);
        return err;
    }
    t->next = NULL;
    if (c->tail != NULL) {
        c->tail->next = t;
    }
    else {
        c->head = t;
    }
    c->tail = t;
    c->ntasks++;
    int idle = c->idle - (cf_delivering == c);
    if (c->ntasks > idle && c->nthreads < c->max_workers) {
        *spawn = c->nthreads++;
    }
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mutex);
    return CF_ERR_IP_OK;
}

/* Starting the worker reserved by Push failed. */
static void
InterpCore_Unspawn(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->nthreads--;
    pthread_mutex_unlock(&c->mutex);
}

static InterpTask *
pop_locked(InterpCore *c)
{
    InterpTask *t = c->head;
    if (t != NULL) {
        c->head = t->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        c->ntasks--;
        t->next = NULL;
    }
    return t;
}

/* A worker counts as idle from before it completes a future until it
 * takes the next task: a submit() woken by that future must not start
 * another worker.  Its own done-callbacks do not count it (cf_delivering),
 * as the stdlib releases its idle semaphore after them. */
CF_WORKER_ONLY static void
InterpCore_SetIdle(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->idle++;
    pthread_mutex_unlock(&c->mutex);
}

/* An idle worker takes a queued task, if any, without waiting. */
CF_WORKER_ONLY static InterpTask *
InterpCore_TryPop(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    InterpTask *t = pop_locked(c);
    if (t != NULL) {
        c->idle--;
    }
    pthread_mutex_unlock(&c->mutex);
    return t;
}

/* An idle worker blocks (holding no GIL) until there is a task, or until
 * the queue is empty and the pool stops: then return NULL.  Either way it
 * is no longer idle.  Queued work is always finished first, as with the
 * stdlib's sentinel at the queue end. */
CF_WORKER_ONLY static InterpTask *
InterpCore_Pop(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    while (c->head == NULL && !c->shutdown && !c->exiting && !c->broken) {
        pthread_cond_wait(&c->cond, &c->mutex);
    }
    InterpTask *t = pop_locked(c);
    c->idle--;
    pthread_mutex_unlock(&c->mutex);
    return t;
}

/* Stop accepting work; wake every worker.  With cancel, take the queued
 * tasks out and return them. */
static InterpTask *
InterpCore_Shutdown(InterpCore *c, int cancel)
{
    InterpTask *rest = NULL;
    pthread_mutex_lock(&c->mutex);
    c->shutdown = 1;
    if (cancel) {
        rest = c->head;
        c->head = c->tail = NULL;
        c->ntasks = 0;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
    return rest;
}

static void
InterpCore_Exit(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->exiting = 1;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
}

/* Mark broken and take the queued tasks out (the caller fails them). */
static InterpTask *
InterpCore_Break(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->broken = 1;
    InterpTask *rest = c->head;
    c->head = c->tail = NULL;
    c->ntasks = 0;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
    return rest;
}

static void
InterpCore_Flags(InterpCore *c, int *shutdown, int *broken)
{
    pthread_mutex_lock(&c->mutex);
    *shutdown = c->shutdown;
    *broken = c->broken;
    pthread_mutex_unlock(&c->mutex);
}

/* ============================================================ raw data */

/* A length-counted PyMem_Raw buffer: pickles and UTF-8 text. */
typedef struct {
    char *data;
    size_t len;
} RawBuf;

static void
RawBuf_Clear(RawBuf *b)
{
    PyMem_RawFree(b->data);
    b->data = NULL;
    b->len = 0;
}

/* Copy a bytes object (0) or fail with MemoryError (-1). */
static int
RawBuf_FromBytes(RawBuf *b, PyObject *bytes)
{
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    b->data = PyMem_RawMalloc(n ? (size_t)n : 1);
    if (b->data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(b->data, PyBytes_AS_STRING(bytes), (size_t)n);
    b->len = (size_t)n;
    return 0;
}

/* Copy a str's UTF-8 (surrogates kept); on failure leave b empty and
 * clear the error: text fields are best effort. */
CF_WORKER_ONLY static void
RawBuf_FromStr(RawBuf *b, PyObject *s)
{
    if (s == NULL || !PyUnicode_Check(s)) {
        PyErr_Clear();
        return;
    }
    PyObject *u = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (u == NULL || RawBuf_FromBytes(b, u) < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(u);
}

static PyObject *
RawBuf_AsStr(RawBuf *b)
{
    if (b->data == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(b->data, (Py_ssize_t)b->len, "surrogatepass");
}

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

CF_WORKER_ONLY static void
InterpResult_Clear(InterpResult *r)
{
    RawBuf_Clear(&r->pickled);
    RawBuf_Clear(&r->type_name);
    RawBuf_Clear(&r->type_qualname);
    RawBuf_Clear(&r->type_module);
    RawBuf_Clear(&r->msg);
    RawBuf_Clear(&r->errdisplay);
    r->kind = RES_NONE;
}

/* The argument of a worker Thread: a capsule owning one of these. */
typedef struct {
    InterpCore *core;       /* strong */
    RawBuf syspath;         /* pickle of the main interpreter's sys.path */
    RawBuf mainfile;        /* 3.14+: __main__.__file__ (UTF-8), or empty */
    PyObject *init_error;   /* main interpreter's; touched with its GIL */
} InterpWorker;

static const char WORKER_CAPSULE[] = "cfutures._cfutures.interp_worker";

/* ================================================ main-GIL helpers */

static void
task_free(InterpTask *t)
{
    Py_XDECREF((PyObject *)t->future);
    PyMem_RawFree(t);
}

static void
core_release(InterpCore *c)
{
    InterpTask *t = InterpCore_Decref(c);
    while (t != NULL) {
        InterpTask *next = t->next;
        task_free(t);
        t = next;
    }
}

static void
worker_capsule_destructor(PyObject *capsule)
{
    InterpWorker *w = PyCapsule_GetPointer(capsule, WORKER_CAPSULE);
    if (w == NULL) {
        PyErr_Clear();
        return;
    }
    RawBuf_Clear(&w->syspath);
    RawBuf_Clear(&w->mainfile);
    Py_CLEAR(w->init_error);
    core_release(w->core);
    PyMem_RawFree(w);
}

/* An exception escaped future completion (a done-callback raised a
 * BaseException): the stdlib logs 'Exception in worker'. */
static void
log_worker_error(cf_state *st)
{
    PyObject *exc = cf_PyErr_GetRaisedException();
    cf_log_critical(st, "Exception in worker", exc);
    Py_XDECREF(exc);
}

static PyObject *
loads_raw(cf_state *st, const RawBuf *b)
{
    PyObject *bytes = PyBytes_FromStringAndSize(b->data, (Py_ssize_t)b->len);
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_CallOneArg(st->interp.loads, bytes);
    Py_DECREF(bytes);
    return obj;
}

/* Rebuild what a task raised: the original exception (unpickled) with an
 * ExecutionFailed as __cause__, or the ExecutionFailed alone when the
 * exception could not cross -- as 3.14's `raise exc from wrapper`.
 * Returns a new reference; never NULL (falls back to the error met). */
static PyObject *
result_to_exception(cf_state *st, InterpResult *r)
{
    PyObject *wrapper = NULL, *orig = NULL;
    PyObject *strs[5] = {
        RawBuf_AsStr(&r->type_name), RawBuf_AsStr(&r->type_qualname),
        RawBuf_AsStr(&r->type_module), RawBuf_AsStr(&r->msg),
        RawBuf_AsStr(&r->errdisplay),
    };
    if (strs[0] && strs[1] && strs[2] && strs[3] && strs[4]) {
        wrapper = PyObject_Vectorcall(st->interp.make_failed, strs, 5, NULL);
    }
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(strs[i]);
    }
    if (wrapper == NULL) {
        return cf_PyErr_GetRaisedException();
    }
    if (r->pickled.data != NULL) {
        orig = loads_raw(st, &r->pickled);
        if (orig == NULL) {
            PyErr_Clear();
        }
        else if (!PyExceptionInstance_Check(orig)) {
            Py_CLEAR(orig);
        }
    }
    if (orig == NULL) {
        return wrapper;
    }
#if PY_VERSION_HEX >= 0x030E0000
    /* A NotShareableError of the worker's XI_HELPERS: as 3.14, its cause
     * is a plain Exception with the text of what failed. */
    PyObject *text = NULL;
    if (PyObject_GetOptionalAttrString(orig, "_cf_xi_cause", &text) < 0) {
        PyErr_Clear();
    }
    if (text != NULL) {
        PyObject *cause = PyObject_CallOneArg(PyExc_Exception, text);
        Py_DECREF(text);
        if (cause == NULL || PyObject_DelAttrString(orig, "_cf_xi_cause") < 0) {
            PyErr_Clear();
        }
        if (cause != NULL) {
            Py_SETREF(wrapper, cause);
        }
    }
#endif
    PyException_SetCause(orig, wrapper);     /* steals; suppresses context */
    return orig;
}

/* Complete fut from a worker's raw result.  Main GIL held. */
CF_WORKER_ONLY static void
deliver(cf_state *st, FutureObject *fut, InterpResult *r)
{
    PyObject *value = NULL, *exc = NULL;
    if (r->kind == RES_VALUE) {
        value = loads_raw(st, &r->pickled);
        if (value == NULL) {
            exc = cf_PyErr_GetRaisedException();
        }
    }
    else {
        exc = result_to_exception(st, r);
    }
    if (cf_future_complete(st, fut, value, exc) < 0) {
        log_worker_error(st);
    }
    Py_XDECREF(value);
    Py_XDECREF(exc);
}

/* Fail (or drop, if already done) the tasks taken out of a broken pool. */
static void
fail_tasks(cf_state *st, InterpTask *t)
{
    while (t != NULL) {
        InterpTask *next = t->next;
        FutureObject *fut = (FutureObject *)t->future;
        if (!cf_state_is_done(fut->fut_state)) {
            PyObject *exc = PyObject_CallFunction(st->interp.broken, "s",
                                                  BROKEN_MSG);
            if (exc == NULL
                || cf_future_complete(st, fut, NULL, exc) < 0) {
                log_worker_error(st);
            }
            Py_XDECREF(exc);
        }
        task_free(t);
        t = next;
    }
}

static void
cancel_tasks(cf_state *st, InterpTask *t)
{
    while (t != NULL) {
        InterpTask *next = t->next;
        if (cf_future_cancel(st, (FutureObject *)t->future) < 0) {
            PyErr_WriteUnraisable(NULL);
        }
        task_free(t);
        t = next;
    }
}

/* The initializer (or interpreter creation) failed in a worker: log it
 * as the stdlib does, break the pool, fail everything queued. */
CF_WORKER_ONLY static void
worker_init_failed(cf_state *st, InterpCore *core, PyObject *exc)
{
    cf_log_critical(st, "Exception in initializer:", exc);
    fail_tasks(st, InterpCore_Break(core));
}

/* pickle.dumps((fn, args, kwargs)).  The slow path, in Python
 * (cfutures.interpreter._check_main), runs only when the bytes mention
 * __main__ at all (a worker has its own __main__) or, on 3.14+, when the
 * plain pickle failed (stateless functions cross as code, the rest fails
 * with NotShareableError). */
static PyObject *
pickle_call(cf_state *st, PyObject *fn, PyObject *args, PyObject *kwargs)
{
    PyObject *call = PyTuple_Pack(3, fn, args, kwargs);
    if (call == NULL) {
        return NULL;
    }
    PyObject *stack[2] = {call, st->interp.protocol};
    PyObject *data = PyObject_Vectorcall(st->interp.dumps, stack, 2, NULL);
    if (data != NULL && !PyBytes_Check(data)) {
        Py_SETREF(data, NULL);
        PyErr_SetString(PyExc_TypeError, "pickle.dumps() did not return bytes");
    }
    int failed = data == NULL;
#if PY_VERSION_HEX >= 0x030E0000
    if (failed && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
    }
    else
#endif
    if (failed
        || memmem(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data),
                  "__main__", 8) == NULL) {
        Py_DECREF(call);
        return data;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(
        st->interp.check_main, call, failed ? Py_True : Py_False, NULL);
    Py_DECREF(call);
    if (r == NULL) {
        Py_XDECREF(data);
        return NULL;
    }
    if (PyBytes_Check(r)) {
        Py_XSETREF(data, r);
        return data;
    }
    Py_DECREF(r);
    if (data == NULL) {
        PyErr_SetString(PyExc_TypeError, "call could not be pickled");
    }
    return data;
}

static int
check_ready(cf_state *st)
{
    if (st->interp.dumps == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cfutures.interpreter is not initialized");
        return -1;
    }
    return 0;
}

/* =========================================================== the type */

typedef struct {
    PyObject_HEAD
    InterpCore *ip_core;        /* NULL until _setup() */
    PyObject *ip_threads;       /* set of threading.Thread */
    PyObject *ip_prefix;        /* thread_name_prefix */
    PyObject *ip_init_error;    /* 3.14+: the initializer could not cross */
} InterpPoolObject;

static int
raise_push_error(cf_state *st, int err)
{
    switch (err) {
    case CF_ERR_IP_BROKEN: {
        PyObject *exc = PyObject_CallFunction(st->interp.broken, "s",
                                              BROKEN_MSG);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        break;
    }
    case CF_ERR_IP_SHUTDOWN:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        break;
    case CF_ERR_IP_EXITING:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after "
                        "interpreter shutdown");
        break;
    case CF_ERR_IP_FORKED:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures in a child process: "
                        "this InterpreterPoolExecutor was created before "
                        "fork() and its workers exist only in the parent");
        break;
    default:
        PyErr_NoMemory();
    }
    return -1;
}

/* Start worker number `index`: threading.Thread(name=f"{prefix}_{index}",
 * target=_interp_worker, args=(handle,)).start(); remember it. */
static int
spawn_worker(cf_state *st, InterpPoolObject *self, int index)
{
    PyObject *name = NULL, *handle = NULL, *args = NULL, *kwargs = NULL;
    PyObject *thread = NULL, *r = NULL, *syspath_data = NULL;
    int rc = -1;

    InterpWorker *w = PyMem_RawCalloc(1, sizeof(InterpWorker));
    if (w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Workers start with the main interpreter's current sys.path: a fresh
     * interpreter only gets the start-up path, which misses entries added
     * at run time (pytest's rootdir, a script's own sys.path.insert). */
    PyObject *path = PySys_GetObject("path");    /* borrowed */
    if (path != NULL) {
        PyObject *stack[2] = {path, st->interp.protocol};
        syspath_data = PyObject_Vectorcall(st->interp.dumps, stack, 2, NULL);
        if (syspath_data == NULL
            || RawBuf_FromBytes(&w->syspath, syspath_data) < 0) {
            PyErr_Clear();      /* best effort: keep the default path */
        }
        Py_CLEAR(syspath_data);
    }
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14's "<fake __main__>": a worker that meets a reference into
     * __main__ runs this script (best effort: a missing file just fails
     * that unpickling). */
    PyObject *mainname = PyUnicode_FromString("__main__");
    PyObject *mainmod = mainname ? PyImport_GetModule(mainname) : NULL;
    Py_XDECREF(mainname);
    if (mainmod != NULL) {
        PyObject *file = PyObject_GetAttrString(mainmod, "__file__");
        RawBuf_FromStr(&w->mainfile, file);     /* clears any error */
        Py_XDECREF(file);
        Py_DECREF(mainmod);
    }
    PyErr_Clear();
#endif
    w->init_error = Py_XNewRef(self->ip_init_error);
    w->core = self->ip_core;
    InterpCore_Incref(w->core);
    handle = PyCapsule_New(w, WORKER_CAPSULE, worker_capsule_destructor);
    if (handle == NULL) {
        RawBuf_Clear(&w->syspath);
        RawBuf_Clear(&w->mainfile);
        Py_CLEAR(w->init_error);
        core_release(w->core);
        PyMem_RawFree(w);
        return -1;
    }
    name = PyUnicode_FromFormat("%U_%d", self->ip_prefix, index);
    args = PyTuple_Pack(1, handle);
    kwargs = Py_BuildValue("{sOsOsO}", "name", name, "target",
                           st->interp.worker_fn, "args", args);
    if (name == NULL || args == NULL || kwargs == NULL) {
        goto done;
    }
    PyObject *noargs = PyTuple_New(0);
    if (noargs == NULL) {
        goto done;
    }
    thread = PyObject_Call(st->interp.Thread, noargs, kwargs);
    Py_DECREF(noargs);
    if (thread == NULL) {
        goto done;
    }
    /* Register before starting: a running worker the exit hook does not
     * know about would block interpreter exit in threading._shutdown. */
    if (PyObject_SetItem(st->interp.registry, thread, handle) < 0
        || PySet_Add(self->ip_threads, thread) < 0) {
        goto done;
    }
    r = PyObject_CallMethod(thread, "start", NULL);
    if (r == NULL) {
        /* Never started: forget it (the registry entry dies with it). */
        PyObject *exc = cf_PyErr_GetRaisedException();
        if (PySet_Discard(self->ip_threads, thread) < 0) {
            PyErr_Clear();
        }
        cf_PyErr_SetRaisedException(exc);
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(r);
    Py_XDECREF(thread);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(name);
    Py_XDECREF(handle);
    return rc;
}

PyDoc_STRVAR(InterpPool_submit_doc,
"submit($self, fn, /, *args, **kwargs)\n--\n\n"
"Submits a callable to be executed with the given arguments.\n\n"
"Schedules the callable to be executed as fn(*args, **kwargs) in a worker\n"
"interpreter and returns a Future instance representing the execution of\n"
"the callable.  The callable, its arguments and its result are pickled;\n"
"functions defined in __main__ are refused.\n\n"
"Returns:\n"
"    A Future representing the given call.");

static PyObject *
InterpPool_submit(PyObject *op, PyTypeObject *cls, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    cf_state *st = PyType_GetModuleState(cls);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "ThreadPoolExecutor.submit() missing 1 required "
                        "positional argument: 'fn'");
        return NULL;
    }
    if (self->ip_core == NULL || self->ip_threads == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "InterpreterPoolExecutor.__init__() was not called");
        return NULL;
    }
    if (check_ready(st) < 0) {
        return NULL;
    }
    /* The stdlib's order: broken, shutdown, interpreter shutdown. */
    int shutdown, broken;
    InterpCore_Flags(self->ip_core, &shutdown, &broken);
    if (broken || shutdown || st->interp.exiting) {
        raise_push_error(st, broken ? CF_ERR_IP_BROKEN
                             : shutdown ? CF_ERR_IP_SHUTDOWN
                             : CF_ERR_IP_EXITING);
        return NULL;
    }
    PyObject *fn = args[0];
    if (PyUnicode_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "scripts not supported");
        return NULL;
    }

    PyObject *fargs = PyTuple_New(nargs - 1);
    PyObject *fkwargs = PyDict_New();
    PyObject *fut = NULL, *data = NULL;
    if (fargs == NULL || fkwargs == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(fargs, i - 1, Py_NewRef(args[i]));
    }
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(fkwargs, PyTuple_GET_ITEM(kwnames, i),
                               args[nargs + i]) < 0) {
                goto error;
            }
        }
    }
    fut = cf_future_new(st);
    if (fut == NULL) {
        goto error;
    }
    data = pickle_call(st, fn, fargs, fkwargs);
    Py_CLEAR(fargs);
    Py_CLEAR(fkwargs);
    if (data == NULL) {
        /* As in 3.14, a call that cannot cross fails its future, not
         * submit() -- unless it is KeyboardInterrupt & co. */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            goto error;
        }
        PyObject *exc = cf_PyErr_GetRaisedException();
        int r = cf_future_complete(st, (FutureObject *)fut, NULL, exc);
        Py_DECREF(exc);
        if (r < 0) {
            goto error;
        }
        return fut;
    }

    Py_ssize_t len = PyBytes_GET_SIZE(data);
    InterpTask *t = PyMem_RawMalloc(sizeof(InterpTask) + (size_t)len);
    if (t == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    t->next = NULL;
    t->future = Py_NewRef(fut);
    t->len = (size_t)len;
    memcpy(t->data, PyBytes_AS_STRING(data), (size_t)len);
    Py_CLEAR(data);

    /* Pickling ran Python code: the exit hook may have run meanwhile. */
    int spawn = -1;
    int err = st->interp.exiting ? CF_ERR_IP_EXITING
                                 : InterpCore_Push(self->ip_core, t, &spawn);
    if (err != CF_ERR_IP_OK) {
        task_free(t);
        raise_push_error(st, err);
        goto error;
    }
    if (spawn >= 0 && spawn_worker(st, self, spawn) < 0) {
        /* Like the stdlib: the call stays queued, submit() raises. */
        InterpCore_Unspawn(self->ip_core);
        goto error;
    }
    return fut;

error:
    Py_XDECREF(fargs);
    Py_XDECREF(fkwargs);
    Py_XDECREF(data);
    Py_XDECREF(fut);
    return NULL;
}

PyDoc_STRVAR(InterpPool_shutdown_doc,
"shutdown($self, /, wait=True, *, cancel_futures=False)\n--\n\n"
"Clean-up the resources associated with the Executor.\n\n"
"It is safe to call this method several times. Otherwise, no other\n"
"methods can be called after this one.\n\n"
"Args:\n"
"    wait: If True then shutdown will not return until all running\n"
"        futures have finished executing and the resources used by the\n"
"        executor have been reclaimed.\n"
"    cancel_futures: If True then shutdown will cancel all pending\n"
"        futures. Futures that are completed or running will not be\n"
"        cancelled.");

static PyObject *
InterpPool_shutdown(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"wait", "cancel_futures", NULL};
    InterpPoolObject *self = (InterpPoolObject *)op;
    int wait = 1, cancel = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p$p:shutdown", kwlist,
                                     &wait, &cancel)) {
        return NULL;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(op));
    if (st == NULL) {
        return NULL;
    }
    if (self->ip_core != NULL) {
        cancel_tasks(st, InterpCore_Shutdown(self->ip_core, cancel));
    }
    if (wait && self->ip_threads != NULL
        && cf_join_threads(self->ip_threads) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(InterpPool_setup_doc,
"_setup($self, max_workers, thread_name_prefix, initdata, init_error, /)\n"
"--\n\n"
"Initialise the native pool; initdata is a pickled initializer call or\n"
"None; init_error (or None) is the exception each worker fails\n"
"initializing with.  Called once by InterpreterPoolExecutor.__init__.");

static PyObject *
InterpPool__setup(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "_setup(max_workers, thread_name_prefix, initdata, "
                        "init_error)");
        return NULL;
    }
    long max_workers = PyLong_AsLong(args[0]);
    if (max_workers == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (max_workers <= 0 || max_workers > INT_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "max_workers must be greater than 0");
        return NULL;
    }
    if (!PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "thread_name_prefix must be a str");
        return NULL;
    }
    if (args[2] != Py_None && !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "initdata must be bytes or None");
        return NULL;
    }
    if (self->ip_core != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "InterpreterPoolExecutor is already initialized");
        return NULL;
    }
    const char *init = NULL;
    size_t init_len = 0;
    if (args[2] != Py_None) {
        init = PyBytes_AS_STRING(args[2]);
        init_len = (size_t)PyBytes_GET_SIZE(args[2]);
    }
    self->ip_core = InterpCore_New((int)max_workers, init, init_len);
    if (self->ip_core == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_XSETREF(self->ip_prefix, Py_NewRef(args[1]));
    if (args[3] != Py_None) {
        Py_XSETREF(self->ip_init_error, Py_NewRef(args[3]));
    }
    Py_RETURN_NONE;
}

static PyObject *
InterpPool_get_max_workers(PyObject *op, void *closure)
{
    InterpCore *c = ((InterpPoolObject *)op)->ip_core;
    return PyLong_FromLong(c ? c->max_workers : 0);
}

static PyObject *
InterpPool_get_prefix(PyObject *op, void *closure)
{
    PyObject *p = ((InterpPoolObject *)op)->ip_prefix;
    return Py_NewRef(p ? p : Py_None);
}

static PyObject *
InterpPool_get_threads(PyObject *op, void *closure)
{
    PyObject *threads = ((InterpPoolObject *)op)->ip_threads;
    return threads ? Py_NewRef(threads) : PySet_New(NULL);  /* cleared */
}

static PyObject *
InterpPool_get_shutdown(PyObject *op, void *closure)
{
    InterpCore *c = ((InterpPoolObject *)op)->ip_core;
    int shutdown = 0, broken = 0;
    if (c != NULL) {
        InterpCore_Flags(c, &shutdown, &broken);
    }
    return PyBool_FromLong(shutdown);
}

static PyObject *
InterpPool_get_broken(PyObject *op, void *closure)
{
    InterpCore *c = ((InterpPoolObject *)op)->ip_core;
    int shutdown = 0, broken = 0;
    if (c != NULL) {
        InterpCore_Flags(c, &shutdown, &broken);
    }
    if (broken) {
        return PyUnicode_FromString(BROKEN_MSG);
    }
    Py_RETURN_FALSE;
}

static PyObject *
InterpPool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    InterpPoolObject *self = (InterpPoolObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->ip_threads = PySet_New(NULL);
    if (self->ip_threads == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
InterpPool_traverse(PyObject *op, visitproc visit, void *arg)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->ip_threads);
    Py_VISIT(self->ip_prefix);
    Py_VISIT(self->ip_init_error);
    return 0;
}

static int
InterpPool_clear(PyObject *op)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    Py_CLEAR(self->ip_threads);
    Py_CLEAR(self->ip_prefix);
    Py_CLEAR(self->ip_init_error);
    return 0;
}

static void
InterpPool_dealloc(PyObject *op)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    InterpPool_clear(op);
    if (self->ip_core != NULL) {
        /* The stdlib's weakref callback: workers finish the queue, then
         * exit; they keep the core alive until then. */
        (void)InterpCore_Shutdown(self->ip_core, 0);
        core_release(self->ip_core);
        self->ip_core = NULL;
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

#define METH_FAST (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef InterpPool_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))InterpPool_submit, METH_FAST,
     InterpPool_submit_doc},
    {"shutdown", (PyCFunction)(void (*)(void))InterpPool_shutdown,
     METH_VARARGS | METH_KEYWORDS, InterpPool_shutdown_doc},
    {"_setup", (PyCFunction)(void (*)(void))InterpPool__setup, METH_FASTCALL,
     InterpPool_setup_doc},
    {NULL, NULL}
};

static PyGetSetDef InterpPool_getset[] = {
    {"_max_workers", InterpPool_get_max_workers, NULL, NULL, NULL},
    {"_thread_name_prefix", InterpPool_get_prefix, NULL, NULL, NULL},
    {"_threads", InterpPool_get_threads, NULL, NULL, NULL},
    {"_shutdown", InterpPool_get_shutdown, NULL, NULL, NULL},
    {"_broken", InterpPool_get_broken, NULL, NULL, NULL},
    {NULL}
};

PyDoc_STRVAR(InterpPool_doc,
"InterpreterPool()\n--\n\n"
"Native core of cfutures.InterpreterPoolExecutor: worker threads that\n"
"each own a sub-interpreter with its own GIL.");

static PyType_Slot InterpPool_slots[] = {
    {Py_tp_doc, (void *)InterpPool_doc},
    {Py_tp_new, InterpPool_new},
    {Py_tp_dealloc, InterpPool_dealloc},
    {Py_tp_traverse, InterpPool_traverse},
    {Py_tp_clear, InterpPool_clear},
    {Py_tp_methods, InterpPool_methods},
    {Py_tp_getset, InterpPool_getset},
    {0, NULL},
};

static PyType_Spec InterpPool_spec = {
    .name = "cfutures._cfutures.InterpreterPool",
    .basicsize = sizeof(InterpPoolObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC),
    .slots = InterpPool_slots,
};

/* ======================================================== the worker */

#ifdef CF_HAVE_SUBINTERPRETERS

/* Objects owned by a worker's sub-interpreter: touched only by that
 * worker's thread with sub_ts attached. */
typedef struct {
    PyObject *loads;
    PyObject *dumps;
    PyObject *protocol;
    PyObject *format_exception;     /* traceback.format_exception, lazily */
    PyObject *helpers;              /* 3.14+: XI_HELPERS' namespace, lazily */
    const RawBuf *mainfile;         /* the worker's, read-only */
} SubInterp;

static void
SubInterp_Clear(SubInterp *sub)
{
    Py_CLEAR(sub->loads);
    Py_CLEAR(sub->dumps);
    Py_CLEAR(sub->protocol);
    Py_CLEAR(sub->format_exception);
    Py_CLEAR(sub->helpers);
}

/* Leave the attached interpreter (releasing its GIL) and attach `to`
 * (taking its GIL).  Never holds two GILs. */
static void
switch_to(PyThreadState *to)
{
    (void)PyEval_SaveThread();
    PyEval_RestoreThread(to);
}

/* The full traceback text, as 3.14's excinfo.errdisplay (without the
 * trailing newline), or NULL. */
static PyObject *
format_traceback(SubInterp *sub, PyObject *exc)
{
    if (sub->format_exception == NULL) {
        PyObject *tb = PyImport_ImportModule("traceback");
        if (tb == NULL) {
            return NULL;
        }
        sub->format_exception = PyObject_GetAttrString(tb, "format_exception");
        Py_DECREF(tb);
        if (sub->format_exception == NULL) {
            return NULL;
        }
    }
    PyObject *lines = PyObject_CallOneArg(sub->format_exception, exc);
    if (lines == NULL) {
        return NULL;
    }
    PyObject *sep = PyUnicode_FromStringAndSize("", 0);
    PyObject *text = sep ? PyUnicode_Join(sep, lines) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(lines);
    if (text == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n > 0 && PyUnicode_READ_CHAR(text, n - 1) == '\n') {
        Py_SETREF(text, PyUnicode_Substring(text, 0, n - 1));
    }
    return text;
}

/* Sub GIL held, an exception set: snapshot it into r as raw memory (the
 * exception pickled if it can be, plus 3.14's excinfo strings). */
static void
capture_exception(SubInterp *sub, InterpResult *r)
{
    PyObject *exc = cf_PyErr_GetRaisedException();
    InterpResult_Clear(r);
    r->kind = RES_RAISED;
    if (exc == NULL) {
        return;
    }
    PyTypeObject *tp = Py_TYPE(exc);
    PyObject *s = PyType_GetName(tp);
    RawBuf_FromStr(&r->type_name, s);
    Py_XDECREF(s);
    s = PyType_GetQualName(tp);
    RawBuf_FromStr(&r->type_qualname, s);
    Py_XDECREF(s);
    s = PyObject_GetAttrString((PyObject *)tp, "__module__");
    RawBuf_FromStr(&r->type_module, s);
    Py_XDECREF(s);
    if (!PyErr_GivenExceptionMatches(exc, PyExc_MemoryError)) {
        s = PyObject_Str(exc);
        RawBuf_FromStr(&r->msg, s);
        Py_XDECREF(s);
        s = format_traceback(sub, exc);
        RawBuf_FromStr(&r->errdisplay, s);
        Py_XDECREF(s);
        if (sub->dumps != NULL) {
            PyObject *stack[2] = {exc, sub->protocol};
            PyObject *data = PyObject_Vectorcall(sub->dumps, stack, 2, NULL);
            if (data == NULL || !PyBytes_Check(data)
                || RawBuf_FromBytes(&r->pickled, data) < 0) {
                PyErr_Clear();
            }
            Py_XDECREF(data);
        }
    }
    Py_DECREF(exc);
    PyErr_Clear();
}

#if PY_VERSION_HEX >= 0x030E0000
/* The worker's slow paths, as 3.14's cross-interpreter data behaves: run
 * in the worker interpreter only after a plain pickle.loads()/dumps()
 * failed. */
static const char XI_HELPERS[] =
"import pickle, sys\n"
"from concurrent.interpreters import NotShareableError\n"
"_fake_main = None\n"
"def failed(msg, inner):\n"
"    # the stdlib's __cause__ for these: an Exception with the text of\n"
"    # the inner chain, without tracebacks (C installs it)\n"
"    import traceback\n"
"    e = inner\n"
"    while e is not None:\n"
"        e.__traceback__ = None\n"
"        e = e.__cause__\n"
"    outer = NotShareableError(msg)\n"
"    outer._cf_xi_cause = ''.join(\n"
"        traceback.format_exception(inner)).rstrip('\\n')\n"
"    return outer\n"
"def load(data, mainfile):\n"
"    try:\n"
"        return pickle.loads(data)\n"
"    except Exception as exc:\n"
"        err = exc\n"
"    if mainfile is not None and b'__main__' in data:\n"
"        global _fake_main\n"
"        try:\n"
"            if _fake_main is None:\n"
"                import runpy, types\n"
"                ns = runpy.run_path(mainfile, run_name='<fake __main__>')\n"
"                _fake_main = types.ModuleType('__main__')\n"
"                _fake_main.__dict__.update(ns)\n"
"            real = sys.modules['__main__']\n"
"            sys.modules['__main__'] = _fake_main\n"
"            try:\n"
"                return pickle.loads(data)\n"
"            finally:\n"
"                sys.modules['__main__'] = real\n"
"        except Exception as exc:\n"
"            err = exc\n"
"    inner = NotShareableError('object could not be unpickled')\n"
"    inner.__cause__ = err\n"
"    raise failed('args not shareable', inner)\n"
"def dump(obj, protocol):\n"
"    try:\n"
"        return pickle.dumps(obj, protocol)\n"
"    except Exception as exc:\n"
"        try:\n"
"            shown = repr(obj)\n"
"        except Exception:\n"
"            shown = object.__repr__(obj)\n"
"        inner = NotShareableError(\n"
"            f'{shown} does not support cross-interpreter data')\n"
"        raise failed('object does not support cross-interpreter data',\n"
"                     inner)\n";

/* Sub GIL, no error set: call XI_HELPERS' `name`.  New reference, or NULL
 * with an error set. */
static PyObject *
sub_helper(SubInterp *sub, const char *name, PyObject *a, PyObject *b)
{
    if (sub->helpers == NULL) {
        PyObject *ns = PyDict_New();
        if (ns == NULL || PyDict_SetItemString(ns, "__builtins__",
                                               PyEval_GetBuiltins()) < 0) {
            Py_XDECREF(ns);
            return NULL;
        }
        PyObject *r = PyRun_String(XI_HELPERS, Py_file_input, ns, ns);
        if (r == NULL) {
            Py_DECREF(ns);
            return NULL;
        }
        Py_DECREF(r);
        sub->helpers = ns;
    }
    PyObject *fn = PyDict_GetItemString(sub->helpers, name);   /* borrowed */
    if (fn == NULL) {
        PyErr_SetString(PyExc_SystemError, "cfutures: helper missing");
        return NULL;
    }
    return PyObject_CallFunctionObjArgs(fn, a, b, NULL);
}
#endif

/* Sub GIL: unpickle (fn, args, kwargs) from raw memory and call it. */
static PyObject *
sub_call(SubInterp *sub, const char *data, size_t len)
{
    PyObject *bytes = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *call = PyObject_CallOneArg(sub->loads, bytes);
#if PY_VERSION_HEX >= 0x030E0000
    if (call == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        PyObject *mainfile = RawBuf_AsStr((RawBuf *)sub->mainfile);
        if (mainfile != NULL) {
            call = sub_helper(sub, "load", bytes, mainfile);
            Py_DECREF(mainfile);
        }
    }
#endif
    Py_DECREF(bytes);
    if (call == NULL) {
        return NULL;
    }
    PyObject *res = NULL;
    if (!PyTuple_Check(call) || PyTuple_GET_SIZE(call) != 3
        || !PyTuple_Check(PyTuple_GET_ITEM(call, 1))
        || !PyDict_Check(PyTuple_GET_ITEM(call, 2))) {
        PyErr_SetString(PyExc_TypeError, "malformed task");
    }
    else {
        res = PyObject_Call(PyTuple_GET_ITEM(call, 0),
                            PyTuple_GET_ITEM(call, 1),
                            PyTuple_GET_ITEM(call, 2));
    }
    Py_DECREF(call);
    return res;
}

static void
sub_run_task(SubInterp *sub, InterpTask *t, InterpResult *r)
{
    PyObject *res = sub_call(sub, t->data, t->len);
    if (res != NULL) {
        PyObject *stack[2] = {res, sub->protocol};
        PyObject *data = PyObject_Vectorcall(sub->dumps, stack, 2, NULL);
#if PY_VERSION_HEX >= 0x030E0000
        if (data == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear();
            data = sub_helper(sub, "dump", res, sub->protocol);
        }
#endif
        Py_DECREF(res);
        if (data != NULL && PyBytes_Check(data)
            && RawBuf_FromBytes(&r->pickled, data) == 0) {
            Py_DECREF(data);
            r->kind = RES_VALUE;
            return;
        }
        if (data != NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError,
                            "pickle.dumps() did not return bytes");
        }
        Py_XDECREF(data);
    }
    capture_exception(sub, r);
}

/* Sub GIL: prepare a fresh worker interpreter.  0, or -1 with the
 * failure captured in r. */
static int
sub_setup(SubInterp *sub, InterpWorker *w, InterpCore *core, InterpResult *r)
{
    sub->mainfile = &w->mainfile;
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle != NULL) {
        sub->loads = PyObject_GetAttrString(pickle, "loads");
        sub->dumps = PyObject_GetAttrString(pickle, "dumps");
        sub->protocol = PyObject_GetAttrString(pickle, "HIGHEST_PROTOCOL");
        Py_DECREF(pickle);
    }
    if (sub->loads == NULL || sub->dumps == NULL || sub->protocol == NULL) {
        goto error;
    }
    if (w->syspath.data != NULL) {
        PyObject *bytes = PyBytes_FromStringAndSize(
            w->syspath.data, (Py_ssize_t)w->syspath.len);
        PyObject *path = bytes ? PyObject_CallOneArg(sub->loads, bytes) : NULL;
        Py_XDECREF(bytes);
        if (path == NULL || PySys_SetObject("path", path) < 0) {
            Py_XDECREF(path);
            goto error;
        }
        Py_DECREF(path);
    }
    if (core->init_data != NULL) {      /* read-only after _setup() */
        PyObject *res = sub_call(sub, core->init_data, core->init_len);
        if (res == NULL) {
            goto error;
        }
        Py_DECREF(res);
    }
    return 0;
error:
    capture_exception(sub, r);
    return -1;
}

PyDoc_STRVAR(interp_worker_doc,
"_interp_worker($module, handle, /)\n--\n\n"
"Body of an InterpreterPoolExecutor worker thread: create a sub-interpreter\n"
"with its own GIL, run tasks in it until the pool stops, then destroy it.");

static PyObject *
interp_worker(PyObject *mod, PyObject *handle)
{
    cf_state *st = cf_get_state(mod);
    InterpWorker *w = PyCapsule_GetPointer(handle, WORKER_CAPSULE);
    if (w == NULL || check_ready(st) < 0) {
        return NULL;
    }
    InterpCore *core = w->core;     /* the handle keeps it alive */
    if (w->init_error != NULL) {
        worker_init_failed(st, core, w->init_error);
        Py_RETURN_NONE;
    }
    PyThreadState *main_ts = PyThreadState_Get();
    SubInterp sub = {0};
    InterpResult res = {0};

    /* 3.14's interpreters.create() config (_PyInterpreterConfig_INIT). */
    const PyInterpreterConfig config = {
        .use_main_obmalloc = 0,
        .allow_fork = 0,
        .allow_exec = 0,
        .allow_threads = 1,
        .allow_daemon_threads = 0,
        .check_multi_interp_extensions = 1,
        .gil = PyInterpreterConfig_OWN_GIL,
    };
    PyThreadState *sub_ts = NULL;
    PyStatus status = Py_NewInterpreterFromConfig(&sub_ts, &config);
    if (PyStatus_Exception(status) || sub_ts == NULL) {
        /* new_interpreter() re-attached main_ts on its error path. */
        PyErr_Format(PyExc_RuntimeError, "cannot create a sub-interpreter: %s",
                     status.err_msg ? status.err_msg : "out of memory");
        PyObject *exc = cf_PyErr_GetRaisedException();
        worker_init_failed(st, core, exc);
        Py_XDECREF(exc);
        Py_RETURN_NONE;
    }
    /* Attached to sub_ts holding the new GIL; the main GIL is free. */
    int ok = sub_setup(&sub, w, core, &res) == 0;
    switch_to(main_ts);
    if (!ok) {
        PyObject *exc = result_to_exception(st, &res);
        InterpResult_Clear(&res);
        worker_init_failed(st, core, exc);
        Py_XDECREF(exc);
        goto finish;
    }

    InterpTask *task = NULL;
    InterpCore_SetIdle(core);
    for (;;) {
        /* Main GIL held.  Take the next task without sleeping if one is
         * queued: one main-GIL visit then completes a future and starts
         * the next one. */
        task = InterpCore_TryPop(core);
        if (task == NULL) {
            Py_BEGIN_ALLOW_THREADS
            task = InterpCore_Pop(core);
            Py_END_ALLOW_THREADS
            if (task == NULL) {
                break;
            }
        }
        FutureObject *fut = (FutureObject *)task->future;
        int r = cf_future_set_running_or_notify_cancel(st, fut);
        if (r <= 0) {
            if (r < 0) {
                log_worker_error(st);
            }
            task_free(task);
            InterpCore_SetIdle(core);
            continue;
        }
        switch_to(sub_ts);
        sub_run_task(&sub, task, &res);
        if (cf_Py_IsFinalizing()) {
            /* Abnormal exit (the exit hook could not join us, e.g. a
             * second Ctrl-C): taking the main GIL now ends this thread,
             * so end our interpreter first rather than leave it behind.
             * The task and its future are abandoned with the process. */
            InterpResult_Clear(&res);
            SubInterp_Clear(&sub);
            Py_EndInterpreter(sub_ts);
            PyEval_RestoreThread(main_ts);      /* normally never returns */
            task_free(task);
            Py_RETURN_NONE;
        }
        switch_to(main_ts);
        InterpCore_SetIdle(core);
        InterpCore *outer = cf_delivering;
        cf_delivering = core;
        deliver(st, fut, &res);
        cf_delivering = outer;
        InterpResult_Clear(&res);
        task_free(task);
    }

finish:
    switch_to(sub_ts);
    SubInterp_Clear(&sub);
    Py_EndInterpreter(sub_ts);      /* detaches: no thread state now */
    PyEval_RestoreThread(main_ts);
    Py_RETURN_NONE;
}

#else   /* < 3.12: no per-interpreter GIL API */

PyDoc_STRVAR(interp_worker_doc,
"_interp_worker($module, handle, /)\n--\n\n"
"Unavailable: sub-interpreters with their own GIL need CPython 3.12+.");

static PyObject *
interp_worker(PyObject *mod, PyObject *handle)
{
    PyErr_SetString(PyExc_NotImplementedError,
                    "sub-interpreters with their own GIL need CPython 3.12+");
    return NULL;
}

#endif

/* =================================================== module functions */

PyDoc_STRVAR(interp_setup_doc,
"_interp_setup($module, broken, make_failed, check_main, registry, /)\n--\n\n"
"Register cfutures.interpreter's Python pieces: BrokenInterpreterPool,\n"
"the ExecutionFailed factory, the __main__ checker, and the exit registry.");

static PyObject *
interp_setup(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "_interp_setup(broken, make_failed, check_main, "
                        "registry)");
        return NULL;
    }
    cf_state *st = cf_get_state(mod);
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL) {
        return NULL;
    }
    PyObject *dumps = PyObject_GetAttrString(pickle, "dumps");
    PyObject *loads = PyObject_GetAttrString(pickle, "loads");
    PyObject *protocol = PyObject_GetAttrString(pickle, "HIGHEST_PROTOCOL");
    Py_DECREF(pickle);
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *thread = threading ? PyObject_GetAttrString(threading, "Thread")
                                 : NULL;
    Py_XDECREF(threading);
    PyObject *worker_fn = PyObject_GetAttrString(mod, "_interp_worker");
    if (dumps == NULL || loads == NULL || protocol == NULL || thread == NULL
        || worker_fn == NULL) {
        Py_XDECREF(dumps);
        Py_XDECREF(loads);
        Py_XDECREF(protocol);
        Py_XDECREF(thread);
        Py_XDECREF(worker_fn);
        return NULL;
    }
    cf_interp_state *is = &st->interp;
    Py_XSETREF(is->broken, Py_NewRef(args[0]));
    Py_XSETREF(is->make_failed, Py_NewRef(args[1]));
    Py_XSETREF(is->check_main, Py_NewRef(args[2]));
    Py_XSETREF(is->registry, Py_NewRef(args[3]));
    Py_XSETREF(is->Thread, thread);
    Py_XSETREF(is->worker_fn, worker_fn);
    Py_XSETREF(is->loads, loads);
    Py_XSETREF(is->protocol, protocol);
    Py_XSETREF(is->dumps, dumps);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(interp_exiting_doc,
"_interp_exiting($module, /)\n--\n\n"
"Interpreter exit began: refuse new work in every interpreter pool.");

static PyObject *
interp_exiting(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    cf_get_state(mod)->interp.exiting = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(interp_wake_exit_doc,
"_interp_wake_exit($module, handle, /)\n--\n\n"
"Tell the pool of a worker handle to finish its queue and stop.");

static PyObject *
interp_wake_exit(PyObject *mod, PyObject *handle)
{
    InterpWorker *w = PyCapsule_GetPointer(handle, WORKER_CAPSULE);
    if (w == NULL) {
        return NULL;
    }
    InterpCore_Exit(w->core);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(interp_pickle_call_doc,
"_interp_pickle_call($module, fn, args, kwargs, /)\n--\n\n"
"Pickle a call the way submit() does (refusing __main__ references).");

static PyObject *
interp_pickle_call(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "_interp_pickle_call(fn, args: tuple, kwargs: dict)");
        return NULL;
    }
    cf_state *st = cf_get_state(mod);
    if (check_ready(st) < 0) {
        return NULL;
    }
    return pickle_call(st, args[0], args[1], args[2]);
}

static PyMethodDef interp_functions[] = {
    {"_interp_worker", interp_worker, METH_O, interp_worker_doc},
    {"_interp_setup", (PyCFunction)(void (*)(void))interp_setup,
     METH_FASTCALL, interp_setup_doc},
    {"_interp_exiting", interp_exiting, METH_NOARGS, interp_exiting_doc},
    {"_interp_wake_exit", interp_wake_exit, METH_O, interp_wake_exit_doc},
    {"_interp_pickle_call", (PyCFunction)(void (*)(void))interp_pickle_call,
     METH_FASTCALL, interp_pickle_call_doc},
    {NULL, NULL}
};

/* ======================================================== module glue */

int
cf_interppool_traverse(cf_state *st, visitproc visit, void *arg)
{
    cf_interp_state *is = &st->interp;
    Py_VISIT(is->broken);
    Py_VISIT(is->make_failed);
    Py_VISIT(is->check_main);
    Py_VISIT(is->registry);
    Py_VISIT(is->worker_fn);
    Py_VISIT(is->Thread);
    Py_VISIT(is->dumps);
    Py_VISIT(is->loads);
    Py_VISIT(is->protocol);
    return 0;
}

void
cf_interppool_clear(cf_state *st)
{
    cf_interp_state *is = &st->interp;
    Py_CLEAR(is->broken);
    Py_CLEAR(is->make_failed);
    Py_CLEAR(is->check_main);
    Py_CLEAR(is->registry);
    Py_CLEAR(is->worker_fn);
    Py_CLEAR(is->Thread);
    Py_CLEAR(is->dumps);
    Py_CLEAR(is->loads);
    Py_CLEAR(is->protocol);
}

int
cf_interppool_module_init(PyObject *mod, cf_state *st)
{
    st->InterpPool_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &InterpPool_spec, NULL);
    if (st->InterpPool_type == NULL
        || PyModule_AddType(mod, st->InterpPool_type) < 0
        || PyModule_AddFunctions(mod, interp_functions) < 0) {
        return -1;
    }
#ifdef CF_HAVE_SUBINTERPRETERS
    return PyModule_AddIntConstant(mod, "_HAVE_SUBINTERPRETERS", 1);
#else
    return PyModule_AddIntConstant(mod, "_HAVE_SUBINTERPRETERS", 0);
#endif
}
