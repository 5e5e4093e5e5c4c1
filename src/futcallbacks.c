/* A future's done-callbacks: running them (each once, outside any lock of
 * ours) and logging what they raise, as the stdlib does (future.c calls
 * these when a future completes, and add_done_callback() on a done one). */
#include "cfutures.h"

/* LOGGER.exception('exception calling callback for %r', fut), inside the
 * stdlib's "except Exception:" block: an error raised by the logging
 * itself (a RecursionError deep in a callback chain) propagates, with the
 * callback's exception as its context.  0, or -1 with it set. */
static int
log_callback_error(cf_state *st, PyObject *fut, PyObject *exc)
{
    PyObject *r = NULL, *kwargs = NULL, *meth = NULL;
    PyObject *args = Py_BuildValue("(sO)", "exception calling callback for %r",
                                   fut);
    if (args != NULL) {
        /* LOGGER.exception, not .error: the same frames as the stdlib */
        meth = PyObject_GetAttr(st->logger, st->str_exception);
    }
    if (meth != NULL) {
        kwargs = PyDict_New();
    }
    if (kwargs != NULL
        && PyDict_SetItem(kwargs, st->str_exc_info, exc) == 0) {
        r = PyObject_Call(meth, args, kwargs);
    }
    Py_XDECREF(args);
    Py_XDECREF(meth);
    Py_XDECREF(kwargs);
    if (r == NULL) {
        PyObject *err = cf_PyErr_GetRaisedException();
        if (err != exc) {
            PyException_SetContext(err, Py_NewRef(exc));
        }
        cf_PyErr_SetRaisedException(err);
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Call fn(fut); Exception subclasses are logged and swallowed, anything
 * else (KeyboardInterrupt, SystemExit) propagates as in the stdlib.
 *
 * A callback that completes another future runs that future's callbacks
 * from inside this call: a chain of them recurses in C.  The stdlib's
 * chain is Python frames and ends in a logged RecursionError; ours counts
 * against the recursion limit too (Py_EnterRecursiveCall) and, whatever
 * the limit is set to, never lets the C stack run low (cf_stack_low). */
int
cf_call_callback(cf_state *st, PyObject *fut, PyObject *fn)
{
    PyObject *r = NULL;
    PyThreadState *ts = PyThreadState_Get();
    int entered = 0;
    if (cf_stack_low()) {
        PyErr_SetString(PyExc_RecursionError,
                        "maximum recursion depth exceeded while calling a "
                        "Python object");
    }
    else if (Py_EnterRecursiveCall(" while calling a Python object") == 0) {
        entered = 1;
        if (cf_enter_py_frames(ts, CF_CALLBACK_FRAMES) == 0) {
            entered = 2;
            r = PyObject_CallOneArg(fn, fut);
        }
    }
    int rc = 0;
    if (r != NULL) {
        Py_DECREF(r);
    }
    else if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        rc = -1;
    }
    else {
        /* logged at the depth the stdlib's _invoke_callbacks logs from */
        PyObject *exc = cf_PyErr_GetRaisedException();
        rc = log_callback_error(st, fut, exc);
        Py_DECREF(exc);
    }
    if (entered == 2) {
        cf_leave_py_frames(ts, CF_CALLBACK_FRAMES);
    }
    if (entered) {
        Py_LeaveRecursiveCall();
    }
    return rc;
}

/* Run and drop the callbacks.  The list is moved out first: a callback may
 * re-enter the future (and, the future being done, add_done_callback then
 * calls at once instead of appending). */
int
cf_invoke_callbacks(cf_state *st, FutureObject *fut)
{
    if (CF_FUT_PEEK(fut, fut_callbacks) == NULL) {
        return 0;
    }
    /* taken under the lock: each callback runs once, whoever races */
    CF_FUT_LOCK(fut);
    PyObject *cbs = fut->fut_callbacks;
    fut->fut_callbacks = NULL;
    CF_FUT_UNLOCK(fut);
    if (cbs == NULL) {
        return 0;
    }
#if CF_FT
    /* a tuple: whoever read _done_callbacks earlier may still mutate cbs
     * from another thread (with the GIL, the list is iterated like the
     * stdlib does) */
    PyObject *t = PyList_AsTuple(cbs);
    Py_DECREF(cbs);
    if (t == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        rc = cf_call_callback(st, (PyObject *)fut, PyTuple_GET_ITEM(t, i));
        if (rc < 0) {
            break;
        }
    }
    Py_DECREF(t);
    return rc;
#else
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(cbs); i++) {
        PyObject *fn = Py_NewRef(PyList_GET_ITEM(cbs, i));
        rc = cf_call_callback(st, (PyObject *)fut, fn);
        Py_DECREF(fn);
        if (rc < 0) {
            break;
        }
    }
    Py_DECREF(cbs);
    return rc;
#endif
}
