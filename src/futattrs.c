/* futattrs: the Future's private attributes that the stdlib's wait(),
 * as_completed() and third-party subclasses read or write (_state,
 * _result, _exception, _condition, _waiters, _done_callbacks): emulated
 * over the C state, made lazily (cost only when touched). */
#include "cfutures.h"

static PyObject *
Future_get_state(PyObject *self, void *closure)
{
    cf_state *st = future_state(self);
    if (st == NULL) {
        return NULL;
    }
    return Py_NewRef(st->state_names[((FutureObject *)self)->fut_state]);
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
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "invalid future state: %R", value);
    return -1;
}

static PyObject *
Future_get_result(PyObject *self, void *closure)
{
    PyObject *r = ((FutureObject *)self)->fut_result;
    return Py_NewRef(r ? r : Py_None);
}

static int
Future_set_result_attr(PyObject *self, PyObject *value, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    Py_XSETREF(fut->fut_result,
               (value == NULL || value == Py_None) ? NULL : Py_NewRef(value));
    return 0;
}

static PyObject *
Future_get_exception(PyObject *self, void *closure)
{
    PyObject *r = ((FutureObject *)self)->fut_exception;
    return Py_NewRef(r ? r : Py_None);
}

static int
Future_set_exception_attr(PyObject *self, PyObject *value, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    Py_XSETREF(fut->fut_exception,
               (value == NULL || value == Py_None) ? NULL : Py_NewRef(value));
    return 0;
}

PyObject *
Future_get_condition(PyObject *self, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    if (fut->fut_condition == NULL) {
        cf_state *st = future_state(self);
        if (st == NULL) {
            return NULL;
        }
        PyObject *c = PyObject_CallNoArgs(st->Condition);
        if (c == NULL) {
            return NULL;
        }
        if (fut->fut_condition == NULL) {   /* Condition() may switch threads */
            fut->fut_condition = c;
        }
        else {
            Py_DECREF(c);
        }
    }
    return Py_NewRef(fut->fut_condition);
}

PyObject *
Future_get_waiters(PyObject *self, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    if (fut->fut_waiters == NULL) {
        fut->fut_waiters = PyList_New(0);
        if (fut->fut_waiters == NULL) {
            return NULL;
        }
    }
    return Py_NewRef(fut->fut_waiters);
}

static int
Future_set_waiters(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyList_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "_waiters must be a list");
        return -1;
    }
    Py_XSETREF(((FutureObject *)self)->fut_waiters, Py_NewRef(value));
    return 0;
}

PyObject *
Future_get_done_callbacks(PyObject *self, void *closure)
{
    FutureObject *fut = (FutureObject *)self;
    if (fut->fut_callbacks == NULL) {
        fut->fut_callbacks = PyList_New(0);
        if (fut->fut_callbacks == NULL) {
            return NULL;
        }
    }
    return Py_NewRef(fut->fut_callbacks);
}

static int
Future_set_done_callbacks(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyList_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "_done_callbacks must be a list");
        return -1;
    }
    Py_XSETREF(((FutureObject *)self)->fut_callbacks, Py_NewRef(value));
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
