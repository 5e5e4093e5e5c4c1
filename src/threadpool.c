/* threadpool: the ThreadPool type (native base of
 * cfutures.ThreadPoolExecutor): its queue, submit(), shutdown(), the
 * fork and exit hooks; workers are in threadworker.c (see threadpool.h). */
#include "threadpool.h"

#include <errno.h>

_Thread_local cf_pool *tls_pool;
_Thread_local cf_work **tls_current;

/* ------------------------------------------- process-wide registry */

/* Every pool of every interpreter; holds no PyObject.  Pools join and
 * leave with their interpreter's GIL held (GIL -> tp_reg_mu). */
static pthread_mutex_t tp_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static cf_pool *tp_reg_head;
static pthread_once_t tp_reg_once = PTHREAD_ONCE_INIT;

/* Runs inside fork(), after the Python before-fork hooks and with the
 * forking thread's GIL held.  A mu holder never waits for a GIL or for
 * anything the forking thread holds, so these locks come quickly. */
static void
tp_atfork_prepare(void)
{
    pthread_mutex_lock(&tp_reg_mu);
    for (cf_pool *p = tp_reg_head; p != NULL; p = p->preg_next) {
        pthread_mutex_lock(&p->mu);
    }
}

static void
tp_atfork_parent(void)
{
    for (cf_pool *p = tp_reg_head; p != NULL; p = p->preg_next) {
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&tp_reg_mu);
}

/* The child's only thread is the one that forked, and it holds every
 * lock (prepare).  Plain memory only: the other workers are gone, so are
 * the condvar's waiters and the spinners. */
static void
tp_atfork_child(void)
{
    for (cf_pool *p = tp_reg_head; p != NULL; p = p->preg_next) {
        pthread_cond_init(&p->cv, NULL);
        p->nsleeping = p->nwake = p->nspinning = p->idle = 0;
        p->forked = 1;
        CF_FT_MUTEX_INIT(p->run_mu);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&tp_reg_mu);
}

static void
tp_atfork_install(void)
{
    (void)pthread_atfork(tp_atfork_prepare, tp_atfork_parent,
                         tp_atfork_child);
}

/* ------------------------------------------------------ pool lifetime */

void
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
    p->spin_budget = cf_spin_cap();
    p->posted_at = 0;
    p->start_lock = PyThread_allocate_lock();
    if (p->start_lock == NULL) {
        PyMem_RawFree(p);
        PyErr_NoMemory();
        return NULL;
    }
    CF_FT_MUTEX_INIT(p->run_mu);
    p->module = Py_NewRef(module);
    p->threads = PySet_New(NULL);
    if (p->threads == NULL) {
        Py_DECREF(p->module);
        PyThread_free_lock(p->start_lock);
        PyMem_RawFree(p);
        return NULL;
    }
    cf_state *st = cf_get_state(module);
    CF_FT_LOCK(st->tp_mutex);
    p->reg_next = st->tp_pools;
    if (st->tp_pools) {
        st->tp_pools->reg_prev = p;
    }
    st->tp_pools = p;
    CF_FT_UNLOCK(st->tp_mutex);
    pthread_once(&tp_reg_once, tp_atfork_install);
    pthread_mutex_lock(&tp_reg_mu);
    p->preg_next = tp_reg_head;
    if (tp_reg_head) {
        tp_reg_head->preg_prev = p;
    }
    tp_reg_head = p;
    pthread_mutex_unlock(&tp_reg_mu);
    return p;
}

void
pool_decref(cf_pool *p)
{
    if (__atomic_sub_fetch(&p->refcnt, 1, __ATOMIC_ACQ_REL) > 0) {
        return;
    }
    cf_state *st = pool_state(p);
    CF_FT_LOCK(st->tp_mutex);
    if (p->reg_prev) {
        p->reg_prev->reg_next = p->reg_next;
    }
    else if (st->tp_pools == p) {
        st->tp_pools = p->reg_next;
    }
    if (p->reg_next) {
        p->reg_next->reg_prev = p->reg_prev;
    }
    CF_FT_UNLOCK(st->tp_mutex);
    pthread_mutex_lock(&tp_reg_mu);
    if (p->preg_prev) {
        p->preg_prev->preg_next = p->preg_next;
    }
    else {
        tp_reg_head = p->preg_next;
    }
    if (p->preg_next) {
        p->preg_next->preg_prev = p->preg_prev;
    }
    pthread_mutex_unlock(&tp_reg_mu);
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
    p->start_owner = PyThread_get_thread_ident();
}

static void
start_lock_release(cf_pool *p)
{
    p->start_owner = 0;
    PyThread_release_lock(p->start_lock);
}

/* ------------------------------------------------------------ fork */

/* Keep in p->threads only the forking thread's Thread object, if it is
 * one of our workers (it may not be in the set yet: the thread that
 * started it adds it after Thread.start() returns). */
static int
keep_own_thread(cf_pool *p, int own)
{
    if (PySet_Clear(p->threads) < 0) {
        return -1;
    }
    if (!own) {
        return 0;
    }
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) {
        return -1;
    }
    PyObject *t = PyObject_CallMethod(threading, "current_thread", NULL);
    Py_DECREF(threading);
    if (t == NULL) {
        return -1;
    }
    int rc = PySet_Add(p->threads, t);
    Py_DECREF(t);
    return rc;
}

/* In a forked child, with the GIL, before the pool is used: only the
 * forking thread survived.  If it is one of our workers (a task or an
 * initializer that forked), it stays one and its task goes on; the other
 * running tasks fail with BrokenThreadPool and the queued ones are
 * cancelled (the parent runs them all).  The atfork handler already reset
 * mu, cv and the counters under mu. */
static void
pool_after_fork(cf_pool *p)
{
    cf_state *st = pool_state(p);
    p->forked = 0;
    int own = tls_pool == p;
    cf_work *mine = own ? *tls_current : NULL;
    if (p->start_owner != PyThread_get_thread_ident()) {
        /* free, or held by a thread that does not exist here (an acquirer
         * records itself only once it has the GIL back: start_owner can
         * still be 0 while the lock is held) */
        PyThread_free_lock(p->start_lock);
        p->start_lock = PyThread_allocate_lock();
        if (p->start_lock == NULL) {
            Py_FatalError("cfutures: cannot allocate a lock after fork");
        }
        p->start_owner = 0;
    }
    p->nthreads = own;
    /* Detach everything before running any Python (callbacks may submit,
     * fork again, or drop the last reference to the pool). */
    cf_work *queued = queue_take_all_locked(p);   /* only thread: no mu */
    cf_work *r = p->running;
    p->running = NULL;
    if (mine != NULL) {
        running_remove_from(&r, mine);
        mine->rprev = mine->rnext = NULL;
        p->running = mine;
    }
    __atomic_add_fetch(&p->refcnt, 1, __ATOMIC_RELAXED);
    if (keep_own_thread(p, own) < 0) {
        PyErr_WriteUnraisable(NULL);
    }
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
    while (queued) {
        cf_work *next = queued->next;
        FutureObject *fut = (FutureObject *)queued->future;
        if (cf_future_cancel(st, fut) < 0
            || cf_future_set_running_or_notify_cancel(st, fut) < 0) {
            PyErr_WriteUnraisable(queued->future);
        }
        work_free(queued);
        queued = next;
    }
    pool_decref(p);
}

/* ------------------------------------------------------------- submit */

int
start_thread(cf_pool *p, cf_state *st)
{
    PyObject *name = NULL, *capsule = NULL, *kw = NULL, *args = NULL;
    PyObject *box = NULL, *t = NULL, *r = NULL;
    int rc = -1;

    name = PyUnicode_FromFormat("%U_%zd", p->prefix, p->nthreads - 1);
    if (name == NULL) {
        goto done;
    }
    capsule = PyCapsule_New(p, "cfutures.pool", capsule_destructor);
    if (capsule == NULL) {
        goto done;
    }
    __atomic_add_fetch(&p->refcnt, 1, __ATOMIC_RELAXED);
    if (p->initializer != NULL) {
        box = PyList_New(2);
        if (box == NULL) {
            goto done;
        }
        PyList_SET_ITEM(box, 0, Py_NewRef(p->initializer));
        PyList_SET_ITEM(box, 1, Py_NewRef(p->initargs));
    }
    args = PyTuple_Pack(2, capsule, box != NULL ? box : Py_None);
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
    Py_XDECREF(box);
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
    if (__atomic_load_n(&p->broken, __ATOMIC_ACQUIRE)) {
        PyObject *msg = __atomic_load_n(&p->broken_msg, __ATOMIC_ACQUIRE);
        if (msg != NULL) {
            PyErr_SetObject(st->BrokenThreadPool, msg);
        }
        else {
            PyErr_SetNone(st->BrokenThreadPool);
        }
        return -1;
    }
    if (__atomic_load_n(&p->shutdown, __ATOMIC_ACQUIRE)) {
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
    cf_work *w = PyMem_Malloc(sizeof(cf_work));
    if (w == NULL) {
        return PyErr_NoMemory();
    }
    /* Allocating the future may run the GC, hence __del__ methods that
     * release the GIL: a shutdown() could complete meanwhile.  So check
     * after it, and queue without releasing the GIL in between. */
    w->future = cf_future_new(st);
    if (w->future == NULL) {
        PyMem_Free(w);
        return NULL;
    }
    if (check_usable(p, st) < 0) {
        Py_DECREF(w->future);
        PyMem_Free(w);
        return NULL;
    }
    w->fn = Py_NewRef(fn);
    w->args = Py_NewRef(args);
    w->kwargs = Py_XNewRef(kwargs);
    PyObject *fut = Py_NewRef(w->future);

    int spawn = 0;
    pthread_mutex_lock(&p->mu);
    if (p->stopping || p->broken) {
        /* Unreachable with the GIL while check_usable() holds (stopping
         * and broken are set after the flags it reads); reached by a
         * racing shutdown() on free-threaded builds.  Never queue once
         * workers may have exited: the future would be lost. */
        pthread_mutex_unlock(&p->mu);
        work_free(w);
        Py_DECREF(fut);
        /* the stdlib's error for whichever flag stopped the pool */
        if (check_usable(p, st) == 0) {
            PyErr_SetString(PyExc_RuntimeError,
                            "cannot schedule new futures after shutdown");
        }
        return NULL;
    }
    queue_push_locked(p, w);
    /* A spinning worker will take an item (it re-checks under mu before
     * sleeping), so wake a sleeper only for the items spinners cannot
     * cover: a spinner may also be descheduled on a busy machine. */
    if (p->nsleeping > p->nwake
        && p->nqueued > __atomic_load_n(&p->nspinning, __ATOMIC_ACQUIRE)) {
        if (p->nwake++ == 0) {
            p->posted_at = cf_monotonic_ns();
        }
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
        __atomic_store_n(&p->nthreads, p->nthreads + 1, __ATOMIC_RELAXED);
        if (start_thread(p, st) < 0) {
            /* The stdlib propagates the error from Thread.start() too,
             * with the work item already queued. */
            __atomic_store_n(&p->nthreads, p->nthreads - 1, __ATOMIC_RELAXED);
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
    if (p->forked) {
        pool_after_fork(p);
    }
    if (__atomic_load_n(&p->nthreads, __ATOMIC_RELAXED) >= p->max_workers) {
        /* full pool: no thread will start, no lock needed */
        return submit_work(p, st, fn, args, kwargs, 0);
    }
    start_lock_acquire(p);
    PyObject *fut = submit_work(p, st, fn, args, kwargs, 1);
    start_lock_release(p);
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
    if (p->forked) {
        pool_after_fork(p);
    }
    start_lock_acquire(p);
    __atomic_store_n(&p->shutdown, 1, __ATOMIC_RELEASE);
    cf_work *w = NULL;
    pthread_mutex_lock(&p->mu);
    if (do_cancel) {
        w = queue_take_all_locked(p);
    }
    __atomic_store_n(&p->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    start_lock_release(p);
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
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    p->max_workers = max_workers;
    Py_XSETREF(p->prefix, Py_NewRef(prefix));
    /* initargs as given: each worker unpacks it, like the stdlib's */
    Py_XSETREF(p->initializer,
               initializer == Py_None ? NULL : Py_NewRef(initializer));
    Py_XSETREF(p->initargs, Py_NewRef(initargs));
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
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    return PyBool_FromLong(__atomic_load_n(&p->shutdown, __ATOMIC_ACQUIRE));
}

static PyObject *
ThreadPool_get_broken(PyObject *self, void *c)
{
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    PyObject *msg = __atomic_load_n(&p->broken_msg, __ATOMIC_ACQUIRE);
    return Py_NewRef(msg ? msg : Py_False);
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

/* The executor owns the pool's initializer and initargs (a worker takes
 * its own references from the box start_thread() gives it), which may
 * refer back to the executor.  The pool's other objects (prefix, threads,
 * broken_msg, module) cannot. */
static int
ThreadPool_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    if (p != NULL) {
        Py_VISIT(p->initializer);
        Py_VISIT(p->initargs);
    }
    return 0;
}

static int
ThreadPool_clear(PyObject *self)
{
    cf_pool *p = ((ThreadPoolObject *)self)->pool;
    if (p != NULL) {
        Py_CLEAR(p->initializer);
        Py_CLEAR(p->initargs);
    }
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
    {Py_tp_clear, ThreadPool_clear},
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
"_tp_configure($module, thread_class, all_threads, tick=None, /)\n--\n\n"
"Called once by cfutures.thread: threading.Thread, a WeakSet, and the\n"
"Python no-op free-threaded workers call now and then (kept for good\n"
"once set: running workers read it without a lock).");

static PyObject *
tp_configure(PyObject *mod, PyObject *args)
{
    PyObject *thread_cls, *all_threads, *tick = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O:_tp_configure", &thread_cls,
                          &all_threads, &tick)) {
        return NULL;
    }
    cf_state *st = cf_get_state(mod);
    if (st->tp_tick == NULL && tick != Py_None) {
        st->tp_tick = Py_NewRef(tick);
    }
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
    CF_FT_LOCK(st->tp_mutex);
    for (cf_pool *p = st->tp_pools; p != NULL; p = p->reg_next) {
        pool_stop(p);
    }
    CF_FT_UNLOCK(st->tp_mutex);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tp_after_fork_child_doc,
"_tp_after_fork_child($module, /)\n--\n\n"
"In a forked child (os.register_at_fork): settle every pool of this\n"
"interpreter.  The workers are gone but the one that forked, if any; the\n"
"next submit starts new ones.  Tasks that were queued in the parent are\n"
"cancelled in the child, the ones other workers ran fail (the parent\n"
"runs them all).");

static PyObject *
tp_after_fork_child(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    cf_state *st = cf_get_state(mod);
    /* free-threaded: the parent's other threads may have held it */
    CF_FT_MUTEX_INIT(st->tp_mutex);
    /* Settling runs callbacks, which may create or free pools: work on a
     * snapshot, each pool held by a reference. */
    Py_ssize_t n = 0;
    for (cf_pool *p = st->tp_pools; p != NULL; p = p->reg_next) {
        n += p->forked;
    }
    if (n == 0) {
        Py_RETURN_NONE;
    }
    cf_pool **snap = PyMem_New(cf_pool *, n);
    if (snap == NULL) {
        return PyErr_NoMemory();
    }
    Py_ssize_t i = 0;
    for (cf_pool *p = st->tp_pools; p != NULL; p = p->reg_next) {
        if (p->forked) {
            __atomic_add_fetch(&p->refcnt, 1, __ATOMIC_RELAXED);
            snap[i++] = p;
        }
    }
    for (i = 0; i < n; i++) {
        if (snap[i]->forked) {
            pool_after_fork(snap[i]);
        }
        pool_decref(snap[i]);
    }
    PyMem_Free(snap);
    Py_RETURN_NONE;
}

static PyMethodDef threadpool_functions[] = {
    {"_thread_worker", (PyCFunction)(void (*)(void))thread_worker,
     METH_FASTCALL, thread_worker_doc},
    {"_tp_configure", tp_configure, METH_VARARGS, tp_configure_doc},
    {"_tp_interpreter_exit", tp_interpreter_exit, METH_NOARGS, tp_exit_doc},
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

/* ------------------------------------------------------ module state */

int
cf_threadpool_traverse(cf_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->ThreadPool_type);
    Py_VISIT(st->BrokenThreadPool);
    Py_VISIT(st->tp_Thread);
    Py_VISIT(st->tp_all_threads);
    Py_VISIT(st->tp_worker_fn);
    Py_VISIT(st->tp_tick);
    Py_VISIT(st->empty_tuple);
    return 0;
}

void
cf_threadpool_clear(cf_state *st)
{
    Py_CLEAR(st->ThreadPool_type);
    Py_CLEAR(st->BrokenThreadPool);
    Py_CLEAR(st->tp_Thread);
    Py_CLEAR(st->tp_all_threads);
    Py_CLEAR(st->tp_worker_fn);
    Py_CLEAR(st->tp_tick);
    Py_CLEAR(st->empty_tuple);
}
