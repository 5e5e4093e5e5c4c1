/* interppool: the InterpreterPool type (native base of
 * cfutures.InterpreterPoolExecutor): submit(), shutdown(), completing
 * futures under the main GIL, and the module functions (see
 * interppool.h for the whole shape). */
#include "interppool.h"

#include <string.h>

static const char BROKEN_MSG[] =
    "A thread initializer failed, the thread pool is not usable anymore";

/* ================================================ main-GIL helpers */

void
interp_task_free(InterpTask *t)
{
    Py_XDECREF((PyObject *)t->future);
    PyMem_RawFree(t);
}

static void
core_release(InterpCore *c)
{
    InterpTask *t = InterpCore_Decref(c);
    while (t != NULL) {
        InterpTask *next = t->next;
        interp_task_free(t);
        t = next;
    }
}

static void
worker_capsule_destructor(PyObject *capsule)
{
    InterpWorker *w = PyCapsule_GetPointer(capsule, WORKER_CAPSULE);
    if (w == NULL) {
        PyErr_Clear();
        return;
    }
    RawBuf_Clear(&w->syspath);
    RawBuf_Clear(&w->mainfile);
    Py_CLEAR(w->init_error);
    core_release(w->core);
    PyMem_RawFree(w);
}

/* An exception escaped future completion (a done-callback raised a
 * BaseException): the stdlib logs 'Exception in worker'. */
void
interp_log_worker_error(cf_state *st)
{
    PyObject *exc = cf_PyErr_GetRaisedException();
    cf_log_critical(st, "Exception in worker", exc);
    Py_XDECREF(exc);
}

static PyObject *
loads_raw(cf_state *st, const RawBuf *b)
{
    PyObject *bytes = PyBytes_FromStringAndSize(b->data, (Py_ssize_t)b->len);
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_CallOneArg(st->interp.loads, bytes);
    Py_DECREF(bytes);
    return obj;
}

/* Rebuild what a task raised: the original exception (unpickled) with an
 * ExecutionFailed as __cause__, or the ExecutionFailed alone when the
 * exception could not cross -- as 3.14's `raise exc from wrapper`.
 * Returns a new reference; never NULL (falls back to the error met). */
PyObject *
interp_result_to_exception(cf_state *st, InterpResult *r)
{
    PyObject *wrapper = NULL, *orig = NULL;
    PyObject *strs[5] = {
        RawBuf_AsStr(&r->type_name), RawBuf_AsStr(&r->type_qualname),
        RawBuf_AsStr(&r->type_module), RawBuf_AsStr(&r->msg),
        RawBuf_AsStr(&r->errdisplay),
    };
    if (strs[0] && strs[1] && strs[2] && strs[3] && strs[4]) {
        wrapper = PyObject_Vectorcall(st->interp.make_failed, strs, 5, NULL);
    }
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(strs[i]);
    }
    if (wrapper == NULL) {
        return cf_PyErr_GetRaisedException();
    }
    if (r->pickled.data != NULL) {
        orig = loads_raw(st, &r->pickled);
        if (orig == NULL) {
            PyErr_Clear();
        }
        else if (!PyExceptionInstance_Check(orig)) {
            Py_CLEAR(orig);
        }
    }
    if (orig == NULL) {
        return wrapper;
    }
#if PY_VERSION_HEX >= 0x030E0000
    /* A NotShareableError of the worker's XI_HELPERS: as 3.14, its cause
     * is a plain Exception with the text of what failed. */
    PyObject *text = NULL;
    if (PyObject_GetOptionalAttrString(orig, "_cf_xi_cause", &text) < 0) {
        PyErr_Clear();
    }
    if (text != NULL) {
        PyObject *cause = PyObject_CallOneArg(PyExc_Exception, text);
        Py_DECREF(text);
        if (cause == NULL || PyObject_DelAttrString(orig, "_cf_xi_cause") < 0) {
            PyErr_Clear();
        }
        if (cause != NULL) {
            Py_SETREF(wrapper, cause);
        }
    }
#endif
    PyException_SetCause(orig, wrapper);     /* steals; suppresses context */
    return orig;
}

/* Complete fut from a worker's raw result.  Main GIL held. */
void
interp_deliver(cf_state *st, FutureObject *fut, InterpResult *r)
{
    PyObject *value = NULL, *exc = NULL;
    if (r->kind == RES_VALUE) {
        value = loads_raw(st, &r->pickled);
        if (value == NULL) {
            exc = cf_PyErr_GetRaisedException();
        }
    }
    else {
        exc = interp_result_to_exception(st, r);
    }
    if (cf_future_complete(st, fut, value, exc) < 0) {
        interp_log_worker_error(st);
    }
    Py_XDECREF(value);
    Py_XDECREF(exc);
}

/* Fail (or drop, if already done) the tasks taken out of a broken pool. */
static void
fail_tasks(cf_state *st, InterpTask *t)
{
    while (t != NULL) {
        InterpTask *next = t->next;
        FutureObject *fut = (FutureObject *)t->future;
        if (!cf_state_is_done(CF_LOAD_STATE(fut))) {
            PyObject *exc = PyObject_CallFunction(st->interp.broken, "s",
                                                  BROKEN_MSG);
            if (exc == NULL
                || cf_future_complete(st, fut, NULL, exc) < 0) {
                /* free-threaded: cancelled meanwhile is not an error */
                if (exc != NULL && cf_state_is_done(CF_LOAD_STATE(fut))
                    && PyErr_ExceptionMatches(st->InvalidStateError)) {
                    PyErr_Clear();
                }
                else {
                    interp_log_worker_error(st);
                }
            }
            Py_XDECREF(exc);
        }
        interp_task_free(t);
        t = next;
    }
}

static void
cancel_tasks(cf_state *st, InterpTask *t)
{
    while (t != NULL) {
        InterpTask *next = t->next;
        if (cf_future_cancel(st, (FutureObject *)t->future) < 0) {
            PyErr_WriteUnraisable(NULL);
        }
        interp_task_free(t);
        t = next;
    }
}

/* The initializer (or interpreter creation) failed in a worker: log it
 * as the stdlib does, break the pool, fail everything queued. */
void
interp_worker_init_failed(cf_state *st, InterpCore *core, PyObject *exc)
{
    cf_log_critical(st, "Exception in initializer:", exc);
    fail_tasks(st, InterpCore_Break(core));
}

/* pickle.dumps((fn, args, kwargs)).  The slow path, in Python
 * (cfutures.interpreter._check_main), runs only when the bytes mention
 * __main__ at all (a worker has its own __main__) or, on 3.14+, when the
 * plain pickle failed (stateless functions cross as code, the rest fails
 * with NotShareableError). */
static PyObject *
pickle_call(cf_state *st, PyObject *fn, PyObject *args, PyObject *kwargs)
{
    PyObject *call = PyTuple_Pack(3, fn, args, kwargs);
    if (call == NULL) {
        return NULL;
    }
    PyObject *stack[2] = {call, st->interp.protocol};
    PyObject *data = PyObject_Vectorcall(st->interp.dumps, stack, 2, NULL);
    if (data != NULL && !PyBytes_Check(data)) {
        Py_SETREF(data, NULL);
        PyErr_SetString(PyExc_TypeError, "pickle.dumps() did not return bytes");
    }
    int failed = data == NULL;
#if PY_VERSION_HEX >= 0x030E0000
    if (failed && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
    }
    else
#endif
    if (failed
        || memmem(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data),
                  "__main__", 8) == NULL) {
        Py_DECREF(call);
        return data;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(
        st->interp.check_main, call, failed ? Py_True : Py_False, NULL);
    Py_DECREF(call);
    if (r == NULL) {
        Py_XDECREF(data);
        return NULL;
    }
    if (PyBytes_Check(r)) {
        Py_XSETREF(data, r);
        return data;
    }
    Py_DECREF(r);
    if (data == NULL) {
        PyErr_SetString(PyExc_TypeError, "call could not be pickled");
    }
    return data;
}

int
interp_check_ready(cf_state *st)
{
    if (st->interp.dumps == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cfutures.interpreter is not initialized");
        return -1;
    }
    return 0;
}

/* =========================================================== the type */

typedef struct {
    PyObject_HEAD
    InterpCore *ip_core;        /* NULL until _setup() */
    PyObject *ip_threads;       /* set of threading.Thread */
    PyObject *ip_prefix;        /* thread_name_prefix */
    PyObject *ip_init_error;    /* 3.14+: the initializer could not cross */
} InterpPoolObject;

static int
raise_push_error(cf_state *st, int err)
{
    switch (err) {
    case CF_ERR_IP_BROKEN: {
        PyObject *exc = PyObject_CallFunction(st->interp.broken, "s",
                                              BROKEN_MSG);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        break;
    }
    case CF_ERR_IP_SHUTDOWN:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        break;
    case CF_ERR_IP_EXITING:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after "
                        "interpreter shutdown");
        break;
    case CF_ERR_IP_FORKED:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures in a child process: "
                        "this InterpreterPoolExecutor was created before "
                        "fork() and its workers exist only in the parent");
        break;
    default:
        PyErr_NoMemory();
    }
    return -1;
}

/* Start worker number `index`: threading.Thread(name=f"{prefix}_{index}",
 * target=_interp_worker, args=(handle,)).start(); remember it. */
static int
spawn_worker(cf_state *st, InterpPoolObject *self, int index)
{
    PyObject *name = NULL, *handle = NULL, *args = NULL, *kwargs = NULL;
    PyObject *thread = NULL, *r = NULL, *syspath_data = NULL;
    int rc = -1;

    InterpWorker *w = PyMem_RawCalloc(1, sizeof(InterpWorker));
    if (w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Workers start with the main interpreter's current sys.path: a fresh
     * interpreter only gets the start-up path, which misses entries added
     * at run time (pytest's rootdir, a script's own sys.path.insert). */
#if CF_FT
    /* a strong reference: another thread may replace sys.path */
    PyObject *sys = PyImport_ImportModule("sys");
    PyObject *path = sys ? PyObject_GetAttrString(sys, "path") : NULL;
    Py_XDECREF(sys);
    PyErr_Clear();
#else
    PyObject *path = Py_XNewRef(PySys_GetObject("path"));
#endif
    if (path != NULL) {
        PyObject *stack[2] = {path, st->interp.protocol};
        syspath_data = PyObject_Vectorcall(st->interp.dumps, stack, 2, NULL);
        if (syspath_data == NULL
            || RawBuf_FromBytes(&w->syspath, syspath_data) < 0) {
            PyErr_Clear();      /* best effort: keep the default path */
        }
        Py_CLEAR(syspath_data);
        Py_DECREF(path);
    }
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14's "<fake __main__>": a worker that meets a reference into
     * __main__ runs this script (best effort: a missing file just fails
     * that unpickling). */
    PyObject *mainname = PyUnicode_FromString("__main__");
    PyObject *mainmod = mainname ? PyImport_GetModule(mainname) : NULL;
    Py_XDECREF(mainname);
    if (mainmod != NULL) {
        PyObject *file = PyObject_GetAttrString(mainmod, "__file__");
        RawBuf_FromStr(&w->mainfile, file);     /* clears any error */
        Py_XDECREF(file);
        Py_DECREF(mainmod);
    }
    PyErr_Clear();
#endif
    w->init_error = Py_XNewRef(self->ip_init_error);
    w->core = self->ip_core;
    InterpCore_Incref(w->core);
    handle = PyCapsule_New(w, WORKER_CAPSULE, worker_capsule_destructor);
    if (handle == NULL) {
        RawBuf_Clear(&w->syspath);
        RawBuf_Clear(&w->mainfile);
        Py_CLEAR(w->init_error);
        core_release(w->core);
        PyMem_RawFree(w);
        return -1;
    }
    name = PyUnicode_FromFormat("%U_%d", self->ip_prefix, index);
    args = PyTuple_Pack(1, handle);
    kwargs = Py_BuildValue("{sOsOsO}", "name", name, "target",
                           st->interp.worker_fn, "args", args);
    if (name == NULL || args == NULL || kwargs == NULL) {
        goto done;
    }
    PyObject *noargs = PyTuple_New(0);
    if (noargs == NULL) {
        goto done;
    }
    thread = PyObject_Call(st->interp.Thread, noargs, kwargs);
    Py_DECREF(noargs);
    if (thread == NULL) {
        goto done;
    }
    /* Register before starting: a running worker the exit hook does not
     * know about would block interpreter exit in threading._shutdown. */
    if (PyObject_SetItem(st->interp.registry, thread, handle) < 0
        || PySet_Add(self->ip_threads, thread) < 0) {
        goto done;
    }
    r = PyObject_CallMethod(thread, "start", NULL);
    if (r == NULL) {
        /* Never started: forget it (the registry entry dies with it). */
        PyObject *exc = cf_PyErr_GetRaisedException();
        if (PySet_Discard(self->ip_threads, thread) < 0) {
            PyErr_Clear();
        }
        cf_PyErr_SetRaisedException(exc);
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(r);
    Py_XDECREF(thread);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(name);
    Py_XDECREF(handle);
    return rc;
}

PyDoc_STRVAR(InterpPool_submit_doc,
"submit($self, fn, /, *args, **kwargs)\n--\n\n"
"Submits a callable to be executed with the given arguments.\n\n"
"Schedules the callable to be executed as fn(*args, **kwargs) in a worker\n"
"interpreter and returns a Future instance representing the execution of\n"
"the callable.  The callable, its arguments and its result are pickled;\n"
"functions defined in __main__ are refused.\n\n"
"Returns:\n"
"    A Future representing the given call.");

static PyObject *
InterpPool_submit(PyObject *op, PyTypeObject *cls, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    cf_state *st = PyType_GetModuleState(cls);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "ThreadPoolExecutor.submit() missing 1 required "
                        "positional argument: 'fn'");
        return NULL;
    }
    if (self->ip_core == NULL || self->ip_threads == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "InterpreterPoolExecutor.__init__() was not called");
        return NULL;
    }
    if (interp_check_ready(st) < 0) {
        return NULL;
    }
    /* The stdlib's order: broken, shutdown, interpreter shutdown. */
    int shutdown, broken;
    InterpCore_Flags(self->ip_core, &shutdown, &broken);
    if (broken || shutdown || st->interp.exiting) {
        raise_push_error(st, broken ? CF_ERR_IP_BROKEN
                             : shutdown ? CF_ERR_IP_SHUTDOWN
                             : CF_ERR_IP_EXITING);
        return NULL;
    }
    PyObject *fn = args[0];
    if (PyUnicode_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "scripts not supported");
        return NULL;
    }

    PyObject *fargs = PyTuple_New(nargs - 1);
    PyObject *fkwargs = PyDict_New();
    PyObject *fut = NULL, *data = NULL;
    if (fargs == NULL || fkwargs == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(fargs, i - 1, Py_NewRef(args[i]));
    }
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(fkwargs, PyTuple_GET_ITEM(kwnames, i),
                               args[nargs + i]) < 0) {
                goto error;
            }
        }
    }
    fut = cf_future_new(st);
    if (fut == NULL) {
        goto error;
    }
    data = pickle_call(st, fn, fargs, fkwargs);
    Py_CLEAR(fargs);
    Py_CLEAR(fkwargs);
    if (data == NULL) {
        /* As in 3.14, a call that cannot cross fails its future, not
         * submit() -- unless it is KeyboardInterrupt & co. */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            goto error;
        }
        PyObject *exc = cf_PyErr_GetRaisedException();
        int r = cf_future_complete(st, (FutureObject *)fut, NULL, exc);
        Py_DECREF(exc);
        if (r < 0) {
            goto error;
        }
        return fut;
    }

    Py_ssize_t len = PyBytes_GET_SIZE(data);
    InterpTask *t = PyMem_RawMalloc(sizeof(InterpTask) + (size_t)len);
    if (t == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    t->next = NULL;
    t->future = Py_NewRef(fut);
    t->len = (size_t)len;
    memcpy(t->data, PyBytes_AS_STRING(data), (size_t)len);
    Py_CLEAR(data);

    /* Pickling ran Python code: the exit hook may have run meanwhile. */
    int spawn = -1;
    int err = st->interp.exiting ? CF_ERR_IP_EXITING
                                 : InterpCore_Push(self->ip_core, t, &spawn);
    if (err != CF_ERR_IP_OK) {
        interp_task_free(t);
        raise_push_error(st, err);
        goto error;
    }
    if (spawn >= 0 && spawn_worker(st, self, spawn) < 0) {
        /* Like the stdlib: the call stays queued, submit() raises. */
        InterpCore_Unspawn(self->ip_core);
        goto error;
    }
    return fut;

error:
    Py_XDECREF(fargs);
    Py_XDECREF(fkwargs);
    Py_XDECREF(data);
    Py_XDECREF(fut);
    return NULL;
}

PyDoc_STRVAR(InterpPool_shutdown_doc,
"shutdown($self, /, wait=True, *, cancel_futures=False)\n--\n\n"
"Clean-up the resources associated with the Executor.\n\n"
"It is safe to call this method several times. Otherwise, no other\n"
"methods can be called after this one.\n\n"
"Args:\n"
"    wait: If True then shutdown will not return until all running\n"
"        futures have finished executing and the resources used by the\n"
"        executor have been reclaimed.\n"
"    cancel_futures: If True then shutdown will cancel all pending\n"
"        futures. Futures that are completed or running will not be\n"
"        cancelled.");

static PyObject *
InterpPool_shutdown(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"wait", "cancel_futures", NULL};
    InterpPoolObject *self = (InterpPoolObject *)op;
    int wait = 1, cancel = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p$p:shutdown", kwlist,
                                     &wait, &cancel)) {
        return NULL;
    }
    cf_state *st = cf_state_from_type(Py_TYPE(op));
    if (st == NULL) {
        return NULL;
    }
    if (self->ip_core != NULL) {
        cancel_tasks(st, InterpCore_Shutdown(self->ip_core, cancel));
    }
    if (wait && self->ip_threads != NULL
        && cf_join_threads(self->ip_threads) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(InterpPool_setup_doc,
"_setup($self, max_workers, thread_name_prefix, initdata, init_error, /)\n"
"--\n\n"
"Initialise the native pool; initdata is a pickled initializer call or\n"
"None; init_error (or None) is the exception each worker fails\n"
"initializing with.  Called once by InterpreterPoolExecutor.__init__.");

static PyObject *
InterpPool__setup(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "_setup(max_workers, thread_name_prefix, initdata, "
                        "init_error)");
        return NULL;
    }
    long max_workers = PyLong_AsLong(args[0]);
    if (max_workers == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (max_workers <= 0 || max_workers > INT_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "max_workers must be greater than 0");
        return NULL;
    }
    if (!PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "thread_name_prefix must be a str");
        return NULL;
    }
    if (args[2] != Py_None && !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "initdata must be bytes or None");
        return NULL;
    }
    if (self->ip_core != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "InterpreterPoolExecutor is already initialized");
        return NULL;
    }
    const char *init = NULL;
    size_t init_len = 0;
    if (args[2] != Py_None) {
        init = PyBytes_AS_STRING(args[2]);
        init_len = (size_t)PyBytes_GET_SIZE(args[2]);
    }
    self->ip_core = InterpCore_New((int)max_workers, init, init_len);
    if (self->ip_core == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_XSETREF(self->ip_prefix, Py_NewRef(args[1]));
    if (args[3] != Py_None) {
        Py_XSETREF(self->ip_init_error, Py_NewRef(args[3]));
    }
    Py_RETURN_NONE;
}

static PyObject *
InterpPool_get_max_workers(PyObject *op, void *closure)
{
    InterpCore *c = ((InterpPoolObject *)op)->ip_core;
    return PyLong_FromLong(c ? c->max_workers : 0);
}

static PyObject *
InterpPool_get_prefix(PyObject *op, void *closure)
{
    PyObject *p = ((InterpPoolObject *)op)->ip_prefix;
    return Py_NewRef(p ? p : Py_None);
}

static PyObject *
InterpPool_get_threads(PyObject *op, void *closure)
{
    PyObject *threads = ((InterpPoolObject *)op)->ip_threads;
    return threads ? Py_NewRef(threads) : PySet_New(NULL);  /* cleared */
}

static PyObject *
InterpPool_get_shutdown(PyObject *op, void *closure)
{
    InterpCore *c = ((InterpPoolObject *)op)->ip_core;
    int shutdown = 0, broken = 0;
    if (c != NULL) {
        InterpCore_Flags(c, &shutdown, &broken);
    }
    return PyBool_FromLong(shutdown);
}

static PyObject *
InterpPool_get_broken(PyObject *op, void *closure)
{
    InterpCore *c = ((InterpPoolObject *)op)->ip_core;
    int shutdown = 0, broken = 0;
    if (c != NULL) {
        InterpCore_Flags(c, &shutdown, &broken);
    }
    if (broken) {
        return PyUnicode_FromString(BROKEN_MSG);
    }
    Py_RETURN_FALSE;
}

static PyObject *
InterpPool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    InterpPoolObject *self = (InterpPoolObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->ip_threads = PySet_New(NULL);
    if (self->ip_threads == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
InterpPool_traverse(PyObject *op, visitproc visit, void *arg)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->ip_threads);
    Py_VISIT(self->ip_prefix);
    Py_VISIT(self->ip_init_error);
    return 0;
}

static int
InterpPool_clear(PyObject *op)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    Py_CLEAR(self->ip_threads);
    Py_CLEAR(self->ip_prefix);
    Py_CLEAR(self->ip_init_error);
    return 0;
}

static void
InterpPool_dealloc(PyObject *op)
{
    InterpPoolObject *self = (InterpPoolObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    InterpPool_clear(op);
    if (self->ip_core != NULL) {
        /* The stdlib's weakref callback: workers finish the queue, then
         * exit; they keep the core alive until then. */
        (void)InterpCore_Shutdown(self->ip_core, 0);
        core_release(self->ip_core);
        self->ip_core = NULL;
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

#define METH_FAST (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef InterpPool_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))InterpPool_submit, METH_FAST,
     InterpPool_submit_doc},
    {"shutdown", (PyCFunction)(void (*)(void))InterpPool_shutdown,
     METH_VARARGS | METH_KEYWORDS, InterpPool_shutdown_doc},
    {"_setup", (PyCFunction)(void (*)(void))InterpPool__setup, METH_FASTCALL,
     InterpPool_setup_doc},
    {NULL, NULL}
};

static PyGetSetDef InterpPool_getset[] = {
    {"_max_workers", InterpPool_get_max_workers, NULL, NULL, NULL},
    {"_thread_name_prefix", InterpPool_get_prefix, NULL, NULL, NULL},
    {"_threads", InterpPool_get_threads, NULL, NULL, NULL},
    {"_shutdown", InterpPool_get_shutdown, NULL, NULL, NULL},
    {"_broken", InterpPool_get_broken, NULL, NULL, NULL},
    {NULL}
};

PyDoc_STRVAR(InterpPool_doc,
"InterpreterPool()\n--\n\n"
"Native core of cfutures.InterpreterPoolExecutor: worker threads that\n"
"each own a sub-interpreter with its own GIL.");

static PyType_Slot InterpPool_slots[] = {
    {Py_tp_doc, (void *)InterpPool_doc},
    {Py_tp_new, InterpPool_new},
    {Py_tp_dealloc, InterpPool_dealloc},
    {Py_tp_traverse, InterpPool_traverse},
    {Py_tp_clear, InterpPool_clear},
    {Py_tp_methods, InterpPool_methods},
    {Py_tp_getset, InterpPool_getset},
    {0, NULL},
};

static PyType_Spec InterpPool_spec = {
    .name = "cfutures._cfutures.InterpreterPool",
    .basicsize = sizeof(InterpPoolObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC),
    .slots = InterpPool_slots,
};

/* =================================================== module functions */

PyDoc_STRVAR(interp_setup_doc,
"_interp_setup($module, broken, make_failed, check_main, registry, /)\n--\n\n"
"Register cfutures.interpreter's Python pieces: BrokenInterpreterPool,\n"
"the ExecutionFailed factory, the __main__ checker, and the exit registry.");

static PyObject *
interp_setup(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "_interp_setup(broken, make_failed, check_main, "
                        "registry)");
        return NULL;
    }
    cf_state *st = cf_get_state(mod);
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL) {
        return NULL;
    }
    PyObject *dumps = PyObject_GetAttrString(pickle, "dumps");
    PyObject *loads = PyObject_GetAttrString(pickle, "loads");
    PyObject *protocol = PyObject_GetAttrString(pickle, "HIGHEST_PROTOCOL");
    Py_DECREF(pickle);
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *thread = threading ? PyObject_GetAttrString(threading, "Thread")
                                 : NULL;
    Py_XDECREF(threading);
    PyObject *worker_fn = PyObject_GetAttrString(mod, "_interp_worker");
    if (dumps == NULL || loads == NULL || protocol == NULL || thread == NULL
        || worker_fn == NULL) {
        Py_XDECREF(dumps);
        Py_XDECREF(loads);
        Py_XDECREF(protocol);
        Py_XDECREF(thread);
        Py_XDECREF(worker_fn);
        return NULL;
    }
    cf_interp_state *is = &st->interp;
    Py_XSETREF(is->broken, Py_NewRef(args[0]));
    Py_XSETREF(is->make_failed, Py_NewRef(args[1]));
    Py_XSETREF(is->check_main, Py_NewRef(args[2]));
    Py_XSETREF(is->registry, Py_NewRef(args[3]));
    Py_XSETREF(is->Thread, thread);
    Py_XSETREF(is->worker_fn, worker_fn);
    Py_XSETREF(is->loads, loads);
    Py_XSETREF(is->protocol, protocol);
    Py_XSETREF(is->dumps, dumps);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(interp_exiting_doc,
"_interp_exiting($module, /)\n--\n\n"
"Interpreter exit began: refuse new work in every interpreter pool.");

static PyObject *
interp_exiting(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    cf_get_state(mod)->interp.exiting = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(interp_wake_exit_doc,
"_interp_wake_exit($module, handle, /)\n--\n\n"
"Tell the pool of a worker handle to finish its queue and stop.");

static PyObject *
interp_wake_exit(PyObject *mod, PyObject *handle)
{
    InterpWorker *w = PyCapsule_GetPointer(handle, WORKER_CAPSULE);
    if (w == NULL) {
        return NULL;
    }
    InterpCore_Exit(w->core);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(interp_pickle_call_doc,
"_interp_pickle_call($module, fn, args, kwargs, /)\n--\n\n"
"Pickle a call the way submit() does (refusing __main__ references).");

static PyObject *
interp_pickle_call(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "_interp_pickle_call(fn, args: tuple, kwargs: dict)");
        return NULL;
    }
    cf_state *st = cf_get_state(mod);
    if (interp_check_ready(st) < 0) {
        return NULL;
    }
    return pickle_call(st, args[0], args[1], args[2]);
}

static PyMethodDef interp_functions[] = {
    {"_interp_worker", interp_worker, METH_O, interp_worker_doc},
    {"_interp_setup", (PyCFunction)(void (*)(void))interp_setup,
     METH_FASTCALL, interp_setup_doc},
    {"_interp_exiting", interp_exiting, METH_NOARGS, interp_exiting_doc},
    {"_interp_wake_exit", interp_wake_exit, METH_O, interp_wake_exit_doc},
    {"_interp_pickle_call", (PyCFunction)(void (*)(void))interp_pickle_call,
     METH_FASTCALL, interp_pickle_call_doc},
    {NULL, NULL}
};

/* ======================================================== module glue */

int
cf_interppool_traverse(cf_state *st, visitproc visit, void *arg)
{
    cf_interp_state *is = &st->interp;
    Py_VISIT(st->InterpPool_type);
    Py_VISIT(is->broken);
    Py_VISIT(is->make_failed);
    Py_VISIT(is->check_main);
    Py_VISIT(is->registry);
    Py_VISIT(is->worker_fn);
    Py_VISIT(is->Thread);
    Py_VISIT(is->dumps);
    Py_VISIT(is->loads);
    Py_VISIT(is->protocol);
    return 0;
}

void
cf_interppool_clear(cf_state *st)
{
    cf_interp_state *is = &st->interp;
    Py_CLEAR(st->InterpPool_type);
    Py_CLEAR(is->broken);
    Py_CLEAR(is->make_failed);
    Py_CLEAR(is->check_main);
    Py_CLEAR(is->registry);
    Py_CLEAR(is->worker_fn);
    Py_CLEAR(is->Thread);
    Py_CLEAR(is->dumps);
    Py_CLEAR(is->loads);
    Py_CLEAR(is->protocol);
}

int
cf_interppool_module_init(PyObject *mod, cf_state *st)
{
    st->InterpPool_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &InterpPool_spec, NULL);
    if (st->InterpPool_type == NULL
        || PyModule_AddType(mod, st->InterpPool_type) < 0
        || PyModule_AddFunctions(mod, interp_functions) < 0) {
        return -1;
    }
#ifdef CF_HAVE_SUBINTERPRETERS
    return PyModule_AddIntConstant(mod, "_HAVE_SUBINTERPRETERS", 1);
#else
    return PyModule_AddIntConstant(mod, "_HAVE_SUBINTERPRETERS", 0);
#endif
}

