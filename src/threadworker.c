/* threadworker: the body of a ThreadPoolExecutor worker thread: run
 * queued tasks with the GIL (up to CF_BATCH per hold), wait for work
 * with it released (block.c), the initializer, settling work that cannot
 * run (see threadpool.h). */
#include "threadpool.h"

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

void
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
    CF_FT_LOCK(p->run_mu);
    running_add(p, w);
    CF_FT_UNLOCK(p->run_mu);
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
    CF_FT_LOCK(p->run_mu);
    running_remove(p, w);
    CF_FT_UNLOCK(p->run_mu);
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
        cf_future_fail(st, w->future, st->BrokenThreadPool,
                       __atomic_load_n(&p->broken_msg, __ATOMIC_ACQUIRE));
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
    if (__atomic_load_n(&p->broken_msg, __ATOMIC_ACQUIRE) == NULL) {
        PyObject *msg = PyUnicode_FromString(
            "A thread initializer failed, the thread pool is not usable "
            "anymore");
        PyObject *none = NULL;
        if (msg == NULL) {
            PyErr_WriteUnraisable(NULL);
        }
        else if (!__atomic_compare_exchange_n(&p->broken_msg, &none, msg, 0,
                                              __ATOMIC_ACQ_REL,
                                              __ATOMIC_ACQUIRE)) {
            Py_DECREF(msg);     /* another worker's initializer failed too */
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
    cf_time_t gil_spin = 0;
    Py_BEGIN_ALLOW_THREADS
    cf_hint_gil_released();
    cf_time_t start = cf_monotonic_ns();
    /* block.c: one worker at a time spins for new work before sleeping */
    int spinner = cf_block_spin_for_work(&p->nspinning, (void *const *)&p->head,
                                         &p->stopping, &p->spin_budget, start);
    pthread_mutex_lock(&p->mu);
    while (p->head == NULL && !p->stopping && !p->broken) {
        p->nsleeping++;
        pthread_cond_wait(&p->cv, &p->mu);
        p->nsleeping--;
        if (p->nwake > 0) {
            if (p->nwake == 1) {    /* posted_at is that one signal's */
                cf_block_woken(p->posted_at);
            }
            p->nwake--;
        }
    }
    w = p->broken ? NULL : queue_pop_locked(p);
    if (spinner && w != NULL) {
        cf_block_work_adapt(&p->spin_budget, start);
    }
    pthread_mutex_unlock(&p->mu);
    if (w != NULL) {
        /* the submitter usually releases the GIL soon (result(), wait()) */
        gil_spin = cf_spin_for_gil();
    }
    Py_END_ALLOW_THREADS
    cf_hint_gil_acquired();
    cf_gil_spin_after(gil_spin);
    return w;
}

const char thread_worker_doc[] =
"_thread_worker($module, pool, init, /)\n--\n\n"
"Body of a ThreadPoolExecutor worker thread (runs until the pool stops).";

/* Free-threaded: run a little Python code, where the interpreter frees
 * what other threads queued for this one (thread.py's _ft_tick). */
static void
ft_tick(cf_state *st)
{
#if CF_FT
    if (st->tp_tick != NULL) {
        PyObject *r = PyObject_CallNoArgs(st->tp_tick);
        if (r == NULL) {
            PyErr_WriteUnraisable(st->tp_tick);
        }
        Py_XDECREF(r);
    }
#else
    (void)st;
#endif
}

PyObject *
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
    int n = 0;      /* tasks run since the last tick (and GIL release) */
    for (;;) {
        /* Holding the GIL: run what is queued, up to CF_BATCH tasks. */
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
                ft_tick(st);
                n = 0;
            }
        }
        if (n > 0) {
            ft_tick(st);
            n = 0;
        }
        w = wait_for_work(p);
        if (w == NULL) {
            break;
        }
        run_work(p, st, w, &current);
        n = 1;
    }
    /* Like the stdlib's worker: flag the executor as shut down as early as
     * possible (after interpreter exit began, submit then says so). */
    if (!p->broken) {       /* written under mu by a GIL holder */
        __atomic_store_n(&p->shutdown, 1, __ATOMIC_RELEASE);
    }
    tls_pool = NULL;
    tls_current = NULL;
    Py_RETURN_NONE;
}

void
capsule_destructor(PyObject *capsule)
{
    cf_pool *p = PyCapsule_GetPointer(capsule, "cfutures.pool");
    if (p != NULL) {
        pool_decref(p);
    }
}

