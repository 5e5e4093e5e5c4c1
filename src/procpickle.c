/* procpickle: how the process pool's calls and results become bytes and
 * back, on both sides of the pipes: a frame writer (a file object whose
 * write() appends to a ProcBuf), a reusable pickler with
 * ForkingPickler's reducers, loads() over raw memory, and the remote
 * traceback that travels with a task's exception (GIL held throughout). */
#include "procpool.h"

#include <string.h>

/* ---- the frame writer: a file-like object for pickle.Pickler */

typedef struct {
    PyObject_HEAD
    ProcBuf *target;
} FrameWriterObject;

static PyObject *
FrameWriter_write(PyObject *self, PyObject *data)
{
    FrameWriterObject *fw = (FrameWriterObject *)self;
    if (fw->target == NULL) {
        PyErr_SetString(PyExc_ValueError, "frame writer is not attached");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int r = ProcBuf_Append(fw->target, view.buf, (size_t)view.len);
    Py_ssize_t n = view.len;
    PyBuffer_Release(&view);
    if (r < 0) {
        return PyErr_NoMemory();
    }
    return PyLong_FromSsize_t(n);
}

static PyMethodDef FrameWriter_methods[] = {
    {"write", FrameWriter_write, METH_O, NULL},
    {NULL, NULL}
};

static void
FrameWriter_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot FrameWriter_slots[] = {
    {Py_tp_dealloc, FrameWriter_dealloc},
    {Py_tp_methods, FrameWriter_methods},
    {0, NULL},
};

static PyType_Spec FrameWriter_spec = {
    .name = "cfutures._cfutures._FrameWriter",
    .basicsize = sizeof(FrameWriterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = FrameWriter_slots,
};

/* ---- a reusable pickle.Pickler with ForkingPickler's dispatch table,
 * writing straight into a ProcBuf (one copy, no BytesIO). */

/* Has a reducer table changed since it was copied?  Re-registering a
 * reducer for a known type changes a value, not the size, so versions are
 * compared: 3.12+ a dict watcher bumps a counter (ma_version_tag is
 * deprecated there and gone in 3.14); before, the dicts' version tags
 * (a fresh value from a global counter on every change).  One or two
 * loads per submit. */
#if PY_VERSION_HEX >= 0x030C0000
static uint64_t reducers_gen = 1;

static int
reducers_watch(PyDict_WatchEvent ev, PyObject *d, PyObject *k, PyObject *v)
{
    __atomic_add_fetch(&reducers_gen, 1, __ATOMIC_RELAXED);
    return 0;
}

static void
tables_watch(cf_state *st)
{
    if (st->proc.watcher != 0) {
        return;
    }
    int id = PyDict_AddWatcher(reducers_watch);
    if (id < 0) {
        PyErr_Clear();          /* no free slot: rebuild on every dump */
        return;
    }
    if (PyDict_Watch(id, st->proc.copyreg_table) < 0
        || PyDict_Watch(id, st->proc.extra_reducers) < 0) {
        PyErr_Clear();
        (void)PyDict_ClearWatcher(id);
        PyErr_Clear();
        return;
    }
    st->proc.watcher = id + 1;
}
#endif

static void
tables_version(cf_state *st, uint64_t *vc, uint64_t *ve)
{
#if PY_VERSION_HEX >= 0x030C0000
    static uint64_t unwatched;
    *vc = st->proc.watcher != 0
          ? __atomic_load_n(&reducers_gen, __ATOMIC_RELAXED)
          : __atomic_add_fetch(&unwatched, 1, __ATOMIC_RELAXED);
    *ve = st->proc.watcher != 0 ? 0 : 1;
#else
    *vc = ((PyDictObject *)st->proc.copyreg_table)->ma_version_tag;
    *ve = ((PyDictObject *)st->proc.extra_reducers)->ma_version_tag;
#endif
}

void
cf_proc_tables_watch(cf_state *st)
{
#if PY_VERSION_HEX >= 0x030C0000
    tables_watch(st);
#else
    (void)st;
#endif
}

void
cf_proc_tables_unwatch(cf_state *st)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (st->proc.watcher != 0 && st->proc.copyreg_table != NULL) {
        (void)PyDict_Unwatch(st->proc.watcher - 1,
                             st->proc.copyreg_table);
        (void)PyDict_Unwatch(st->proc.watcher - 1,
                             st->proc.extra_reducers);
        (void)PyDict_ClearWatcher(st->proc.watcher - 1);
        PyErr_Clear();
    }
    st->proc.watcher = 0;
#else
    (void)st;
#endif
}

static int
pickler_sync_table(cf_state *st, ProcPickler *pp)
{
    /* ForkingPickler copies copyreg's table and adds its reducers on
     * every instantiation; we rebuild when either dict has changed. */
    PyObject *cr = st->proc.copyreg_table;
    PyObject *ex = st->proc.extra_reducers;
    uint64_t vc, ve;
    tables_version(st, &vc, &ve);
    if (pp->synced && pp->v_copyreg == vc && pp->v_extra == ve) {
        return 0;
    }
    PyObject *table = PyDict_Copy(cr);
    if (table == NULL) {
        return -1;
    }
    if (PyDict_Update(table, ex) < 0
        || PyObject_SetAttrString(pp->pickler, "dispatch_table", table) < 0) {
        Py_DECREF(table);
        return -1;
    }
    Py_DECREF(table);
    pp->v_copyreg = vc;
    pp->v_extra = ve;
    pp->synced = 1;
    return 0;
}

void
ProcPickler_Clear(ProcPickler *pp)
{
    Py_CLEAR(pp->writer);
    Py_CLEAR(pp->pickler);
    Py_CLEAR(pp->dump);
    Py_CLEAR(pp->clear_memo);
    pp->synced = 0;
}

int
ProcPickler_Init(cf_state *st, ProcPickler *pp)
{
    memset(pp, 0, sizeof(*pp));
    FrameWriterObject *fw = PyObject_New(FrameWriterObject,
                                         st->proc.FrameWriter_type);
    if (fw == NULL) {
        return -1;
    }
    fw->target = NULL;
    pp->writer = (PyObject *)fw;
    pp->pickler = PyObject_CallFunctionObjArgs(st->proc.Pickler,
                                               pp->writer,
                                               st->proc.protocol, NULL);
    if (pp->pickler == NULL) {
        goto error;
    }
    pp->dump = PyObject_GetAttrString(pp->pickler, "dump");
    pp->clear_memo = PyObject_GetAttrString(pp->pickler, "clear_memo");
    if (pp->dump == NULL || pp->clear_memo == NULL
        || pickler_sync_table(st, pp) < 0) {
        goto error;
    }
    return 0;
error:
    ProcPickler_Clear(pp);
    return -1;
}

int
ProcPickler_Traverse(ProcPickler *pp, visitproc visit, void *arg)
{
    Py_VISIT(pp->writer);
    Py_VISIT(pp->pickler);
    Py_VISIT(pp->dump);
    Py_VISIT(pp->clear_memo);
    return 0;
}

/* Append pickle(obj) to *target.  On error the buffer is truncated back
 * and -1 is returned with an exception set. */
int
ProcPickler_Dump(cf_state *st, ProcPickler *pp, PyObject *obj, ProcBuf *target)
{
    ProcPickler tmp;
    ProcPickler *use = pp;
    if (pp->busy || pp->pickler == NULL) {
        /* re-entered from a __reduce__ on another thread: a private one */
        if (ProcPickler_Init(st, &tmp) < 0) {
            return -1;
        }
        use = &tmp;
    }
    else if (pickler_sync_table(st, pp) < 0) {
        return -1;
    }
    size_t mark = target->len;
    use->busy = 1;
    ((FrameWriterObject *)use->writer)->target = target;
    PyObject *r = PyObject_CallOneArg(use->dump, obj);
    ((FrameWriterObject *)use->writer)->target = NULL;
    PyObject *exc = r == NULL ? cf_PyErr_GetRaisedException() : NULL;
    PyObject *c = PyObject_CallNoArgs(use->clear_memo);
    if (c == NULL) {
        /* keep the first error; a dirty memo must not be reused */
        if (exc != NULL) {
            PyErr_Clear();
        }
        else {
            exc = cf_PyErr_GetRaisedException();
        }
        if (use == pp) {
            ProcPickler_Clear(pp);
        }
    }
    Py_XDECREF(c);
    use->busy = 0;
    if (use == &tmp) {
        ProcPickler_Clear(&tmp);
    }
    if (exc != NULL) {
        Py_XDECREF(r);
        target->len = mark;
        cf_PyErr_SetRaisedException(exc);
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* pickle.loads over raw memory, without copying it into bytes. */
PyObject *
cf_proc_loads(cf_state *st, const char *p, size_t n)
{
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n,
                                           PyBUF_READ);
    if (mv == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_CallOneArg(st->proc.loads, mv);
    PyObject *exc = obj == NULL ? cf_PyErr_GetRaisedException() : NULL;
    /* The memory is reused after this: nobody may keep a view on it. */
    PyObject *r = PyObject_CallMethod(mv, "release", NULL);
    if (r == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(r);
    Py_DECREF(mv);
    if (exc != NULL) {
        cf_PyErr_SetRaisedException(exc);
    }
    return obj;
}

/* '\n"""\n' + ''.join(format_exception(type(e), e, tb)) + '"""' */
PyObject *
cf_proc_format_tb(cf_state *st, PyObject *exc)
{
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *lines = PyObject_CallFunctionObjArgs(
        st->proc.format_exception, (PyObject *)Py_TYPE(exc), exc,
        tb ? tb : Py_None, NULL);
    Py_XDECREF(tb);
    if (lines == NULL) {
        return NULL;
    }
    PyObject *empty = PyUnicode_FromString("");
    PyObject *joined = empty ? PyUnicode_Join(empty, lines) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(lines);
    if (joined == NULL) {
        return NULL;
    }
    PyObject *text = PyUnicode_FromFormat("\n\"\"\"\n%U\"\"\"", joined);
    Py_DECREF(joined);
    return text;
}

/* exc.__cause__ = _RemoteTraceback(text) */
int
cf_proc_attach_tb(cf_state *st, PyObject *exc, PyObject *text)
{
    if (!PyExceptionInstance_Check(exc)) {
        return 0;
    }
    PyObject *cause = PyObject_CallOneArg(st->proc.RemoteTraceback, text);
    if (cause == NULL) {
        return -1;
    }
    PyException_SetCause(exc, cause);   /* steals */
    return 0;
}


int
cf_procpickle_module_init(PyObject *mod, cf_state *st)
{
    st->proc.FrameWriter_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &FrameWriter_spec, NULL);
    return st->proc.FrameWriter_type == NULL ? -1 : 0;
}
