/* cfutures._cfutures: module definition, state, multi-phase init. */
#include "cfutures.h"
#include "procio.h"

/* ---------------------------------------------------- module state */

int
cf_state_traverse(cf_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->CancelledError);
    Py_VISIT(st->TimeoutError);
    Py_VISIT(st->InvalidStateError);
    Py_VISIT(st->DoneAndNotDoneFutures);
    Py_VISIT(st->stdlib_Future);
    Py_VISIT(st->logger);
    Py_VISIT(st->Condition);
    for (int i = 0; i < CF_NSTATES; i++) {
        Py_VISIT(st->state_names[i]);
        Py_VISIT(st->state_desc[i]);
    }
    /* each part visits its own fields */
    int (*const parts[])(cf_state *, visitproc, void *) = {
        cf_future_traverse, cf_waiters_traverse, cf_mapiter_traverse,
        cf_threadpool_traverse, cf_processpool_traverse,
        cf_interppool_traverse,
    };
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        int r = parts[i](st, visit, arg);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

int
cf_state_clear(cf_state *st)
{
    cf_future_clear(st);
    cf_waiters_clear(st);
    cf_mapiter_clear(st);
    cf_threadpool_clear(st);
    cf_processpool_clear(st);
    Py_CLEAR(st->CancelledError);
    Py_CLEAR(st->TimeoutError);
    Py_CLEAR(st->InvalidStateError);
    Py_CLEAR(st->DoneAndNotDoneFutures);
    Py_CLEAR(st->stdlib_Future);
    Py_CLEAR(st->logger);
    Py_CLEAR(st->Condition);
    for (int i = 0; i < CF_NSTATES; i++) {
        Py_CLEAR(st->state_names[i]);
        Py_CLEAR(st->state_desc[i]);
    }
    Py_CLEAR(st->str_FIRST_COMPLETED);
    Py_CLEAR(st->str_FIRST_EXCEPTION);
    Py_CLEAR(st->str_ALL_COMPLETED);
    Py_CLEAR(st->str_submit);
    Py_CLEAR(st->str_acquire);
    Py_CLEAR(st->str_release);
    Py_CLEAR(st->str_notify_all);
    Py_CLEAR(st->str_add_result);
    Py_CLEAR(st->str_add_exception);
    Py_CLEAR(st->str_add_cancelled);
    Py_CLEAR(st->str_state);
    Py_CLEAR(st->str_condition);
    Py_CLEAR(st->str_waiters);
    Py_CLEAR(st->str_remove);
    Py_CLEAR(st->str_append);
    Py_CLEAR(st->str_exception);
    Py_CLEAR(st->str_cancelled);
    Py_CLEAR(st->str_error);
    Py_CLEAR(st->str_critical);
    Py_CLEAR(st->str_exc_info);
    cf_interppool_clear(st);
    return 0;
}

static int
module_traverse(PyObject *mod, visitproc visit, void *arg)
{
    return cf_state_traverse(cf_get_state(mod), visit, arg);
}

static int
module_clear(PyObject *mod)
{
    return cf_state_clear(cf_get_state(mod));
}

static void
module_free(void *mod)
{
    module_clear((PyObject *)mod);
}

/* ------------------------------------------------- module functions */

PyDoc_STRVAR(set_future_class_doc,
"_set_future_class($module, cls, /)\n--\n\n"
"Register the Python subclass of CFuture that executors instantiate.");

static PyObject *
set_future_class(PyObject *mod, PyObject *cls)
{
    cf_state *st = cf_get_state(mod);
    if (!PyType_Check(cls)
        || !PyType_IsSubtype((PyTypeObject *)cls, st->Future_type)) {
        PyErr_SetString(PyExc_TypeError, "expected a subclass of CFuture");
        return NULL;
    }
    Py_XSETREF(st->future_class, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(spin_stats_doc,
"_spin_stats($module, /)\n--\n\n"
"The spin policy's state (block.h), process-wide: the measured wake-up\n"
"cost that caps every spin, and counters.");

static PyObject *
spin_stats(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue(
        "{s:L,s:L,s:L,s:L,s:L}",
        "wake_ns", (long long)cf_spin_cap(),
        "wake_samples",
        __atomic_load_n(&cf_spin_stats.wake_samples, __ATOMIC_RELAXED),
        "gil_spins_ok",
        __atomic_load_n(&cf_spin_stats.gil_spins_ok, __ATOMIC_RELAXED),
        "gil_spins_failed",
        __atomic_load_n(&cf_spin_stats.gil_spins_failed, __ATOMIC_RELAXED),
        "gil_spins_failed_ns",
        __atomic_load_n(&cf_spin_stats.gil_spins_failed_ns, __ATOMIC_RELAXED));
}

PyDoc_STRVAR(shm_cache_doc,
"_shm_cache($module, drop=False, /)\n--\n\n"
"The process pool's cache of shared memory regions (procio.h): (count,\n"
"bytes); drop: free them all.");

static PyObject *
shm_cache(PyObject *mod, PyObject *args)
{
    int drop = 0;
    size_t n, bytes;
    if (!PyArg_ParseTuple(args, "|p:_shm_cache", &drop)) {
        return NULL;
    }
    ProcShm_CacheInfo(&n, &bytes, drop);
    return Py_BuildValue("nn", (Py_ssize_t)n, (Py_ssize_t)bytes);
}

static PyMethodDef module_methods[] = {
    {"_shm_cache", shm_cache, METH_VARARGS, shm_cache_doc},
    {"_set_future_class", set_future_class, METH_O, set_future_class_doc},
    {"_spin_stats", spin_stats, METH_NOARGS, spin_stats_doc},
    {NULL, NULL}
};

/* ----------------------------------------------------------- exec */

static int
intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot ? 0 : -1;
}

static int
import_attr(PyObject **slot, PyObject *mod, const char *name)
{
    *slot = PyObject_GetAttrString(mod, name);
    return *slot ? 0 : -1;
}

static int
module_exec(PyObject *mod)
{
    cf_state *st = cf_get_state(mod);
    static const char *names[CF_NSTATES] = {
        "PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"
    };
    static const char *desc[CF_NSTATES] = {
        "pending", "running", "cancelled", "cancelled", "finished"
    };

    PyObject *base = PyImport_ImportModule("concurrent.futures._base");
    if (base == NULL) {
        return -1;
    }
    int rc = -1;
    for (int i = 0; i < CF_NSTATES; i++) {
        if (import_attr(&st->state_names[i], base, names[i]) < 0
            || intern(&st->state_desc[i], desc[i]) < 0) {
            goto done;
        }
    }
    if (import_attr(&st->CancelledError, base, "CancelledError") < 0
        || import_attr(&st->TimeoutError, base, "TimeoutError") < 0
        || import_attr(&st->InvalidStateError, base, "InvalidStateError") < 0
        || import_attr(&st->DoneAndNotDoneFutures, base,
                       "DoneAndNotDoneFutures") < 0
        || import_attr(&st->stdlib_Future, base, "Future") < 0
        || import_attr(&st->logger, base, "LOGGER") < 0
        || import_attr(&st->str_FIRST_COMPLETED, base, "FIRST_COMPLETED") < 0
        || import_attr(&st->str_FIRST_EXCEPTION, base, "FIRST_EXCEPTION") < 0
        || import_attr(&st->str_ALL_COMPLETED, base, "ALL_COMPLETED") < 0) {
        goto done;
    }
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) {
        goto done;
    }
    int r = import_attr(&st->Condition, threading, "Condition");
    Py_DECREF(threading);
    if (r < 0) {
        goto done;
    }
    if (intern(&st->str_submit, "submit") < 0
        || intern(&st->str_acquire, "acquire") < 0
        || intern(&st->str_release, "release") < 0
        || intern(&st->str_notify_all, "notify_all") < 0
        || intern(&st->str_add_result, "add_result") < 0
        || intern(&st->str_add_exception, "add_exception") < 0
        || intern(&st->str_add_cancelled, "add_cancelled") < 0
        || intern(&st->str_state, "_state") < 0
        || intern(&st->str_condition, "_condition") < 0
        || intern(&st->str_waiters, "_waiters") < 0
        || intern(&st->str_remove, "remove") < 0
        || intern(&st->str_append, "append") < 0
        || intern(&st->str_exception, "exception") < 0
        || intern(&st->str_cancelled, "cancelled") < 0
        || intern(&st->str_error, "error") < 0
        || intern(&st->str_critical, "critical") < 0
        || intern(&st->str_exc_info, "exc_info") < 0) {
        goto done;
    }
    if (cf_future_module_init(mod, st) < 0
        || cf_waiters_module_init(mod, st) < 0
        || cf_mapiter_module_init(mod, st) < 0
        || cf_threadpool_module_init(mod, st) < 0
        || cf_processpool_module_init(mod, st) < 0
        || cf_interppool_module_init(mod, st) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_DECREF(base);
    return rc;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    /* Free-threaded builds: every structure has its own lock (see the
     * lock order in cfutures.h), so importing us keeps the GIL off. */
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#else
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc, "Native core of cfutures (concurrent.futures in C).");

PyModuleDef cf_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cfutures._cfutures",
    .m_doc = module_doc,
    .m_size = sizeof(cf_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__cfutures(void)
{
    return PyModuleDef_Init(&cf_module_def);
}
