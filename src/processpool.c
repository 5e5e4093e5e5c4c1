/* processpool: the ProcessPool type (native base of
 * cfutures.ProcessPoolExecutor) and the process pool's module functions.
 *
 * A task starts here: submit() pickles (fn, args, kwargs) straight into a
 * frame (procpickle.c), then either marks the future RUNNING and queues
 * the frame for the dispatcher (room in flight) or parks it in the
 * backlog; processcore.c takes it from there (see procpool.h for the
 * whole path).  Free-threaded builds: the executor's core pointer is
 * under the executor's critical section, every core field under the
 * core's (see procpool.h). */
#include "procpool.h"

#include <limits.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *core;             /* the current _ProcessCore */
    unsigned fork_gen;          /* ProcShared_ForkGeneration() when made */
} ProcessPoolObject;

/* An executor a fork child copied from its parent (made in an earlier
 * generation; a new one in the child is not).  Its critical section
 * (free-threaded) may have been copied locked, as a core's can (see
 * core_inherited), so in the child it is never taken: its core pointer is
 * read and swapped atomically instead, and a core swapped out by
 * __init__() is kept (another thread may have just read it). */
static inline int
pool_inherited(ProcessPoolObject *pool)
{
    return pool->fork_gen != ProcShared_ForkGeneration();
}

static PyObject *
ProcessPool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *self = PyType_GenericNew(type, args, kwds);
    if (self != NULL) {
        ((ProcessPoolObject *)self)->fork_gen = ProcShared_ForkGeneration();
    }
    return self;
}

/* The current core, a new reference (or NULL). */
static ProcessCoreObject *
get_core_or_null(PyObject *self)
{
    ProcessPoolObject *pool = (ProcessPoolObject *)self;
    PyObject *c;
    if (pool_inherited(pool)) {
        c = __atomic_load_n(&pool->core, __ATOMIC_ACQUIRE);
        return (ProcessCoreObject *)Py_XNewRef(c);
    }
    Py_BEGIN_CRITICAL_SECTION(self);
    c = Py_XNewRef(pool->core);
    Py_END_CRITICAL_SECTION();
    return (ProcessCoreObject *)c;
}

/* The current core, a new reference (or NULL with RuntimeError). */
static ProcessCoreObject *
get_core(PyObject *self)
{
    ProcessCoreObject *c = get_core_or_null(self);
    if (c == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "ProcessPoolExecutor.__init__() was not called");
        return NULL;
    }
    return (ProcessCoreObject *)c;
}

PyDoc_STRVAR(pool_start_doc,
"_start($self, max_workers, mp_context, initializer, initargs,\n"
"       max_tasks_per_child, fork_mode, launch, start_thread, /)\n--\n\n"
"Set up the native pool (arguments already checked by __init__).");

static PyObject *
ProcessPool_start(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    cf_state *st = PyType_GetModuleState(cls);
    if (nargs != 8 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "_start() takes 8 arguments");
        return NULL;
    }
    if (st->proc.BrokenProcessPool == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cfutures.process was not initialised");
        return NULL;
    }
    ProcessPoolObject *pool = (ProcessPoolObject *)self;
    long max_workers = PyLong_AsLong(args[0]);
    if (max_workers == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (max_workers < 1 || max_workers > INT_MAX / DEPTH_MAX) {
        PyErr_SetString(PyExc_ValueError, "max_workers out of range");
        return NULL;
    }
    /* 0: spawn/forkserver, 1: fork, all workers before the dispatcher
     * starts (stdlib with gh-90622), 2: fork on demand from submit()
     * (older stdlib). */
    long fork_mode = PyLong_AsLong(args[5]);
    if (fork_mode == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *mod = PyType_GetModule(cls);
    ProcessCoreObject *core = PyObject_GC_New(ProcessCoreObject,
                                              st->proc.ProcessCore_type);
    if (core == NULL) {
        return NULL;
    }
    memset((char *)core + sizeof(PyObject), 0,
           sizeof(ProcessCoreObject) - sizeof(PyObject));
    core->module = Py_NewRef(mod);
    core->ctx = Py_NewRef(args[1]);
    core->initializer = args[2] == Py_None ? NULL : Py_NewRef(args[2]);
    core->initargs = Py_NewRef(args[3]);
    core->max_tasks = Py_NewRef(args[4]);
    core->launch = Py_NewRef(args[6]);
    core->start_thread = Py_NewRef(args[7]);
    core->max_workers = (int)max_workers;
    core->is_fork = fork_mode != 0;
    core->fork_lazy = fork_mode == 2;
    core->depth = DEPTH_MIN;
    core->procs = PyDict_New();
    core->processes = PyDict_New();
    core->work_items = PyDict_New();
    PyObject_GC_Track(core);
    if (core->procs == NULL || core->processes == NULL
        || core->work_items == NULL) {
        Py_DECREF(core);
        return NULL;
    }
    core->sh = ProcShared_New();
    if (core->sh == NULL) {
        Py_DECREF(core);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (ProcPickler_Init(st, &core->pickler) < 0) {
        Py_DECREF(core);
        return NULL;
    }
    /* __init__() again (the stdlib allows it): a fresh pool from here on.
     * The old one is left as if the executor had been collected: what was
     * submitted to it still runs, then its workers stop.  Callers of
     * submit()/shutdown() running on it hold their own reference. */
    PyObject *old;
    int inherited = pool_inherited(pool);
    if (inherited) {
        old = __atomic_exchange_n(&pool->core, (PyObject *)core,
                                  __ATOMIC_ACQ_REL);
    }
    else {
        Py_BEGIN_CRITICAL_SECTION(self);
        old = pool->core;
        pool->core = (PyObject *)core;
        Py_END_CRITICAL_SECTION();
    }
    if (old != NULL) {
        ProcessCoreObject *oc = (ProcessCoreObject *)old;
        if (!core_inherited(oc)) {
            Py_BEGIN_CRITICAL_SECTION(old);
            if (!oc->executor_gone) {
                oc->executor_gone = 1;
                ProcShared_Kick(oc->sh);
            }
            Py_END_CRITICAL_SECTION();
        }
        if (!(CF_FT && inherited)) {
            Py_DECREF(old);
        }
        /* else kept for the child's life: another thread may have just
         * read it without a reference (get_core_or_null) */
    }
    Py_RETURN_NONE;
}

static PyObject *
raise_broken(cf_state *st, ProcessCoreObject *core)
{
    PyErr_SetObject(st->proc.BrokenProcessPool, core->broken);
    return NULL;
}

PyDoc_STRVAR(pool_submit_doc,
"submit($self, fn, /, *args, **kwargs)\n--\n\n"
"Submits a callable to be executed with the given arguments.\n\n"
"Schedules the callable to be executed as fn(*args, **kwargs) and returns\n"
"a Future instance representing the execution of the callable.\n\n"
"Returns:\n"
"    A Future representing the given call.");

static PyObject *
core_submit(cf_state *st, ProcessCoreObject *core, PyObject *const *args,
            Py_ssize_t nargs, PyObject *kwnames)
{
    if (core->broken != NULL) {
        return raise_broken(st, core);
    }
    if (core->shutdown) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
    if (st->proc.global_shutdown) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after interpreter "
                        "shutdown");
        return NULL;
    }

    /* (fn, args, kwargs or None) */
    PyObject *call = PyTuple_New(3);
    PyObject *fargs = PyTuple_New(nargs - 1);
    PyObject *kwargs = NULL;
    if (call == NULL || fargs == NULL) {
        goto nomem;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(fargs, i - 1, Py_NewRef(args[i]));
    }
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        kwargs = PyDict_New();
        if (kwargs == NULL) {
            goto nomem;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i),
                               args[nargs + i]) < 0) {
                goto nomem;
            }
        }
    }
    PyTuple_SET_ITEM(call, 0, Py_NewRef(args[0]));
    PyTuple_SET_ITEM(call, 1, fargs);
    fargs = NULL;
    PyTuple_SET_ITEM(call, 2, kwargs ? kwargs : Py_NewRef(Py_None));
    kwargs = NULL;

    PyObject *fut = cf_future_new(st);
    if (fut == NULL) {
        Py_DECREF(call);
        return NULL;
    }
    uint64_t id = ++core->next_id;

    ProcBuf buf;
    ProcBuf_Init(&buf);
    if (ProcBuf_Reserve(&buf, CF_MSG_PREFIX + CF_FRAME_HDR + 64) < 0) {
        Py_DECREF(call);
        Py_DECREF(fut);
        return PyErr_NoMemory();
    }
    buf.len = CF_MSG_PREFIX + CF_FRAME_HDR;
    ProcShm *tshm = core->sh->tshm;     /* made by the first launch */
    int r = ProcPickler_DumpShm(st, &core->pickler, call, &buf, tshm);
    Py_DECREF(call);
    if (r < 0) {
        ProcBuf_Free(&buf);
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(fut);
            return NULL;
        }
        /* As the stdlib's feeder thread: the error, with its traceback
         * as text in __cause__, goes on the future. */
        PyObject *exc = cf_PyErr_GetRaisedException();
        PyObject *text = cf_proc_format_tb(st, exc);
        if (text == NULL || cf_proc_attach_tb(st, exc, text) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(text);
        if (cf_future_set_running_or_notify_cancel(st, (FutureObject *)fut) < 0
            || cf_future_complete(st, (FutureObject *)fut, NULL, exc) < 0) {
            Py_DECREF(exc);
            Py_DECREF(fut);
            return NULL;
        }
        Py_DECREF(exc);
        if (core->unpicklable < core->max_workers) {
            core->unpicklable++;
        }
        if (core->broken == NULL && !core_shutting_down(core)
            && cf_core_ensure_started(core) < 0) {
            Py_DECREF(fut);
            return NULL;
        }
        return fut;
    }
    /* Pickling ran Python, which may have let another thread break or
     * stop the pool: check again.  From here until the task is queued
     * (where core_break and the shutdown logic see it) no Python runs. */
    if (core->broken != NULL || core->shutdown || core->stop_sent
        || (st->proc.global_shutdown && !core->started)) {
        if (tshm != NULL) {
            size_t at = CF_MSG_PREFIX + CF_FRAME_HDR;
            ProcShm_ReleaseHoles(tshm, buf.data + at, buf.len - at);
        }
        ProcBuf_Free(&buf);
        Py_DECREF(fut);
        if (core->broken != NULL) {
            return raise_broken(st, core);
        }
        PyErr_SetString(PyExc_RuntimeError,
                        core->shutdown
                        || (core->stop_sent && !st->proc.global_shutdown)
                        ? "cannot schedule new futures after shutdown"
                        : "cannot schedule new futures after interpreter "
                          "shutdown");
        return NULL;
    }
    ProcMsg *m = ProcMsg_FromBuf(&buf, id, CF_FRAME_TASK);
    if (m != NULL && tshm != NULL && m->frame[m->len - 1] != '.') {
        m->shm = tshm;      /* its holes are freed with it, until sent */
    }

    PyObject *key = PyLong_FromUnsignedLongLong(id);
    if (key == NULL || PyDict_SetItem(core->work_items, key, fut) < 0) {
        goto fail_item;
    }
    ProcShared *sh = core->sh;
    int direct = 0;
    if (core->backlog.count == 0) {
        pthread_mutex_lock(&sh->mutex);
        if (sh->inflight_total < core_capacity(core)) {
            sh->inflight_total++;       /* reserved for this task */
            direct = 1;
        }
        pthread_mutex_unlock(&sh->mutex);
    }
    if (direct) {
        if (cf_future_set_running_or_notify_cancel(st, (FutureObject *)fut) < 0) {
            pthread_mutex_lock(&sh->mutex);
            sh->inflight_total--;
            pthread_mutex_unlock(&sh->mutex);
            goto fail_item;
        }
        core->running++;
        pthread_mutex_lock(&sh->mutex);
        ProcMsgQueue_Push(&sh->sendq, m);
        int w = ProcShared_WakeLocked(sh);
        pthread_mutex_unlock(&sh->mutex);
        if (w) {
            ProcShared_WakeWrite(sh);
        }
        m = NULL;
    }
    else {
        /* Pending (cancellable) until there is room; room may have been
         * freed by results the dispatcher has not completed yet. */
        ProcMsgQueue_Push(&core->backlog, m);
        m = NULL;
        cf_core_promote(core, 1);
    }
    if (cf_core_ensure_started(core) < 0) {
        /* The stdlib raises from submit() too (Process.start() failed). */
        goto fail_started;
    }
    Py_DECREF(key);
    return fut;

fail_item:
    if (m != NULL) {
        ProcMsg_Free(m);
    }
fail_started:
    if (key != NULL) {
        PyObject *exc = cf_PyErr_GetRaisedException();
        if (PyDict_DelItem(core->work_items, key) < 0) {
            PyErr_Clear();
        }
        cf_PyErr_SetRaisedException(exc);
        Py_DECREF(key);
    }
    Py_DECREF(fut);
    return NULL;

nomem:
    Py_XDECREF(call);
    Py_XDECREF(fargs);
    Py_XDECREF(kwargs);
    return NULL;
}

static PyObject *
ProcessPool_submit(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                   Py_ssize_t nargsf, PyObject *kwnames)
{
    cf_state *st = PyType_GetModuleState(cls);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "ProcessPoolExecutor.submit() missing 1 required "
                        "positional argument: 'fn'");
        return NULL;
    }
    /* a reference: pickling runs Python, which may call __init__() again
     * and drop the executor's reference to this core */
    ProcessCoreObject *core = get_core(self);
    if (core == NULL) {
        return NULL;
    }
    PyObject *fut;
    if (core_inherited(core)) {
        Py_DECREF(core);
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot submit to a ProcessPoolExecutor inherited "
                        "through fork(): it belongs to the parent process");
        return NULL;
    }
    Py_BEGIN_CRITICAL_SECTION(core);
    fut = core_submit(st, core, args, nargs, kwnames);
    Py_END_CRITICAL_SECTION();
    Py_DECREF(core);
    return fut;
}

PyDoc_STRVAR(pool_shutdown_doc,
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

static int core_shutdown(cf_state *st, ProcessCoreObject *core, int wait,
                         int cancel);

static PyObject *
ProcessPool_shutdown(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                     Py_ssize_t nargsf, PyObject *kwnames)
{
    cf_state *st = PyType_GetModuleState(cls);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *wait_o = Py_True, *cancel_o = Py_False;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "shutdown() takes from 1 to 2 positional arguments but "
                     "%zd were given", nargs + 1);
        return NULL;
    }
    if (nargs == 1) {
        wait_o = args[0];
    }
    for (Py_ssize_t i = 0; kwnames && i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (cf_PyUnicode_EqualToUTF8(k, "wait") && nargs == 0) {
            wait_o = args[nargs + i];
        }
        else if (cf_PyUnicode_EqualToUTF8(k, "cancel_futures")) {
            cancel_o = args[nargs + i];
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "shutdown() got an unexpected keyword argument '%S'",
                         k);
            return NULL;
        }
    }
    int wait = PyObject_IsTrue(wait_o);
    int cancel = wait < 0 ? -1 : PyObject_IsTrue(cancel_o);
    if (cancel < 0) {
        return NULL;
    }
    /* a reference: cancel callbacks may call __init__() again */
    ProcessCoreObject *core = get_core(self);
    if (core == NULL) {
        return NULL;
    }
    int r = 0;
    if (!core_inherited(core)) {
        Py_BEGIN_CRITICAL_SECTION(core);
        r = core_shutdown(st, core, wait, cancel);
        Py_END_CRITICAL_SECTION();
    }
    Py_DECREF(core);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
core_shutdown(cf_state *st, ProcessCoreObject *core, int wait, int cancel)
{
    if (cancel) {
        /* Pending (not yet RUNNING) futures are cancelled, as the stdlib's
         * manager does; those already sent to a worker finish. */
        ProcMsg *m;
        while ((m = ProcMsgQueue_Pop(&core->backlog)) != NULL) {
            PyObject *fut = cf_core_pop_item(core, m->id);
            ProcMsg_Free(m);
            if (fut == NULL) {
                PyErr_Clear();
                continue;
            }
            if (cf_future_cancel(st, (FutureObject *)fut) < 0) {
                PyErr_WriteUnraisable(fut);
            }
            Py_DECREF(fut);
        }
    }
    core->shutdown = 1;
    core->processes_dropped = 1;
    ProcShared_Kick(core->sh);
    if (wait && cf_core_wait_done(core) < 0) {
        return -1;
    }
    return 0;
}

/* which: 0 _processes, 1 _broken, 2 _shutdown_thread */
static PyObject *
core_attr_read(ProcessCoreObject *core, int which)
{
    if (which == 0) {
        /* The stdlib's shutdown() sets it to None (3.10-3.13). */
        return core->processes_dropped ? NULL : Py_XNewRef(core->processes);
    }
    if (which == 1) {
        return Py_XNewRef(core->broken);
    }
    return PyBool_FromLong(core->shutdown);
}

/* Read under the core's critical section, but a fork child's copy without
 * (nothing changes it there, and its mutex may have been copied locked). */
static PyObject *
core_attr(PyObject *self, int which)
{
    ProcessCoreObject *core = get_core_or_null(self);
    PyObject *r = NULL;
    if (core != NULL) {
        if (core_inherited(core)) {
            r = core_attr_read(core, which);
        }
        else {
            Py_BEGIN_CRITICAL_SECTION(core);
            r = core_attr_read(core, which);
            Py_END_CRITICAL_SECTION();
        }
        Py_DECREF(core);
    }
    if (r == NULL) {
        r = Py_NewRef(which == 0 ? Py_None : Py_False);
    }
    return r;
}

static PyObject *
ProcessPool_get_processes(PyObject *self, void *Py_UNUSED(c))
{
    return core_attr(self, 0);
}

static PyObject *
ProcessPool_get_broken(PyObject *self, void *Py_UNUSED(c))
{
    return core_attr(self, 1);
}

static PyObject *
ProcessPool_get_shutdown(PyObject *self, void *Py_UNUSED(c))
{
    return core_attr(self, 2);
}

static PyObject *
ProcessPool_get_core(PyObject *self, void *Py_UNUSED(c))
{
    PyObject *core = (PyObject *)get_core_or_null(self);
    return core ? core : Py_NewRef(Py_None);
}

static int
ProcessPool_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((ProcessPoolObject *)self)->core);
    return 0;
}

static int
ProcessPool_clear(PyObject *self)
{
    Py_CLEAR(((ProcessPoolObject *)self)->core);
    return 0;
}

static void
ProcessPool_finalize(PyObject *self)
{
    /* The executor is gone: like the stdlib's weakref callback, let the
     * dispatcher finish queued work and stop the workers. */
    ProcessCoreObject *core = (ProcessCoreObject *)((ProcessPoolObject *)self)->core;
    if (core != NULL && !core_inherited(core)) {
        Py_BEGIN_CRITICAL_SECTION(core);
        if (!core->executor_gone) {
            core->executor_gone = 1;
            ProcShared_Kick(core->sh);
        }
        Py_END_CRITICAL_SECTION();
    }
}

static void
ProcessPool_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (PyObject_CallFinalizerFromDealloc(self) < 0) {
        return;
    }
    PyObject_GC_UnTrack(self);
    ProcessPool_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

#define METH_FAST (METH_METHOD | METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef ProcessPool_methods[] = {
    {"_start", (PyCFunction)(void (*)(void))ProcessPool_start, METH_FAST,
     pool_start_doc},
    {"submit", (PyCFunction)(void (*)(void))ProcessPool_submit, METH_FAST,
     pool_submit_doc},
    {"shutdown", (PyCFunction)(void (*)(void))ProcessPool_shutdown, METH_FAST,
     pool_shutdown_doc},
    {NULL, NULL}
};

static PyGetSetDef ProcessPool_getset[] = {
    {"_processes", ProcessPool_get_processes, NULL,
     "dict pid -> multiprocessing.Process of the live workers (None after "
     "shutdown())", NULL},
    {"_broken", ProcessPool_get_broken, NULL, NULL, NULL},
    {"_shutdown_thread", ProcessPool_get_shutdown, NULL, NULL, NULL},
    {"_core", ProcessPool_get_core, NULL, NULL, NULL},
    {NULL}
};

PyDoc_STRVAR(ProcessPool_doc,
"ProcessPool()\n--\n\n"
"Native base of cfutures.ProcessPoolExecutor.");

static PyType_Slot ProcessPool_slots[] = {
    {Py_tp_doc, (void *)ProcessPool_doc},
    {Py_tp_dealloc, ProcessPool_dealloc},
    {Py_tp_finalize, ProcessPool_finalize},
    {Py_tp_traverse, ProcessPool_traverse},
    {Py_tp_clear, ProcessPool_clear},
    {Py_tp_new, ProcessPool_new},
    {Py_tp_methods, ProcessPool_methods},
    {Py_tp_getset, ProcessPool_getset},
    {0, NULL},
};

static PyType_Spec ProcessPool_spec = {
    .name = "cfutures._cfutures.ProcessPool",
    .basicsize = sizeof(ProcessPoolObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC),
    .slots = ProcessPool_slots,
};

/* =================================================== module functions */

PyDoc_STRVAR(process_init_doc,
"_process_init($module, /, *, broken, remote_traceback, pickler, loads,\n"
"              protocol, copyreg_table, extra_reducers, format_exception)\n"
"--\n\n"
"Called once by cfutures.process: the stdlib's BrokenProcessPool and\n"
"_RemoteTraceback, pickle.Pickler, pickle.loads, the pickle protocol,\n"
"ForkingPickler's reducer tables (dicts) and traceback.format_exception.");

static PyObject *
process_init(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"broken", "remote_traceback", "pickler",
                             "loads", "protocol", "copyreg_table",
                             "extra_reducers", "format_exception", NULL};
    PyObject *v[8];
    if (!PyArg_ParseTupleAndKeywords(args, kwargs,
                                     "|$OOOOOO!O!O:_process_init", kwlist,
                                     &v[0], &v[1], &v[2], &v[3], &v[4],
                                     &PyDict_Type, &v[5], &PyDict_Type, &v[6],
                                     &v[7])) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 0 || kwargs == NULL
        || PyDict_GET_SIZE(kwargs) != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "_process_init() needs all its keyword arguments");
        return NULL;
    }
    cf_state *st = cf_get_state(mod);
    cf_proc_tables_unwatch(st);     /* watching the old tables */
    cf_proc_state *ps = &st->proc;
    Py_XSETREF(ps->BrokenProcessPool, Py_NewRef(v[0]));
    Py_XSETREF(ps->RemoteTraceback, Py_NewRef(v[1]));
    Py_XSETREF(ps->Pickler, Py_NewRef(v[2]));
    Py_XSETREF(ps->loads, Py_NewRef(v[3]));
    Py_XSETREF(ps->protocol, Py_NewRef(v[4]));
    Py_XSETREF(ps->copyreg_table, Py_NewRef(v[5]));
    Py_XSETREF(ps->extra_reducers, Py_NewRef(v[6]));
    Py_XSETREF(ps->format_exception, Py_NewRef(v[7]));
    cf_proc_tables_watch(st);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(process_global_shutdown_doc,
"_process_global_shutdown($module, /)\n--\n\n"
"Interpreter exit began: refuse new work in every process pool.");

static PyObject *
process_global_shutdown(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    cf_get_state(mod)->proc.global_shutdown = 1;
    Py_RETURN_NONE;
}

static PyMethodDef process_functions[] = {
    {"_process_init", (PyCFunction)(void (*)(void))process_init,
     METH_VARARGS | METH_KEYWORDS, process_init_doc},
    {"_process_global_shutdown", process_global_shutdown, METH_NOARGS,
     process_global_shutdown_doc},
    {"_process_worker_loop", cf_process_worker_loop, METH_VARARGS,
     cf_process_worker_loop_doc},
    {NULL, NULL}
};

/* ------------------------------------------------------ module state */

int
cf_processpool_traverse(cf_state *st, visitproc visit, void *arg)
{
    cf_proc_state *ps = &st->proc;
    Py_VISIT(ps->ProcessPool_type);
    Py_VISIT(ps->ProcessCore_type);
    Py_VISIT(ps->FrameWriter_type);
    Py_VISIT(ps->FrameReader_type);
    Py_VISIT(ps->BrokenProcessPool);
    Py_VISIT(ps->RemoteTraceback);
    Py_VISIT(ps->Pickler);
    Py_VISIT(ps->loads);
    Py_VISIT(ps->protocol);
    Py_VISIT(ps->copyreg_table);
    Py_VISIT(ps->extra_reducers);
    Py_VISIT(ps->format_exception);
    return 0;
}

void
cf_processpool_clear(cf_state *st)
{
    cf_proc_state *ps = &st->proc;
    cf_proc_tables_unwatch(st);
    Py_CLEAR(ps->ProcessPool_type);
    Py_CLEAR(ps->ProcessCore_type);
    Py_CLEAR(ps->FrameWriter_type);
    Py_CLEAR(ps->FrameReader_type);
    Py_CLEAR(ps->BrokenProcessPool);
    Py_CLEAR(ps->RemoteTraceback);
    Py_CLEAR(ps->Pickler);
    Py_CLEAR(ps->loads);
    Py_CLEAR(ps->protocol);
    Py_CLEAR(ps->copyreg_table);
    Py_CLEAR(ps->extra_reducers);
    Py_CLEAR(ps->format_exception);
}

int
cf_processpool_module_init(PyObject *mod, cf_state *st)
{
    if (cf_procpickle_module_init(mod, st) < 0
        || cf_processcore_module_init(mod, st) < 0) {
        return -1;
    }
    st->proc.ProcessPool_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &ProcessPool_spec, NULL);
    if (st->proc.ProcessPool_type == NULL
        || PyModule_AddType(mod, st->proc.ProcessPool_type) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(mod, process_functions);
}
