/* Native wait() and as_completed().
 *
 * One Waiter object serves one call.  It owns an array of links, one per
 * future that was pending when the call started.  cfutures futures get the
 * link put on their C list (O(1) to add and remove, no Python on
 * completion); any other concurrent.futures.Future gets the Waiter itself
 * appended to its _waiters list under its _condition, exactly as the
 * stdlib's wait() does, and calls add_result/add_exception/add_cancelled.
 * Either way a completion pushes the link's index on the fired queue:
 * O(1) per completion, whatever the number of futures waited on.
 * Free-threaded: the fired queue and flags are under the waiter's lock
 * (inside a future's, never around one); only the owner (wait()'s caller,
 * the iterator's single next()) installs and drops links. */
#include "cfutures.h"

#include <stddef.h>

#include "waiters.h"

static void
waiter_wake(WaiterObject *w)
{
    if (w->sleeping && !w->posted) {
        w->posted = 1;
        cf_event_post(&w->ev);
    }
}

/* Record that link i fired.  GIL held; no Python. */
static void
waiter_fire_locked(WaiterObject *w, Py_ssize_t i, int is_exception)
{
    cf_link *l = &w->links[i];
    if (l->fired || l->future == NULL) {
        return;
    }
    l->fired = 1;
    w->fired[w->fired_tail++] = i;
    switch (w->mode) {
    case MODE_AS_COMPLETED:
    case MODE_FIRST_COMPLETED:
        w->triggered = 1;
        break;
    case MODE_FIRST_EXCEPTION:
        if (is_exception) {
            w->triggered = 1;
            break;
        }
        /* fall through */
    case MODE_ALL_COMPLETED:
        if (--w->npending <= 0) {
            w->triggered = 1;
        }
        break;
    }
    if (w->triggered) {
        waiter_wake(w);
    }
}

static void
waiter_fire(WaiterObject *w, Py_ssize_t i, int is_exception)
{
    W_LOCK(w);
    waiter_fire_locked(w, i, is_exception);
    W_UNLOCK(w);
}

/* Unlink l from its future if linked (only natives' links ever are). */
static void
link_unlink(cf_link *l)
{
    if (!__atomic_load_n(&l->linked, __ATOMIC_RELAXED)) {
        return;
    }
    FutureObject *fut = (FutureObject *)l->future;
    CF_FUT_LOCK(fut);
    cf_future_unlink(fut, l);   /* no-op if Future.__init__() orphaned it */
    CF_FUT_UNLOCK(fut);
}

static void
waiter_notify(cf_waiter *base, cf_link *link, int event)
{
    WaiterObject *w = WAITER_OF(base);
    FutureObject *fut = (FutureObject *)link->future;
    int is_exc = (event == CF_EV_FINISH && fut->fut_exception != NULL);
    waiter_fire(w, link->index, is_exc);
}

WaiterObject *
waiter_new(cf_state *st, int mode, Py_ssize_t n)
{
    WaiterObject *w = PyObject_GC_New(WaiterObject, st->Waiter_type);
    if (w == NULL) {
        return NULL;
    }
    w->base.notify = waiter_notify;
    w->base.events = CF_EV_FINISH | CF_EV_NOTIFY;
    cf_event_init(&w->ev);
    CF_FT_MUTEX_INIT(w->w_mutex);
    w->mode = mode;
    w->triggered = w->sleeping = w->posted = 0;
    w->npending = 0;
    w->nlinks = 0;
    w->fired_head = w->fired_tail = 0;
    w->foreign = NULL;
    w->links = PyMem_Calloc(n ? n : 1, sizeof(cf_link));
    w->fired = PyMem_Malloc((n ? n : 1) * sizeof(Py_ssize_t));
    if (w->links == NULL || w->fired == NULL) {
        PyMem_Free(w->links);
        PyMem_Free(w->fired);
        w->links = NULL;
        w->fired = NULL;
        Py_DECREF(w);
        PyErr_NoMemory();
        return NULL;
    }
    PyObject_GC_Track(w);
    return w;
}

/* Foreign waiter protocol: called by other futures' set_* methods. */
static PyObject *
waiter_add(WaiterObject *w, PyObject *fut, int is_exc)
{
    if (w->foreign != NULL) {
        PyObject *idx;
        int r = cf_PyDict_GetItemRef(w->foreign, fut, &idx);
        if (r < 0) {
            return NULL;
        }
        if (r > 0) {
            Py_ssize_t i = PyLong_AsSsize_t(idx);
            Py_DECREF(idx);
            if (i >= 0 && i < w->nlinks) {
                waiter_fire(w, i, is_exc);
            }
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
Waiter_add_result(PyObject *self, PyObject *fut)
{
    return waiter_add((WaiterObject *)self, fut, 0);
}

static PyObject *
Waiter_add_exception(PyObject *self, PyObject *fut)
{
    return waiter_add((WaiterObject *)self, fut, 1);
}

static PyObject *
Waiter_add_cancelled(PyObject *self, PyObject *fut)
{
    return waiter_add((WaiterObject *)self, fut, 0);
}

/* Take or give back a foreign future's _condition. */
static int
foreign_cond(cf_state *st, PyObject *fut, PyObject *meth)
{
    PyObject *cond = PyObject_GetAttr(fut, st->str_condition);
    if (cond == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethodNoArgs(cond, meth);
    Py_DECREF(cond);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Remove the waiter from a foreign future's _waiters under its condition. */
static int
foreign_remove(cf_state *st, WaiterObject *w, PyObject *fut)
{
    if (foreign_cond(st, fut, st->str_acquire) < 0) {
        return -1;
    }
    int rc = 0;
    PyObject *lst = PyObject_GetAttr(fut, st->str_waiters);
    if (lst == NULL) {
        rc = -1;
    }
    else {
        PyObject *r = PyObject_CallMethodOneArg(lst, st->str_remove,
                                                (PyObject *)w);
        Py_DECREF(lst);
        if (r == NULL) {
            if (PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
            }
            else {
                rc = -1;
            }
        }
        Py_XDECREF(r);
    }
    PyObject *exc = cf_PyErr_GetRaisedException();
    if (foreign_cond(st, fut, st->str_release) < 0) {
        if (exc != NULL) {
            PyErr_Clear();
        }
        else {
            rc = -1;
        }
    }
    if (exc != NULL) {
        cf_PyErr_SetRaisedException(exc);
    }
    return rc;
}

/* Drop link i: off its future, and its reference. */
int
waiter_drop_link(cf_state *st, WaiterObject *w, Py_ssize_t i)
{
    cf_link *l = &w->links[i];
    PyObject *fut = l->future;
    if (fut == NULL) {
        return 0;
    }
    int rc = 0;
    if (__atomic_load_n(&l->linked, __ATOMIC_RELAXED)) {
        link_unlink(l);
    }
    else if (l->orphaned) {
        /* the stdlib's f._waiters.remove(waiter) on the list a second
         * __init__() made */
        l->orphaned = 0;
        PyErr_SetString(PyExc_ValueError, "list.remove(x): x not in list");
        rc = -1;
    }
    else if (st != NULL && cf_is_future(st, fut)) {
        /* native, already fired and unlinked */
    }
    else if (w->foreign != NULL && st != NULL) {
        /* foreign: marked by a dict entry */
        rc = foreign_remove(st, w, fut);
    }
    /* re-read: foreign_remove may have run other code */
    if (l->future == fut) {
        l->future = NULL;
        Py_DECREF(fut);
    }
    return rc;
}

/* Detach from every future.  Natives first: no Python runs there. */
int
waiter_detach(cf_state *st, WaiterObject *w)
{
    for (Py_ssize_t i = 0; i < w->nlinks; i++) {
        cf_link *l = &w->links[i];
        if (__atomic_load_n(&l->linked, __ATOMIC_RELAXED)) {
            link_unlink(l);
            Py_CLEAR(l->future);
        }
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < w->nlinks; i++) {
        if (w->links[i].future != NULL && waiter_drop_link(st, w, i) < 0) {
            if (rc == 0) {
                rc = -1;
            }
            else {
                PyErr_Clear();
            }
        }
    }
    return rc;
}

static int
Waiter_traverse(PyObject *self, visitproc visit, void *arg)
{
    WaiterObject *w = (WaiterObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(w->foreign);
    for (Py_ssize_t i = 0; i < w->nlinks; i++) {
        Py_VISIT(w->links[i].future);
    }
    return 0;
}

static int
Waiter_clear(PyObject *self)
{
    WaiterObject *w = (WaiterObject *)self;
    for (Py_ssize_t i = 0; i < w->nlinks; i++) {
        cf_link *l = &w->links[i];
        link_unlink(l);
        Py_CLEAR(l->future);
    }
    Py_CLEAR(w->foreign);
    return 0;
}

static void
Waiter_dealloc(PyObject *self)
{
    WaiterObject *w = (WaiterObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (w->links != NULL) {
        Waiter_clear(self);
    }
    PyMem_Free(w->links);
    PyMem_Free(w->fired);
    cf_event_destroy(&w->ev);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef Waiter_methods[] = {
    {"add_result", Waiter_add_result, METH_O, NULL},
    {"add_exception", Waiter_add_exception, METH_O, NULL},
    {"add_cancelled", Waiter_add_cancelled, METH_O, NULL},
    {NULL, NULL}
};

static PyType_Slot Waiter_slots[] = {
    {Py_tp_dealloc, Waiter_dealloc},
    {Py_tp_traverse, Waiter_traverse},
    {Py_tp_clear, Waiter_clear},
    {Py_tp_methods, Waiter_methods},
    {0, NULL},
};

static PyType_Spec Waiter_spec = {
    .name = "cfutures._cfutures._Waiter",
    .basicsize = sizeof(WaiterObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_DISALLOW_INSTANTIATION),
    .slots = Waiter_slots,
};

/* ------------------------------------------------- foreign futures */

static int
pyfuture_is_waited(cf_state *st, PyObject *fut, int *done)
{
    PyObject *s = PyObject_GetAttr(fut, st->str_state);
    if (s == NULL) {
        return -1;
    }
    int r = PyObject_RichCompareBool(s, st->state_names[CF_FINISHED], Py_EQ);
    if (r == 0) {
        r = PyObject_RichCompareBool(
            s, st->state_names[CF_CANCELLED_AND_NOTIFIED], Py_EQ);
    }
    Py_DECREF(s);
    if (r < 0) {
        return -1;
    }
    *done = r;
    return 0;
}

static int
cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(PyObject *const *)a;
    uintptr_t y = (uintptr_t)*(PyObject *const *)b;
    return (x > y) - (x < y);
}

/* The foreign futures of fs, sorted by id (the stdlib's lock order).
 * Returns a new list (possibly empty) or NULL. */
static PyObject *
collect_foreign(cf_state *st, PyObject *items)
{
    PyObject *lst = PyList_New(0);
    if (lst == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *f = PyList_GET_ITEM(items, i);
        if (!cf_is_future(st, f) && PyList_Append(lst, f) < 0) {
            Py_DECREF(lst);
            return NULL;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(lst);
    if (n > 1) {
        qsort(((PyListObject *)lst)->ob_item, (size_t)n, sizeof(PyObject *),
              cmp_ptr);
    }
    return lst;
}

/* Acquire (or release) the conditions of the sorted foreign list.  On a
 * failed acquire, releases the ones taken and returns -1. */
static int
foreign_acquire_all(cf_state *st, PyObject *foreign)
{
    Py_ssize_t n = PyList_GET_SIZE(foreign);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (foreign_cond(st, PyList_GET_ITEM(foreign, i), st->str_acquire) < 0) {
            PyObject *exc = cf_PyErr_GetRaisedException();
            for (Py_ssize_t j = 0; j < i; j++) {
                if (foreign_cond(st, PyList_GET_ITEM(foreign, j),
                                 st->str_release) < 0) {
                    PyErr_Clear();
                }
            }
            cf_PyErr_SetRaisedException(exc);
            return -1;
        }
    }
    return 0;
}

/* Release them all, like the stdlib's _AcquireFutures.__exit__: an
 * exception already raised stays (the first release error replaces it,
 * with it as context); Python is never called with an exception set. */
int
foreign_release_all(cf_state *st, PyObject *foreign)
{
    PyObject *pending = cf_PyErr_GetRaisedException();
    PyObject *err = NULL;
    Py_ssize_t n = PyList_GET_SIZE(foreign);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (foreign_cond(st, PyList_GET_ITEM(foreign, i), st->str_release) < 0) {
            PyObject *e = cf_PyErr_GetRaisedException();
            if (err == NULL) {
                err = e;
            }
            else {
                Py_XDECREF(e);
            }
        }
    }
    if (err == NULL) {
        if (pending != NULL) {
            cf_PyErr_SetRaisedException(pending);
        }
        return 0;
    }
    if (pending != NULL) {
        PyException_SetContext(err, pending);   /* steals pending */
    }
    cf_PyErr_SetRaisedException(err);
    return -1;
}

/* The stdlib's _AcquireFutures for the foreign futures among items:
 * *foreign gets them sorted by id, each with its _condition held.
 * Returns 1 if any lock is held, 0 if none, -1 on error. */
int
lock_foreign(cf_state *st, PyObject *items, PyObject **foreign)
{
    *foreign = collect_foreign(st, items);
    if (*foreign == NULL) {
        return -1;
    }
    if (PyList_GET_SIZE(*foreign) == 0) {
        return 0;
    }
    return foreign_acquire_all(st, *foreign) < 0 ? -1 : 1;
}

int
future_is_waited(cf_state *st, PyObject *f, int *done)
{
    if (cf_is_future(st, f)) {
        *done = cf_state_is_waited(CF_LOAD_STATE((FutureObject *)f));
        return 0;
    }
    return pyfuture_is_waited(st, f, done);
}

/* Put link i of w on future f (which was pending).  For a cfutures future
 * whose state moved on meanwhile, fire at once. */
int
waiter_install(cf_state *st, WaiterObject *w, PyObject *f)
{
    Py_ssize_t i = w->nlinks++;
    cf_link *l = &w->links[i];
    l->waiter = &w->base;
    l->index = i;
    l->future = Py_NewRef(f);
    if (cf_is_future(st, f)) {
        FutureObject *fut = (FutureObject *)f;
        CF_FUT_LOCK(fut);
        if (cf_state_is_waited(fut->fut_state)) {
            waiter_fire(w, i, fut->fut_state == CF_FINISHED
                                  && fut->fut_exception != NULL);
        }
        else {
            cf_future_link(fut, l);
        }
        CF_FUT_UNLOCK(fut);
        return 0;
    }
    if (w->foreign == NULL) {
        w->foreign = PyDict_New();
        if (w->foreign == NULL) {
            return -1;
        }
    }
    PyObject *idx = PyLong_FromSsize_t(i);
    if (idx == NULL) {
        return -1;
    }
    int r = PyDict_SetItem(w->foreign, f, idx);
    Py_DECREF(idx);
    if (r < 0) {
        return -1;
    }
    PyObject *lst = PyObject_GetAttr(f, st->str_waiters);
    if (lst == NULL) {
        return -1;
    }
    PyObject *res = PyObject_CallMethodOneArg(lst, st->str_append,
                                              (PyObject *)w);
    Py_DECREF(lst);
    if (res == NULL) {
        return -1;
    }
    Py_DECREF(res);
    return 0;
}

/* Sleep until w->triggered, the deadline, or a signal.  0 / -1. */
int
waiter_sleep(WaiterObject *w, cf_time_t deadline)
{
    for (;;) {
        W_LOCK(w);
        int triggered = w->triggered;
        if (!triggered) {
            w->sleeping = 1;
            w->posted = 0;
        }
        W_UNLOCK(w);
        if (triggered) {
            break;
        }
        int r = cf_event_wait_gil(&w->ev, deadline);
        W_LOCK(w);
        w->sleeping = 0;
        W_UNLOCK(w);
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            break;
        }
    }
    return 0;
}


/* --------------------------------------------------------------- wait */

static int
any_raised(cf_state *st, PyObject *done, int *found)
{
    /* any(not f.cancelled() and f.exception() is not None for f in done) */
    *found = 0;
    PyObject *items = PySequence_List(done);
    if (items == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *f = PyList_GET_ITEM(items, i);
        if (cf_is_future(st, f)) {
            FutureObject *fut = (FutureObject *)f;
            if (CF_LOAD_STATE(fut) == CF_FINISHED
                && CF_FUT_PEEK(fut, fut_exception) != NULL) {
                *found = 1;
                break;
            }
            continue;
        }
        Py_INCREF(f);
        PyObject *c = PyObject_CallMethodNoArgs(f, st->str_cancelled);
        int t = c ? PyObject_IsTrue(c) : -1;
        Py_XDECREF(c);
        if (t == 0) {
            PyObject *e = PyObject_CallMethodNoArgs(f, st->str_exception);
            t = (e == NULL) ? -1 : (e != Py_None ? 2 : 0);
            Py_XDECREF(e);
        }
        Py_DECREF(f);
        if (t < 0) {
            rc = -1;
            break;
        }
        if (t == 2) {
            *found = 1;
            break;
        }
    }
    Py_DECREF(items);
    return rc;
}

static int
parse_mode(cf_state *st, PyObject *return_when, int *mode)
{
    PyObject *names[3] = {st->str_FIRST_COMPLETED, st->str_FIRST_EXCEPTION,
                          st->str_ALL_COMPLETED};
    int modes[3] = {MODE_FIRST_COMPLETED, MODE_FIRST_EXCEPTION,
                    MODE_ALL_COMPLETED};
    for (int i = 0; i < 3; i++) {
        int eq = PyObject_RichCompareBool(return_when, names[i], Py_EQ);
        if (eq < 0) {
            return -1;
        }
        if (eq) {
            *mode = modes[i];
            return 0;
        }
    }
    *mode = -1;
    return 0;
}

PyDoc_STRVAR(wait_doc,
"wait($module, /, fs, timeout=None, return_when='ALL_COMPLETED')\n--\n\n"
"Wait for the futures in the given sequence to complete.\n\n"
"Returns a named 2-tuple of sets (done, not_done).");

/* A cfutures future of our own classes: default hash and eq, so putting
 * it in a set runs no Python code (and cannot release the GIL). */
static int
is_plain_native(cf_state *st, PyObject *f)
{
    PyTypeObject *tp = Py_TYPE(f);
    return tp == st->future_class || tp == st->Future_type;
}

static PyObject *
cf_wait(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fs", "timeout", "return_when", NULL};
    cf_state *st = cf_get_state(mod);
    PyObject *fs_arg, *timeout = Py_None, *return_when = st->str_ALL_COMPLETED;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:wait", kwlist,
                                     &fs_arg, &timeout, &return_when)) {
        return NULL;
    }
    PyObject *items;
    if (PyList_CheckExact(fs_arg) || PyTuple_CheckExact(fs_arg)) {
        items = PySequence_Fast(fs_arg, "");
    }
    else {
        items = PySequence_List(fs_arg);    /* same TypeError as set(fs) */
    }
    if (items == NULL) {
        return NULL;
    }
    PyObject *result = NULL, *done = NULL, *not_done = NULL, *foreign = NULL;
    PyObject *pending = NULL;
    WaiterObject *w = NULL;
    int locked = 0, mode;

    if (parse_mode(st, return_when, &mode) < 0) {
        goto out;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject **v = PySequence_Fast_ITEMS(items);
    int all_native = 1;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!is_plain_native(st, v[k])) {
            all_native = 0;
            break;
        }
    }
    if (!all_native) {
        /* Dedupe first, then take the foreign futures' conditions in id
         * order, as the stdlib's _AcquireFutures does. */
        PyObject *fs = PySet_New(items);
        if (fs == NULL) {
            goto out;
        }
        Py_SETREF(items, PySequence_List(fs));
        Py_DECREF(fs);
        if (items == NULL) {
            goto out;
        }
        locked = lock_foreign(st, items, &foreign);
        if (locked < 0) {
            locked = 0;
            goto out;
        }
        n = PyList_GET_SIZE(items);
        v = PySequence_Fast_ITEMS(items);
    }
    done = PySet_New(NULL);
    not_done = PySet_New(NULL);
    if (done == NULL || not_done == NULL) {
        goto out;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        int d;
        if (future_is_waited(st, v[k], &d) < 0
            || PySet_Add(d ? done : not_done, v[k]) < 0) {
            goto out;
        }
    }
    if (mode == MODE_FIRST_COMPLETED && PySet_GET_SIZE(done)) {
        goto finish;
    }
    if (mode == MODE_FIRST_EXCEPTION && PySet_GET_SIZE(done)) {
        int found;
        if (any_raised(st, done, &found) < 0) {
            goto out;
        }
        if (found) {
            goto finish;
        }
    }
    Py_ssize_t npending = PySet_GET_SIZE(not_done);
    if (npending == 0) {
        goto finish;
    }
    if (mode < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid return condition: %R",
                     return_when);
        goto out;
    }
    pending = PySequence_List(not_done);
    w = pending ? waiter_new(st, mode, npending) : NULL;
    if (w == NULL) {
        goto out;
    }
    w->npending = npending;
    for (Py_ssize_t k = 0; k < npending; k++) {
        if (waiter_install(st, w, PyList_GET_ITEM(pending, k)) < 0) {
            goto out;
        }
    }
    if (locked) {
        locked = 0;
        if (foreign_release_all(st, foreign) < 0) {
            goto out;
        }
    }
    /* read only now, as the stdlib's event.wait(timeout): converting it
     * may run Python (__float__, __gt__), not with the conditions held */
    cf_time_t deadline;
    if (cf_timeout_to_deadline(timeout, &deadline) < 0) {
        goto out;
    }
    if (waiter_sleep(w, deadline) < 0) {
        goto out;
    }
    W_LOCK(w);
    Py_ssize_t tail = w->fired_tail;    /* completers may still append */
    W_UNLOCK(w);
    for (Py_ssize_t k = w->fired_head; k < tail; k++) {
        PyObject *f = w->links[w->fired[k]].future;
        if (PySet_Add(done, f) < 0 || PySet_Discard(not_done, f) < 0) {
            goto out;
        }
    }
    if (waiter_detach(st, w) < 0) {
        goto out;
    }
finish:
    result = PyObject_CallFunctionObjArgs(st->DoneAndNotDoneFutures,
                                          done, not_done, NULL);
out:
    if (locked && foreign_release_all(st, foreign) < 0 && result != NULL) {
        Py_CLEAR(result);
    }
    if (w != NULL) {
        PyObject *exc = cf_PyErr_GetRaisedException();
        if (waiter_detach(st, w) < 0) {
            PyErr_Clear();
        }
        cf_PyErr_SetRaisedException(exc);
        Py_DECREF(w);
    }
    Py_XDECREF(pending);
    Py_XDECREF(foreign);
    Py_XDECREF(done);
    Py_XDECREF(not_done);
    Py_XDECREF(items);      /* NULL if re-listing failed */
    return result;
}

static PyMethodDef waiters_functions[] = {
    {"wait", (PyCFunction)(void (*)(void))cf_wait,
     METH_VARARGS | METH_KEYWORDS, wait_doc},
    {NULL, NULL}
};

int
cf_waiters_module_init(PyObject *mod, cf_state *st)
{
    st->Waiter_type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &Waiter_spec,
                                                               NULL);
    if (st->Waiter_type == NULL) {
        return -1;
    }
    if (cf_as_completed_init(mod, st) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(mod, waiters_functions);
}

/* ------------------------------------------------------ module state */

int
cf_waiters_traverse(cf_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Waiter_type);
    Py_VISIT(st->AsCompleted_type);
    return 0;
}

void
cf_waiters_clear(cf_state *st)
{
    Py_CLEAR(st->Waiter_type);
    Py_CLEAR(st->AsCompleted_type);
}
