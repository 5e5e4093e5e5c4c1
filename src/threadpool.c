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
 *   lock order:  start_lock -> GIL -> tp_reg_mu -> pool->mu
 *     mu: never held while waiting for the GIL.
 *     start_lock (the stdlib's _shutdown_lock): serialises starting a
 *     thread (Thread.start() releases the GIL) with shutdown(); always
 *     acquired with the GIL released.
 *     tp_reg_mu: the process-wide list of pools, for pthread_atfork.
 *
 * cf_pool fields:
 *   mu/cv + queue (head, tail, nqueued), nsleeping, nwake, idle, nthreads,
 *   shutdown flags: read/written under mu (workers touch them without GIL)
 *   PyObject fields, refcnt, registry links: GIL only
 *
 * Fork: pthread_atfork handlers (not os.register_at_fork: later Python
 * before-fork hooks and the import lock may release the GIL, and a worker
 * would then take the GIL and block on a mu held across them) lock every
 * mu inside fork() itself, after every Python hook ran.  The child's
 * handler unlocks them and marks each pool forked; the Python-level part
 * (settling the futures of the vanished workers) runs with the GIL in the
 * after_in_child hook, or in the first submit()/shutdown() if sooner.
 * The forking thread may be a worker (a task that forks): its own task
 * and the pool's count of it survive in the child.
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
    int forked;             /* set by the child's atfork handler until
                             * pool_after_fork() settled the pool (GIL) */

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
    unsigned long start_owner;  /* thread holding start_lock, or 0 */
    cf_work *running;       /* tasks being run now, for fork */
    struct cf_pool *reg_prev, *reg_next;    /* interpreter's, for exit/fork */
    struct cf_pool *preg_prev, *preg_next;  /* process-wide, tp_reg_mu */
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

/* On a worker thread: its pool, and where it records the task it runs (a
 * variable of thread_worker(), so the hot path does no TLS access).  NULL
 * on other threads.  After a fork, they name the forking thread's own. */
static _Thread_local cf_pool *tls_pool;
static _Thread_local cf_work **tls_current;

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
running_remove_from(cf_work **head, cf_work *w)
{
    if (w->rprev) {
        w->rprev->rnext = w->rnext;
    }
    else {
        *head = w->rnext;
    }
    if (w->rnext) {
        w->rnext->rprev = w->rprev;
    }
}

static void
running_remove(cf_pool *p, cf_work *w)
{
    running_remove_from(&p->running, w);
}

/* Run one task with the GIL held; consumes w.  *current: w meanwhile. */
static void
run_work(cf_pool *p, cf_state *st, cf_work *w, cf_work **current)
{
    running_add(p, w);
    *current = w;
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
    *current = NULL;
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

#if PY_VERSION_HEX < 0x030F0000
/* getattr(obj, name, None) without the None: 0 and *res = NULL when
 * missing, -1 on another error. */
static int
get_optional_attr(PyObject *obj, const char *name, PyObject **res)
{
    *res = PyObject_GetAttrString(obj, name);
    if (*res == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
    }
    return 0;
}
#endif

/* What ceval says for f(*x) when x is not iterable (the stdlib's worker
 * calls initializer(*initargs)); up to 3.14 naming f as CPython's private
 * _PyObject_FunctionStr() does, from 3.15 without naming it. */
static void
set_star_args_error(PyObject *func, PyObject *args)
{
#if PY_VERSION_HEX >= 0x030F0000
    (void)func;
    PyErr_Format(PyExc_TypeError,
                 "Value after * must be an iterable, not %.200s",
                 Py_TYPE(args)->tp_name);
#else
    PyObject *qualname = NULL, *module = NULL, *funcstr = NULL;
    if (get_optional_attr(func, "__qualname__", &qualname) < 0) {
        return;
    }
    if (qualname == NULL) {
        funcstr = PyObject_Str(func);
    }
    else if (get_optional_attr(func, "__module__", &module) == 0) {
        int other = 0;
        if (module != NULL && module != Py_None) {
            PyObject *b = PyUnicode_FromString("builtins");
            other = b == NULL ? -1 : PyObject_RichCompareBool(module, b, Py_NE);
            Py_XDECREF(b);
        }
        if (other > 0) {
            funcstr = PyUnicode_FromFormat("%S.%S()", module, qualname);
        }
        else if (other == 0) {
            funcstr = PyUnicode_FromFormat("%S()", qualname);
        }
    }
    if (funcstr != NULL) {
        PyErr_Format(PyExc_TypeError,
                     "%U argument after * must be an iterable, not %.200s",
                     funcstr, Py_TYPE(args)->tp_name);
    }
    Py_XDECREF(funcstr);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
#endif
}

/* initializer(*initargs), as the stdlib's worker calls it: initargs is
 * taken as given to __init__ and unpacked by each worker (an iterator is
 * consumed by the first one, a non-iterable fails in the worker). */
static PyObject *
call_initializer(PyObject *init, PyObject *initargs)
{
    if (PyTuple_Check(initargs)) {
        return PyObject_Call(init, initargs, NULL);
    }
    if (Py_TYPE(initargs)->tp_iter == NULL && !PySequence_Check(initargs)) {
        set_star_args_error(init, initargs);
        return NULL;
    }
    PyObject *targs = PySequence_Tuple(initargs);
    if (targs == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_Call(init, targs, NULL);
    Py_DECREF(targs);
    return r;
}

/* box: None, or the list [initializer, initargs] that start_thread()
 * handed to this worker.  Emptied here, so that only the executor keeps
 * them (its traverse sees them; a cycle through them is collectable). */
static int
run_initializer(cf_pool *p, cf_state *st, PyObject *box)
{
    if (!PyList_Check(box) || PyList_GET_SIZE(box) != 2) {
        return 0;
    }
    PyObject *init = Py_NewRef(PyList_GET_ITEM(box, 0));
    PyObject *initargs = Py_NewRef(PyList_GET_ITEM(box, 1));
    if (PyList_SetSlice(box, 0, 2, NULL) < 0) {
        PyErr_Clear();      /* cannot fail for a shrink */
    }
    PyObject *r = call_initializer(init, initargs);
    Py_DECREF(init);
    Py_DECREF(initargs);
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
"_thread_worker($module, pool, init, /)\n--\n\n"
"Body of a ThreadPoolExecutor worker thread (runs until the pool stops).");

static PyObject *
thread_worker(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_thread_worker takes 2 arguments");
        return NULL;
    }
    cf_pool *p = PyCapsule_GetPointer(args[0], "cfutures.pool");
    if (p == NULL) {
        return NULL;
    }
    cf_state *st = pool_state(p);
    cf_work *current = NULL;
    tls_pool = p;
    tls_current = &current;
    if (run_initializer(p, st, args[1]) < 0) {
        tls_pool = NULL;
        tls_current = NULL;
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
            run_work(p, st, w, &current);
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
        run_work(p, st, w, &current);
    }
    /* Like the stdlib's worker: flag the executor as shut down as early as
     * possible (after interpreter exit began, submit then says so). */
    if (!p->broken) {       /* written under mu by a GIL holder */
        p->shutdown = 1;
    }
    tls_pool = NULL;
    tls_current = NULL;
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
    p->refcnt++;
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

static int
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
    p->refcnt++;
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
        /* Unreachable while check_usable() holds (stopping and broken are
         * set with the GIL held, after the flags it reads).  Never queue
         * once workers may have exited: the future would be lost. */
        pthread_mutex_unlock(&p->mu);
        work_free(w);
        Py_DECREF(fut);
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
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
    if (p->forked) {
        pool_after_fork(p);
    }
    if (p->nthreads >= p->max_workers) {
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
    p->shutdown = 1;
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
            p->refcnt++;
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
