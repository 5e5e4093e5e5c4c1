/* threadpool: what the thread pool's files share (threadpool.c: the
 * executor type, queue, submit, shutdown, fork and exit hooks;
 * threadworker.c: the worker threads' loop).
 *
 * Native ThreadPoolExecutor.
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
 *   free-threaded builds: refcnt, shutdown and broken_msg are atomic,
 *     nthreads is written under start_lock, the running list is under
 *     run_mu, the interpreter's list of pools under st->tp_mutex (taken
 *     before any pool's mu); Python objects (threads set, prefix) are
 *     thread-safe themselves or written once by __init__.
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
#ifndef CF_THREADPOOL_H
#define CF_THREADPOOL_H

#include "cfutures.h"

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
    cf_time_t posted_at;    /* under mu: when the last sleeper was signalled */
    int idle;               /* the stdlib's _idle_semaphore */
    int stopping;           /* shutdown / executor gone / exit: drain, exit */
    int broken;             /* initializer failed */
    int forked;             /* set by the child's atfork handler until
                             * pool_after_fork() settled the pool (GIL) */

    /* --- GIL only (free-threaded: as noted) --- */
    Py_ssize_t refcnt;      /* executor + one per worker capsule; atomic */
    Py_ssize_t max_workers;
    Py_ssize_t nthreads;    /* threads started (stdlib: len(_threads));
                             * written under start_lock */
    int shutdown;           /* shutdown() called (stdlib: _shutdown) */
    PyObject *module;       /* keeps the module state alive */
    PyObject *initializer;
    PyObject *initargs;
    PyObject *prefix;
    PyObject *threads;      /* set of threading.Thread */
    PyObject *broken_msg;   /* str or NULL; set once (atomic) */
    PyThread_type_lock start_lock;
    unsigned long start_owner;  /* thread holding start_lock, or 0 */
    cf_work *running;       /* tasks being run now, for fork (run_mu) */
    CF_FT_MUTEX(run_mu)
    struct cf_pool *reg_prev, *reg_next;    /* interpreter's, for exit/fork
                                             * (st->tp_mutex) */
    struct cf_pool *preg_prev, *preg_next;  /* process-wide, tp_reg_mu */
} cf_pool;

typedef struct {
    PyObject_HEAD
    cf_pool *pool;
} ThreadPoolObject;

static inline cf_state *
pool_state(cf_pool *p)
{
    return cf_get_state(p->module);
}

/* On a worker thread: its pool, and where it records the task it runs (a
 * variable of thread_worker(), so the hot path does no TLS access).  NULL
 * on other threads.  After a fork, they name the forking thread's own. */
extern _Thread_local cf_pool *tls_pool;
extern _Thread_local cf_work **tls_current;


/* ------------------------------------------------------ queue (pure C) */

static inline void
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

static inline cf_work *
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
static inline cf_work *
queue_take_all_locked(cf_pool *p)
{
    cf_work *w = p->head;
    __atomic_store_n(&p->head, NULL, __ATOMIC_RELAXED);
    p->tail = NULL;
    p->nqueued = 0;
    return w;
}

void pool_decref(cf_pool *p);
void work_free(cf_work *w);
void running_remove_from(cf_work **head, cf_work *w);
PyObject *thread_worker(PyObject *mod, PyObject *const *args, Py_ssize_t nargs);
int start_thread(cf_pool *p, cf_state *st);
extern const char thread_worker_doc[];
/* The worker capsule's destructor (drops its pool reference). */
void capsule_destructor(PyObject *capsule);

#endif /* CF_THREADPOOL_H */
