/* mapiter: Executor.map's result iterator (with 3.14's buffersize
 * everywhere), and _chain_lists, which flattens the process pool's
 * chunked results.
 *
 * Mirrors the stdlib generator: futures are submitted eagerly (or the
 * first `buffersize` of them), results come back in order, the first
 * error or timeout cancels what is left, and so does closing the iterator
 * once it has started.  Like a generator that never ran, an iterator that
 * is dropped before its first next() leaves its futures alone (code that
 * calls map() only for its side effects relies on that).
 */
#include "cfutures.h"

typedef struct {
    PyObject_HEAD
    PyObject *executor_ref;     /* weakref, only with buffersize */
    PyObject *fn;
    PyObject *zipped;           /* zip(*iterables) while more may come */
    PyObject **ring;            /* FIFO of futures */
    Py_ssize_t cap, head, count;
    Py_ssize_t buffersize;      /* 0: unbounded */
    PyObject *end_time;         /* timeout + time.monotonic(), or NULL */
    int started;
    int exhausted;
    int running;                /* a thread is inside next() */
} MapIteratorObject;

static int
ring_push(MapIteratorObject *it, PyObject *fut)
{
    if (it->count == it->cap) {
        Py_ssize_t ncap = it->cap ? it->cap * 2 : 16;
        PyObject **n = PyMem_Malloc(ncap * sizeof(PyObject *));
        if (n == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < it->count; i++) {
            n[i] = it->ring[(it->head + i) % it->cap];
        }
        PyMem_Free(it->ring);
        it->ring = n;
        it->cap = ncap;
        it->head = 0;
    }
    it->ring[(it->head + it->count) % it->cap] = fut;    /* steals on success */
    it->count++;
    return 0;
}

static PyObject *
ring_pop(MapIteratorObject *it)
{
    if (it->count == 0) {
        return NULL;
    }
    PyObject *f = it->ring[it->head];
    it->head = (it->head + 1) % it->cap;
    it->count--;
    return f;
}

static int
submit_one(cf_state *st, PyObject *executor, PyObject *fn, PyObject *args,
           MapIteratorObject *it)
{
    /* executor.submit(fn, *args) */
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    PyObject *small[8];
    PyObject **stack = small;
    if (n + 2 > 8) {
        stack = PyMem_Malloc((n + 2) * sizeof(PyObject *));
        if (stack == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    stack[0] = executor;
    stack[1] = fn;
    for (Py_ssize_t i = 0; i < n; i++) {
        stack[i + 2] = PyTuple_GET_ITEM(args, i);
    }
    PyObject *fut = PyObject_VectorcallMethod(
        st->str_submit, stack, (n + 2) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (stack != small) {
        PyMem_Free(stack);
    }
    if (fut == NULL) {
        return -1;
    }
    if (ring_push(it, fut) < 0) {
        Py_DECREF(fut);     /* it runs on, as one the stdlib lost to the error */
        return -1;
    }
    return 0;
}

/* Cancel every future still queued (the generator's finally). */
static int
cancel_rest(cf_state *st, MapIteratorObject *it)
{
    int rc = 0;
    PyObject *f;
    while ((f = ring_pop(it)) != NULL) {
        int r;
        if (cf_is_future(st, f)) {
            r = cf_future_cancel(st, (FutureObject *)f);
        }
        else {
            PyObject *res = PyObject_CallMethod(f, "cancel", NULL);
            r = res ? 0 : -1;
            Py_XDECREF(res);
        }
        Py_DECREF(f);
        if (r < 0) {
            if (rc < 0) {
                PyErr_Clear();      /* keep the first error */
            }
            rc = -1;
        }
    }
    return rc;
}

static void
map_finish(cf_state *st, MapIteratorObject *it)
{
    it->exhausted = 1;
    PyObject *exc = cf_PyErr_GetRaisedException();
    if (cancel_rest(st, it) < 0) {
        if (exc != NULL) {
            PyErr_Clear();
        }
        else {
            exc = cf_PyErr_GetRaisedException();
        }
    }
    Py_CLEAR(it->zipped);
    Py_CLEAR(it->fn);
    Py_CLEAR(it->executor_ref);
    Py_CLEAR(it->end_time);
    cf_PyErr_SetRaisedException(exc);
}

/* _result_or_cancel(fut, end_time - time.monotonic()) */
static PyObject *
result_or_cancel(cf_state *st, MapIteratorObject *it, PyObject *f)
{
    PyObject *res;
    if (cf_is_future(st, f)) {
        FutureObject *fut = (FutureObject *)f;
        cf_time_t deadline = CF_FOREVER;
        if (cf_state_is_done(CF_LOAD_STATE(fut))) {
            res = cf_future_result_nowait(st, fut);     /* timeout unread */
        }
        else if (it->end_time != NULL
                 && cf_end_time_deadline(it->end_time, 0, &deadline) < 0) {
            res = NULL;
        }
        else {
            res = cf_future_result_deadline(st, fut, deadline);
        }
        if (res == NULL) {
            PyObject *exc = cf_PyErr_GetRaisedException();
            if (cf_future_cancel(st, fut) < 0) {
                PyErr_Clear();
            }
            cf_PyErr_SetRaisedException(exc);
        }
        return res;
    }
    if (it->end_time == NULL) {
        res = PyObject_CallMethod(f, "result", NULL);
    }
    else {
        PyObject *left = cf_end_time_left(it->end_time);
        res = left ? PyObject_CallMethod(f, "result", "O", left) : NULL;
        Py_XDECREF(left);
    }
    PyObject *exc = cf_PyErr_GetRaisedException();
    PyObject *c = PyObject_CallMethod(f, "cancel", NULL);
    if (c == NULL) {
        if (exc != NULL) {
            PyErr_Clear();
        }
        else {
            Py_CLEAR(res);
            return NULL;
        }
    }
    Py_XDECREF(c);
    cf_PyErr_SetRaisedException(exc);
    return res;
}

static PyObject *MapIterator_next_impl(PyObject *self);

/* One thread at a time, like the stdlib's generator. */
static PyObject *
MapIterator_next(PyObject *self)
{
    MapIteratorObject *it = (MapIteratorObject *)self;
    if (!cf_enter_flag(&it->running)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    PyObject *r = MapIterator_next_impl(self);
    cf_leave_flag(&it->running);
    return r;
}

static PyObject *
MapIterator_next_impl(PyObject *self)
{
    MapIteratorObject *it = (MapIteratorObject *)self;
    if (it->exhausted) {
        return NULL;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    it->started = 1;
    if (it->count == 0) {
        map_finish(st, it);
        return NULL;
    }
    if (it->buffersize && it->zipped != NULL) {
        PyObject *ex;
        int alive = cf_PyWeakref_GetRef(it->executor_ref, &ex);
        if (alive < 0) {
            map_finish(st, it);
            return NULL;
        }
        if (alive) {
            int t = PyObject_IsTrue(ex);
            if (t > 0) {
                PyObject *args = PyIter_Next(it->zipped);
                if (args != NULL) {
                    t = submit_one(st, ex, it->fn, args, it);
                    Py_DECREF(args);
                }
                else if (PyErr_Occurred()) {
                    t = -1;
                }
                else {
                    Py_CLEAR(it->zipped);
                }
            }
            Py_DECREF(ex);
            if (t < 0) {
                map_finish(st, it);
                return NULL;
            }
        }
    }
    PyObject *f = ring_pop(it);
    PyObject *res = result_or_cancel(st, it, f);
    Py_DECREF(f);
    if (res == NULL) {
        map_finish(st, it);
    }
    return res;
}

PyDoc_STRVAR(map_close_doc,
"close($self, /)\n--\n\nCancel the futures whose results were not taken.");

static PyObject *MapIterator_close_impl(MapIteratorObject *it);

static PyObject *
MapIterator_close(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    MapIteratorObject *it = (MapIteratorObject *)self;
    if (!cf_enter_flag(&it->running)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    PyObject *r = MapIterator_close_impl(it);
    cf_leave_flag(&it->running);
    return r;
}

static PyObject *
MapIterator_close_impl(MapIteratorObject *it)
{
    PyObject *self = (PyObject *)it;
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    if (!it->started) {
        /* a generator closed before it ran executes no finally block */
        it->exhausted = 1;
        PyObject *f;
        while ((f = ring_pop(it)) != NULL) {
            Py_DECREF(f);
        }
        Py_RETURN_NONE;
    }
    map_finish(st, it);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static void
MapIterator_finalize(PyObject *self)
{
    MapIteratorObject *it = (MapIteratorObject *)self;
    if (!it->started || it->exhausted) {
        return;
    }
    PyObject *exc = cf_PyErr_GetRaisedException();
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st != NULL) {
        map_finish(st, it);
    }
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(self);
    }
    cf_PyErr_SetRaisedException(exc);
}

static int
MapIterator_traverse(PyObject *self, visitproc visit, void *arg)
{
    MapIteratorObject *it = (MapIteratorObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(it->executor_ref);
    Py_VISIT(it->fn);
    Py_VISIT(it->zipped);
    Py_VISIT(it->end_time);
    for (Py_ssize_t i = 0; i < it->count; i++) {
        Py_VISIT(it->ring[(it->head + i) % it->cap]);
    }
    return 0;
}

static int
MapIterator_clear(PyObject *self)
{
    MapIteratorObject *it = (MapIteratorObject *)self;
    Py_CLEAR(it->executor_ref);
    Py_CLEAR(it->fn);
    Py_CLEAR(it->zipped);
    Py_CLEAR(it->end_time);
    PyObject *f;
    while ((f = ring_pop(it)) != NULL) {
        Py_DECREF(f);
    }
    return 0;
}

static void
MapIterator_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc(self) < 0) {
        return;
    }
    PyObject_GC_UnTrack(self);
    MapIterator_clear(self);
    PyMem_Free(((MapIteratorObject *)self)->ring);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef MapIterator_methods[] = {
    {"close", MapIterator_close, METH_NOARGS, map_close_doc},
    {NULL, NULL}
};

static PyType_Slot MapIterator_slots[] = {
    {Py_tp_dealloc, MapIterator_dealloc},
    {Py_tp_finalize, MapIterator_finalize},
    {Py_tp_traverse, MapIterator_traverse},
    {Py_tp_clear, MapIterator_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, MapIterator_next},
    {Py_tp_methods, MapIterator_methods},
    {0, NULL},
};

static PyType_Spec MapIterator_spec = {
    .name = "cfutures._cfutures.map_iterator",
    .basicsize = sizeof(MapIteratorObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_DISALLOW_INSTANTIATION),
    .slots = MapIterator_slots,
};

PyDoc_STRVAR(map_doc,
"_map($module, executor, fn, iterables, timeout, buffersize, /)\n--\n\n"
"Executor.map's engine: submit through executor.submit, return the\n"
"ordered result iterator.");

static PyObject *
cf_map(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "_map(executor, fn, iterables, timeout, buffersize)");
        return NULL;
    }
    cf_state *st = cf_get_state(mod);
    PyObject *executor = args[0], *fn = args[1], *iterables = args[2];
    PyObject *timeout = args[3], *bufobj = args[4];
    Py_ssize_t buffersize = 0;

    if (bufobj != Py_None) {
        if (!PyLong_Check(bufobj)) {
            PyErr_SetString(PyExc_TypeError,
                            "buffersize must be an integer or None");
            return NULL;
        }
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(bufobj, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow < 0 || (!overflow && v < 1)) {
            PyErr_SetString(PyExc_ValueError, "buffersize must be None or > 0");
            return NULL;
        }
        buffersize = (overflow || v > PY_SSIZE_T_MAX) ? PY_SSIZE_T_MAX
                                                      : (Py_ssize_t)v;
    }
    PyObject *end_time = NULL;
    if (timeout != Py_None) {
        end_time = cf_end_time(timeout);
        if (end_time == NULL) {
            return NULL;
        }
    }
    PyObject *zipped = PyObject_Call((PyObject *)&PyZip_Type, iterables, NULL);
    if (zipped == NULL) {
        Py_XDECREF(end_time);
        return NULL;
    }
    MapIteratorObject *it = PyObject_GC_New(MapIteratorObject,
                                            st->MapIterator_type);
    if (it == NULL) {
        Py_DECREF(zipped);
        Py_XDECREF(end_time);
        return NULL;
    }
    it->executor_ref = NULL;
    it->fn = Py_NewRef(fn);
    it->zipped = zipped;
    it->ring = NULL;
    it->cap = it->head = it->count = 0;
    it->buffersize = buffersize;
    it->end_time = end_time;
    it->started = 0;
    it->exhausted = 0;
    it->running = 0;
    PyObject_GC_Track(it);

    for (Py_ssize_t i = 0; buffersize == 0 || i < buffersize; i++) {
        PyObject *a = PyIter_Next(zipped);
        if (a == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            Py_CLEAR(it->zipped);
            break;
        }
        int r = submit_one(st, executor, fn, a, it);
        Py_DECREF(a);
        if (r < 0) {
            goto error;
        }
    }
    if (buffersize) {
        it->executor_ref = PyWeakref_NewRef(executor, NULL);
        if (it->executor_ref == NULL) {
            goto error;
        }
    }
    else {
        Py_CLEAR(it->zipped);
    }
    return (PyObject *)it;

error:
    /* The stdlib's list comprehension fails before the generator exists:
     * what was submitted keeps running. */
    it->started = 0;
    Py_DECREF(it);
    return NULL;
}

/* ------------------------------------- process map: result flattening */

/* _chain_lists(iterable_of_lists): the stdlib's
 * _chain_from_iterable_of_lists in C.  Like it, it does not keep the
 * yielded objects alive: each slot is reset to None once yielded. */
typedef struct {
    PyObject_HEAD
    PyObject *source;       /* iterator of lists, NULL when exhausted */
    PyObject *list;         /* current list */
    Py_ssize_t pos;
    int running;            /* a thread is inside next() or close() */
} ChainListsObject;

static PyObject *ChainLists_next_impl(ChainListsObject *c);

/* One thread at a time, like the stdlib's generator. */
static PyObject *
ChainLists_next(PyObject *self)
{
    ChainListsObject *c = (ChainListsObject *)self;
    if (!cf_enter_flag(&c->running)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    PyObject *r = ChainLists_next_impl(c);
    cf_leave_flag(&c->running);
    return r;
}

static PyObject *
ChainLists_next_impl(ChainListsObject *c)
{
    for (;;) {
        if (c->list != NULL) {
            if (c->pos < PyList_GET_SIZE(c->list)) {
                PyObject *item = PyList_GET_ITEM(c->list, c->pos);
                PyList_SET_ITEM(c->list, c->pos, Py_NewRef(Py_None));
                c->pos++;
                return item;        /* the list's reference, moved */
            }
            Py_CLEAR(c->list);
        }
        if (c->source == NULL) {
            return NULL;
        }
        PyObject *next = PyIter_Next(c->source);
        if (next == NULL) {
            Py_CLEAR(c->source);
            return NULL;            /* exhausted, or the source's error */
        }
        if (!PyList_Check(next)) {
            PyErr_SetString(PyExc_TypeError, "expected a list of results");
            Py_DECREF(next);
            return NULL;
        }
        c->list = next;
        c->pos = 0;
    }
}

PyDoc_STRVAR(chain_close_doc,
"close($self, /)\n--\n\nClose the underlying result iterator.");

static PyObject *
ChainLists_close(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ChainListsObject *c = (ChainListsObject *)self;
    if (!cf_enter_flag(&c->running)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    PyObject *lst = c->list;
    c->list = NULL;
    PyObject *src = c->source;
    c->source = NULL;
    cf_leave_flag(&c->running);
    Py_XDECREF(lst);
    if (src != NULL) {
        PyObject *r = PyObject_CallMethod(src, "close", NULL);
        Py_DECREF(src);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                return NULL;
            }
            PyErr_Clear();
        }
        Py_XDECREF(r);
    }
    Py_RETURN_NONE;
}

static int
ChainLists_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((ChainListsObject *)self)->source);
    Py_VISIT(((ChainListsObject *)self)->list);
    return 0;
}

static int
ChainLists_clear(PyObject *self)
{
    Py_CLEAR(((ChainListsObject *)self)->source);
    Py_CLEAR(((ChainListsObject *)self)->list);
    return 0;
}

static void
ChainLists_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ChainLists_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef ChainLists_methods[] = {
    {"close", ChainLists_close, METH_NOARGS, chain_close_doc},
    {NULL, NULL}
};

static PyType_Slot ChainLists_slots[] = {
    {Py_tp_dealloc, ChainLists_dealloc},
    {Py_tp_traverse, ChainLists_traverse},
    {Py_tp_clear, ChainLists_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, ChainLists_next},
    {Py_tp_methods, ChainLists_methods},
    {0, NULL},
};

static PyType_Spec ChainLists_spec = {
    .name = "cfutures._cfutures._chain_lists",
    .basicsize = sizeof(ChainListsObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_DISALLOW_INSTANTIATION),
    .slots = ChainLists_slots,
};

PyDoc_STRVAR(chain_lists_doc,
"_chain_lists($module, iterable, /)\n--\n\n"
"Flatten an iterable of lists, dropping references as items are yielded.");

static PyObject *
chain_lists(PyObject *mod, PyObject *iterable)
{
    cf_state *st = cf_get_state(mod);
    PyObject *it = PyObject_GetIter(iterable);
    if (it == NULL) {
        return NULL;
    }
    ChainListsObject *c = PyObject_GC_New(ChainListsObject,
                                          st->ChainLists_type);
    if (c == NULL) {
        Py_DECREF(it);
        return NULL;
    }
    c->source = it;
    c->list = NULL;
    c->pos = 0;
    c->running = 0;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

static PyMethodDef mapiter_functions[] = {
    {"_map", (PyCFunction)(void (*)(void))cf_map, METH_FASTCALL, map_doc},
    {"_chain_lists", chain_lists, METH_O, chain_lists_doc},
    {NULL, NULL}
};

int
cf_mapiter_module_init(PyObject *mod, cf_state *st)
{
    st->MapIterator_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &MapIterator_spec, NULL);
    if (st->MapIterator_type == NULL) {
        return -1;
    }
    st->ChainLists_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &ChainLists_spec, NULL);
    if (st->ChainLists_type == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(mod, mapiter_functions);
}

/* ------------------------------------------------------ module state */

int
cf_mapiter_traverse(cf_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->MapIterator_type);
    Py_VISIT(st->ChainLists_type);
    return 0;
}

void
cf_mapiter_clear(cf_state *st)
{
    Py_CLEAR(st->MapIterator_type);
    Py_CLEAR(st->ChainLists_type);
}
