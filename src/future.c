/* The C Future: concurrent.futures.Future's state machine, protected by
 * the GIL, and on free-threaded builds by the future's own lock too
 * (CF_FUT_LOCK: plain C only; see the lock order in cfutures.h).
 *
 * The Python package derives cfutures.Future from this type and from
 * concurrent.futures.Future, so isinstance checks in asyncio pass.
 *
 * Stdlib-private attributes (_condition, _waiters, _state, ...) exist for
 * the stdlib's own wait()/as_completed() and for libraries like pebble.
 * _condition and _waiters are created on first touch; once _condition
 * exists every state change takes it, exactly like the stdlib, so code
 * that holds it while reading _state and appending to _waiters cannot miss
 * a completion.
 */
#include "cfutures.h"

cf_state *
future_state(PyObject *self)
{
    return cf_state_from_type(Py_TYPE(self));
}

/* ----------------------------------------------------------- C links */

/* Link and unlink: the caller holds the future's lock. */
void
cf_future_link(FutureObject *fut, cf_link *link)
{
    assert(!link->linked);
    link->prev = NULL;
    link->next = fut->fut_links;
    if (fut->fut_links != NULL) {
        fut->fut_links->prev = link;
    }
    fut->fut_links = link;
    link->linked = 1;
}

void
cf_future_unlink(FutureObject *fut, cf_link *link)
{
    if (!link->linked) {
        return;
    }
    if (link->prev != NULL) {
        link->prev->next = link->next;
    }
    else {
        assert(fut->fut_links == link);
        fut->fut_links = link->next;
    }
    if (link->next != NULL) {
        link->next->prev = link->prev;
    }
    link->prev = link->next = NULL;
    link->linked = 0;
}

/* Post every C waiter that asked for this event.  Never calls Python.
 * The future's lock is held. */
void
notify_links(FutureObject *fut, int event)
{
    for (cf_link *l = fut->fut_links; l != NULL; l = l->next) {
        if (l->waiter->events & event) {
            l->waiter->notify(l->waiter, l, event);
        }
    }
}

/* ------------------------------------------- the _condition protocol */

/* Enter/leave fut->_condition if it was ever created.  acquire() may
 * release the GIL, so callers re-read the state after cond_enter. */
static PyObject *
cond_enter(cf_state *st, FutureObject *fut)
{
    if (CF_FUT_PEEK(fut, fut_condition) == NULL) {
        return NULL;
    }
    PyObject *cond = cf_fut_field_ref(fut, &fut->fut_condition);
    if (cond == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethodNoArgs(cond, st->str_acquire);
    if (r == NULL) {
        Py_DECREF(cond);
        return Py_None;     /* error marker (exception set) */
    }
    Py_DECREF(r);
    return cond;
}

/* Leave the condition; keeps an exception already set. */
static int
cond_exit(cf_state *st, PyObject *cond, int notify)
{
    if (cond == NULL) {
        return 0;
    }
    int rc = 0;
    PyObject *exc = cf_PyErr_GetRaisedException();
    if (notify) {
        PyObject *r = PyObject_CallMethodNoArgs(cond, st->str_notify_all);
        if (r == NULL) {
            rc = -1;
        }
        Py_XDECREF(r);
    }
    PyObject *r = PyObject_CallMethodNoArgs(cond, st->str_release);
    if (r == NULL) {
        rc = -1;
    }
    Py_XDECREF(r);
    Py_DECREF(cond);
    if (exc != NULL) {
        if (rc < 0) {
            PyErr_Clear();
        }
        cf_PyErr_SetRaisedException(exc);
        return -1;
    }
    return rc;
}

#define COND_ENTER(st, fut, cond)                       \
    PyObject *cond = cond_enter((st), (fut));           \
    if (cond == Py_None) {                              \
        return -1;                                      \
    }

/* Free-threaded: "no _condition" was an unlocked peek, and the stdlib's
 * wait() may since have made it, read PENDING and added its waiter.
 * _condition is installed under the future's lock (lazy_field), so seeing
 * it NULL here with the lock held is final; otherwise unlock, undo and
 * take it from the top (COND_RETRY marks the top). */
#if CF_FT
#define COND_RETRY retry: ;
#define COND_RECHECK(fut, cond, undo)                           \
    if ((cond) == NULL && (fut)->fut_condition != NULL) {       \
        CF_FUT_UNLOCK(fut);                                     \
        undo;                                                   \
        goto retry;                                             \
    }
#else
#define COND_RETRY
#define COND_RECHECK(fut, cond, undo)
#endif

/* Call name(fut) on each stdlib-style waiter (in a snapshot of the list). */
static int
call_py_waiters(FutureObject *fut, PyObject *name)
{
    if (CF_FUT_PEEK(fut, fut_waiters) == NULL) {
        return 0;
    }
    PyObject *lst = cf_fut_field_ref(fut, &fut->fut_waiters);
    if (lst == NULL || PyList_GET_SIZE(lst) == 0) {
        Py_XDECREF(lst);
        return 0;
    }
    PyObject *snap = PyList_GetSlice(lst, 0, PyList_GET_SIZE(lst));
    Py_DECREF(lst);
    if (snap == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(snap); i++) {
        PyObject *r = PyObject_CallMethodOneArg(PyList_GET_ITEM(snap, i),
                                                name, (PyObject *)fut);
        if (r == NULL) {
            Py_DECREF(snap);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(snap);
    return 0;
}

/* ------------------------------------------------------ state changes */

static PyObject *
future_repr(PyObject *self);

static void
set_invalid_state(cf_state *st, FutureObject *fut)
{
    /* InvalidStateError('{}: {!r}'.format(self._state, self)) */
    PyObject *r = PyObject_Repr((PyObject *)fut);
    if (r == NULL) {
        return;
    }
    PyObject *msg = PyUnicode_FromFormat("%U: %U",
                                         st->state_names[CF_LOAD_STATE(fut)],
                                         r);
    Py_DECREF(r);
    if (msg != NULL) {
        PyErr_SetObject(st->InvalidStateError, msg);
        Py_DECREF(msg);
    }
}

int
cf_future_complete(cf_state *st, FutureObject *fut, PyObject *result,
                   PyObject *exc)
{
    /* Fast path: nobody ever touched the stdlib protocol. */
    COND_RETRY
    COND_ENTER(st, fut, cond);
    PyObject *new_exc = NULL, *new_res = NULL, *old_exc, *old_res = NULL;
    if (exc != NULL && exc != Py_None) {
        new_exc = Py_NewRef(exc);
    }
    else if (result != NULL && result != Py_None) {
        new_res = Py_NewRef(result);
    }
    CF_FUT_LOCK(fut);
    COND_RECHECK(fut, cond, Py_XDECREF(new_exc); Py_XDECREF(new_res));
    if (cf_state_is_done(fut->fut_state)) {
        CF_FUT_UNLOCK(fut);
        Py_XDECREF(new_exc);
        Py_XDECREF(new_res);
        set_invalid_state(st, fut);
        cond_exit(st, cond, 0);
        return -1;
    }
    old_exc = fut->fut_exception;
    fut->fut_exception = new_exc;
    if (new_exc == NULL) {
        old_res = fut->fut_result;
        fut->fut_result = new_res;
    }
    CF_SET_STATE(fut, CF_FINISHED);
    notify_links(fut, CF_EV_FINISH);
    CF_FUT_UNLOCK(fut);
    Py_XDECREF(old_exc);    /* may run Python: after the lock */
    Py_XDECREF(old_res);
    int rc = call_py_waiters(fut, exc != NULL ? st->str_add_exception
                                              : st->str_add_result);
    if (cond_exit(st, cond, 1) < 0) {
        rc = -1;
    }
    if (rc < 0) {
        return -1;
    }
    return cf_invoke_callbacks(st, fut);
}

int
cf_future_cancel(cf_state *st, FutureObject *fut)
{
    COND_RETRY
    COND_ENTER(st, fut, cond);
    CF_FUT_LOCK(fut);
    COND_RECHECK(fut, cond, (void)0);
    int s = fut->fut_state;
    if (s == CF_PENDING) {
        CF_SET_STATE(fut, CF_CANCELLED);
        notify_links(fut, CF_EV_CANCEL);
    }
    CF_FUT_UNLOCK(fut);
    if (s == CF_RUNNING || s == CF_FINISHED) {
        return cond_exit(st, cond, 0) < 0 ? -1 : 0;
    }
    if (s == CF_CANCELLED || s == CF_CANCELLED_AND_NOTIFIED) {
        return cond_exit(st, cond, 0) < 0 ? -1 : 1;
    }
    if (cond_exit(st, cond, 1) < 0) {
        return -1;
    }
    if (cf_invoke_callbacks(st, fut) < 0) {
        return -1;
    }
    return 1;
}

void
cf_future_fail(cf_state *st, PyObject *fut, PyObject *exc_type, PyObject *msg)
{
    PyObject *exc = msg != NULL ? PyObject_CallOneArg(exc_type, msg) : NULL;
    if (exc == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        exc = cf_PyErr_GetRaisedException();
    }
    if (cf_future_complete(st, (FutureObject *)fut, NULL, exc) < 0) {
        PyErr_WriteUnraisable(fut);
    }
    Py_DECREF(exc);
}

int
cf_future_set_running_or_notify_cancel(cf_state *st, FutureObject *fut)
{
    if (CF_FUT_PEEK(fut, fut_condition) == NULL) {
        CF_FUT_LOCK(fut);
        int pending = fut->fut_state == CF_PENDING;
        if (pending) {
            CF_SET_STATE(fut, CF_RUNNING);
        }
        CF_FUT_UNLOCK(fut);
        if (pending) {
            return 1;
        }
    }
    COND_RETRY
    COND_ENTER(st, fut, cond);
    CF_FUT_LOCK(fut);
    COND_RECHECK(fut, cond, (void)0);
    int s = fut->fut_state;
    if (s == CF_CANCELLED) {
        CF_SET_STATE(fut, CF_CANCELLED_AND_NOTIFIED);
        notify_links(fut, CF_EV_NOTIFY);
    }
    else if (s == CF_PENDING) {
        CF_SET_STATE(fut, CF_RUNNING);
    }
    CF_FUT_UNLOCK(fut);
    if (s == CF_CANCELLED) {
        int rc = call_py_waiters(fut, st->str_add_cancelled);
        if (cond_exit(st, cond, 0) < 0 || rc < 0) {
            return -1;
        }
        return 0;
    }
    if (s == CF_PENDING) {
        return cond_exit(st, cond, 0) < 0 ? -1 : 1;
    }
    /* LOGGER.critical('Future %s in unexpected state: %s', id, state) */
    PyObject *id = PyLong_FromVoidPtr(fut);
    if (id != NULL) {
        PyObject *r = PyObject_CallMethod(st->logger, "critical", "sOO",
                                          "Future %s in unexpected state: %s",
                                          id, st->state_names[s]);
        Py_XDECREF(r);
        Py_DECREF(id);
    }
    if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_RuntimeError, "Future in unexpected state");
    }
    cond_exit(st, cond, 0);
    return -1;
}

PyObject *
cf_future_new(cf_state *st)
{
    PyTypeObject *tp = st->future_class ? st->future_class : st->Future_type;
    return tp->tp_alloc(tp, 0);     /* zeroed: PENDING, no fields */
}

/* --------------------------------------------------------- waiting */

typedef struct {
    cf_waiter base;
    cf_event ev;
} result_waiter;

static void
result_waiter_notify(cf_waiter *w, cf_link *link, int event)
{
    cf_event_post(&((result_waiter *)w)->ev);
}

/* Block until done or deadline.  0: returned (check state), -1: error. */
static int
wait_done(FutureObject *fut, cf_time_t deadline)
{
    if (cf_state_is_done(CF_LOAD_STATE(fut))) {
        return 0;
    }
    result_waiter w;
    w.base.notify = result_waiter_notify;
    w.base.events = CF_EV_CANCEL | CF_EV_FINISH;
    cf_event_init(&w.ev);
    cf_link link = {0};
    link.waiter = &w.base;
    int rc = 0;
    CF_FUT_LOCK(fut);
    int done = cf_state_is_done(fut->fut_state);
    if (!done) {
        cf_future_link(fut, &link);
    }
    CF_FUT_UNLOCK(fut);
    if (!done) {
        rc = cf_block_wait_state(&fut->fut_state, CF_CANCELLED, &w.ev,
                                 deadline);
        CF_FUT_LOCK(fut);
        cf_future_unlink(fut, &link);
        CF_FUT_UNLOCK(fut);
    }
    cf_event_destroy(&w.ev);
    return rc;
}

static int
raise_stored(PyObject *exc)
{
    if (PyExceptionInstance_Check(exc)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    else if (PyExceptionClass_Check(exc)) {
        PyErr_SetNone(exc);
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must derive from BaseException");
    }
    return -1;
}

/* The state, and with FINISHED strong references to the outcome. */
static int
outcome(FutureObject *fut, PyObject **res, PyObject **exc)
{
    *res = *exc = NULL;
    CF_FUT_LOCK(fut);
    int s = fut->fut_state;
    if (s == CF_FINISHED) {
        *res = Py_XNewRef(fut->fut_result);
        *exc = Py_XNewRef(fut->fut_exception);
    }
    CF_FUT_UNLOCK(fut);
    return s;
}

PyObject *
cf_future_result_nowait(cf_state *st, FutureObject *fut)
{
    PyObject *res, *exc;
    int s = outcome(fut, &res, &exc);
    if (s == CF_CANCELLED || s == CF_CANCELLED_AND_NOTIFIED) {
        PyErr_SetNone(st->CancelledError);
        return NULL;
    }
    if (s == CF_FINISHED) {
        /* "is not None", not truthiness: gh-132063, fixed in 3.13.4 */
        if (exc != NULL) {
            raise_stored(exc);
            Py_DECREF(exc);
            Py_XDECREF(res);
            return NULL;
        }
        return res ? res : Py_NewRef(Py_None);
    }
    PyErr_SetNone(st->TimeoutError);
    return NULL;
}

PyObject *
cf_future_result_deadline(cf_state *st, FutureObject *fut, cf_time_t deadline)
{
    if (!cf_state_is_done(CF_LOAD_STATE(fut)) && wait_done(fut, deadline) < 0) {
        return NULL;
    }
    return cf_future_result_nowait(st, fut);
}

/* ---------------------------------------------------- Python methods */

PyDoc_STRVAR(future_cancel_doc,
"cancel($self, /)\n--\n\n"
"Cancel the future if possible.\n\n"
"Returns True if the future was cancelled, False otherwise. A future\n"
"cannot be cancelled if it is running or has already completed.");

static PyObject *
Future_cancel(PyObject *self, PyTypeObject *cls, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs || kwnames) {
        PyErr_SetString(PyExc_TypeError, "cancel() takes no arguments");
        return NULL;
    }
    cf_state *st = PyType_GetModuleState(cls);
    int r = cf_future_cancel(st, (FutureObject *)self);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

PyDoc_STRVAR(future_cancelled_doc,
"cancelled($self, /)\n--\n\nReturn True if the future was cancelled.");

static PyObject *
Future_cancelled(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    int s = CF_LOAD_STATE((FutureObject *)self);
    return PyBool_FromLong(s == CF_CANCELLED || s == CF_CANCELLED_AND_NOTIFIED);
}

PyDoc_STRVAR(future_running_doc,
"running($self, /)\n--\n\nReturn True if the future is currently executing.");

static PyObject *
Future_running(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(CF_LOAD_STATE((FutureObject *)self) == CF_RUNNING);
}

PyDoc_STRVAR(future_done_doc,
"done($self, /)\n--\n\n"
"Return True if the future was cancelled or finished executing.");

static PyObject *
Future_done(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(cf_state_is_done(CF_LOAD_STATE((FutureObject *)self)));
}

/* Parse an optional (timeout) argument, positional or keyword. */
static int
parse_timeout(const char *fname, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames, PyObject **timeout)
{
    *timeout = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError,
                     "Future.%s() takes from 1 to 2 positional arguments but %zd "
                     "were given", fname, nargs + nkw + 1);
        return -1;
    }
    if (nargs == 1) {
        *timeout = args[0];
    }
    else if (nkw == 1) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, 0);
        if (!PyUnicode_Check(k) || !cf_PyUnicode_EqualToUTF8(k, "timeout")) {
            PyErr_Format(PyExc_TypeError,
                         "Future.%s() got an unexpected keyword argument '%S'",
                         fname, k);
            return -1;
        }
        *timeout = args[0];
    }
    return 0;
}

PyDoc_STRVAR(future_result_doc,
"result($self, /, timeout=None)\n--\n\n"
"Return the result of the call that the future represents.\n\n"
"Raises CancelledError if the future was cancelled, TimeoutError if it\n"
"did not finish before the timeout, or the exception the call raised.");

static PyObject *
Future_result(PyObject *self, PyTypeObject *cls, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    FutureObject *fut = (FutureObject *)self;
    cf_state *st = PyType_GetModuleState(cls);
    PyObject *timeout = Py_None;
    if ((nargs || kwnames)
        && parse_timeout("result", args, nargs, kwnames, &timeout) < 0) {
        return NULL;
    }
    if (cf_state_is_done(CF_LOAD_STATE(fut))) {
        return cf_future_result_nowait(st, fut);
    }
    cf_time_t deadline;
    if (cf_timeout_to_deadline(timeout, &deadline) < 0) {
        return NULL;
    }
    return cf_future_result_deadline(st, fut, deadline);
}

PyDoc_STRVAR(future_exception_doc,
"exception($self, /, timeout=None)\n--\n\n"
"Return the exception raised by the call that the future represents,\n"
"or None if it completed without raising.");

static PyObject *
Future_exception(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                 Py_ssize_t nargs, PyObject *kwnames)
{
    FutureObject *fut = (FutureObject *)self;
    cf_state *st = PyType_GetModuleState(cls);
    PyObject *timeout = Py_None;
    if ((nargs || kwnames)
        && parse_timeout("exception", args, nargs, kwnames, &timeout) < 0) {
        return NULL;
    }
    if (!cf_state_is_done(CF_LOAD_STATE(fut))) {
        cf_time_t deadline;
        if (cf_timeout_to_deadline(timeout, &deadline) < 0) {
            return NULL;
        }
        if (wait_done(fut, deadline) < 0) {
            return NULL;
        }
    }
    PyObject *res, *exc;
    int s = outcome(fut, &res, &exc);
    Py_XDECREF(res);
    if (s == CF_CANCELLED || s == CF_CANCELLED_AND_NOTIFIED) {
        PyErr_SetNone(st->CancelledError);
        return NULL;
    }
    if (s == CF_FINISHED) {
        return exc ? exc : Py_NewRef(Py_None);
    }
    PyErr_SetNone(st->TimeoutError);
    return NULL;
}

static PyObject *
one_arg(const char *fname, const char *argname, PyObject *const *args,
        Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw == 1) {
        if (nargs == 1) {
            return args[0];
        }
        if (cf_PyUnicode_EqualToUTF8(PyTuple_GET_ITEM(kwnames, 0), argname)) {
            return args[0];
        }
        PyErr_Format(PyExc_TypeError,
                     "Future.%s() got an unexpected keyword argument '%S'",
                     fname, PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    if (nargs + nkw == 0) {
        PyErr_Format(PyExc_TypeError,
                     "Future.%s() missing 1 required positional argument: '%s'",
                     fname, argname);
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "Future.%s() takes 2 positional arguments but %zd were given",
                     fname, nargs + nkw + 1);
    }
    return NULL;
}

PyDoc_STRVAR(future_add_done_callback_doc,
"add_done_callback($self, /, fn)\n--\n\n"
"Attaches a callable that will be called when the future finishes.\n\n"
"The callable is called with this future as its only argument, in the\n"
"thread that completes the future, or at once if it is already done.\n"
"Callables are called in the order that they were added.");

static PyObject *
Future_add_done_callback(PyObject *self, PyTypeObject *cls,
                         PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    FutureObject *fut = (FutureObject *)self;
    PyObject *fn = one_arg("add_done_callback", "fn", args, nargs, kwnames);
    if (fn == NULL) {
        return NULL;
    }
    /* append, unless done: then call at once */
    int r = 1;
#if CF_FT
    /* the list is made outside fut_mutex: allocating may run the GC */
    PyObject *fresh = NULL;
again:
#endif
    CF_FUT_LOCK(fut);
    if (!cf_state_is_done(fut->fut_state)) {
        if (fut->fut_callbacks == NULL) {
#if CF_FT
            if (fresh == NULL) {
                CF_FUT_UNLOCK(fut);
                fresh = PyList_New(0);
                if (fresh == NULL) {
                    return NULL;
                }
                goto again;
            }
            fut->fut_callbacks = fresh;
            fresh = NULL;
#else
            fut->fut_callbacks = PyList_New(0);     /* runs no Python */
#endif
        }
        /* may realloc, runs no Python (see the lock order in cfutures.h) */
        r = fut->fut_callbacks ? PyList_Append(fut->fut_callbacks, fn) : -1;
    }
    CF_FUT_UNLOCK(fut);
#if CF_FT
    Py_XDECREF(fresh);
#endif
    if (r <= 0) {
        return r < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (cf_call_callback(PyType_GetModuleState(cls), self, fn) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(future_set_running_or_notify_cancel_doc,
"set_running_or_notify_cancel($self, /)\n--\n\n"
"Mark the future as running or process any cancel notifications.\n\n"
"Should only be used by Executor implementations and unit tests.");

static PyObject *
Future_set_running_or_notify_cancel(PyObject *self, PyTypeObject *cls,
                                    PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    if (nargs || kwnames) {
        PyErr_SetString(PyExc_TypeError,
                        "set_running_or_notify_cancel() takes no arguments");
        return NULL;
    }
    int r = cf_future_set_running_or_notify_cancel(PyType_GetModuleState(cls),
                                                   (FutureObject *)self);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

/* cf_future_complete from Python: see cf_enter_py_frames (compat.h). */
static int
complete_from_python(cf_state *st, FutureObject *fut, PyObject *result,
                     PyObject *exc)
{
#if CF_SET_RESULT_CHECK
    PyObject *cbs = CF_FUT_PEEK(fut, fut_callbacks) == NULL
                    ? NULL : cf_fut_field_ref(fut, &fut->fut_callbacks);
    Py_ssize_t ncbs = cbs != NULL ? PyList_GET_SIZE(cbs) : 0;
    Py_XDECREF(cbs);
    if (ncbs) {
        PyThreadState *ts = PyThreadState_Get();
        if (cf_enter_py_frames(ts, CF_SET_RESULT_CHECK) < 0) {
            return -1;
        }
        cf_leave_py_frames(ts, CF_SET_RESULT_CHECK - CF_SET_RESULT_HOLD);
        int rc = cf_future_complete(st, fut, result, exc);
        cf_leave_py_frames(ts, CF_SET_RESULT_HOLD);
        return rc;
    }
#endif
    return cf_future_complete(st, fut, result, exc);
}

PyDoc_STRVAR(future_set_result_doc,
"set_result($self, /, result)\n--\n\n"
"Sets the return value of work associated with the future.\n\n"
"Should only be used by Executor implementations and unit tests.");

static PyObject *
Future_set_result(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *result = one_arg("set_result", "result", args, nargs, kwnames);
    if (result == NULL) {
        return NULL;
    }
    if (complete_from_python(PyType_GetModuleState(cls), (FutureObject *)self,
                             result, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(future_set_exception_doc,
"set_exception($self, /, exception)\n--\n\n"
"Sets the result of the future as being the given exception.\n\n"
"Should only be used by Executor implementations and unit tests.");

static PyObject *
Future_set_exception(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *exc = one_arg("set_exception", "exception", args, nargs, kwnames);
    if (exc == NULL) {
        return NULL;
    }
    cf_state *st = PyType_GetModuleState(cls);
    FutureObject *fut = (FutureObject *)self;
    if (exc == Py_None) {
        /* Stored as None: the future "returned" its (None) result. */
        PyObject *res = cf_fut_field_ref(fut, &fut->fut_result);
        int r = complete_from_python(st, fut, res, NULL);
        Py_XDECREF(res);
        if (r < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (complete_from_python(st, fut, NULL, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(future_invoke_callbacks_doc,
"_invoke_callbacks($self, /)\n--\n\n"
"Run the pending done-callbacks (stdlib-private protocol).");

static PyObject *
Future__invoke_callbacks(PyObject *self, PyTypeObject *cls,
                         PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    if (cf_invoke_callbacks(PyType_GetModuleState(cls), (FutureObject *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------- repr */

static PyObject *
future_repr(PyObject *self)
{
    FutureObject *fut = (FutureObject *)self;
    cf_state *st = future_state(self);
    if (st == NULL) {
        return NULL;
    }
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(self),
                                            "__name__");
    if (name == NULL) {
        return NULL;
    }
    PyObject *fres, *fexc;
    int s = outcome(fut, &fres, &fexc);
    PyObject *desc = st->state_desc[s];
    PyObject *res = NULL;
    if (s == CF_FINISHED) {
        int raised = 0;
        if (fexc != NULL) {
            raised = PyObject_IsTrue(fexc);
            if (raised < 0) {
                goto done;
            }
        }
        PyObject *obj = raised ? fexc : (fres ? fres : Py_None);
        PyObject *oname = PyObject_GetAttrString((PyObject *)Py_TYPE(obj),
                                                 "__name__");
        if (oname == NULL) {
            goto done;
        }
        res = PyUnicode_FromFormat("<%U at %p state=%U %s %U>", name,
                                   (void *)self, desc,
                                   raised ? "raised" : "returned", oname);
        Py_DECREF(oname);
    }
    else {
        res = PyUnicode_FromFormat("<%U at %p state=%U>", name,
                                   (void *)self, desc);
    }
done:
    Py_XDECREF(fres);
    Py_XDECREF(fexc);
    Py_DECREF(name);
    return res;
}

/* ------------------------------------------------------ lifecycle */

static int
Future_traverse(PyObject *self, visitproc visit, void *arg)
{
    FutureObject *fut = (FutureObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(fut->fut_result);
    Py_VISIT(fut->fut_exception);
    Py_VISIT(fut->fut_callbacks);
    Py_VISIT(fut->fut_condition);
    Py_VISIT(fut->fut_waiters);
    return 0;
}

static int
Future_clear(PyObject *self)
{
    FutureObject *fut = (FutureObject *)self;
    Py_CLEAR(fut->fut_result);
    Py_CLEAR(fut->fut_exception);
    Py_CLEAR(fut->fut_callbacks);
    Py_CLEAR(fut->fut_condition);
    Py_CLEAR(fut->fut_waiters);
    return 0;
}

static void
Future_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    /* A C waiter holds a strong reference while linked, so no links can
     * remain on a dying future. */
    assert(((FutureObject *)self)->fut_links == NULL);
    Future_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int
Future_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args) + (kwds ? PyDict_GET_SIZE(kwds) : 0);
    if (n) {
        if (kwds && PyDict_GET_SIZE(kwds)) {
            PyObject *key = NULL, *value;
            Py_ssize_t pos = 0;
            PyDict_Next(kwds, &pos, &key, &value);
            PyErr_Format(PyExc_TypeError,
                         "Future.__init__() got an unexpected keyword "
                         "argument '%S'", key);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "Future.__init__() takes 1 positional argument but "
                         "%zd were given", n + 1);
        }
        return -1;
    }
    FutureObject *fut = (FutureObject *)self;
    /* The stdlib's __init__ makes a new _condition and _waiters: a thread
     * blocked on the old ones is never woken (result() sleeps out its
     * timeout, then reads the state; wait()/as_completed() then fail to
     * remove their waiter from the new list).  Orphan our links the same
     * way; their owners, not the future, hold their memory. */
    PyObject *old[5];
    CF_FUT_LOCK(fut);
    if (fut->fut_links == NULL && fut->fut_result == NULL
        && fut->fut_exception == NULL && fut->fut_callbacks == NULL
        && fut->fut_condition == NULL && fut->fut_waiters == NULL) {
        /* the usual case, a new future: nothing to orphan or drop */
        CF_SET_STATE(fut, CF_PENDING);
        CF_FUT_UNLOCK(fut);
        return 0;
    }
    for (cf_link *l = fut->fut_links, *next; l != NULL; l = next) {
        next = l->next;
        l->prev = l->next = NULL;
        l->linked = 0;
        l->orphaned = 1;
    }
    fut->fut_links = NULL;
    CF_SET_STATE(fut, CF_PENDING);
    PyObject **f[5] = {&fut->fut_result, &fut->fut_exception,
                       &fut->fut_callbacks, &fut->fut_condition,
                       &fut->fut_waiters};
    for (int i = 0; i < 5; i++) {
        old[i] = *f[i];
        *f[i] = NULL;
    }
    CF_FUT_UNLOCK(fut);
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(old[i]);
    }
    return 0;
}

PyDoc_STRVAR(future_copy_state_doc,
"_cf_copy_state($self, other, /)\n--\n\n"
"copy.copy() support: take other's state and outcome, and share its\n"
"_condition, _waiters and _done_callbacks (the stdlib's copy shares its\n"
"__dict__'s objects).  Native waiters stay with other.");

static PyObject *
Future__cf_copy_state(PyObject *self, PyObject *other)
{
    cf_state *st = future_state(self);
    if (st == NULL) {
        return NULL;
    }
    if (!cf_is_future(st, other)) {
        PyErr_SetString(PyExc_TypeError, "_cf_copy_state() needs a Future");
        return NULL;
    }
    FutureObject *src = (FutureObject *)other;
    FutureObject *dst = (FutureObject *)self;
    if (CF_FUT_PEEK(dst, fut_links) != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "future is waited on");
        return NULL;
    }
    /* Make the shared objects exist in src first (may run Python). */
    PyObject *cond = Future_get_condition(other, NULL);
    if (cond == NULL) {
        return NULL;
    }
    Py_DECREF(cond);
    PyObject *w = Future_get_waiters(other, NULL);
    if (w == NULL) {
        return NULL;
    }
    Py_DECREF(w);
    PyObject *cbs = Future_get_done_callbacks(other, NULL);
    if (cbs == NULL) {
        return NULL;
    }
    Py_DECREF(cbs);
    /* snapshot src, then install into dst: one lock at a time */
    PyObject *v[5];
    CF_FUT_LOCK(src);
    v[0] = Py_XNewRef(src->fut_result);
    v[1] = Py_XNewRef(src->fut_exception);
    v[2] = Py_XNewRef(src->fut_condition);
    v[3] = Py_XNewRef(src->fut_waiters);
    v[4] = Py_XNewRef(src->fut_callbacks);
    int s = src->fut_state;
    CF_FUT_UNLOCK(src);
    CF_FUT_LOCK(dst);
    PyObject **f[5] = {&dst->fut_result, &dst->fut_exception,
                       &dst->fut_condition, &dst->fut_waiters,
                       &dst->fut_callbacks};
    for (int i = 0; i < 5; i++) {
        PyObject *o = *f[i];
        *f[i] = v[i];
        v[i] = o;
    }
    CF_SET_STATE(dst, s);
    CF_FUT_UNLOCK(dst);
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(v[i]);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(future_native_waiters_doc,
"_cf_native_waiters($self, /)\n--\n\n"
"Debugging aid for tests: the number of native waiter links (blocked\n"
"result()/exception(), wait(), as_completed()) on this future; they are\n"
"not in _waiters.");

static PyObject *
Future__cf_native_waiters(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = 0;
    FutureObject *fut = (FutureObject *)self;
    CF_FUT_LOCK(fut);
    for (cf_link *l = fut->fut_links; l; l = l->next) {
        n++;
    }
    CF_FUT_UNLOCK(fut);
    return PyLong_FromSsize_t(n);
}

#define METH_FAST (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef Future_methods[] = {
    {"cancel", (PyCFunction)(void (*)(void))Future_cancel, METH_FAST,
     future_cancel_doc},
    {"cancelled", Future_cancelled, METH_NOARGS, future_cancelled_doc},
    {"running", Future_running, METH_NOARGS, future_running_doc},
    {"done", Future_done, METH_NOARGS, future_done_doc},
    {"result", (PyCFunction)(void (*)(void))Future_result, METH_FAST,
     future_result_doc},
    {"exception", (PyCFunction)(void (*)(void))Future_exception, METH_FAST,
     future_exception_doc},
    {"add_done_callback", (PyCFunction)(void (*)(void))Future_add_done_callback,
     METH_FAST, future_add_done_callback_doc},
    {"set_running_or_notify_cancel",
     (PyCFunction)(void (*)(void))Future_set_running_or_notify_cancel,
     METH_FAST, future_set_running_or_notify_cancel_doc},
    {"set_result", (PyCFunction)(void (*)(void))Future_set_result, METH_FAST,
     future_set_result_doc},
    {"set_exception", (PyCFunction)(void (*)(void))Future_set_exception,
     METH_FAST, future_set_exception_doc},
    {"_invoke_callbacks", (PyCFunction)(void (*)(void))Future__invoke_callbacks,
     METH_FAST, future_invoke_callbacks_doc},
    {"_cf_copy_state", Future__cf_copy_state, METH_O, future_copy_state_doc},
    {"_cf_native_waiters", Future__cf_native_waiters, METH_NOARGS,
     future_native_waiters_doc},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     PyDoc_STR("See PEP 585")},
    {NULL, NULL}
};


PyDoc_STRVAR(Future_doc,
"Future()\n--\n\n"
"Represents the result of an asynchronous computation (C core).");

static PyType_Slot Future_slots[] = {
    {Py_tp_doc, (void *)Future_doc},
    {Py_tp_dealloc, Future_dealloc},
    {Py_tp_traverse, Future_traverse},
    {Py_tp_clear, Future_clear},
    {Py_tp_repr, future_repr},
    {Py_tp_init, Future_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_methods, Future_methods},
    {Py_tp_getset, cf_future_getset},
    {0, NULL},
};

static PyType_Spec Future_spec = {
    .name = "cfutures._cfutures.CFuture",
    .basicsize = sizeof(FutureObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC),
    .slots = Future_slots,
};

int
cf_future_module_init(PyObject *mod, cf_state *st)
{
    st->Future_type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &Future_spec,
                                                               NULL);
    if (st->Future_type == NULL) {
        return -1;
    }
    return PyModule_AddType(mod, st->Future_type);
}

/* ------------------------------------------------------ module state */

int
cf_future_traverse(cf_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->Future_type);
    Py_VISIT(st->future_class);
    return 0;
}

void
cf_future_clear(cf_state *st)
{
    Py_CLEAR(st->Future_type);
    Py_CLEAR(st->future_class);
}
