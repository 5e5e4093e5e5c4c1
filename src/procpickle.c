/* procpickle: how the process pool's calls and results become bytes and
 * back, on both sides of the pipes: a frame writer (a file object whose
 * write() appends to a ProcBuf), a reusable pickler with
 * ForkingPickler's reducers, loads() over raw memory, and the remote
 * traceback that travels with a task's exception (GIL held throughout). */
#include "procpool.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- the frame writer: a file-like object for pickle.Pickler */

typedef struct {
    PyObject_HEAD
    ProcBuf *target;
    /* Large writes go to shm when set: one ProcHole each in holes, pos
     * counted from target->len == mark (where this pickle starts). */
    ProcShm *shm;
    size_t mark;
    ProcBuf holes;
} FrameWriterObject;

/* Fault in the whole pages of [p, p + n) in one system call: a large copy
 * into fresh memory (a new region's pages in this process, a new object's
 * buffer) otherwise takes a page fault every 4 KiB, which costs several
 * times the copy itself. */
static void
prefault(const void *p, size_t n, int write)
{
#if defined(MADV_POPULATE_READ) && defined(MADV_POPULATE_WRITE)
    if (n < (1u << 16)) {
        return;
    }
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(pg - 1);
    if (b > a) {
        (void)madvise((void *)a, b - a,
                      write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
    }
#else
    (void)p;
    (void)n;
    (void)write;
#endif
}

/* A large write into shm, as a hole.  0, or -1: no room (use the pipe). */
static int
writer_hole(FrameWriterObject *fw, const Py_buffer *view)
{
    size_t n = (size_t)view->len, off;
    uint64_t seq;
    if (ProcBuf_Reserve(&fw->holes, sizeof(ProcHole)) < 0
        || ProcShm_Alloc(fw->shm, n, &off, &seq) < 0) {
        return -1;
    }
    prefault(fw->shm->base + off, n, 1);   /* a reused region's pages */
    memcpy(fw->shm->base + off, view->buf, n);
    ProcHole h = {.pos = fw->target->len - fw->mark, .off = off, .len = n,
                  .seq = seq};
    memcpy(fw->holes.data + fw->holes.len, &h, sizeof(h));
    fw->holes.len += sizeof(h);
    return 0;
}

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
    if (fw->shm != NULL && (size_t)view.len >= CF_SHM_MIN
        && fw->shm->base != NULL && writer_hole(fw, &view) == 0) {
        Py_ssize_t n = view.len;
        PyBuffer_Release(&view);
        return PyLong_FromSsize_t(n);
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
FrameWriter_dealloc_plain(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static void
FrameWriter_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    ProcBuf_Free(&((FrameWriterObject *)self)->holes);
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
    fw->shm = NULL;
    fw->mark = 0;
    ProcBuf_Init(&fw->holes);
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
    return ProcPickler_DumpShm(st, pp, obj, target, NULL);
}

/* The end of a dump with shm: append the hole table and the trailer, or
 * on error (ok == 0) free the spans already written. */
static int
writer_finish(FrameWriterObject *fw, int ok)
{
    size_t nh = fw->holes.len / sizeof(ProcHole);
    int r = 0;
    if (nh > 0 && ok) {
        uint32_t t[2] = {(uint32_t)nh, CF_SHM_MAGIC};
        if (nh > UINT32_MAX / 2
            || ProcBuf_Append(fw->target, fw->holes.data, fw->holes.len) < 0
            || ProcBuf_Append(fw->target, t, sizeof(t)) < 0) {
            PyErr_NoMemory();
            ok = 0;
            r = -1;
        }
    }
    if (nh > 0 && !ok) {
        for (size_t i = 0; i < nh; i++) {
            ProcHole h;
            ProcShm_Hole(fw->holes.data, i, &h);
            ProcShm_Release(fw->shm, h.seq);
        }
    }
    fw->holes.len = 0;
    fw->shm = NULL;
    return r;
}

int
ProcPickler_DumpShm(cf_state *st, ProcPickler *pp, PyObject *obj,
                    ProcBuf *target, ProcShm *shm)
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
    FrameWriterObject *fw = (FrameWriterObject *)use->writer;
    fw->target = target;
    fw->shm = shm;
    fw->mark = mark;
    fw->holes.len = 0;
    PyObject *r = PyObject_CallOneArg(use->dump, obj);
    if (writer_finish(fw, r != NULL) < 0) {
        Py_CLEAR(r);
    }
    fw->target = NULL;
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

/* ---- the frame reader: a file-like object for pickle.Unpickler that
 * reads a payload with holes, each hole's bytes straight from shm (so the
 * body of a big bytes is copied once, from shm into the new object). */

typedef struct {
    PyObject_HEAD
    const char *p;          /* the pickle minus holes */
    size_t plen;
    const char *table;      /* ProcHole[nholes], validated */
    size_t nholes;
    ProcShm *shm;
    size_t k;               /* segment: 2i = pickle part before hole i, 2i+1 = hole i */
    size_t at;              /* offset within segment k */
} FrameReaderObject;

/* Segment k: its bytes (NULL: read with pread from shm at *off) and size. */
static const char *
reader_segment(FrameReaderObject *fr, size_t k, size_t *len, uint64_t *off)
{
    ProcHole h;
    size_t i = k / 2;
    if (k % 2) {
        ProcShm_Hole(fr->table, i, &h);
        *len = (size_t)h.len;
        *off = h.off;
        return fr->shm->base ? fr->shm->base + h.off : NULL;
    }
    size_t from = 0, to = fr->plen;
    if (i > 0) {
        ProcShm_Hole(fr->table, i - 1, &h);
        from = (size_t)h.pos;
    }
    if (i < fr->nholes) {
        ProcHole h2;
        ProcShm_Hole(fr->table, i, &h2);
        to = (size_t)h2.pos;
    }
    *len = to - from;
    return fr->p + from;
}

/* Copy up to n bytes (all, unless the stream ends; line: stop after a
 * newline).  -1 on pread failure. */
static Py_ssize_t
reader_copy(FrameReaderObject *fr, char *dst, size_t n, int line)
{
    size_t done = 0;
    while (done < n && fr->k <= 2 * fr->nholes) {
        size_t len;
        uint64_t off = 0;
        const char *src = reader_segment(fr, fr->k, &len, &off);
        size_t take = len - fr->at;
        if (take > n - done) {
            take = n - done;
        }
        if (take > 0) {
            if (src != NULL) {
                prefault(src + fr->at, take, 0);
                prefault(dst + done, take, 1);
                memcpy(dst + done, src + fr->at, take);
            }
            else if (pread(fr->shm->fd, dst + done, take,
                           (off_t)(off + fr->at)) != (ssize_t)take) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
        }
        if (line) {
            const char *nl = memchr(dst + done, '\n', take);
            if (nl != NULL) {
                take = (size_t)(nl - (dst + done)) + 1;
                n = done + take;
            }
        }
        done += take;
        fr->at += take;
        if (fr->at == len) {
            fr->k++;
            fr->at = 0;
        }
    }
    return (Py_ssize_t)done;
}

static size_t
reader_left(FrameReaderObject *fr)
{
    size_t left = 0;
    for (size_t k = fr->k; k <= 2 * fr->nholes; k++) {
        size_t len;
        uint64_t off;
        (void)reader_segment(fr, k, &len, &off);
        left += len - (k == fr->k ? fr->at : 0);
    }
    return left;
}

static PyObject *
FrameReader_read(PyObject *self, PyObject *arg)
{
    FrameReaderObject *fr = (FrameReaderObject *)self;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    size_t left = reader_left(fr);
    if (n < 0 || (size_t)n > left) {
        n = (Py_ssize_t)left;
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, n);
    if (b == NULL) {
        return NULL;
    }
    if (reader_copy(fr, PyBytes_AS_STRING(b), (size_t)n, 0) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return b;
}

static PyObject *
FrameReader_readinto(PyObject *self, PyObject *arg)
{
    FrameReaderObject *fr = (FrameReaderObject *)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    Py_ssize_t r = reader_copy(fr, view.buf, (size_t)view.len, 0);
    PyBuffer_Release(&view);
    return r < 0 ? NULL : PyLong_FromSsize_t(r);
}

static PyObject *
FrameReader_readline(PyObject *self, PyObject *unused)
{
    FrameReaderObject *fr = (FrameReaderObject *)self;
    /* Text opcodes: rare, short.  Read through the next newline. */
    size_t left = reader_left(fr);
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)left);
    if (b == NULL) {
        return NULL;
    }
    Py_ssize_t r = reader_copy(fr, PyBytes_AS_STRING(b), left, 1);
    if (r < 0) {
        Py_DECREF(b);
        return NULL;
    }
    if ((size_t)r < left && _PyBytes_Resize(&b, r) < 0) {
        return NULL;
    }
    return b;
}

static PyMethodDef FrameReader_methods[] = {
    {"read", FrameReader_read, METH_O, NULL},
    {"readinto", FrameReader_readinto, METH_O, NULL},
    {"readline", FrameReader_readline, METH_NOARGS, NULL},
    {NULL, NULL}
};

static PyType_Slot FrameReader_slots[] = {
    {Py_tp_dealloc, FrameWriter_dealloc_plain},
    {Py_tp_methods, FrameReader_methods},
    {0, NULL},
};

static PyType_Spec FrameReader_spec = {
    .name = "cfutures._cfutures._FrameReader",
    .basicsize = sizeof(FrameReaderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = FrameReader_slots,
};

/* loads() of a payload with holes.  The table is checked first: a hole
 * outside the region's file would fault, not raise. */
static PyObject *
loads_holes(cf_state *st, const char *p, size_t n, ProcShm *shm)
{
    const char *table;
    size_t nh, plen;
    if (ProcShm_Holes(p, n, &table, &nh, &plen) < 0 || shm == NULL) {
        goto malformed;
    }
    uint64_t pos = 0;
    for (size_t i = 0; i < nh; i++) {
        ProcHole h;
        ProcShm_Hole(table, i, &h);
        if (h.pos < pos || h.pos > plen || !ProcShm_Valid(shm, h.off, h.len)) {
            goto malformed;
        }
        pos = h.pos;
    }
    FrameReaderObject *fr = PyObject_New(FrameReaderObject,
                                         st->proc.FrameReader_type);
    if (fr == NULL) {
        return NULL;
    }
    fr->p = p;
    fr->plen = plen;
    fr->table = table;
    fr->nholes = nh;
    fr->shm = shm;
    fr->k = 0;
    fr->at = 0;
    PyObject *obj = NULL;
    PyObject *unpickler = NULL;
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle != NULL) {
        PyObject *cls = PyObject_GetAttrString(pickle, "Unpickler");
        if (cls != NULL) {
            unpickler = PyObject_CallOneArg(cls, (PyObject *)fr);
            Py_DECREF(cls);
        }
        Py_DECREF(pickle);
    }
    if (unpickler != NULL) {
        obj = PyObject_CallMethod(unpickler, "load", NULL);
        Py_DECREF(unpickler);
    }
    /* The memory is reused after this: make the reader empty. */
    fr->nholes = 0;
    fr->plen = 0;
    fr->k = 1;
    Py_DECREF(fr);
    return obj;
malformed:
    PyErr_SetString(PyExc_RuntimeError,
                    "malformed shared memory table in a frame");
    return NULL;
}

/* pickle.loads of a payload that may have holes in shm (NULL: none
 * expected).  publish: the reader of a result region, which tells the
 * worker once these spans are read. */
PyObject *
cf_proc_loads_shm(cf_state *st, const char *p, size_t n, ProcShm *shm,
                  int publish)
{
    if (n == 0 || p[n - 1] == '.') {
        return cf_proc_loads(st, p, n);
    }
    PyObject *obj = loads_holes(st, p, n, shm);
    const char *table;
    size_t nh, plen;
    if (publish && shm != NULL
        && ProcShm_Holes(p, n, &table, &nh, &plen) == 1 && nh > 0) {
        ProcHole h;
        ProcShm_Hole(table, nh - 1, &h);
        ProcShm_SetConsumed(shm, h.seq + 1);
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
    if (st->proc.FrameWriter_type == NULL) {
        return -1;
    }
    st->proc.FrameReader_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &FrameReader_spec, NULL);
    return st->proc.FrameReader_type == NULL ? -1 : 0;
}
