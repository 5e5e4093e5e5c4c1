/* Native as_completed(): an iterator over one Waiter (waiters.h).
 * Finished futures are yielded first, in the order given, then each
 * pending one as it completes (the Waiter's fired queue). */
#include "waiters.h"

typedef struct {
    PyObject_HEAD
    PyObject *fs_arg;           /* until started */
    PyObject *timeout;          /* until started */
    PyObject **ready;           /* already finished (owned) */
    Py_ssize_t rhead, nready;   /* ready[rhead:nready] not yet yielded */
    WaiterObject *waiter;
    PyObject *end_time;         /* timeout + time.monotonic(), or NULL */
    Py_ssize_t total;
    Py_ssize_t npending;        /* pending at start, not yet yielded */
    int started;
    int exhausted;
    int running;                /* a thread is inside next() */
} AsCompletedObject;

static void
ac_clear_ready(AsCompletedObject *it)
{
    PyObject **ready = it->ready;
    Py_ssize_t i = it->rhead, n = it->nready;
    it->ready = NULL;
    it->rhead = it->nready = 0;
    for (; i < n; i++) {
        Py_DECREF(ready[i]);
    }
    PyMem_Free(ready);
}

static int
ac_stop(cf_state *st, AsCompletedObject *it)
{
    it->exhausted = 1;
    Py_CLEAR(it->fs_arg);
    Py_CLEAR(it->timeout);
    ac_clear_ready(it);
    Py_CLEAR(it->end_time);
    int rc = 0;
    if (it->waiter != NULL) {
        WaiterObject *w = it->waiter;
        rc = waiter_detach(st, w);
        it->waiter = NULL;
        Py_DECREF(w);
    }
    return rc;
}

/* fs = set(fs_arg), as the stdlib starts; *items gets its members, each
 * once.  A list or tuple is walked in its own order (one pass over the
 * futures: iterating a set of 100,000s of them again is slow on 3.14+). */
static PyObject *
ac_collect(PyObject *arg, PyObject **items)
{
    PyObject *fs, *lst = NULL;
    *items = NULL;
    if (!PyList_CheckExact(arg) && !PyTuple_CheckExact(arg)) {
        fs = PySet_New(arg);
        if (fs != NULL && (*items = PySequence_List(fs)) == NULL) {
            Py_CLEAR(fs);
        }
        return fs;
    }
    fs = PySet_New(NULL);
    lst = PyList_New(0);
    if (fs == NULL || lst == NULL) {
        goto error;
    }
    /* A foreign __hash__/__eq__ may mutate the list: re-read its size,
     * hold the item across the add. */
    for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(arg); k++) {
        PyObject *f = Py_NewRef(PySequence_Fast_GET_ITEM(arg, k));
        Py_ssize_t before = PySet_GET_SIZE(fs);
        int r = PySet_Add(fs, f);
        if (r == 0 && PySet_GET_SIZE(fs) > before) {
            r = PyList_Append(lst, f);
        }
        Py_DECREF(f);
        if (r < 0) {
            goto error;
        }
    }
    *items = lst;
    return fs;
error:
    Py_XDECREF(fs);
    Py_XDECREF(lst);
    return NULL;
}

static int
ac_start(cf_state *st, AsCompletedObject *it)
{
    it->started = 1;
    if (it->timeout != Py_None) {
        /* end_time = timeout + time.monotonic(), as the stdlib computes. */
        it->end_time = cf_end_time(it->timeout);
        if (it->end_time == NULL) {
            return -1;
        }
    }
    PyObject *items;
    PyObject *fs = ac_collect(it->fs_arg, &items);
    if (fs == NULL) {
        return -1;
    }
    Py_CLEAR(it->fs_arg);
    Py_ssize_t nitems = PyList_GET_SIZE(items);
    it->total = nitems;
    int rc = -1, locked = 0;
    char *isdone = NULL;
    PyObject *foreign = NULL;
    isdone = PyMem_Malloc(nitems ? nitems : 1);
    it->ready = PyMem_Malloc((nitems ? nitems : 1) * sizeof(PyObject *));
    if (isdone == NULL || it->ready == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    locked = lock_foreign(st, items, &foreign);
    if (locked < 0) {
        locked = 0;
        goto out;
    }
    /* First pass: what is finished now; count the rest. */
    Py_ssize_t npending = 0;
    for (Py_ssize_t k = 0; k < nitems; k++) {
        PyObject *f = PyList_GET_ITEM(items, k);
        int d;
        if (future_is_waited(st, f, &d) < 0) {
            goto out;
        }
        isdone[k] = (char)d;
        if (d) {
            it->ready[it->nready++] = Py_NewRef(f);
        }
        else {
            npending++;
        }
    }
    it->npending = npending;
    if (npending) {
        it->waiter = waiter_new(st, MODE_AS_COMPLETED, npending);
        if (it->waiter == NULL) {
            goto out;
        }
        for (Py_ssize_t k = 0; k < nitems; k++) {
            PyObject *f = PyList_GET_ITEM(items, k);
            if (isdone[k]) {
                continue;
            }
            if (it->waiter->nlinks >= npending) {
                break;
            }
            if (waiter_install(st, it->waiter, f) < 0) {
                goto out;
            }
        }
    }
    rc = 0;
out:
    if (locked && foreign_release_all(st, foreign) < 0) {
        rc = -1;
    }
    Py_XDECREF(foreign);
    Py_DECREF(items);
    PyMem_Free(isdone);
    Py_DECREF(fs);
    return rc;
}

/* The generator's finally: an error removing the waiters replaces the
 * one in flight (which becomes its context). */
static PyObject *
ac_fail(cf_state *st, AsCompletedObject *it)
{
    PyObject *exc = cf_PyErr_GetRaisedException();
    if (ac_stop(st, it) < 0) {
        PyObject *err = cf_PyErr_GetRaisedException();
        if (exc != NULL && err != exc) {
            PyException_SetContext(err, exc);
            exc = NULL;
        }
        Py_XDECREF(exc);
        exc = err;
    }
    cf_PyErr_SetRaisedException(exc);
    return NULL;
}

static PyObject *AsCompleted_next_impl(PyObject *self);

/* Like the stdlib's generator: a second thread entering next() while the
 * first waits inside it gets ValueError, not a sleep nobody will end. */
static PyObject *
AsCompleted_next(PyObject *self)
{
    AsCompletedObject *it = (AsCompletedObject *)self;
    if (!cf_enter_flag(&it->running)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    PyObject *r = AsCompleted_next_impl(self);
    cf_leave_flag(&it->running);
    return r;
}

static PyObject *
AsCompleted_next_impl(PyObject *self)
{
    AsCompletedObject *it = (AsCompletedObject *)self;
    if (it->exhausted) {
        return NULL;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    if (!it->started && ac_start(st, it) < 0) {
        return ac_fail(st, it);
    }
    if (it->rhead < it->nready) {
        return it->ready[it->rhead++];      /* the reference moves out */
    }
    WaiterObject *w = it->waiter;
    for (;;) {
        Py_ssize_t i = -1;
        if (w != NULL) {
            W_LOCK(w);
            if (w->fired_head < w->fired_tail) {
                i = w->fired[w->fired_head++];
                if (w->fired_head == w->fired_tail) {
                    w->triggered = 0;
                }
            }
            W_UNLOCK(w);
        }
        if (i >= 0) {
            PyObject *f = Py_NewRef(w->links[i].future);
            if (waiter_drop_link(st, w, i) < 0) {
                Py_DECREF(f);
                return ac_fail(st, it);
            }
            it->npending--;
            return f;
        }
        if (it->npending <= 0) {
            if (ac_stop(st, it) < 0) {
                return NULL;
            }
            return NULL;    /* StopIteration */
        }
        cf_time_t deadline = CF_FOREVER;
        if (it->end_time != NULL) {
            int r = cf_end_time_deadline(it->end_time, 1, &deadline);
            if (r < 0) {
                return ac_fail(st, it);
            }
            if (r > 0) {
                PyErr_Format(st->TimeoutError,
                             "%zd (of %zd) futures unfinished",
                             it->npending, it->total);
                return ac_fail(st, it);
            }
        }
        if (waiter_sleep(w, deadline) < 0) {
            return ac_fail(st, it);
        }
    }
}

PyDoc_STRVAR(ac_close_doc,
"close($self, /)\n--\n\nStop waiting: remove this iterator's waiters.");

static PyObject *
AsCompleted_close(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    AsCompletedObject *it = (AsCompletedObject *)self;
    if (!cf_enter_flag(&it->running)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    int rc = st == NULL ? -1 : ac_stop(st, it);
    cf_leave_flag(&it->running);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static void
AsCompleted_finalize(PyObject *self)
{
    AsCompletedObject *it = (AsCompletedObject *)self;
    if (it->waiter == NULL) {
        return;
    }
    PyObject *exc = cf_PyErr_GetRaisedException();
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL || ac_stop(st, it) < 0) {
        PyErr_WriteUnraisable(self);
    }
    cf_PyErr_SetRaisedException(exc);
}

static int
AsCompleted_traverse(PyObject *self, visitproc visit, void *arg)
{
    AsCompletedObject *it = (AsCompletedObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(it->fs_arg);
    Py_VISIT(it->timeout);
    for (Py_ssize_t i = it->rhead; i < it->nready; i++) {
        Py_VISIT(it->ready[i]);
    }
    Py_VISIT(it->end_time);
    Py_VISIT(it->waiter);
    return 0;
}

static int
AsCompleted_clear(PyObject *self)
{
    AsCompletedObject *it = (AsCompletedObject *)self;
    Py_CLEAR(it->fs_arg);
    Py_CLEAR(it->timeout);
    Py_CLEAR(it->end_time);
    Py_CLEAR(it->waiter);
    ac_clear_ready(it);
    return 0;
}

static void
AsCompleted_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc(self) < 0) {
        return;     /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    AsCompleted_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef AsCompleted_methods[] = {
    {"close", AsCompleted_close, METH_NOARGS, ac_close_doc},
    {NULL, NULL}
};

static PyType_Slot AsCompleted_slots[] = {
    {Py_tp_dealloc, AsCompleted_dealloc},
    {Py_tp_finalize, AsCompleted_finalize},
    {Py_tp_traverse, AsCompleted_traverse},
    {Py_tp_clear, AsCompleted_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, AsCompleted_next},
    {Py_tp_methods, AsCompleted_methods},
    {0, NULL},
};

static PyType_Spec AsCompleted_spec = {
    .name = "cfutures._cfutures.as_completed_iterator",
    .basicsize = sizeof(AsCompletedObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_DISALLOW_INSTANTIATION),
    .slots = AsCompleted_slots,
};

PyDoc_STRVAR(as_completed_doc,
"as_completed($module, /, fs, timeout=None)\n--\n\n"
"An iterator over the given futures that yields each as it completes.\n\n"
"Already finished futures come first.  Raises TimeoutError if the whole\n"
"iteration cannot complete before the timeout.");

static PyObject *
cf_as_completed(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fs", "timeout", NULL};
    cf_state *st = cf_get_state(mod);
    PyObject *fs_arg, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:as_completed", kwlist,
                                     &fs_arg, &timeout)) {
        return NULL;
    }
    AsCompletedObject *it = PyObject_GC_New(AsCompletedObject,
                                            st->AsCompleted_type);
    if (it == NULL) {
        return NULL;
    }
    it->fs_arg = Py_NewRef(fs_arg);
    it->timeout = Py_NewRef(timeout);
    it->ready = NULL;
    it->rhead = it->nready = 0;
    it->waiter = NULL;
    it->end_time = NULL;
    it->total = it->npending = 0;
    it->started = it->exhausted = it->running = 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyMethodDef as_completed_functions[] = {
    {"as_completed", (PyCFunction)(void (*)(void))cf_as_completed,
     METH_VARARGS | METH_KEYWORDS, as_completed_doc},
    {NULL, NULL}
};

int
cf_as_completed_init(PyObject *mod, cf_state *st)
{
    st->AsCompleted_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &AsCompleted_spec, NULL);
    if (st->AsCompleted_type == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(mod, as_completed_functions);
}
