/* futattrs: the Future's private attributes that the stdlib's wait(),
 * as_completed() and third-party subclasses read or write (_state,
 * _result, _exception, _condition, _waiters, _done_callbacks): emulated
 * over the C state, made lazily (cost only when touched).  Free-threaded
 * builds read and swap each field under the future's lock and drop the
 * old value after it. */
#include "cfutures.h"

static PyObject *
Future_get_state(PyObject *self, void *closure)
{
    cf_state *st = future_state(self);
    if (st == NULL) {
        return NULL;
    }
    return Py_NewRef(st->state_names[CF_LOAD_STATE((FutureObject *)self)]);
}

static int
Future_set_state(PyObject *self, PyObject *value, void *closure)
{
    cf_state *st = future_state(self);
    if (st == NULL) {
        return -1;
    }
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _state");
        return -1;
    }
    for (int i = 0; i < CF_NSTATES; i++) {
        int eq = PyObject_RichCompareBool(value, st->state_names[i], Py_EQ);
        if (eq < 0) {
            return -1;
        }
        if (eq) {
            FutureObject *fut = (FutureObject *)self;
            CF_FUT_LOCK(fut);
            int old = fut->fut_state;
            CF_SET_STATE(fut, i);
            /* Code that drives the state by hand (pebble) still wakes
             * our blocked waiters. */
            if (i == CF_FINISHED && old != CF_FINISHED) {
                notify_links(fut, CF_EV_FINISH);
            }
            else if (i == CF_CANCELLED && old != CF_CANCELLED) {
                notify_links(fut, CF_EV_CANCEL);
            }
            else if (i == CF_CANCELLED_AND_NOTIFIED && old != i) {
                notify_links(fut, CF_EV_CANCEL | CF_EV_NOTIFY);
            }
            CF_FUT_UNLOCK(fut);
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "invalid future state: %R", value);
    return -1;
}

/* Swap *field for value (a new reference or NULL) under the lock. */
static void
swap_field(FutureObject *fut, PyObject **field, PyObject *value)
{
    CF_FUT_LOCK(fut);
    PyObject *old = *field;
    *field = value;
    CF_FUT_UNLOCK(fut);
    Py_XDECREF(old);
}

static PyObject *
Future_get_result(PyObject *self, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    PyObject *r = cf_fut_field_ref(fut, &fut->fut_result);
    return r ? r : Py_NewRef(Py_None);
}

static int
Future_set_result_attr(PyObject *self, PyObject *value, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    swap_field(fut, &fut->fut_result,
               (value == NULL || value == Py_None) ? NULL : Py_NewRef(value));
    return 0;
}

static PyObject *
Future_get_exception(PyObject *self, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    PyObject *r = cf_fut_field_ref(fut, &fut->fut_exception);
    return r ? r : Py_NewRef(Py_None);
}

static int
Future_set_exception_attr(PyObject *self, PyObject *value, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    swap_field(fut, &fut->fut_exception,
               (value == NULL || value == Py_None) ? NULL : Py_NewRef(value));
    return 0;
}

/* The object in *field, made by make() (a new reference) if unset; a
 * racing maker's object is dropped.  New reference, or NULL. */
static PyObject *
lazy_field(FutureObject *fut, PyObject **field, PyObject *(*make)(void *),
           void *arg)
{
    PyObject *o = cf_fut_field_ref(fut, field);
    if (o != NULL) {
        return o;
    }
    PyObject *made = make(arg);     /* may run Python, switch threads */
    if (made == NULL) {
        return NULL;
    }
    CF_FUT_LOCK(fut);
    if (*field == NULL) {
        *field = Py_NewRef(made);
        o = made;
        made = NULL;
    }
    else {
        o = Py_NewRef(*field);
    }
    CF_FUT_UNLOCK(fut);
    Py_XDECREF(made);
    return o;
}

static PyObject *
make_list(void *arg)
{
    return PyList_New(0);
}

static PyObject *
make_condition(void *arg)
{
    return PyObject_CallNoArgs(((cf_state *)arg)->Condition);
}

PyObject *
Future_get_condition(PyObject *self, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    cf_state *st = future_state(self);
    if (st == NULL) {
        return NULL;
    }
    /* Condition() may switch threads: the first one installed wins */
    return lazy_field(fut, &fut->fut_condition, make_condition, st);
}

PyObject *
Future_get_waiters(PyObject *self, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    return lazy_field(fut, &fut->fut_waiters, make_list, NULL);
}

static int
Future_set_waiters(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyList_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "_waiters must be a list");
        return -1;
    }
    FutureObject *fut = (FutureObject *)self;
    swap_field(fut, &fut->fut_waiters, Py_NewRef(value));
    return 0;
}

PyObject *
Future_get_done_callbacks(PyObject *self, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    return lazy_field(fut, &fut->fut_callbacks, make_list, NULL);
}

static int
Future_set_done_callbacks(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyList_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "_done_callbacks must be a list");
        return -1;
    }
    FutureObject *fut = (FutureObject *)self;
    swap_field(fut, &fut->fut_callbacks, Py_NewRef(value));
    return 0;
}

PyGetSetDef cf_future_getset[] = {
    {"_state", Future_get_state, Future_set_state, NULL, NULL},
    {"_result", Future_get_result, Future_set_result_attr, NULL, NULL},
    {"_exception", Future_get_exception, Future_set_exception_attr, NULL, NULL},
    {"_condition", Future_get_condition, NULL, NULL, NULL},
    {"_waiters", Future_get_waiters, Future_set_waiters, NULL, NULL},
    {"_done_callbacks", Future_get_done_callbacks, Future_set_done_callbacks,
     NULL, NULL},
    {NULL}
};
