/* interpworker: the body of an interpreter pool worker thread, which
 * creates its own-GIL sub-interpreter, runs tasks in it and ends it on the
 * same thread (see interppool.h). */
#include "interppool.h"

#include <string.h>

/* ======================================================== the worker */

#ifdef CF_HAVE_SUBINTERPRETERS

/* Objects owned by a worker's sub-interpreter: touched only by that
 * worker's thread with sub_ts attached. */
typedef struct {
    PyObject *loads;
    PyObject *dumps;
    PyObject *protocol;
    PyObject *format_exception;     /* traceback.format_exception, lazily */
    PyObject *helpers;              /* 3.14+: XI_HELPERS' namespace, lazily */
    const RawBuf *mainfile;         /* the worker's, read-only */
} SubInterp;

static void
SubInterp_Clear(SubInterp *sub)
{
    Py_CLEAR(sub->loads);
    Py_CLEAR(sub->dumps);
    Py_CLEAR(sub->protocol);
    Py_CLEAR(sub->format_exception);
    Py_CLEAR(sub->helpers);
}

/* Leave the attached interpreter (releasing its GIL) and attach `to`
 * (taking its GIL).  Never holds two GILs. */
static void
switch_to(PyThreadState *to)
{
    (void)PyEval_SaveThread();
    PyEval_RestoreThread(to);
}

/* The full traceback text, as 3.14's excinfo.errdisplay (without the
 * trailing newline), or NULL. */
static PyObject *
format_traceback(SubInterp *sub, PyObject *exc)
{
    if (sub->format_exception == NULL) {
        PyObject *tb = PyImport_ImportModule("traceback");
        if (tb == NULL) {
            return NULL;
        }
        sub->format_exception = PyObject_GetAttrString(tb, "format_exception");
        Py_DECREF(tb);
        if (sub->format_exception == NULL) {
            return NULL;
        }
    }
    PyObject *lines = PyObject_CallOneArg(sub->format_exception, exc);
    if (lines == NULL) {
        return NULL;
    }
    PyObject *sep = PyUnicode_FromStringAndSize("", 0);
    PyObject *text = sep ? PyUnicode_Join(sep, lines) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(lines);
    if (text == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n > 0 && PyUnicode_READ_CHAR(text, n - 1) == '\n') {
        Py_SETREF(text, PyUnicode_Substring(text, 0, n - 1));
    }
    return text;
}

/* Sub GIL held, an exception set: snapshot it into r as raw memory (the
 * exception pickled if it can be, plus 3.14's excinfo strings). */
static void
capture_exception(SubInterp *sub, InterpResult *r)
{
    PyObject *exc = cf_PyErr_GetRaisedException();
    InterpResult_Clear(r);
    r->kind = RES_RAISED;
    if (exc == NULL) {
        return;
    }
    PyTypeObject *tp = Py_TYPE(exc);
    PyObject *s = PyType_GetName(tp);
    RawBuf_FromStr(&r->type_name, s);
    Py_XDECREF(s);
    s = PyType_GetQualName(tp);
    RawBuf_FromStr(&r->type_qualname, s);
    Py_XDECREF(s);
    s = PyObject_GetAttrString((PyObject *)tp, "__module__");
    RawBuf_FromStr(&r->type_module, s);
    Py_XDECREF(s);
    if (!PyErr_GivenExceptionMatches(exc, PyExc_MemoryError)) {
        s = PyObject_Str(exc);
        RawBuf_FromStr(&r->msg, s);
        Py_XDECREF(s);
        s = format_traceback(sub, exc);
        RawBuf_FromStr(&r->errdisplay, s);
        Py_XDECREF(s);
        if (sub->dumps != NULL) {
            PyObject *stack[2] = {exc, sub->protocol};
            PyObject *data = PyObject_Vectorcall(sub->dumps, stack, 2, NULL);
            if (data == NULL || !PyBytes_Check(data)
                || RawBuf_FromBytes(&r->pickled, data) < 0) {
                PyErr_Clear();
            }
            Py_XDECREF(data);
        }
    }
    Py_DECREF(exc);
    PyErr_Clear();
}

#if PY_VERSION_HEX >= 0x030E0000
/* The worker's slow paths, as 3.14's cross-interpreter data behaves: run
 * in the worker interpreter only after a plain pickle.loads()/dumps()
 * failed. */
static const char XI_HELPERS[] =
"import pickle, sys\n"
"from concurrent.interpreters import NotShareableError\n"
"_fake_main = None\n"
"def failed(msg, inner):\n"
"    # the stdlib's __cause__ for these: an Exception with the text of\n"
"    # the inner chain, without tracebacks (C installs it)\n"
"    import traceback\n"
"    e = inner\n"
"    while e is not None:\n"
"        e.__traceback__ = None\n"
"        e = e.__cause__\n"
"    outer = NotShareableError(msg)\n"
"    outer._cf_xi_cause = ''.join(\n"
"        traceback.format_exception(inner)).rstrip('\\n')\n"
"    return outer\n"
"def load(data, mainfile):\n"
"    try:\n"
"        return pickle.loads(data)\n"
"    except Exception as exc:\n"
"        err = exc\n"
"    if mainfile is not None and b'__main__' in data:\n"
"        global _fake_main\n"
"        try:\n"
"            if _fake_main is None:\n"
"                import runpy, types\n"
"                ns = runpy.run_path(mainfile, run_name='<fake __main__>')\n"
"                _fake_main = types.ModuleType('__main__')\n"
"                _fake_main.__dict__.update(ns)\n"
"            real = sys.modules['__main__']\n"
"            sys.modules['__main__'] = _fake_main\n"
"            try:\n"
"                return pickle.loads(data)\n"
"            finally:\n"
"                sys.modules['__main__'] = real\n"
"        except Exception as exc:\n"
"            err = exc\n"
"    inner = NotShareableError('object could not be unpickled')\n"
"    inner.__cause__ = err\n"
"    raise failed('args not shareable', inner)\n"
"def dump(obj, protocol):\n"
"    try:\n"
"        return pickle.dumps(obj, protocol)\n"
"    except Exception as exc:\n"
"        try:\n"
"            shown = repr(obj)\n"
"        except Exception:\n"
"            shown = object.__repr__(obj)\n"
"        inner = NotShareableError(\n"
"            f'{shown} does not support cross-interpreter data')\n"
"        raise failed('object does not support cross-interpreter data',\n"
"                     inner)\n";

/* Sub GIL, no error set: call XI_HELPERS' `name`.  New reference, or NULL
 * with an error set. */
static PyObject *
sub_helper(SubInterp *sub, const char *name, PyObject *a, PyObject *b)
{
    if (sub->helpers == NULL) {
        PyObject *ns = PyDict_New();
        if (ns == NULL || PyDict_SetItemString(ns, "__builtins__",
                                               PyEval_GetBuiltins()) < 0) {
            Py_XDECREF(ns);
            return NULL;
        }
        PyObject *r = PyRun_String(XI_HELPERS, Py_file_input, ns, ns);
        if (r == NULL) {
            Py_DECREF(ns);
            return NULL;
        }
        Py_DECREF(r);
        sub->helpers = ns;
    }
    PyObject *fn = PyDict_GetItemString(sub->helpers, name);   /* borrowed */
    if (fn == NULL) {
        PyErr_SetString(PyExc_SystemError, "cfutures: helper missing");
        return NULL;
    }
    return PyObject_CallFunctionObjArgs(fn, a, b, NULL);
}
#endif

/* Sub GIL: unpickle (fn, args, kwargs) from raw memory and call it. */
static PyObject *
sub_call(SubInterp *sub, const char *data, size_t len)
{
    PyObject *bytes = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *call = PyObject_CallOneArg(sub->loads, bytes);
#if PY_VERSION_HEX >= 0x030E0000
    if (call == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        PyObject *mainfile = RawBuf_AsStr((RawBuf *)sub->mainfile);
        if (mainfile != NULL) {
            call = sub_helper(sub, "load", bytes, mainfile);
            Py_DECREF(mainfile);
        }
    }
#endif
    Py_DECREF(bytes);
    if (call == NULL) {
        return NULL;
    }
    PyObject *res = NULL;
    if (!PyTuple_Check(call) || PyTuple_GET_SIZE(call) != 3
        || !PyTuple_Check(PyTuple_GET_ITEM(call, 1))
        || !PyDict_Check(PyTuple_GET_ITEM(call, 2))) {
        PyErr_SetString(PyExc_TypeError, "malformed task");
    }
    else {
        res = PyObject_Call(PyTuple_GET_ITEM(call, 0),
                            PyTuple_GET_ITEM(call, 1),
                            PyTuple_GET_ITEM(call, 2));
    }
    Py_DECREF(call);
    return res;
}

static void
sub_run_task(SubInterp *sub, InterpTask *t, InterpResult *r)
{
    PyObject *res = sub_call(sub, t->data, t->len);
    if (res != NULL) {
        PyObject *stack[2] = {res, sub->protocol};
        PyObject *data = PyObject_Vectorcall(sub->dumps, stack, 2, NULL);
#if PY_VERSION_HEX >= 0x030E0000
        if (data == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear();
            data = sub_helper(sub, "dump", res, sub->protocol);
        }
#endif
        Py_DECREF(res);
        if (data != NULL && PyBytes_Check(data)
            && RawBuf_FromBytes(&r->pickled, data) == 0) {
            Py_DECREF(data);
            r->kind = RES_VALUE;
            return;
        }
        if (data != NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError,
                            "pickle.dumps() did not return bytes");
        }
        Py_XDECREF(data);
    }
    capture_exception(sub, r);
}

/* Sub GIL: prepare a fresh worker interpreter.  0, or -1 with the
 * failure captured in r. */
static int
sub_setup(SubInterp *sub, InterpWorker *w, InterpCore *core, InterpResult *r)
{
    sub->mainfile = &w->mainfile;
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle != NULL) {
        sub->loads = PyObject_GetAttrString(pickle, "loads");
        sub->dumps = PyObject_GetAttrString(pickle, "dumps");
        sub->protocol = PyObject_GetAttrString(pickle, "HIGHEST_PROTOCOL");
        Py_DECREF(pickle);
    }
    if (sub->loads == NULL || sub->dumps == NULL || sub->protocol == NULL) {
        goto error;
    }
    if (w->syspath.data != NULL) {
        PyObject *bytes = PyBytes_FromStringAndSize(
            w->syspath.data, (Py_ssize_t)w->syspath.len);
        PyObject *path = bytes ? PyObject_CallOneArg(sub->loads, bytes) : NULL;
        Py_XDECREF(bytes);
        if (path == NULL || PySys_SetObject("path", path) < 0) {
            Py_XDECREF(path);
            goto error;
        }
        Py_DECREF(path);
    }
    if (core->init_data != NULL) {      /* read-only after _setup() */
        PyObject *res = sub_call(sub, core->init_data, core->init_len);
        if (res == NULL) {
            goto error;
        }
        Py_DECREF(res);
    }
    return 0;
error:
    capture_exception(sub, r);
    return -1;
}

const char interp_worker_doc[] =
"_interp_worker($module, handle, /)\n--\n\n"
"Body of an InterpreterPoolExecutor worker thread: create a sub-interpreter\n"
"with its own GIL, run tasks in it until the pool stops, then destroy it.";

PyObject *
interp_worker(PyObject *mod, PyObject *handle)
{
    cf_state *st = cf_get_state(mod);
    InterpWorker *w = PyCapsule_GetPointer(handle, WORKER_CAPSULE);
    if (w == NULL || interp_check_ready(st) < 0) {
        return NULL;
    }
    InterpCore *core = w->core;     /* the handle keeps it alive */
    if (w->init_error != NULL) {
        interp_worker_init_failed(st, core, w->init_error);
        Py_RETURN_NONE;
    }
    PyThreadState *main_ts = PyThreadState_Get();
    SubInterp sub = {0};
    InterpResult res = {0};

    /* 3.14's interpreters.create() config (_PyInterpreterConfig_INIT). */
    const PyInterpreterConfig config = {
        .use_main_obmalloc = 0,
        .allow_fork = 0,
        .allow_exec = 0,
        .allow_threads = 1,
        .allow_daemon_threads = 0,
        .check_multi_interp_extensions = 1,
        .gil = PyInterpreterConfig_OWN_GIL,
    };
    PyThreadState *sub_ts = NULL;
    PyStatus status = Py_NewInterpreterFromConfig(&sub_ts, &config);
    if (PyStatus_Exception(status) || sub_ts == NULL) {
        /* new_interpreter() re-attached main_ts on its error path. */
        PyErr_Format(PyExc_RuntimeError, "cannot create a sub-interpreter: %s",
                     status.err_msg ? status.err_msg : "out of memory");
        PyObject *exc = cf_PyErr_GetRaisedException();
        interp_worker_init_failed(st, core, exc);
        Py_XDECREF(exc);
        Py_RETURN_NONE;
    }
    /* Attached to sub_ts holding the new GIL; the main GIL is free. */
    int ok = sub_setup(&sub, w, core, &res) == 0;
    switch_to(main_ts);
    if (!ok) {
        PyObject *exc = interp_result_to_exception(st, &res);
        InterpResult_Clear(&res);
        interp_worker_init_failed(st, core, exc);
        Py_XDECREF(exc);
        goto finish;
    }

    InterpTask *task = NULL;
    InterpCore_SetIdle(core);
    for (;;) {
        /* Main GIL held.  Take the next task without sleeping if one is
         * queued: one main-GIL visit then completes a future and starts
         * the next one. */
        task = InterpCore_TryPop(core);
        if (task == NULL) {
            Py_BEGIN_ALLOW_THREADS
            task = InterpCore_Pop(core);
            Py_END_ALLOW_THREADS
            if (task == NULL) {
                break;
            }
        }
        FutureObject *fut = (FutureObject *)task->future;
        int r = cf_future_set_running_or_notify_cancel(st, fut);
        if (r <= 0) {
            if (r < 0) {
                interp_log_worker_error(st);
            }
            interp_task_free(task);
            InterpCore_SetIdle(core);
            continue;
        }
        switch_to(sub_ts);
        sub_run_task(&sub, task, &res);
        if (cf_Py_IsFinalizing()) {
            /* Abnormal exit (the exit hook could not join us, e.g. a
             * second Ctrl-C): taking the main GIL now ends this thread,
             * so end our interpreter first rather than leave it behind.
             * The task and its future are abandoned with the process. */
            InterpResult_Clear(&res);
            SubInterp_Clear(&sub);
            Py_EndInterpreter(sub_ts);
            PyEval_RestoreThread(main_ts);      /* normally never returns */
            interp_task_free(task);
            Py_RETURN_NONE;
        }
        switch_to(main_ts);
        InterpCore_SetIdle(core);
        InterpCore *outer = cf_delivering;
        cf_delivering = core;
        interp_deliver(st, fut, &res);
        cf_delivering = outer;
        InterpResult_Clear(&res);
        interp_task_free(task);
    }

finish:
    switch_to(sub_ts);
    SubInterp_Clear(&sub);
    Py_EndInterpreter(sub_ts);      /* detaches: no thread state now */
    PyEval_RestoreThread(main_ts);
    Py_RETURN_NONE;
}

#else   /* < 3.12: no per-interpreter GIL API */

const char interp_worker_doc[] =
"_interp_worker($module, handle, /)\n--\n\n"
"Unavailable: sub-interpreters with their own GIL need CPython 3.12+.";

PyObject *
interp_worker(PyObject *mod, PyObject *handle)
{
    PyErr_SetString(PyExc_NotImplementedError,
                    "sub-interpreters with their own GIL need CPython 3.12+");
    return NULL;
}

#endif

