/* Native ThreadPoolExecutor.
 *
 * The executor object (a C base type; cfutures.thread.ThreadPoolExecutor
 * derives from it and from the stdlib class) owns a reference to a
 * cf_pool, a plain C struct that every worker also holds, so workers can
 * drain the queue and exit after the executor is gone.
 *
 * Workers are threading.Thread objects whose target is _thread_worker(),
 * a C loop.  It sleeps on the pool condvar with the GIL released, and
 * takes the GIL only to run a task and complete its future; holding the
 * GIL it keeps popping queued tasks, up to CF_BATCH before it lets go.
 *
 *   lock order:  start_lock -> GIL -> pool->mu
 *     mu: never held while waiting for the GIL.
 *     start_lock (the stdlib's _shutdown_lock): serialises starting a
 *     thread (Thread.start() releases the GIL) with shutdown(); always
 *     acquired with the GIL released.
 *
 * cf_pool fields:
 *   mu/cv + queue (head, tail, nqueued), nsleeping, nwake, idle, nthreads,
 *   shutdown flags: read/written under mu (workers touch them without GIL)
 *   PyObject fields, refcnt, registry links: GIL only
 */
#include "cfutures.h"

#include <errno.h>

#define CF_BATCH 64     /* tasks run per GIL hold before yielding it */

typedef struct cf_work {
    struct cf_work *next;
    struct cf_work *rprev, *rnext;  /* pool->running list (GIL) */
    PyObject *future;
    PyObject *fn;
    PyObject *args;         /* tuple */
    PyObject *kwargs;       /* dict or NULL */
} cf_work;

typedef struct cf_pool {
    /* --- under mu --- */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cf_work *head, *tail;
    Py_ssize_t nqueued;
    int nsleeping;          /* workers in cond_wait */
    int nwake;              /* signals sent, not yet consumed */
    int nspinning;          /* atomic: workers spinning for work */
    cf_time_t spin_budget;  /* written under mu, read by the spinner */
    int idle;               /* the stdlib's _idle_semaphore */
    int stopping;           /* shutdown / executor gone / exit: drain, exit */
    int broken;             /* initializer failed */

    /* --- GIL only --- */
    Py_ssize_t refcnt;      /* executor + one per worker capsule */
    Py_ssize_t max_workers;
    Py_ssize_t nthreads;    /* threads started (stdlib: len(_threads)) */
    int shutdown;           /* shutdown() called (stdlib: _shutdown) */
    PyObject *module;       /* keeps the module state alive */
    PyObject *initializer;
    PyObject *initargs;
    PyObject *prefix;
    PyObject *threads;      /* set of threading.Thread */
    PyObject *broken_msg;   /* str or NULL */
    PyThread_type_lock start_lock;
    cf_work *running;       /* tasks being run now, for fork */
    struct cf_pool *reg_prev, *reg_next;    /* registry, for fork/exit */
} cf_pool;

typedef struct {
    PyObject_HEAD
    cf_pool *pool;
} ThreadPoolObject;

static cf_state *
pool_state(cf_pool *p)
{
    return cf_get_state(p->module);
}

/* ------------------------------------------------------ queue (pure C) */

static void
queue_push_locked(cf_pool *p, cf_work *w)
{
    w->next = NULL;
    if (p->tail) {
        p->tail->next = w;
    }
    else {
        __atomic_store_n(&p->head, w, __ATOMIC_RELEASE);    /* spinners */
    }
    p->tail = w;
    p->nqueued++;
}

static cf_work *
queue_pop_locked(cf_pool *p)
{
    cf_work *w = p->head;
    if (w != NULL) {
        __atomic_store_n(&p->head, w->next, __ATOMIC_RELAXED);  /* spinners */
        if (p->head == NULL) {
            p->tail = NULL;
        }
        p->nqueued--;
    }
    return w;
}

/* Take the whole queue (shutdown with cancel_futures, broken pool). */
static cf_work *
queue_take_all_locked(cf_pool *p)
{
    cf_work *w = p->head;
    __atomic_store_n(&p->head, NULL, __ATOMIC_RELAXED);
    p->tail = NULL;
    p->nqueued = 0;
    return w;
}

/* ------------------------------------------------------ pool lifetime */

static void
work_free(cf_work *w)
{
    Py_XDECREF(w->future);
    Py_XDECREF(w->fn);
    Py_XDECREF(w->args);
    Py_XDECREF(w->kwargs);
    PyMem_Free(w);
}

static cf_pool *
pool_new(PyObject *module)
{
    cf_pool *p = PyMem_RawCalloc(1, sizeof(cf_pool));
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->refcnt = 1;
    p->spin_budget = CF_SPIN_NS;
    p->start_lock = PyThread_allocate_lock();
    if (p->start_lock == NULL) {
        PyMem_RawFree(p);
        PyErr_NoMemory();
        return NULL;
    }
    p->module = Py_NewRef(module);
    p->threads = PySet_New(NULL);
    if (p->threads == NULL) {
        Py_DECREF(p->module);
        PyThread_free_lock(p->start_lock);
        PyMem_RawFree(p);
        return NULL;
    }
    cf_state *st = cf_get_state(module);
    p->reg_next = st->tp_pools;
    if (st->tp_pools) {
        st->tp_pools->reg_prev = p;
    }
    st->tp_pools = p;
    return p;
}

static void
pool_decref(cf_pool *p)
{
    if (--p->refcnt > 0) {
        return;
    }
    cf_state *st = pool_state(p);
    if (p->reg_prev) {
        p->reg_prev->reg_next = p->reg_next;
    }
    else if (st->tp_pools == p) {
        st->tp_pools = p->reg_next;
    }
    if (p->reg_next) {
        p->reg_next->reg_prev = p->reg_prev;
    }
    cf_work *w = queue_take_all_locked(p);     /* no workers left */
    while (w) {
        cf_work *next = w->next;
        work_free(w);
        w = next;
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    PyThread_free_lock(p->start_lock);
    Py_XDECREF(p->initializer);
    Py_XDECREF(p->initargs);
    Py_XDECREF(p->prefix);
    Py_XDECREF(p->threads);
    Py_XDECREF(p->broken_msg);
    Py_XDECREF(p->module);
    PyMem_RawFree(p);
}

/* Ask workers to finish the queue and exit. */
static void
pool_stop(cf_pool *p)
{
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void
start_lock_acquire(cf_pool *p)
{
    if (!PyThread_acquire_lock(p->start_lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(p->start_lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

/* ------------------------------------------------------------- worker */

static void
running_add(cf_pool *p, cf_work *w)
{
    w->rprev = NULL;
    w->rnext = p->running;
    if (p->running) {
        p->running->rprev = w;
    }
    p->running = w;
}

static void
running_remove(cf_pool *p, cf_work *w)
{
    if (w->rprev) {
        w->rprev->rnext = w->rnext;
    }
    else {
        p->running = w->rnext;
    }
    if (w->rnext) {
        w->rnext->rprev = w->rprev;
    }
}

/* Run one task with the GIL held; consumes w. */
static void
run_work(cf_pool *p, cf_state *st, cf_work *w)
{
    running_add(p, w);
    FutureObject *fut = (FutureObject *)w->future;
    int r = cf_future_set_running_or_notify_cancel(st, fut);
    if (r > 0) {
        PyObject *res = PyObject_Call(w->fn, w->args, w->kwargs);
        if (res != NULL) {
            r = cf_future_complete(st, fut, res, NULL);
            Py_DECREF(res);
        }
        else {
            PyObject *exc = cf_PyErr_GetRaisedException();
            r = cf_future_complete(st, fut, NULL, exc);
            Py_DECREF(exc);
        }
    }
    if (r < 0) {
        /* A BaseException out of a done-callback: the stdlib's worker
         * logs it and dies; ours logs it and keeps serving. */
        PyObject *exc = cf_PyErr_GetRaisedException();
        cf_log_critical(st, "Exception in worker", exc);
        Py_XDECREF(exc);
    }
    running_remove(p, w);
    work_free(w);
}

/* Fail everything queued with BrokenThreadPool (GIL held). */
static void
fail_queued(cf_pool *p, cf_state *st)
{
    pthread_mutex_lock(&p->mu);
    cf_work *w = queue_take_all_locked(p);
    pthread_mutex_unlock(&p->mu);
    while (w) {
        cf_work *next = w->next;
        cf_future_fail(st, w->future, st->BrokenThreadPool, p->broken_msg);
        work_free(w);
        w = next;
    }
}

static int
run_initializer(cf_pool *p, cf_state *st)
{
    if (p->initializer == NULL) {
        return 0;
    }
    PyObject *r = PyObject_Call(p->initializer, p->initargs, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    PyObject *exc = cf_PyErr_GetRaisedException();
    cf_log_critical(st, "Exception in initializer:", exc);
    Py_XDECREF(exc);
    if (p->broken_msg == NULL) {
        p->broken_msg = PyUnicode_FromString(
            "A thread initializer failed, the thread pool is not usable "
            "anymore");
        if (p->broken_msg == NULL) {
            PyErr_WriteUnraisable(NULL);
        }
    }
    pthread_mutex_lock(&p->mu);
    p->broken = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fail_queued(p, st);
    return -1;
}

/* Wait for work with the GIL released.  NULL: time to exit. */
static cf_work *
wait_for_work(cf_pool *p)
{
    cf_work *w;
    Py_BEGIN_ALLOW_THREADS
    cf_hint_gil_released();
    cf_time_t start = cf_monotonic_ns();
    /* One worker at a time spins for new work before sleeping. */
    int spinner = 0;
    if (__atomic_fetch_add(&p->nspinning, 1, __ATOMIC_ACQ_REL) == 0) {
        spinner = 1;
        cf_time_t end = start + __atomic_load_n(&p->spin_budget,
                                                __ATOMIC_RELAXED);
        for (int i = 0;; i++) {
            if (__atomic_load_n(&p->head, __ATOMIC_ACQUIRE) != NULL
                || __atomic_load_n(&p->stopping, __ATOMIC_ACQUIRE)) {
                break;
            }
            cf_cpu_relax();
            if ((i & 63) == 63 && cf_spin_check(i, end)) {
                break;
            }
        }
    }
    __atomic_fetch_sub(&p->nspinning, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_lock(&p->mu);
    while (p->head == NULL && !p->stopping && !p->broken) {
        p->nsleeping++;
        pthread_cond_wait(&p->cv, &p->mu);
        p->nsleeping--;
        if (p->nwake > 0) {
            p->nwake--;
        }
    }
    w = p->broken ? NULL : queue_pop_locked(p);
    if (spinner && w != NULL) {
        p->spin_budget = cf_spin_adapt(p->spin_budget,
                                       cf_monotonic_ns() - start);
    }
    pthread_mutex_unlock(&p->mu);
    if (w != NULL) {
        /* the submitter usually releases the GIL soon (result(), wait()) */
        cf_spin_for_gil();
    }
    Py_END_ALLOW_THREADS
    cf_hint_gil_acquired();
    return w;
}

PyDoc_STRVAR(thread_worker_doc,
"_thread_worker($module, pool, /)\n--\n\n"
"Body of a ThreadPoolExecutor worker thread (runs until the pool stops).");

static PyObject *
thread_worker(PyObject *mod, PyObject *capsule)
{
    cf_pool *p = PyCapsule_GetPointer(capsule, "cfutures.pool");
    if (p == NULL) {
        return NULL;
    }
    cf_state *st = pool_state(p);
    if (run_initializer(p, st) < 0) {
        Py_RETURN_NONE;
    }
    for (;;) {
        /* Holding the GIL: run what is queued, up to CF_BATCH tasks. */
        int n = 0;
        cf_work *w;
        for (;;) {
            pthread_mutex_lock(&p->mu);
            w = p->broken ? NULL : queue_pop_locked(p);
            if (w == NULL && !p->broken) {
                p->idle++;      /* about to block: count as idle */
            }
            pthread_mutex_unlock(&p->mu);
            if (w == NULL) {
                break;
            }
            run_work(p, st, w);
            if (++n == CF_BATCH) {
                /* let other threads have the GIL now and then */
                Py_BEGIN_ALLOW_THREADS
                Py_END_ALLOW_THREADS
                n = 0;
            }
        }
        w = wait_for_work(p);
        if (w == NULL) {
            break;
        }
        run_work(p, st, w);
    }
    /* Like the stdlib's worker: flag the executor as shut down as early as
     * possible (after interpreter exit began, submit then says so). */
    if (!p->broken) {       /* written under mu by a GIL holder */
        p->shutdown = 1;
    }
    Py_RETURN_NONE;
}

static void
capsule_destructor(PyObject *capsule)
{
    cf_pool *p = PyCapsule_GetPointer(capsule, "cfutures.pool");
    if (p != NULL) {
        pool_decref(p);
    }
}

/* ------------------------------------------------------------- submit */

static int
start_thread(cf_pool *p, cf_state *st)
{
    PyObject *name = NULL, *capsule = NULL, *kw = NULL, *args = NULL;
    PyObject *t = NULL, *r = NULL;
    int rc = -1;

    name = PyUnicode_FromFormat("%U_%zd", p->prefix, p->nthreads - 1);
    if (name == NULL) {
        goto done;
    }
    capsule = PyCapsule_New(p, "cfutures.pool", capsule_destructor);
    if (capsule == NULL) {
        goto done;
    }
    p->refcnt++;
    args = PyTuple_Pack(1, capsule);
    kw = Py_BuildValue("{sOsOsO}", "name", name, "target", st->tp_worker_fn,
                       "args", args);
    if (args == NULL || kw == NULL) {
        goto done;
    }
    t = PyObject_Call(st->tp_Thread, st->empty_tuple, kw);
    if (t == NULL) {
        goto done;
    }
    r = PyObject_CallMethod(t, "start", NULL);
    if (r == NULL) {
        goto done;
    }
    if (PySet_Add(p->threads, t) < 0) {
        goto done;
    }
    if (st->tp_all_threads != NULL) {
        PyObject *a = PyObject_CallMethod(st->tp_all_threads, "add", "O", t);
        if (a == NULL) {
            goto done;
        }
        Py_DECREF(a);
    }
    rc = 0;
done:
    Py_XDECREF(r);
    Py_XDECREF(t);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(capsule);
    Py_XDECREF(name);
    return rc;
}

static int
check_usable(cf_pool *p, cf_state *st)
{
    if (p->prefix == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "ThreadPoolExecutor.__init__() was not called");
        return -1;
    }
    if (p->broken) {
        if (p->broken_msg != NULL) {
            PyErr_SetObject(st->BrokenThreadPool, p->broken_msg);
        }
        else {
            PyErr_SetNone(st->BrokenThreadPool);
        }
        return -1;
    }
    if (p->shutdown) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return -1;
    }
    if (st->tp_exiting) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after interpreter "
                        "shutdown");
        return -1;
    }
    return 0;
}

/* Queue fn(*args, **kwargs); returns a new future.  may_spawn: the
 * caller holds start_lock. */
static PyObject *
submit_work(cf_pool *p, cf_state *st, PyObject *fn, PyObject *args,
            PyObject *kwargs, int may_spawn)
{
    if (check_usable(p, st) < 0) {
        return NULL;
    }
    cf_work *w = PyMem_Malloc(sizeof(cf_work));
    if (w == NULL) {
        return PyErr_NoMemory();
    }
    w->future = cf_future_new(st);
    if (w->future == NULL) {
        PyMem_Free(w);
        return NULL;
    }
    w->fn = Py_NewRef(fn);
    w->args = Py_NewRef(args);
    w->kwargs = Py_XNewRef(kwargs);
    PyObject *fut = Py_NewRef(w->future);

    int spawn = 0;
    pthread_mutex_lock(&p->mu);
    queue_push_locked(p, w);
    /* A spinning worker will take an item (it re-checks under mu before
     * sleeping), so wake a sleeper only for the items spinners cannot
     * cover: a spinner may also be descheduled on a busy machine. */
    if (p->nsleeping > p->nwake
        && p->nqueued > __atomic_load_n(&p->nspinning, __ATOMIC_ACQUIRE)) {
        p->nwake++;
        pthread_cond_signal(&p->cv);
    }
    if (p->idle > 0) {
        p->idle--;
    }
    else {
        spawn = 1;
    }
    pthread_mutex_unlock(&p->mu);

    if (spawn && may_spawn && p->nthreads < p->max_workers) {
        p->nthreads++;
        if (start_thread(p, st) < 0) {
            /* The stdlib propagates the error from Thread.start() too,
             * with the work item already queued. */
            p->nthreads--;
            Py_DECREF(fut);
            return NULL;
        }
    }
    return fut;
}

static PyObject *
pool_submit(cf_pool *p, cf_state *st, PyObject *fn, PyObject *args,
            PyObject *kwargs)
{
    if (p->nthreads >= p->max_workers) {
        /* full pool: no thread will start, no lock needed */
        return submit_work(p, st, fn, args, kwargs, 0);
    }
    start_lock_acquire(p);
    PyObject *fut = submit_work(p, st, fn, args, kwargs, 1);
    PyThread_release_lock(p->start_lock);
    return fut;
}

PyDoc_STRVAR(submit_doc,
"submit($self, fn, /, *args, **kwargs)\n--\n\n"
"Submits a callable to be executed with the given arguments.\n\n"
"Schedules the callable to be executed as fn(*args, **kwargs) and returns\n"
"a Future instance representing the execution of the callable.");

static PyObject *
ThreadPool_submit(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    cf_state *st = PyType_GetModuleState(cls);
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "ThreadPoolExecutor.submit() missing 1 required "
                        "positional argument: 'fn'");
        return NULL;
    }
    PyObject *targs = PyTuple_New(nargs - 1);
    if (targs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(targs, i - 1, Py_NewRef(args[i]));
    }
    PyObject *kwargs = NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        kwargs = PyDict_New();
        if (kwargs == NULL) {
            Py_DECREF(targs);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i),
                               args[nargs + i]) < 0) {
                Py_DECREF(targs);
                Py_DECREF(kwargs);
                return NULL;
            }
        }
    }
    PyObject *fut = pool_submit(p, st, args[0], targs, kwargs);
    Py_DECREF(targs);
    Py_XDECREF(kwargs);
    return fut;
}

/* ------------------------------------------------------------ shutdown */

PyDoc_STRVAR(shutdown_doc,
"shutdown($self, /, wait=True, *, cancel_futures=False)\n--\n\n"
"Clean-up the resources associated with the Executor.\n\n"
"It is safe to call this method several times. Otherwise, no other\n"
"methods can be called after this one.");

static PyObject *
ThreadPool_shutdown(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"wait", "cancel_futures", NULL};
    PyObject *wait = Py_True, *cancel = Py_False;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$O:shutdown", kwlist,
                                     &wait, &cancel)) {
        return NULL;
    }
    int do_wait = PyObject_IsTrue(wait);
    int do_cancel = PyObject_IsTrue(cancel);
    if (do_wait < 0 || do_cancel < 0) {
        return NULL;
    }
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    cf_state *st = pool_state(p);
    start_lock_acquire(p);
    p->shutdown = 1;
    cf_work *w = NULL;
    pthread_mutex_lock(&p->mu);
    if (do_cancel) {
        w = queue_take_all_locked(p);
    }
    __atomic_store_n(&p->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    PyThread_release_lock(p->start_lock);
    while (w) {
        cf_work *next = w->next;
        if (cf_future_cancel(st, (FutureObject *)w->future) < 0) {
            PyErr_WriteUnraisable(w->future);
        }
        work_free(w);
        w = next;
    }
    if (do_wait && cf_join_threads(p->threads) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------ configuration */

PyDoc_STRVAR(pool_init_doc,
"_pool_init($self, max_workers, prefix, initializer, initargs, /)\n--\n\n"
"Configure the pool (arguments already checked by __init__).");

static PyObject *
ThreadPool__pool_init(PyObject *self, PyObject *args)
{
    Py_ssize_t max_workers;
    PyObject *prefix, *initializer, *initargs;
    if (!PyArg_ParseTuple(args, "nUOO:_pool_init", &max_workers, &prefix,
                          &initializer, &initargs)) {
        return NULL;
    }
    PyObject *targs = PySequence_Tuple(initargs);
    if (targs == NULL) {
        return NULL;
    }
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    p->max_workers = max_workers;
    Py_XSETREF(p->prefix, Py_NewRef(prefix));
    Py_XSETREF(p->initializer,
               initializer == Py_None ? NULL : Py_NewRef(initializer));
    Py_XSETREF(p->initargs, targs);
    Py_RETURN_NONE;
}

static PyObject *
ThreadPool_get_threads(PyObject *self, void *c)
{
    return Py_NewRef(((ThreadPoolObject *)self)->pool->threads);
}

static PyObject *
ThreadPool_get_shutdown(PyObject *self, void *c)
{
    return PyBool_FromLong(((ThreadPoolObject *)self)->pool->shutdown);
}

static PyObject *
ThreadPool_get_broken(PyObject *self, void *c)
{
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    return Py_NewRef(p->broken_msg ? p->broken_msg : Py_False);
}

static PyObject *
ThreadPool_get_qsize(PyObject *self, void *c)
{
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    Py_ssize_t n;
    pthread_mutex_lock(&p->mu);
    n = p->nqueued;
    pthread_mutex_unlock(&p->mu);
    return PyLong_FromSsize_t(n);
}

/* ----------------------------------------------------------- lifecycle */

static PyObject *
ThreadPool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *mod = cf_PyType_GetModuleByDef(type, &cf_module_def);
    if (mod == NULL) {
        return NULL;
    }
    ThreadPoolObject *self = (ThreadPoolObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->pool = pool_new(mod);
    if (self->pool == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
ThreadPool_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    /* The pool's objects are shared with worker threads; they are not
     * part of any cycle through the executor. */
    return 0;
}

static void
ThreadPool_finalize(PyObject *self)
{
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    if (p != NULL) {
        pool_stop(p);   /* executor gone: workers drain and exit */
    }
}

static void
ThreadPool_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc(self) < 0) {
        return;
    }
    PyObject_GC_UnTrack(self);
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    ((ThreadPoolObject *)self)->pool = NULL;
    if (p != NULL) {
        pool_decref(p);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

#define METH_FAST (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef ThreadPool_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))ThreadPool_submit, METH_FAST,
     submit_doc},
    {"shutdown", (PyCFunction)(void (*)(void))ThreadPool_shutdown,
     METH_VARARGS | METH_KEYWORDS, shutdown_doc},
    {"_pool_init", ThreadPool__pool_init, METH_VARARGS, pool_init_doc},
    {NULL, NULL}
};

static PyGetSetDef ThreadPool_getset[] = {
    {"_threads", ThreadPool_get_threads, NULL, NULL, NULL},
    {"_shutdown", ThreadPool_get_shutdown, NULL, NULL, NULL},
    {"_broken", ThreadPool_get_broken, NULL, NULL, NULL},
    {"_qsize", ThreadPool_get_qsize, NULL, NULL, NULL},
    {NULL}
};

static PyType_Slot ThreadPool_slots[] = {
    {Py_tp_new, ThreadPool_new},
    {Py_tp_dealloc, ThreadPool_dealloc},
    {Py_tp_finalize, ThreadPool_finalize},
    {Py_tp_traverse, ThreadPool_traverse},
    {Py_tp_methods, ThreadPool_methods},
    {Py_tp_getset, ThreadPool_getset},
    {0, NULL},
};

static PyType_Spec ThreadPool_spec = {
    .name = "cfutures._cfutures.ThreadPool",
    .basicsize = sizeof(ThreadPoolObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC),
    .slots = ThreadPool_slots,
};

/* ---------------------------------------------- fork and exit hooks */

PyDoc_STRVAR(tp_configure_doc,
"_tp_configure($module, thread_class, all_threads, /)\n--\n\n"
"Called once by cfutures.thread: threading.Thread and a WeakSet.");

static PyObject *
tp_configure(PyObject *mod, PyObject *args)
{
    PyObject *thread_cls, *all_threads;
    if (!PyArg_ParseTuple(args, "OO:_tp_configure", &thread_cls, &all_threads)) {
        return NULL;
    }
    cf_state *st = cf_get_state(mod);
    Py_XSETREF(st->tp_Thread, Py_NewRef(thread_cls));
    Py_XSETREF(st->tp_all_threads, Py_NewRef(all_threads));
    if (st->tp_worker_fn == NULL) {
        st->tp_worker_fn = PyObject_GetAttrString(mod, "_thread_worker");
        if (st->tp_worker_fn == NULL) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tp_exit_doc,
"_tp_interpreter_exit($module, /)\n--\n\n"
"Interpreter exit: refuse new work, let workers finish the queue and exit.");

static PyObject *
tp_interpreter_exit(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    cf_state *st = cf_get_state(mod);
    st->tp_exiting = 1;
    for (cf_pool *p = st->tp_pools; p != NULL; p = p->reg_next) {
        pool_stop(p);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tp_before_fork_doc,
"_tp_before_fork($module, /)\n--\n\nLock every pool (os.register_at_fork).");

static PyObject *
tp_before_fork(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    /* GIL -> mu is the allowed order; no worker waits for the GIL while
     * holding mu, so these locks are taken quickly. */
    for (cf_pool *p = cf_get_state(mod)->tp_pools; p != NULL; p = p->reg_next) {
        pthread_mutex_lock(&p->mu);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tp_after_fork_parent_doc,
"_tp_after_fork_parent($module, /)\n--\n\nUnlock every pool.");

static PyObject *
tp_after_fork_parent(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    for (cf_pool *p = cf_get_state(mod)->tp_pools; p != NULL; p = p->reg_next) {
        pthread_mutex_unlock(&p->mu);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tp_after_fork_child_doc,
"_tp_after_fork_child($module, /)\n--\n\n"
"In a forked child: the workers are gone.  Reset every pool so the next\n"
"submit starts fresh workers; the tasks that were queued in the parent\n"
"are cancelled in the child (the parent runs them).");

static PyObject *
tp_after_fork_child(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    for (cf_pool *p = cf_get_state(mod)->tp_pools; p != NULL; p = p->reg_next) {
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cv, NULL);
        /* may have been held by a thread that does not exist here */
        p->start_lock = PyThread_allocate_lock();
        if (p->start_lock == NULL) {
            Py_FatalError("cfutures: cannot allocate a lock after fork");
        }
        p->nsleeping = p->nwake = p->idle = p->nspinning = 0;
        p->nthreads = 0;
        if (!p->shutdown) {
            p->stopping = 0;
        }
        cf_work *w = queue_take_all_locked(p);
        PySet_Clear(p->threads);
        cf_state *st = pool_state(p);
        /* Tasks that were running in the parent have no thread here. */
        cf_work *r = p->running;
        p->running = NULL;
        PyObject *msg = r == NULL ? NULL : PyUnicode_FromString(
            "the worker thread running this task did not survive os.fork(); "
            "the parent process still runs it");
        while (r) {
            cf_work *next = r->rnext;
            cf_future_fail(st, r->future, st->BrokenThreadPool, msg);
            work_free(r);
            r = next;
        }
        Py_XDECREF(msg);
        while (w) {
            cf_work *next = w->next;
            FutureObject *fut = (FutureObject *)w->future;
            if (cf_future_cancel(st, fut) < 0
                || cf_future_set_running_or_notify_cancel(st, fut) < 0) {
                PyErr_WriteUnraisable(w->future);
            }
            work_free(w);
            w = next;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef threadpool_functions[] = {
    {"_thread_worker", thread_worker, METH_O, thread_worker_doc},
    {"_tp_configure", tp_configure, METH_VARARGS, tp_configure_doc},
    {"_tp_interpreter_exit", tp_interpreter_exit, METH_NOARGS, tp_exit_doc},
    {"_tp_before_fork", tp_before_fork, METH_NOARGS, tp_before_fork_doc},
    {"_tp_after_fork_parent", tp_after_fork_parent, METH_NOARGS,
     tp_after_fork_parent_doc},
    {"_tp_after_fork_child", tp_after_fork_child, METH_NOARGS,
     tp_after_fork_child_doc},
    {NULL, NULL}
};

int
cf_threadpool_module_init(PyObject *mod, cf_state *st)
{
    st->ThreadPool_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &ThreadPool_spec, NULL);
    if (st->ThreadPool_type == NULL) {
        return -1;
    }
    if (PyModule_AddType(mod, st->ThreadPool_type) < 0) {
        return -1;
    }
    PyObject *thread = PyImport_ImportModule("concurrent.futures.thread");
    if (thread == NULL) {
        return -1;
    }
    st->BrokenThreadPool = PyObject_GetAttrString(thread, "BrokenThreadPool");
    Py_DECREF(thread);
    if (st->BrokenThreadPool == NULL) {
        return -1;
    }
    st->empty_tuple = PyTuple_New(0);
    if (st->empty_tuple == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(mod, threadpool_functions);
}
