/* Native ProcessPoolExecutor: a dispatcher thread in C and a C worker loop.
 *
 * Shape
 * -----
 *   submit() (caller, GIL)        pickles (fn, args, kwargs) into a ProcMsg,
 *                                 then either marks the future RUNNING and
 *                                 queues the frame for sending (room in
 *                                 flight) or parks it in the GIL-side
 *                                 backlog (future stays PENDING, so
 *                                 cancel() still works, as in the stdlib).
 *   dispatcher thread (no GIL)    assigns queued frames to workers, writes
 *                                 them with writev(), poll()s result pipes,
 *                                 process sentinels and a wake-up eventfd,
 *                                 reads results in large chunks and splits
 *                                 frames; then takes the GIL once per batch
 *                                 to complete futures, promote backlog
 *                                 tasks and handle worker exits.
 *   worker process (C loop)       reads frames in large chunks, unpickles,
 *                                 calls, pickles the result and writes it
 *                                 at once (never held back behind the next
 *                                 task, which may run for a long time).
 *
 * In-flight depth
 * ---------------
 * Each worker is given up to `depth` tasks at once so it never idles on a
 * wake-up.  depth adapts to the measured service time (workers report it
 * in each result frame): enough queued work for ~1 ms, at least 2, at most
 * 64.  Long tasks therefore behave like the stdlib (one running, one
 * queued per worker) and do not pile up behind a busy worker; trivial
 * tasks travel 64 at a time.
 *
 * Locking
 * -------
 * ProcShared (pure C) is shared by the dispatcher and GIL holders and is
 * protected by sh->mutex.  The dispatcher owns its worker array; it makes
 * structural changes (adopting, removing, closing fds) under the mutex so
 * that the fork hooks see a consistent snapshot, and reads it freely.
 * Everything made of PyObjects lives in ProcessCoreObject and is
 * protected by the GIL.  Nobody holds sh->mutex while taking the GIL or
 * calling Python.
 *
 * Worker states
 * -------------
 *      launched --adopt--> BOOTING --READY frame--> READY
 *      READY: gets tasks while inflight < depth and budget remains
 *      exit_announced (max_tasks_per_child reached) or stop_sent: its end
 *      is expected; EOF/exit without either breaks the pool at once.
 *      exited (sentinel readable) --GIL--> reaped: join(), fds closed.
 *
 * Pool: running -> shutting down (shutdown(), executor collected or
 * interpreter exit: queued work still runs) -> STOP sent once nothing is
 * left -> every worker reaped -> dispatcher returns.  Broken (a worker
 * died): every pending future gets BrokenProcessPool, survivors get
 * SIGTERM (SIGKILL after a second), all are reaped, dispatcher returns.
 */
#include "cfutures.h"
#include "procio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

/* proc_helpers tuple, set once by cfutures.process through _process_init */
enum {
    H_BROKEN = 0,       /* concurrent.futures.process.BrokenProcessPool */
    H_REMOTE_TB,        /* concurrent.futures.process._RemoteTraceback */
    H_PICKLER,          /* pickle.Pickler */
    H_LOADS,            /* pickle.loads */
    H_PROTOCOL,         /* pickle.DEFAULT_PROTOCOL (ForkingPickler's) */
    H_COPYREG_TABLE,    /* ForkingPickler._copyreg_dispatch_table */
    H_EXTRA_REDUCERS,   /* ForkingPickler._extra_reducers */
    H_FORMAT_EXC,       /* traceback.format_exception */
    H_COUNT
};

#define HELPER(st, i) PyTuple_GET_ITEM((st)->proc_helpers, (i))

#define DEPTH_MIN 2
#define DEPTH_MAX 64
#define DEPTH_TARGET_US 1000.0
#define READ_CHUNK (256 * 1024)
#define TERM_GRACE_NS ((cf_time_t)1000 * 1000 * 1000)

static const char BROKEN_POOL_MSG[] =
    "A child process terminated abruptly, the process pool is not usable "
    "anymore";
static const char BROKEN_FUTURE_MSG[] =
    "A process in the process pool was terminated abruptly while the future "
    "was running or pending.";
#if PY_VERSION_HEX >= 0x030E0000
static const char GC_STRANDED_MSG[] =
    "The ProcessPoolExecutor was garbage collected with work pending after "
    "its last worker process exited upon reaching max_tasks_per_child; the "
    "pending work can never be run.";
#endif

/* ================================================== pure-C shared part */

typedef struct ProcWorker {
    struct ProcWorker *next;    /* launch list, before adoption */
    pid_t pid;
    int task_fd;                /* parent end, non-blocking */
    int result_fd;              /* parent end, non-blocking */
    int sentinel_fd;            /* pidfd (owned) or Process.sentinel */
    int own_sentinel;
    int launched;               /* pid/sentinel valid: may be adopted */
    int ready;                  /* READY frame seen */
    int exit_announced;         /* result carried CF_FRAME_F_EXIT */
    int stop_sent;
    int eof;                    /* result pipe at EOF */
    int exited;                 /* sentinel readable */
    int failed;                 /* pipe error / protocol error */
    int counted_retired;        /* GIL side: left nprocs_active */
    int reaped;
    int signalled;              /* terminated by the break (dispatcher) */
    size_t need;                /* bytes of the frame being received */
    uint32_t inflight;
    uint64_t assigned;
    uint64_t budget;            /* max_tasks_per_child, 0: unlimited */
    ProcMsgQueue out;
    ProcBuf in;
} ProcWorker;

typedef struct {
    ProcWorker *w;
    uint64_t id;
    uint32_t kind, aux;
    const char *p;
    size_t n;
} FrameRef;

typedef struct ProcShared {
    struct ProcShared *reg_prev, *reg_next;
    pthread_mutex_t mutex;
    int inherited;          /* this process is a fork child of the owner */
    int wake_fd;            /* eventfd */
    int sleeping;           /* dispatcher is in (or entering) poll() */
    int wake_pending;
    int kick;               /* a GIL holder wants a GIL phase */
    int abort_req;          /* _abort(): break the pool in the GIL phase */
    int depth;              /* per-worker in-flight target */
    ProcMsgQueue sendq;     /* RUNNING tasks not yet given to a worker */
    /* Tasks in sendq or at a worker and not yet answered.  Freed by the
     * dispatcher as soon as it parses a result (no GIL needed), so that
     * submit() can keep workers fed while it holds the GIL in a burst. */
    Py_ssize_t inflight_total;
    ProcWorker *launching;  /* launched by GIL holders, to adopt */
    /* dispatcher-owned */
    ProcWorker **w;
    int nw, wcap;
    FrameRef *batch;
    size_t nbatch, batchcap;
    cf_time_t kill_deadline;    /* CF_FOREVER unless terminating */
    int io_errno;               /* ppoll()/realloc() failed: break the pool */
    sigset_t launch_mask;       /* the dispatcher's mask before _run blocked
                                 * signals: workers it launches get it */
    cf_event done_ev;           /* posted when the dispatcher is done (latch) */
} ProcShared;

/* ---- registry + fork hooks: a child must not keep the parent's pipes
 * (workers would miss EOF when the parent dies) nor lock its mutexes. */

static pthread_mutex_t reg_mutex = PTHREAD_MUTEX_INITIALIZER;
static ProcShared *reg_head;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

static void
reg_prepare(void)
{
    pthread_mutex_lock(&reg_mutex);
    for (ProcShared *s = reg_head; s != NULL; s = s->reg_next) {
        if (!s->inherited) {
            pthread_mutex_lock(&s->mutex);
        }
    }
}

static void
reg_parent(void)
{
    for (ProcShared *s = reg_head; s != NULL; s = s->reg_next) {
        if (!s->inherited) {
            pthread_mutex_unlock(&s->mutex);
        }
    }
    pthread_mutex_unlock(&reg_mutex);
}

static void
close_worker_fds(ProcWorker *w)
{
    if (w->task_fd >= 0) {
        close(w->task_fd);
        w->task_fd = -1;
    }
    if (w->result_fd >= 0) {
        close(w->result_fd);
        w->result_fd = -1;
    }
    if (w->own_sentinel && w->sentinel_fd >= 0) {
        close(w->sentinel_fd);
    }
    w->sentinel_fd = -1;
}

static void
reg_child(void)
{
    /* Only async-signal-safe work: close fds, reset mutexes. */
    for (ProcShared *s = reg_head; s != NULL; s = s->reg_next) {
        if (!s->inherited) {
            s->inherited = 1;
            if (s->wake_fd >= 0) {
                close(s->wake_fd);
                s->wake_fd = -1;
            }
            for (ProcWorker *w = s->launching; w != NULL; w = w->next) {
                close_worker_fds(w);
            }
            for (int i = 0; i < s->nw; i++) {
                close_worker_fds(s->w[i]);
            }
        }
        pthread_mutex_init(&s->mutex, NULL);
    }
    pthread_mutex_init(&reg_mutex, NULL);
}

static void
reg_install(void)
{
    pthread_atfork(reg_prepare, reg_parent, reg_child);
}

static ProcShared *
ProcShared_New(void)
{
    pthread_once(&reg_once, reg_install);
    ProcShared *sh = calloc(1, sizeof(ProcShared));
    if (sh == NULL) {
        return NULL;
    }
    sh->wake_fd = -1;       /* made by the first submit() */
    pthread_mutex_init(&sh->mutex, NULL);
    sh->depth = DEPTH_MIN;
    sh->kill_deadline = CF_FOREVER;
    cf_event_init(&sh->done_ev);
    pthread_mutex_lock(&reg_mutex);
    sh->reg_next = reg_head;
    if (reg_head) {
        reg_head->reg_prev = sh;
    }
    reg_head = sh;
    pthread_mutex_unlock(&reg_mutex);
    return sh;
}

static void
ProcWorker_Free(ProcWorker *w)
{
    close_worker_fds(w);
    ProcMsgQueue_Clear(&w->out);
    ProcBuf_Free(&w->in);
    free(w);
}

static void
ProcShared_Free(ProcShared *sh)
{
    pthread_mutex_lock(&reg_mutex);
    if (sh->reg_prev) {
        sh->reg_prev->reg_next = sh->reg_next;
    }
    else {
        reg_head = sh->reg_next;
    }
    if (sh->reg_next) {
        sh->reg_next->reg_prev = sh->reg_prev;
    }
    pthread_mutex_unlock(&reg_mutex);
    ProcWorker *w;
    while ((w = sh->launching) != NULL) {
        sh->launching = w->next;
        ProcWorker_Free(w);
    }
    for (int i = 0; i < sh->nw; i++) {
        ProcWorker_Free(sh->w[i]);
    }
    free(sh->w);
    free(sh->batch);
    ProcMsgQueue_Clear(&sh->sendq);
    if (sh->wake_fd >= 0) {
        close(sh->wake_fd);
    }
    if (!sh->inherited) {
        pthread_mutex_destroy(&sh->mutex);
    }
    cf_event_destroy(&sh->done_ev);
    free(sh);
}

/* Wake the dispatcher if it sleeps.  Called with sh->mutex held; returns
 * whether the caller must write the eventfd after unlocking. */
static int
wake_locked(ProcShared *sh)
{
    if (sh->sleeping && !sh->wake_pending) {
        sh->wake_pending = 1;
        return 1;
    }
    return 0;
}

static void
wake_write(ProcShared *sh)
{
    uint64_t one = 1;
    if (sh->wake_fd >= 0) {
        ssize_t r = write(sh->wake_fd, &one, sizeof(one));
        (void)r;
    }
}

static void
kick(ProcShared *sh)
{
    if (sh == NULL || sh->inherited) {
        return;
    }
    pthread_mutex_lock(&sh->mutex);
    sh->kick = 1;
    int w = wake_locked(sh);
    pthread_mutex_unlock(&sh->mutex);
    if (w) {
        wake_write(sh);
    }
}

/* Dispatcher, mutex held: take in launched workers. */
static int
adopt_launched(ProcShared *sh)
{
    ProcWorker **pp = &sh->launching;
    int n = 0;
    while (*pp != NULL) {
        ProcWorker *w = *pp;
        if (!w->launched) {
            pp = &w->next;
            continue;
        }
        if (sh->nw == sh->wcap) {
            int ncap = sh->wcap ? sh->wcap * 2 : 8;
            ProcWorker **nw = realloc(sh->w, ncap * sizeof(ProcWorker *));
            if (nw == NULL) {
                return n;       /* retry on the next round */
            }
            sh->w = nw;
            sh->wcap = ncap;
        }
        *pp = w->next;
        w->next = NULL;
        sh->w[sh->nw++] = w;
        n++;
    }
    return n;
}

/* Dispatcher, mutex held: hand queued tasks to the least loaded workers. */
static void
assign_tasks(ProcShared *sh)
{
    /* Booting workers get work only while none is ready (start-up: the
     * first tasks wait in their pipe instead of for a READY round trip);
     * later a slow-starting replacement must not hold work an idle ready
     * worker could run. */
    int any_ready = 0;
    for (int i = 0; i < sh->nw; i++) {
        any_ready |= sh->w[i]->ready;
    }
    while (sh->sendq.head != NULL) {
        ProcWorker *best = NULL;
        for (int i = 0; i < sh->nw; i++) {
            ProcWorker *w = sh->w[i];
            if ((any_ready && !w->ready) || w->stop_sent || w->failed
                || w->eof || w->exited
                || w->inflight >= (uint32_t)sh->depth
                || (w->budget && w->assigned >= w->budget)) {
                continue;
            }
            if (best == NULL || w->inflight < best->inflight) {
                best = w;
            }
        }
        if (best == NULL) {
            return;
        }
        ProcMsgQueue_Push(&best->out, ProcMsgQueue_Pop(&sh->sendq));
        best->inflight++;
        best->assigned++;
    }
}

static int
batch_push(ProcShared *sh, FrameRef *f)
{
    if (sh->nbatch == sh->batchcap) {
        size_t ncap = sh->batchcap ? sh->batchcap * 2 : 256;
        FrameRef *n = realloc(sh->batch, ncap * sizeof(FrameRef));
        if (n == NULL) {
            return CF_ERR_PIPE_NOMEM;
        }
        sh->batch = n;
        sh->batchcap = ncap;
    }
    sh->batch[sh->nbatch++] = *f;
    return 0;
}

/* Dispatcher: read what a worker has written (bounded per round). */
static void
read_worker(ProcWorker *w)
{
    if (w->result_fd < 0 || w->eof) {
        return;
    }
    for (int i = 0; i < 64; i++) {
        size_t unread = ProcBuf_Unread(&w->in);
        size_t want = READ_CHUNK;
        if (w->need > unread && w->need - unread > want) {
            want = w->need - unread;
        }
        ssize_t n = ProcBuf_ReadFd(&w->in, w->result_fd, want);
        if (n > 0) {
            continue;
        }
        if (n == CF_ERR_PIPE_AGAIN && errno == EINTR) {
            continue;
        }
        if (n == CF_ERR_PIPE_AGAIN) {
            return;
        }
        if (n == CF_ERR_PIPE_EOF) {
            w->eof = 1;
            return;
        }
        w->failed = 1;          /* read error or out of memory */
        return;
    }
}

/* Dispatcher: split complete frames; results go to the batch. */
static int
parse_worker(ProcShared *sh, ProcWorker *w, Py_ssize_t *answered)
{
    int progress = 0;
    for (;;) {
        ProcFrameHeader h;
        const char *payload;
        size_t need;
        int r = ProcBuf_NextFrame(&w->in, &h, &payload, &need);
        if (r == 0) {
            /* Grown by the next read_worker(), after this round's batch
             * (which points into w->in) has been consumed. */
            w->need = need;
            return progress;
        }
        if (r < 0) {
            w->failed = 1;
            return progress;
        }
        uint32_t kind = CF_FRAME_KIND(h.kind);
        if (kind == CF_FRAME_READY) {
            w->ready = 1;
            progress = 1;
            continue;
        }
        if (kind != CF_FRAME_RESULT && kind != CF_FRAME_EXC
            && kind != CF_FRAME_ERRTEXT) {
            w->failed = 1;
            return progress;
        }
        if (h.kind & CF_FRAME_F_EXIT) {
            w->exit_announced = 1;
        }
        if (w->inflight > 0) {
            w->inflight--;
        }
        (*answered)++;
        FrameRef f = {.w = w, .id = h.id, .kind = kind, .aux = h.aux,
                      .p = payload, .n = (size_t)h.len};
        if (batch_push(sh, &f) < 0) {
            w->failed = 1;
            return progress;
        }
        progress = 1;
    }
}

/* ================================================== Python-side objects */

/* A file-like object for pickle.Pickler: write() appends to a ProcBuf. */
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

typedef struct {
    PyObject *writer;
    PyObject *pickler;
    PyObject *dump;             /* bound pickler.dump */
    PyObject *clear_memo;       /* bound pickler.clear_memo */
    uint64_t v_copyreg, v_extra;    /* tables_version() when copied */
    int synced;                     /* dispatch_table holds that copy */
    int busy;
} ProcPickler;

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
    if (st->proc_watcher != 0) {
        return;
    }
    int id = PyDict_AddWatcher(reducers_watch);
    if (id < 0) {
        PyErr_Clear();          /* no free slot: rebuild on every dump */
        return;
    }
    if (PyDict_Watch(id, HELPER(st, H_COPYREG_TABLE)) < 0
        || PyDict_Watch(id, HELPER(st, H_EXTRA_REDUCERS)) < 0) {
        PyErr_Clear();
        (void)PyDict_ClearWatcher(id);
        PyErr_Clear();
        return;
    }
    st->proc_watcher = id + 1;
}
#endif

static void
tables_version(cf_state *st, uint64_t *vc, uint64_t *ve)
{
#if PY_VERSION_HEX >= 0x030C0000
    static uint64_t unwatched;
    *vc = st->proc_watcher != 0
          ? __atomic_load_n(&reducers_gen, __ATOMIC_RELAXED)
          : __atomic_add_fetch(&unwatched, 1, __ATOMIC_RELAXED);
    *ve = st->proc_watcher != 0 ? 0 : 1;
#else
    *vc = ((PyDictObject *)HELPER(st, H_COPYREG_TABLE))->ma_version_tag;
    *ve = ((PyDictObject *)HELPER(st, H_EXTRA_REDUCERS))->ma_version_tag;
#endif
}

/* Module state is cleared: stop watching (3.12+). */
void
cf_processpool_state_clear(cf_state *st)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (st->proc_watcher != 0 && st->proc_helpers != NULL) {
        (void)PyDict_Unwatch(st->proc_watcher - 1,
                             HELPER(st, H_COPYREG_TABLE));
        (void)PyDict_Unwatch(st->proc_watcher - 1,
                             HELPER(st, H_EXTRA_REDUCERS));
        (void)PyDict_ClearWatcher(st->proc_watcher - 1);
        PyErr_Clear();
    }
    st->proc_watcher = 0;
#else
    (void)st;
#endif
}

static int
pickler_sync_table(cf_state *st, ProcPickler *pp)
{
    /* ForkingPickler copies copyreg's table and adds its reducers on
     * every instantiation; we rebuild when either dict has changed. */
    PyObject *cr = HELPER(st, H_COPYREG_TABLE);
    PyObject *ex = HELPER(st, H_EXTRA_REDUCERS);
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

static void
pickler_clear(ProcPickler *pp)
{
    Py_CLEAR(pp->writer);
    Py_CLEAR(pp->pickler);
    Py_CLEAR(pp->dump);
    Py_CLEAR(pp->clear_memo);
    pp->synced = 0;
}

static int
pickler_init(cf_state *st, ProcPickler *pp)
{
    memset(pp, 0, sizeof(*pp));
    FrameWriterObject *fw = PyObject_New(FrameWriterObject,
                                         st->FrameWriter_type);
    if (fw == NULL) {
        return -1;
    }
    fw->target = NULL;
    pp->writer = (PyObject *)fw;
    pp->pickler = PyObject_CallFunctionObjArgs(HELPER(st, H_PICKLER),
                                               pp->writer,
                                               HELPER(st, H_PROTOCOL), NULL);
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
    pickler_clear(pp);
    return -1;
}

static int
pickler_traverse(ProcPickler *pp, visitproc visit, void *arg)
{
    Py_VISIT(pp->writer);
    Py_VISIT(pp->pickler);
    Py_VISIT(pp->dump);
    Py_VISIT(pp->clear_memo);
    return 0;
}

/* Append pickle(obj) to *target.  On error the buffer is truncated back
 * and -1 is returned with an exception set. */
static int
pickler_dump(cf_state *st, ProcPickler *pp, PyObject *obj, ProcBuf *target)
{
    ProcPickler tmp;
    ProcPickler *use = pp;
    if (pp->busy || pp->pickler == NULL) {
        /* re-entered from a __reduce__ on another thread: a private one */
        if (pickler_init(st, &tmp) < 0) {
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
            pickler_clear(pp);
        }
    }
    Py_XDECREF(c);
    use->busy = 0;
    if (use == &tmp) {
        pickler_clear(&tmp);
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
static PyObject *
loads_mem(cf_state *st, const char *p, size_t n)
{
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n,
                                           PyBUF_READ);
    if (mv == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_CallOneArg(HELPER(st, H_LOADS), mv);
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
static PyObject *
format_remote_tb(cf_state *st, PyObject *exc)
{
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *lines = PyObject_CallFunctionObjArgs(
        HELPER(st, H_FORMAT_EXC), (PyObject *)Py_TYPE(exc), exc,
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
static int
attach_remote_tb(cf_state *st, PyObject *exc, PyObject *text)
{
    if (!PyExceptionInstance_Check(exc)) {
        return 0;
    }
    PyObject *cause = PyObject_CallOneArg(HELPER(st, H_REMOTE_TB), text);
    if (cause == NULL) {
        return -1;
    }
    PyException_SetCause(exc, cause);   /* steals */
    return 0;
}

/* ------------------------------------------------- the core object */

typedef struct {
    PyObject_HEAD
    ProcShared *sh;
    PyObject *module;
    PyObject *ctx;
    PyObject *initializer;
    PyObject *initargs;
    PyObject *max_tasks;        /* int or None */
    PyObject *launch;           /* cfutures.process._launch_worker */
    PyObject *start_thread;     /* cfutures.process._start_thread */
    PyObject *thread;           /* threading.Thread running _run, or NULL */
    PyObject *procs;            /* pid -> Process, every worker not reaped */
    /* The executor's _processes (the stdlib's): pid -> Process of the live
     * workers; a worker leaves it when it announces its exit or is reaped.
     * Only read here (never for reaping): callers may change it. */
    PyObject *processes;
    PyObject *work_items;       /* dict id -> future (not yet completed) */
    PyObject *broken;           /* str (stdlib's _broken) or NULL */
    ProcPickler pickler;
    ProcMsgQueue backlog;       /* PENDING tasks, FIFO */
    uint64_t next_id;
    Py_ssize_t running;         /* RUNNING futures in the pipeline */
    int max_workers;
    int is_fork;                /* fork context: never launch from the dispatcher */
    int fork_lazy;              /* older stdlib: fork on demand in submit() */
    int nprocs_active;          /* launched, not retiring, not reaped */
    int depth;                  /* GIL-side copy of sh->depth */
    double ewma_us;
    int shutdown;               /* shutdown() called (or broken) */
    int executor_gone;
    int stop_sent;
    int launch_failed;
    /* Dispatcher start-up is single-flight: set before any Python runs
     * (it may release the GIL), so that a racing submit() neither starts
     * a second dispatcher nor launches workers of its own. */
    int starting;
    unsigned long starter;      /* the thread setting starting */
    int started;                /* a dispatcher was started: done_ev posts */
    int in_run;                 /* _run() is running on thread run_ident */
    unsigned long run_ident;
    int processes_dropped;      /* shutdown() called: _processes is None */
    /* Submits whose call failed to pickle.  The stdlib learns that only in
     * its feeder thread, after submit() started a worker for the task, and
     * such a task never frees its worker's idle slot: count them as work
     * when deciding to start workers, so that as many are started. */
    int unpicklable;
} ProcessCoreObject;

typedef struct {
    PyObject_HEAD
    PyObject *core;
} ProcessPoolObject;

static cf_state *
core_state(ProcessCoreObject *core)
{
    return cf_get_state(core->module);
}

static int
core_shutting_down(ProcessCoreObject *core)
{
    return core->shutdown || core->executor_gone
           || core_state(core)->proc_global_shutdown;
}

static int
ProcessCore_traverse(PyObject *self, visitproc visit, void *arg)
{
    ProcessCoreObject *c = (ProcessCoreObject *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(c->module);
    Py_VISIT(c->ctx);
    Py_VISIT(c->initializer);
    Py_VISIT(c->initargs);
    Py_VISIT(c->max_tasks);
    Py_VISIT(c->launch);
    Py_VISIT(c->start_thread);
    Py_VISIT(c->thread);
    Py_VISIT(c->procs);
    Py_VISIT(c->processes);
    Py_VISIT(c->work_items);
    Py_VISIT(c->broken);
    return pickler_traverse(&c->pickler, visit, arg);
}

static int
ProcessCore_clear(PyObject *self)
{
    ProcessCoreObject *c = (ProcessCoreObject *)self;
    Py_CLEAR(c->ctx);
    Py_CLEAR(c->initializer);
    Py_CLEAR(c->initargs);
    Py_CLEAR(c->max_tasks);
    Py_CLEAR(c->launch);
    Py_CLEAR(c->start_thread);
    Py_CLEAR(c->thread);
    Py_CLEAR(c->procs);
    Py_CLEAR(c->processes);
    Py_CLEAR(c->work_items);
    Py_CLEAR(c->broken);
    pickler_clear(&c->pickler);
    return 0;
}

static void
ProcessCore_dealloc(PyObject *self)
{
    ProcessCoreObject *c = (ProcessCoreObject *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ProcessCore_clear(self);
    ProcMsgQueue_Clear(&c->backlog);
    if (c->sh != NULL) {
        ProcShared_Free(c->sh);
        c->sh = NULL;
    }
    Py_CLEAR(c->module);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ---- workers: launch (GIL, any thread) */

static int
pidfd_for(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    return fd;
#else
    return -1;
#endif
}

static int
core_launch_worker(ProcessCoreObject *core)
{
    ProcShared *sh = core->sh;
    int tp[2] = {-1, -1}, rp[2] = {-1, -1};
    if (pipe2(tp, O_CLOEXEC) < 0 || pipe2(rp, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail_fds;
    }
    cf_pipe_tune(tp[1], 1);
    cf_pipe_tune(rp[0], 1);
    ProcWorker *w = calloc(1, sizeof(ProcWorker));
    if (w == NULL) {
        PyErr_NoMemory();
        goto fail_fds;
    }
    w->task_fd = tp[1];
    w->result_fd = rp[0];
    w->sentinel_fd = -1;
    if (core->max_tasks != Py_None) {
        w->budget = PyLong_AsUnsignedLongLong(core->max_tasks);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            w->budget = 0;
        }
    }
    /* Listed before the fork so that the child closes our ends. */
    pthread_mutex_lock(&sh->mutex);
    w->next = sh->launching;
    sh->launching = w;
    pthread_mutex_unlock(&sh->mutex);
    /* Counted from now: starting a process runs Python and may release
     * the GIL, and a submit() or the dispatcher must not start another
     * one for the same need meanwhile (max_workers would be exceeded). */
    core->nprocs_active++;

    /* The helper owns (and closes) the child's ends from here on. */
    PyObject *p = PyObject_CallFunction(
        core->launch, "OiiOOO", core->ctx, tp[0], rp[1],
        core->initializer ? core->initializer : Py_None,
        core->initargs, core->max_tasks);
    PyObject *pid_o = NULL, *sent_o = NULL;
    long pid = -1, sentinel = -1;
    if (p != NULL) {
        pid_o = PyObject_GetAttrString(p, "pid");
        sent_o = pid_o ? PyObject_GetAttrString(p, "sentinel") : NULL;
        if (sent_o != NULL) {
            pid = PyLong_AsLong(pid_o);
            sentinel = PyLong_AsLong(sent_o);
        }
        if (PyErr_Occurred()
            || PyDict_SetItem(core->procs, pid_o, p) < 0) {
            Py_CLEAR(p);
        }
        else if (PyDict_SetItem(core->processes, pid_o, p) < 0) {
            PyErr_Clear();      /* only the executor's view lacks it */
        }
    }
    Py_XDECREF(pid_o);
    Py_XDECREF(sent_o);

    pthread_mutex_lock(&sh->mutex);
    if (p == NULL) {
        ProcWorker **pp = &sh->launching;
        while (*pp != w) {
            pp = &(*pp)->next;
        }
        *pp = w->next;
        close_worker_fds(w);
    }
    else {
        w->pid = (pid_t)pid;
        int pfd = pidfd_for(w->pid);
        if (pfd >= 0) {
            w->sentinel_fd = pfd;
            w->own_sentinel = 1;
        }
        else {
            w->sentinel_fd = (int)sentinel;
        }
        w->launched = 1;
    }
    int wk = p != NULL ? wake_locked(sh) : 0;
    pthread_mutex_unlock(&sh->mutex);
    if (wk) {
        wake_write(sh);
    }
    if (p == NULL) {
        ProcMsgQueue_Clear(&w->out);
        free(w);
        core->nprocs_active--;
        return -1;
    }
    Py_DECREF(p);
    return 0;

fail_fds:
    for (int i = 0; i < 2; i++) {
        if (tp[i] >= 0) {
            close(tp[i]);
        }
        if (rp[i] >= 0) {
            close(rp[i]);
        }
    }
    return -1;
}

static Py_ssize_t
core_capacity(ProcessCoreObject *core)
{
    return (Py_ssize_t)core->max_workers * core->depth;
}

/* ---- completing futures (dispatcher, GIL) */

static PyObject *
pop_work_item(ProcessCoreObject *core, uint64_t id)
{
    PyObject *key = PyLong_FromUnsignedLongLong(id);
    if (key == NULL) {
        return NULL;
    }
    PyObject *fut = PyDict_GetItemWithError(core->work_items, key);
    if (fut != NULL) {
        Py_INCREF(fut);
        if (PyDict_DelItem(core->work_items, key) < 0) {
            Py_CLEAR(fut);
        }
    }
    Py_DECREF(key);
    return fut;
}

/* Complete, reporting what cannot propagate from the dispatcher. */
static void
complete_quietly(cf_state *st, PyObject *fut, PyObject *result, PyObject *exc)
{
    if (cf_future_complete(st, (FutureObject *)fut, result, exc) < 0) {
        if (PyErr_ExceptionMatches(st->InvalidStateError)) {
            PyErr_Clear();      /* cancelled or set by hand: drop it */
        }
        else {
            PyErr_WriteUnraisable(fut);
        }
    }
}

static void
complete_frame(ProcessCoreObject *core, FrameRef *f)
{
    cf_state *st = core_state(core);
    if (core->running > 0) {
        core->running--;
    }
    double us = (double)f->aux;
    core->ewma_us = core->ewma_us <= 0 ? us : core->ewma_us * 0.875 + us * 0.125;

    PyObject *fut = pop_work_item(core, f->id);
    if (fut == NULL) {
        if (PyErr_Occurred()) {
            PyErr_WriteUnraisable(NULL);
        }
        return;         /* already failed by a broken pool */
    }
    PyObject *obj = NULL, *exc = NULL;
    if (f->kind == CF_FRAME_ERRTEXT) {
        PyObject *text = PyUnicode_DecodeUTF8(f->p, (Py_ssize_t)f->n,
                                              "replace");
        if (text != NULL) {
            exc = PyObject_CallOneArg(PyExc_RuntimeError, text);
            Py_DECREF(text);
        }
    }
    else {
        obj = loads_mem(st, f->p, f->n);
        if (obj != NULL && f->kind == CF_FRAME_EXC) {
            if (PyTuple_Check(obj) && PyTuple_GET_SIZE(obj) == 2) {
                exc = Py_NewRef(PyTuple_GET_ITEM(obj, 0));
                if (attach_remote_tb(st, exc, PyTuple_GET_ITEM(obj, 1)) < 0) {
                    Py_CLEAR(exc);
                }
            }
            else {
                PyErr_SetString(PyExc_RuntimeError,
                                "malformed exception from a worker");
            }
            Py_CLEAR(obj);
        }
    }
    if (obj == NULL && exc == NULL) {
        /* the result could not be unpickled here: the error is the
         * future's (the stdlib breaks the whole pool instead) */
        exc = cf_PyErr_GetRaisedException();
    }
    complete_quietly(st, fut, obj, exc);
    Py_XDECREF(obj);
    Py_XDECREF(exc);
    Py_DECREF(fut);
}

static void
update_depth(ProcessCoreObject *core)
{
    int d = DEPTH_MAX;
    if (core->ewma_us > 0) {
        double want = DEPTH_TARGET_US / core->ewma_us;
        d = want >= DEPTH_MAX ? DEPTH_MAX : (int)want + 1;
    }
    if (d < DEPTH_MIN) {
        d = DEPTH_MIN;
    }
    if (d != core->depth) {
        core->depth = d;
        pthread_mutex_lock(&core->sh->mutex);
        core->sh->depth = d;
        pthread_mutex_unlock(&core->sh->mutex);
    }
}

/* Move backlog tasks to the send queue while there is room (GIL).  Returns
 * 1 if something was queued.
 *
 * Cancelled entries are dropped without using the room reserved for them:
 * popping goes on until that room is used or the backlog is empty.  (Had
 * they used it, a backlog head of cancelled futures with nothing in flight
 * would wait for a result that never comes.) */
static int
core_promote(ProcessCoreObject *core, int wake)
{
    cf_state *st = core_state(core);
    ProcShared *sh = core->sh;
    if (core->backlog.head == NULL) {
        return 0;
    }
    /* Reserve room for as many as fit, in one lock. */
    pthread_mutex_lock(&sh->mutex);
    Py_ssize_t room = core_capacity(core) - sh->inflight_total;
    if (room > (Py_ssize_t)core->backlog.count) {
        room = (Py_ssize_t)core->backlog.count;
    }
    if (room > 0) {
        sh->inflight_total += room;
    }
    pthread_mutex_unlock(&sh->mutex);
    if (room <= 0) {
        return 0;
    }
    ProcMsgQueue ready = {0};
    Py_ssize_t used = 0;
    while (used < room) {
        /* NULL: the backlog is empty (or a callback emptied it) */
        ProcMsg *m = ProcMsgQueue_Pop(&core->backlog);
        if (m == NULL) {
            break;
        }
        PyObject *key = PyLong_FromUnsignedLongLong(m->id);
        PyObject *fut = key ? PyDict_GetItemWithError(core->work_items, key)
                            : NULL;
        Py_XINCREF(fut);
        int r = -1;
        if (fut != NULL) {
            r = cf_future_set_running_or_notify_cancel(st, (FutureObject *)fut);
        }
        if (r == 1) {
            core->running++;
            ProcMsgQueue_Push(&ready, m);
            used++;
        }
        else {
            if (r < 0 && PyErr_Occurred()) {
                PyErr_WriteUnraisable(fut);
            }
            if (key != NULL && PyDict_DelItem(core->work_items, key) < 0) {
                PyErr_Clear();
            }
            ProcMsg_Free(m);
        }
        Py_XDECREF(fut);
        Py_XDECREF(key);
    }
    pthread_mutex_lock(&sh->mutex);
    sh->inflight_total -= room - used;
    if (core->broken != NULL) {
        /* broke while callbacks ran: nothing may be sent any more */
        ProcMsgQueue_Clear(&ready);
        sh->inflight_total = 0;
    }
    ProcMsgQueue_Splice(&sh->sendq, &ready);
    int w = wake ? wake_locked(sh) : 0;
    pthread_mutex_unlock(&sh->mutex);
    if (w) {
        wake_write(sh);
    }
    return used > 0;
}

static void
call_process_method(PyObject *p, const char *name)
{
    PyObject *r = PyObject_CallMethod(p, name, NULL);
    if (r == NULL) {
        PyErr_Clear();      /* already gone / closed */
    }
    Py_XDECREF(r);
}

/* Signal every process not yet reaped (GIL). */
static void
signal_processes(ProcessCoreObject *core, const char *method)
{
    PyObject *vals = PyDict_Values(core->procs);
    if (vals == NULL) {
        PyErr_Clear();
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(vals); i++) {
        call_process_method(PyList_GET_ITEM(vals, i), method);
    }
    Py_DECREF(vals);
}

/* The pool is broken: fail every pending future, stop every worker. */
/* BrokenProcessPool(msg) with __cause__ = cause (GIL). */
static PyObject *
new_broken_error(cf_state *st, PyObject *cause, const char *msg)
{
    PyObject *bpe = PyObject_CallFunction(HELPER(st, H_BROKEN), "s", msg);
    if (bpe != NULL && cause != NULL) {
        PyException_SetCause(bpe, Py_NewRef(cause));
    }
    return bpe;
}

#if PY_VERSION_HEX >= 0x030F0000
/* 3.15: with no other cause known, a broken pool names each worker that
 * ended with a non-zero exit code, as a _RemoteTraceback (gh-139462).
 * A worker seen gone by its pipe may not have exited yet: those are
 * waited for briefly.  New reference, or NULL (nothing to say); never
 * leaves an exception set.  GIL held, no pool mutex. */
static PyObject *
dead_workers_cause(cf_state *st, ProcessCoreObject *core)
{
    ProcShared *sh = core->sh;
    pid_t gone[64];
    int ngone = 0;
    pthread_mutex_lock(&sh->mutex);
    for (int i = 0; i < sh->nw && ngone < 64; i++) {
        ProcWorker *w = sh->w[i];
        if ((w->eof || w->failed) && !w->exited && !w->exit_announced) {
            gone[ngone++] = w->pid;
        }
    }
    pthread_mutex_unlock(&sh->mutex);
    for (int i = 0; i < ngone; i++) {
        PyObject *key = PyLong_FromLong((long)gone[i]);
        PyObject *p = key ? PyDict_GetItemWithError(core->procs, key) : NULL;
        Py_XINCREF(p);
        Py_XDECREF(key);
        if (p != NULL) {
            PyObject *r = PyObject_CallMethod(p, "join", "d", 1.0);
            Py_XDECREF(r);
            Py_DECREF(p);
        }
        PyErr_Clear();
    }

    PyObject *cause = NULL, *procs = PyDict_Values(core->procs);
    PyObject *lines = PyList_New(0);
    if (procs == NULL || lines == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(procs); i++) {
        PyObject *p = PyList_GET_ITEM(procs, i);
        PyObject *code = PyObject_GetAttrString(p, "exitcode");
        PyObject *pid = code ? PyObject_GetAttrString(p, "pid") : NULL;
        int bad = code != NULL && code != Py_None ? PyObject_IsTrue(code) : 0;
        if (bad == 1 && pid != NULL) {
            PyObject *line = PyUnicode_FromFormat(
                "Process %S terminated abruptly with exit code %S", pid, code);
            if (line == NULL || PyList_Append(lines, line) < 0) {
                Py_XDECREF(line);
                Py_XDECREF(code);
                Py_XDECREF(pid);
                goto done;
            }
            Py_DECREF(line);
        }
        Py_XDECREF(code);
        Py_XDECREF(pid);
        PyErr_Clear();
    }
    if (PyList_GET_SIZE(lines) > 0) {
        PyObject *sep = PyUnicode_FromString("\n");
        PyObject *joined = sep ? PyUnicode_Join(sep, lines) : NULL;
        Py_XDECREF(sep);
        if (joined != NULL) {
            PyObject *tb = PyUnicode_FromFormat("\n'''\n%U'''", joined);
            Py_DECREF(joined);
            if (tb != NULL) {
                cause = PyObject_CallOneArg(HELPER(st, H_REMOTE_TB), tb);
                Py_DECREF(tb);
            }
        }
    }
done:
    Py_XDECREF(procs);
    Py_XDECREF(lines);
    PyErr_Clear();
    return cause;
}
#endif

/* Break the pool: every pending future gets BrokenProcessPool(msg), the
 * workers are terminated, later submits raise (GIL). */
static void
core_break_msg(ProcessCoreObject *core, PyObject *cause, const char *msg)
{
    cf_state *st = core_state(core);
    if (core->broken != NULL) {
        return;
    }
    core->broken = PyUnicode_FromString(BROKEN_POOL_MSG);
    if (core->broken == NULL) {
        PyErr_Clear();
        core->broken = Py_NewRef(Py_True);
    }
    core->shutdown = 1;

    /* Nothing queued will ever be sent. */
    ProcMsgQueue_Clear(&core->backlog);
    ProcShared *sh = core->sh;
    pthread_mutex_lock(&sh->mutex);
    ProcMsgQueue_Clear(&sh->sendq);
    sh->inflight_total = 0;
    pthread_mutex_unlock(&sh->mutex);
    for (int i = 0; i < sh->nw; i++) {
        ProcMsgQueue_Clear(&sh->w[i]->out);
    }
    core->running = 0;

#if PY_VERSION_HEX >= 0x030F0000
    PyObject *dead_cause = NULL;
    if (cause == NULL) {
        cause = dead_cause = dead_workers_cause(st, core);
    }
#endif
    PyObject *bpe = new_broken_error(st, cause, msg);
    PyObject *items = core->work_items;
    core->work_items = PyDict_New();
    if (bpe == NULL || core->work_items == NULL) {
        PyErr_WriteUnraisable(NULL);
        if (core->work_items == NULL) {
            core->work_items = items;
            items = NULL;
        }
    }
    if (items != NULL && bpe != NULL) {
        Py_ssize_t pos = 0;
        PyObject *k, *fut;
        while (PyDict_Next(items, &pos, &k, &fut)) {
#if PY_VERSION_HEX >= 0x030E0000
            /* 3.14+: an instance per future, so that result() calls do
             * not pile their frames onto one shared traceback (gh-101267).
             * If one cannot be made, the shared one still ends the future. */
            PyObject *own = new_broken_error(st, cause, msg);
            if (own == NULL) {
                PyErr_WriteUnraisable(NULL);
            }
            complete_quietly(st, fut, NULL, own != NULL ? own : bpe);
            Py_XDECREF(own);
#else
            complete_quietly(st, fut, NULL, bpe);
#endif
        }
    }
    Py_XDECREF(items);
    Py_XDECREF(bpe);
#if PY_VERSION_HEX >= 0x030F0000
    Py_XDECREF(dead_cause);
#endif

    /* Survivors may sit on a half-written frame: terminate them. */
    signal_processes(core, "terminate");
    for (int i = 0; i < sh->nw; i++) {
        sh->w[i]->signalled = 1;
    }
    sh->kill_deadline = cf_monotonic_ns() + TERM_GRACE_NS;
}

/* Broken pool (dispatcher, GIL): a worker whose launch (in a submit())
 * returned after the break was not signalled by it: terminate it too, with
 * its own grace period, or nothing would ever end it. */
static void
core_signal_late_workers(ProcessCoreObject *core)
{
    ProcShared *sh = core->sh;
    for (int i = 0; i < sh->nw; i++) {
        ProcWorker *w = sh->w[i];
        if (w->signalled || w->exited) {
            continue;
        }
        w->signalled = 1;
        PyObject *key = PyLong_FromLong((long)w->pid);
        PyObject *p = key ? PyDict_GetItemWithError(core->procs, key) : NULL;
        if (p != NULL) {
            call_process_method(p, "terminate");
        }
        PyErr_Clear();
        Py_XDECREF(key);
        if (sh->kill_deadline == CF_FOREVER) {
            sh->kill_deadline = cf_monotonic_ns() + TERM_GRACE_NS;
        }
    }
}

static void
core_break(ProcessCoreObject *core, PyObject *cause)
{
    core_break_msg(core, cause, BROKEN_FUTURE_MSG);
}

/* Drop a worker from the executor's _processes (GIL). */
static void
core_forget_process(ProcessCoreObject *core, PyObject *key)
{
    if (PyDict_Contains(core->processes, key) == 1) {
        if (PyDict_DelItem(core->processes, key) < 0) {
            PyErr_Clear();
        }
    }
    PyErr_Clear();
}

/* A worker's process has exited: reap it (GIL). */
static void
core_reap(ProcessCoreObject *core, ProcWorker *w)
{
    PyObject *key = PyLong_FromLong((long)w->pid);
    PyObject *p = key ? PyDict_GetItemWithError(core->procs, key) : NULL;
    if (p != NULL) {
        Py_INCREF(p);
        if (PyDict_DelItem(core->procs, key) < 0) {
            PyErr_Clear();
        }
        core_forget_process(core, key);
        /* join() reaps it; not close(), as the stdlib: a caller holding
         * it (read from _processes) can still ask is_alive()/exitcode. */
        call_process_method(p, "join");
        Py_DECREF(p);
    }
    PyErr_Clear();
    Py_XDECREF(key);
    pthread_mutex_lock(&core->sh->mutex);
    close_worker_fds(w);
    w->reaped = 1;
    pthread_mutex_unlock(&core->sh->mutex);
    if (!w->counted_retired) {
        w->counted_retired = 1;
        core->nprocs_active--;
    }
}

static int
core_send_stop(ProcessCoreObject *core)
{
    ProcShared *sh = core->sh;
    for (int i = 0; i < sh->nw; i++) {
        ProcWorker *w = sh->w[i];
        if (w->stop_sent || w->exit_announced) {
            continue;
        }
        ProcMsg *m = ProcMsg_New(0, CF_FRAME_STOP, NULL, 0);
        if (m == NULL) {
            return -1;
        }
        ProcMsgQueue_Push(&w->out, m);
        w->stop_sent = 1;
    }
    return 0;
}

/* Everything that needs the GIL, once per batch.  1: the dispatcher is
 * done (all workers reaped after shutdown or breakage). */
static int
core_gil_phase(ProcessCoreObject *core)
{
    ProcShared *sh = core->sh;

    /* 0. _abort() from another thread: only this thread may break (the
     * workers' queues and sh->w are ours, unlocked). */
    pthread_mutex_lock(&sh->mutex);
    int abort_req = sh->abort_req;
    sh->abort_req = 0;
    pthread_mutex_unlock(&sh->mutex);
    if (abort_req && core->broken == NULL) {
        core_break(core, NULL);
    }

    /* 1. results, in arrival order */
    for (size_t i = 0; i < sh->nbatch; i++) {
        complete_frame(core, &sh->batch[i]);
    }
    if (sh->nbatch) {
        update_depth(core);
    }
    sh->nbatch = 0;

    if (sh->io_errno != 0 && core->broken == NULL) {
        PyObject *cause = PyObject_CallFunction(
            PyExc_OSError, "is", sh->io_errno, strerror(sh->io_errno));
        if (cause == NULL) {
            PyErr_WriteUnraisable(NULL);
        }
        core_break(core, cause);
        Py_XDECREF(cause);
    }

    /* 2. worker ends */
    int retired = 0;
    for (int i = 0; i < sh->nw; i++) {
        ProcWorker *w = sh->w[i];
        if (w->exit_announced && !w->counted_retired) {
            w->counted_retired = 1;
            core->nprocs_active--;
            retired++;
            /* As the stdlib: it leaves _processes when it says so. */
            PyObject *key = PyLong_FromLong((long)w->pid);
            if (key != NULL) {
                core_forget_process(core, key);
                Py_DECREF(key);
            }
            PyErr_Clear();
        }
        int gone = w->eof || w->exited || w->failed;
        if (gone && !w->exit_announced && !w->stop_sent
            && core->broken == NULL) {
            core_break(core, NULL);
        }
    }
    if (core->broken != NULL) {
        core_signal_late_workers(core);
    }
    if (core->broken != NULL && sh->kill_deadline != CF_FOREVER
        && cf_monotonic_ns() >= sh->kill_deadline) {
        signal_processes(core, "kill");
        sh->kill_deadline = CF_FOREVER;
    }
    int j = 0;
    for (int i = 0; i < sh->nw; i++) {
        ProcWorker *w = sh->w[i];
        if (w->exited) {
            core_reap(core, w);
            pthread_mutex_lock(&sh->mutex);
            ProcWorker_Free(w);
            pthread_mutex_unlock(&sh->mutex);
            continue;
        }
        sh->w[j++] = w;
    }
    pthread_mutex_lock(&sh->mutex);
    sh->nw = j;
    pthread_mutex_unlock(&sh->mutex);

    if (core->broken == NULL) {
        /* 3. refill the pipeline */
        core_promote(core, 0);

        /* 4. replace retired workers, grow with the work (non-fork) */
        int shutting = core_shutting_down(core);
        Py_ssize_t work = core->running + (Py_ssize_t)core->backlog.count;
#if PY_VERSION_HEX >= 0x030E0000
        /* 3.14+ (gh-152967): a worker that retired at max_tasks_per_child
         * once the executor was garbage collected is not replaced; the work
         * left fails, as the stdlib's manager thread fails it. */
        if (retired && core->executor_gone && work > 0) {
            core_break_msg(core, NULL, GC_STRANDED_MSG);
        }
#endif
        if (!core->is_fork && !core->launch_failed && core->broken == NULL) {
            Py_ssize_t want = core->nprocs_active + retired;
            if (shutting && work == 0) {
                want = core->nprocs_active;
            }
            if (work > want) {
                want = work;
            }
            if (want > core->max_workers) {
                want = core->max_workers;
            }
            /* the child inherits this thread's mask (spawn keeps it
             * across exec): launch with _run's original one (a signal
             * pending at the unblocking instant can still land here) */
            sigset_t blocked;
            int unmask = core->nprocs_active < want;
            if (unmask) {
                pthread_sigmask(SIG_SETMASK, &sh->launch_mask, &blocked);
            }
            while (core->nprocs_active < want) {
                if (core_launch_worker(core) < 0) {
                    /* cannot replace: nobody would ever run the work */
                    PyObject *cause = cf_PyErr_GetRaisedException();
                    core->launch_failed = 1;
                    core_break(core, cause);
                    Py_XDECREF(cause);
                    break;
                }
            }
            if (unmask) {
                pthread_sigmask(SIG_SETMASK, &blocked, NULL);
            }
        }

        /* 5. shutdown: STOP once nothing is left */
        if (core->broken == NULL && shutting && !core->stop_sent
            && core->running == 0 && core->backlog.count == 0) {
            pthread_mutex_lock(&sh->mutex);
            int queued = sh->sendq.head != NULL || sh->launching != NULL;
            pthread_mutex_unlock(&sh->mutex);
            if (!queued) {
                if (core_send_stop(core) < 0) {
                    PyErr_NoMemory();
                    PyErr_WriteUnraisable(NULL);
                }
                else {
                    core->stop_sent = 1;
                }
            }
        }
    }

    /* 6. done? */
    pthread_mutex_lock(&sh->mutex);
    int left = sh->nw + (sh->launching != NULL);
    pthread_mutex_unlock(&sh->mutex);
    return left == 0 && (core->broken != NULL || core->stop_sent);
}

/* ---- the dispatcher thread body */

/* Dispatcher (no GIL): ppoll() or realloc() failed.  The first failure
 * breaks the pool (GIL phase, with the OS error as cause); while failures
 * go on, sleep with a growing delay instead of spinning (the loop still
 * needs to see the workers end). */
static void
io_failed(ProcShared *sh, long *backoff_us, int *gil_needed)
{
    if (sh->io_errno == 0) {
        sh->io_errno = errno ? errno : EIO;
        *gil_needed = 1;
        return;                 /* break the pool first */
    }
    *backoff_us = *backoff_us ? *backoff_us * 2 : 1000;
    if (*backoff_us > 100000) {
        *backoff_us = 100000;
    }
    struct timespec d = {0, *backoff_us * 1000};
    nanosleep(&d, NULL);
    *gil_needed = 1;            /* kill deadline, ends of workers */
}

/* Dispatcher (no GIL): ppoll() or realloc() failed, so no sentinel was
 * polled: poll each alone (one fd fits any RLIMIT_NOFILE), or worker
 * ends would go unseen and shutdown wait for ever. */
static void
detect_exits_unpolled(ProcShared *sh)
{
    for (int i = 0; i < sh->nw; i++) {
        ProcWorker *w = sh->w[i];
        if (w->exited || w->sentinel_fd < 0) {
            continue;
        }
        struct pollfd p = {.fd = w->sentinel_fd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0 && p.revents) {
            w->exited = 1;      /* dead: its writes are all in */
            read_worker(w);
        }
    }
}

PyDoc_STRVAR(core_run_doc,
"_run($self, /)\n--\n\n"
"Dispatcher loop (the body of the pool's IO thread).");

static PyObject *
ProcessCore_run(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ProcessCoreObject *core = (ProcessCoreObject *)self;
    ProcShared *sh = core->sh;
    if (sh == NULL || sh->inherited) {
        Py_RETURN_NONE;
    }
    /* Signals belong to the main thread.  This thread keeps every
     * asynchronous one blocked for its whole life: unblocking them (as a
     * ppoll() mask did on each return) takes a process-directed SIGINT
     * still pending for the main thread, whose wait then never wakes
     * (a lost Ctrl-C).  Launches from here get the old mask back. */
    sigset_t async;
    sigfillset(&async);
    static const int sync_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL,
                                       SIGTRAP, SIGSYS, SIGABRT};
    for (size_t i = 0; i < sizeof(sync_signals) / sizeof(int); i++) {
        sigdelset(&async, sync_signals[i]);
    }
    pthread_sigmask(SIG_BLOCK, &async, &sh->launch_mask);

    Py_INCREF(self);
    core->run_ident = PyThread_get_thread_ident();
    core->in_run = 1;
    struct pollfd *pfds = NULL;
    size_t pcap = 0;
    int again = 1;          /* first round: GIL phase to settle state */
    Py_ssize_t answered = 0;
    int gil_needed = 1;
    long backoff_us = 0;    /* > 0 while ppoll()/realloc() keep failing */
    PyThreadState *ts = PyEval_SaveThread();
    for (;;) {
        /* 1. adopt, assign, collect requests */
        pthread_mutex_lock(&sh->mutex);
        if (adopt_launched(sh)) {
            gil_needed = 1;
        }
        assign_tasks(sh);
        if (sh->kick) {
            sh->kick = 0;
            gil_needed = 1;
        }
        pthread_mutex_unlock(&sh->mutex);

        /* 2. write */
        for (int i = 0; i < sh->nw; i++) {
            ProcWorker *w = sh->w[i];
            if (w->out.head != NULL && w->task_fd >= 0 && !w->failed) {
                if (ProcMsgQueue_WriteFd(&w->out, w->task_fd) < 0) {
                    w->failed = 1;      /* EPIPE: the worker is gone */
                    ProcMsgQueue_Clear(&w->out);
                    gil_needed = 1;
                }
            }
        }

        /* 3. wait */
        size_t need = 1 + 3 * (size_t)sh->nw;
        if (need > pcap) {
            struct pollfd *n = realloc(pfds, need * sizeof(*pfds));
            if (n == NULL) {
                errno = ENOMEM;
                io_failed(sh, &backoff_us, &gil_needed);
                detect_exits_unpolled(sh);
                goto gil_phase;     /* pfds too short to poll or read */
            }
            pfds = n;
            pcap = need;
        }
        size_t np = 0;
        pfds[np++] = (struct pollfd){.fd = sh->wake_fd, .events = POLLIN};
        for (int i = 0; i < sh->nw; i++) {
            ProcWorker *w = sh->w[i];
            pfds[np++] = (struct pollfd){
                .fd = (w->eof || w->failed) ? -1 : w->result_fd,
                .events = POLLIN};
            pfds[np++] = (struct pollfd){
                .fd = (w->out.head && !w->failed) ? w->task_fd : -1,
                .events = POLLOUT};
            pfds[np++] = (struct pollfd){
                .fd = w->exited ? -1 : w->sentinel_fd, .events = POLLIN};
        }
        int timeout = -1;
        if (gil_needed || again) {
            timeout = 0;
        }
        else if (sh->kill_deadline != CF_FOREVER) {
            cf_time_t left = sh->kill_deadline - cf_monotonic_ns();
            timeout = left <= 0 ? 0 : (int)(left / 1000000) + 1;
        }
        int slept = 0;
        if (timeout != 0) {
            pthread_mutex_lock(&sh->mutex);
            if (sh->sendq.head != NULL || sh->kick) {
                timeout = 0;
            }
            else {
                sh->sleeping = 1;
                slept = 1;
            }
            pthread_mutex_unlock(&sh->mutex);
        }
        again = 0;
        struct timespec tsp, *tp = NULL;
        if (timeout >= 0) {
            tsp.tv_sec = timeout / 1000;
            tsp.tv_nsec = (long)(timeout % 1000) * 1000000;
            tp = &tsp;
        }
        int n = ppoll(pfds, np, tp, NULL);
        int poll_errno = n < 0 ? errno : 0;
        if (slept) {
            pthread_mutex_lock(&sh->mutex);
            sh->sleeping = 0;
            sh->wake_pending = 0;
            pthread_mutex_unlock(&sh->mutex);
        }
        if (n < 0 && poll_errno == EINTR) {
            /* only a synchronous signal is not blocked: poll again */
            for (size_t k = 0; k < np; k++) {
                pfds[k].revents = 0;
            }
            again = 1;
        }
        else if (n < 0) {
            /* EINVAL (more fds than RLIMIT_NOFILE), ENOMEM.  Read what
             * can be read anyway. */
            errno = poll_errno;
            io_failed(sh, &backoff_us, &gil_needed);
            for (size_t k = 0; k < np; k++) {
                pfds[k].revents = 0;
            }
            for (int i = 0; i < sh->nw; i++) {
                read_worker(sh->w[i]);
            }
            detect_exits_unpolled(sh);
        }
        else {
            backoff_us = 0;
        }
        if (pfds[0].revents) {
            uint64_t v;
            ssize_t r = read(sh->wake_fd, &v, sizeof(v));
            (void)r;
        }

        /* 4. read */
        for (int i = 0; i < sh->nw; i++) {
            ProcWorker *w = sh->w[i];
            struct pollfd *pr = &pfds[1 + 3 * i];
            int before = w->eof | (w->failed << 1) | (w->exited << 2);
            if (pr[2].revents) {
                w->exited = 1;          /* dead: its writes are all in */
            }
            if (pr[0].revents || w->exited) {
                read_worker(w);
            }
            if (pr[1].revents & (POLLERR | POLLHUP)) {
                w->failed = 1;
            }
            if (parse_worker(sh, w, &answered)) {
                again = 1;
            }
            if ((w->eof | (w->failed << 1) | (w->exited << 2)) != before) {
                gil_needed = 1;         /* a worker's end: decide with GIL */
            }
        }
        if (answered > 0) {
            pthread_mutex_lock(&sh->mutex);
            sh->inflight_total -= answered < sh->inflight_total
                                  ? answered : sh->inflight_total;
            pthread_mutex_unlock(&sh->mutex);
            answered = 0;
        }
        if (sh->nbatch > 0) {
            gil_needed = 1;
        }
        if (sh->kill_deadline != CF_FOREVER
            && cf_monotonic_ns() >= sh->kill_deadline) {
            gil_needed = 1;
        }
        if (!gil_needed) {
            continue;
        }

        /* 5. GIL phase */
    gil_phase:
        PyEval_RestoreThread(ts);
        int done = core_gil_phase(core);
        ts = PyEval_SaveThread();
        gil_needed = 0;
        if (done) {
            break;
        }
    }
    pthread_mutex_lock(&sh->mutex);
    close(sh->wake_fd);
    sh->wake_fd = -1;
    pthread_mutex_unlock(&sh->mutex);
    free(pfds);
    cf_event_post(&sh->done_ev);    /* every worker reaped */
    PyEval_RestoreThread(ts);
    core->in_run = 0;
    /* Done: shutdown(wait=True) has nothing left to join, and the
     * registry of running dispatchers (thread -> core) must not be kept
     * alive through us. */
    Py_CLEAR(core->thread);
    Py_DECREF(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(core_exit_doc,
"_exit_wakeup($self, /)\n--\n\n"
"Interpreter exit: finish queued work, then stop the workers.");

static PyObject *
ProcessCore_exit_wakeup(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    kick(((ProcessCoreObject *)self)->sh);
    Py_RETURN_NONE;
}

static int core_wait_done(ProcessCoreObject *core);

PyDoc_STRVAR(core_wait_done_doc,
"_wait_done($self, /)\n--\n\n"
"Wait (interruptibly) until the dispatcher has reaped every worker.");

static PyObject *
ProcessCore_wait_done(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    if (core_wait_done((ProcessCoreObject *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(core_abort_doc,
"_abort($self, /)\n--\n\n"
"Ctrl-C while interpreter exit waits: drop queued work, stop the workers.");

static PyObject *
ProcessCore_abort(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ProcessCoreObject *core = (ProcessCoreObject *)self;
    ProcShared *sh = core->sh;
    if (sh != NULL && !sh->inherited && core->started) {
        /* The dispatcher breaks the pool (it owns the workers' queues). */
        pthread_mutex_lock(&sh->mutex);
        sh->abort_req = 1;
        pthread_mutex_unlock(&sh->mutex);
        kick(sh);
    }
    Py_RETURN_NONE;
}

static PyMethodDef ProcessCore_methods[] = {
    {"_run", ProcessCore_run, METH_NOARGS, core_run_doc},
    {"_exit_wakeup", ProcessCore_exit_wakeup, METH_NOARGS, core_exit_doc},
    {"_wait_done", ProcessCore_wait_done, METH_NOARGS, core_wait_done_doc},
    {"_abort", ProcessCore_abort, METH_NOARGS, core_abort_doc},
    {NULL, NULL}
};

static PyType_Slot ProcessCore_slots[] = {
    {Py_tp_dealloc, ProcessCore_dealloc},
    {Py_tp_traverse, ProcessCore_traverse},
    {Py_tp_clear, ProcessCore_clear},
    {Py_tp_methods, ProcessCore_methods},
    {0, NULL},
};

static PyType_Spec ProcessCore_spec = {
    .name = "cfutures._cfutures._ProcessCore",
    .basicsize = sizeof(ProcessCoreObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_DISALLOW_INSTANTIATION),
    .slots = ProcessCore_slots,
};

/* ================================================ the executor base */

static ProcessCoreObject *
get_core(PyObject *self)
{
    PyObject *c = ((ProcessPoolObject *)self)->core;
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
    if (st->proc_helpers == NULL) {
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
                                              st->ProcessCore_type);
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
    if (pickler_init(st, &core->pickler) < 0) {
        Py_DECREF(core);
        return NULL;
    }
    /* __init__() again (the stdlib allows it): a fresh pool from here on.
     * The old one is left as if the executor had been collected: what was
     * submitted to it still runs, then its workers stop.  Callers of
     * submit()/shutdown() running on it hold their own reference. */
    PyObject *old = pool->core;
    pool->core = (PyObject *)core;
    if (old != NULL) {
        ProcessCoreObject *oc = (ProcessCoreObject *)old;
        if (!oc->executor_gone) {
            oc->executor_gone = 1;
            kick(oc->sh);
        }
        Py_DECREF(old);
    }
    Py_RETURN_NONE;
}

/* Wait (interruptibly) until the dispatcher is done: every worker reaped.
 * Not Thread.join(): on 3.11 a join() interrupted by Ctrl-C marks the
 * thread stopped while it still runs, so interpreter exit would not wait
 * for it and multiprocessing's atexit hook would race its reaping
 * ("process object is closed"). */
static int
core_wait_done(ProcessCoreObject *core)
{
    if (core->sh == NULL || core->sh->inherited) {
        /* a fork child (a fork worker runs threading._shutdown() too):
         * the parent's dispatcher is not ours to wait for */
        return 0;
    }
    while (core->starting) {
        /* another thread starts the pool (a few forks): brief */
        Py_BEGIN_ALLOW_THREADS
        usleep(1000);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    if (!core->started) {
        return 0;
    }
    if (core->in_run && core->run_ident == PyThread_get_thread_ident()) {
        /* A done-callback on the dispatcher: the stdlib's join() of its
         * manager thread raises, after shutdown() has set its flags. */
        PyErr_SetString(PyExc_RuntimeError, "cannot join current thread");
        return -1;
    }
    PyObject *t = core->thread ? Py_NewRef(core->thread) : NULL;
    if (cf_event_wait_gil(&core->sh->done_ev, CF_FOREVER) < 0) {
        Py_XDECREF(t);
        return -1;
    }
    cf_event_post(&core->sh->done_ev);      /* a latch: later waiters pass */
    if (t != NULL) {
        /* only the end of _run() is left: short */
        PyObject *r = PyObject_CallMethod(t, "join", NULL);
        Py_DECREF(t);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
raise_broken(cf_state *st, ProcessCoreObject *core)
{
    PyErr_SetObject(HELPER(st, H_BROKEN), core->broken);
    return NULL;
}

/* Start workers and the dispatcher as the running stdlib does: with fork
 * (gh-90622: 3.11, late 3.10), every worker before the thread exists;
 * otherwise (spawn, forkserver, older fork) one more per submit while
 * none is idle.
 * Forking while the dispatcher runs is safe for our state: the fork hooks
 * hold every pool mutex across fork(), and the dispatcher never forks. */
static int
core_start(ProcessCoreObject *core)
{
    if (core->sh->wake_fd < 0) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        pthread_mutex_lock(&core->sh->mutex);
        core->sh->wake_fd = fd;
        pthread_mutex_unlock(&core->sh->mutex);
    }
    if (core->is_fork && !core->fork_lazy) {
        while (core->nprocs_active < core->max_workers) {
            if (core_launch_worker(core) < 0) {
                return -1;
            }
        }
    }
    else if (core->nprocs_active == 0 && core_launch_worker(core) < 0) {
        return -1;
    }
    PyObject *t = PyObject_CallOneArg(core->start_thread, (PyObject *)core);
    if (t == NULL) {
        return -1;
    }
    core->started = 1;
    /* If the dispatcher finished meanwhile (its end clears core->thread),
     * this keeps a finished Thread: joining it returns at once. */
    Py_XSETREF(core->thread, t);
    return 0;
}

static int
core_ensure_started(ProcessCoreObject *core)
{
    while (core->starting) {
        /* Another thread starts the pool (a few launches; the stdlib's
         * submit() holds its lock across them): wait, as that start may
         * fail and leave our queued task to nobody.  Not if the start's
         * own Python code submits. */
        if (core->starter == PyThread_get_thread_ident()) {
            return 0;
        }
        Py_BEGIN_ALLOW_THREADS
        usleep(1000);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    if (core->broken != NULL || core->stop_sent) {
        return 0;               /* nothing may start any more */
    }
    if (core->thread == NULL) {
        if (core->started) {
            return 0;           /* the dispatcher has already finished */
        }
        core->starting = 1;
        core->starter = PyThread_get_thread_ident();
        int r = core_start(core);
        core->starting = 0;
        return r;
    }
    if ((!core->is_fork || core->fork_lazy)
        && core->nprocs_active < core->max_workers
        && core->nprocs_active < core->running + core->unpicklable
                                 + (Py_ssize_t)core->backlog.count) {
        return core_launch_worker(core);
    }
    return 0;
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
    if (core->sh->inherited) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot submit to a ProcessPoolExecutor inherited "
                        "through fork(): it belongs to the parent process");
        return NULL;
    }
    if (core->broken != NULL) {
        return raise_broken(st, core);
    }
    if (core->shutdown) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot schedule new futures after shutdown");
        return NULL;
    }
    if (st->proc_global_shutdown) {
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
    int r = pickler_dump(st, &core->pickler, call, &buf);
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
        PyObject *text = format_remote_tb(st, exc);
        if (text == NULL || attach_remote_tb(st, exc, text) < 0) {
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
            && core_ensure_started(core) < 0) {
            Py_DECREF(fut);
            return NULL;
        }
        return fut;
    }
    /* Pickling ran Python, which may have let another thread break or
     * stop the pool: check again.  From here until the task is queued
     * (where core_break and the shutdown logic see it) no Python runs. */
    if (core->broken != NULL || core->shutdown || core->stop_sent
        || (st->proc_global_shutdown && !core->started)) {
        ProcBuf_Free(&buf);
        Py_DECREF(fut);
        if (core->broken != NULL) {
            return raise_broken(st, core);
        }
        PyErr_SetString(PyExc_RuntimeError,
                        core->shutdown
                        || (core->stop_sent && !st->proc_global_shutdown)
                        ? "cannot schedule new futures after shutdown"
                        : "cannot schedule new futures after interpreter "
                          "shutdown");
        return NULL;
    }
    ProcMsg *m = ProcMsg_FromBuf(&buf, id, CF_FRAME_TASK);

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
        int w = wake_locked(sh);
        pthread_mutex_unlock(&sh->mutex);
        if (w) {
            wake_write(sh);
        }
        m = NULL;
    }
    else {
        /* Pending (cancellable) until there is room; room may have been
         * freed by results the dispatcher has not completed yet. */
        ProcMsgQueue_Push(&core->backlog, m);
        m = NULL;
        core_promote(core, 1);
    }
    if (core_ensure_started(core) < 0) {
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
    ProcessCoreObject *core = get_core(self);
    if (core == NULL) {
        return NULL;
    }
    /* Pickling runs Python, which may call __init__() again and drop the
     * executor's reference to this core. */
    Py_INCREF(core);
    PyObject *fut = core_submit(st, core, args, nargs, kwnames);
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
    ProcessCoreObject *core = get_core(self);
    if (core == NULL) {
        return NULL;
    }
    if (core->sh->inherited) {
        Py_RETURN_NONE;
    }
    /* Cancel callbacks may call __init__() again (see submit()). */
    Py_INCREF(core);
    int r = core_shutdown(st, core, wait, cancel);
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
            PyObject *fut = pop_work_item(core, m->id);
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
    kick(core->sh);
    if (wait && core_wait_done(core) < 0) {
        return -1;
    }
    return 0;
}

static PyObject *
ProcessPool_get_processes(PyObject *self, void *Py_UNUSED(c))
{
    ProcessCoreObject *core = (ProcessCoreObject *)((ProcessPoolObject *)self)->core;
    /* The stdlib's shutdown() sets it to None (3.10-3.13). */
    if (core == NULL || core->processes == NULL || core->processes_dropped) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(core->processes);
}

static PyObject *
ProcessPool_get_broken(PyObject *self, void *Py_UNUSED(c))
{
    ProcessCoreObject *core = (ProcessCoreObject *)((ProcessPoolObject *)self)->core;
    if (core == NULL || core->broken == NULL) {
        Py_RETURN_FALSE;
    }
    return Py_NewRef(core->broken);
}

static PyObject *
ProcessPool_get_shutdown(PyObject *self, void *Py_UNUSED(c))
{
    ProcessCoreObject *core = (ProcessCoreObject *)((ProcessPoolObject *)self)->core;
    return PyBool_FromLong(core != NULL && core->shutdown);
}

static PyObject *
ProcessPool_get_core(PyObject *self, void *Py_UNUSED(c))
{
    PyObject *core = ((ProcessPoolObject *)self)->core;
    return Py_NewRef(core ? core : Py_None);
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
    if (core != NULL && !core->executor_gone) {
        core->executor_gone = 1;
        kick(core->sh);
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
    {Py_tp_new, PyType_GenericNew},
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

/* ================================================== the worker loop */

/* Run one task frame; append the answer (header + pickle) to out. */
static void
worker_run_task(cf_state *st, ProcPickler *pp, const ProcFrameHeader *h,
                const char *payload, ProcBuf *out, uint32_t flags)
{
    cf_time_t t0 = cf_monotonic_ns();
    size_t hdr_at = out->len;
    uint32_t kind = CF_FRAME_RESULT;
    if (ProcBuf_Reserve(out, CF_FRAME_HDR) < 0) {
        PyErr_NoMemory();
        goto fatal;
    }
    out->len += CF_FRAME_HDR;

    PyObject *call = loads_mem(st, payload, (size_t)h->len);
    PyObject *res = NULL;
    if (call != NULL) {
        if (!PyTuple_Check(call) || PyTuple_GET_SIZE(call) != 3
            || !PyTuple_Check(PyTuple_GET_ITEM(call, 1))) {
            PyErr_SetString(PyExc_RuntimeError, "malformed task frame");
        }
        else {
            PyObject *kw = PyTuple_GET_ITEM(call, 2);
            res = PyObject_Call(PyTuple_GET_ITEM(call, 0),
                                PyTuple_GET_ITEM(call, 1),
                                kw == Py_None ? NULL : kw);
        }
        Py_DECREF(call);
    }
    if (res != NULL) {
        int r = pickler_dump(st, pp, res, out);
        Py_DECREF(res);
        if (r == 0) {
            goto done;
        }
    }
    /* The task, its unpickling or the result's pickling failed. */
    kind = CF_FRAME_EXC;
    for (int attempt = 0; attempt < 2; attempt++) {
        PyObject *exc = cf_PyErr_GetRaisedException();
        if (exc == NULL) {
            PyErr_SetString(PyExc_SystemError, "error without exception");
            continue;
        }
        PyObject *text = format_remote_tb(st, exc);
        if (text == NULL) {
            Py_DECREF(exc);
            continue;
        }
        /* as _ExceptionWithTraceback: frames must not travel or linger */
        PyException_SetTraceback(exc, Py_None);
        PyObject *pair = PyTuple_Pack(2, exc, text);
        Py_DECREF(exc);
        Py_DECREF(text);
        if (pair == NULL) {
            continue;
        }
        int r = pickler_dump(st, pp, pair, out);
        Py_DECREF(pair);
        if (r == 0) {
            goto done;
        }
        /* the exception itself does not pickle: send that error instead */
    }
fatal:
    {
        kind = CF_FRAME_ERRTEXT;
        out->len = hdr_at + CF_FRAME_HDR;
        PyObject *exc = cf_PyErr_GetRaisedException();
        PyObject *s = exc ? PyObject_Str(exc) : NULL;
        const char *txt = s ? PyUnicode_AsUTF8(s) : NULL;
        if (txt == NULL) {
            PyErr_Clear();
            txt = "worker could not report the task's error";
        }
        if (ProcBuf_Append(out, txt, strlen(txt)) < 0) {
            out->len = hdr_at + CF_FRAME_HDR;
        }
        Py_XDECREF(s);
        Py_XDECREF(exc);
    }
done:
    {
        cf_time_t us = (cf_monotonic_ns() - t0) / 1000;
        ProcFrameHeader rh = {
            .len = out->len - hdr_at - CF_FRAME_HDR,
            .id = h->id,
            .kind = kind | flags,
            .aux = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us,
        };
        memcpy(out->data + hdr_at, &rh, CF_FRAME_HDR);
    }
}

/* Write out everything buffered, GIL released.  0 ok, 1 parent gone,
 * -1 exception (a signal handler raised). */
static int
worker_flush(ProcBuf *out, int fd)
{
    for (;;) {
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = ProcBuf_WriteAll(out, fd);
        Py_END_ALLOW_THREADS
        if (r == 0) {
            return 0;
        }
        if (r == CF_ERR_PIPE_AGAIN) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        return 1;
    }
}

PyDoc_STRVAR(worker_loop_doc,
"_process_worker_loop($module, task_fd, result_fd, max_tasks, /)\n--\n\n"
"Body of a worker process: run framed tasks until STOP, EOF or\n"
"max_tasks (0: unlimited) tasks.");

static PyObject *
process_worker_loop(PyObject *mod, PyObject *args)
{
    cf_state *st = cf_get_state(mod);
    int task_fd, result_fd;
    unsigned long long max_tasks;
    if (!PyArg_ParseTuple(args, "iiK:_process_worker_loop", &task_fd,
                          &result_fd, &max_tasks)) {
        return NULL;
    }
    if (st->proc_helpers == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cfutures.process was not initialised");
        return NULL;
    }
    ProcPickler pp;
    if (pickler_init(st, &pp) < 0) {
        return NULL;
    }
    int fl = fcntl(task_fd, F_GETFL);
    if (fl >= 0) {
        (void)fcntl(task_fd, F_SETFL, fl | O_NONBLOCK);
    }
    ProcBuf in, out;
    ProcBuf_Init(&in);
    ProcBuf_Init(&out);
    PyObject *ret = NULL;
    unsigned long long ntasks = 0;

    ProcFrameHeader ready = {.len = 0, .id = 0, .kind = CF_FRAME_READY};
    if (ProcBuf_Append(&out, &ready, CF_FRAME_HDR) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    int fr = worker_flush(&out, result_fd);
    if (fr != 0) {
        ret = fr > 0 ? Py_NewRef(Py_None) : NULL;
        goto done;
    }
    for (;;) {
        ProcFrameHeader h;
        const char *payload;
        size_t need;
        int r = ProcBuf_NextFrame(&in, &h, &payload, &need);
        if (r < 0) {
            PyErr_SetString(PyExc_RuntimeError, "corrupt task stream");
            goto done;
        }
        if (r == 0) {
            size_t chunk = need > READ_CHUNK ? need : READ_CHUNK;
            ssize_t n = ProcBuf_ReadFd(&in, task_fd, chunk);
            if (n > 0) {
                continue;
            }
            if (n == CF_ERR_PIPE_EOF) {
                break;                      /* the parent is gone */
            }
            if (n != CF_ERR_PIPE_AGAIN) {
                break;
            }
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    goto done;
                }
                continue;
            }
            /* Nothing more to read: send what we have, then sleep. */
            fr = worker_flush(&out, result_fd);
            if (fr != 0) {
                if (fr > 0) {
                    break;
                }
                goto done;
            }
            struct pollfd p = {.fd = task_fd, .events = POLLIN};
            int pr;
            Py_BEGIN_ALLOW_THREADS
            pr = poll(&p, 1, -1);
            Py_END_ALLOW_THREADS
            if (pr < 0 && errno == EINTR && PyErr_CheckSignals() < 0) {
                goto done;
            }
            continue;
        }
        uint32_t kind = CF_FRAME_KIND(h.kind);
        if (kind == CF_FRAME_STOP) {
            break;
        }
        if (kind != CF_FRAME_TASK) {
            PyErr_SetString(PyExc_RuntimeError, "unexpected frame");
            goto done;
        }
        ntasks++;
        int last = max_tasks && ntasks >= max_tasks;
        worker_run_task(st, &pp, &h, payload, &out,
                        last ? CF_FRAME_F_EXIT : 0);
        if (last) {
            break;
        }
        /* Send each result at once: holding it back to coalesce writes
         * would make it wait for the next task, however long that runs.
         * The parent still reads results in batches. */
        fr = worker_flush(&out, result_fd);
        if (fr != 0) {
            if (fr > 0) {
                break;
            }
            goto done;
        }
    }
    fr = worker_flush(&out, result_fd);
    ret = fr < 0 ? NULL : Py_NewRef(Py_None);
done:
    ProcBuf_Free(&in);
    ProcBuf_Free(&out);
    pickler_clear(&pp);
    return ret;
}

/* ============================================ map's result flattening */

/* _chain_lists(iterable_of_lists): the stdlib's
 * _chain_from_iterable_of_lists in C.  Like it, it does not keep the
 * yielded objects alive: each slot is reset to None once yielded. */
typedef struct {
    PyObject_HEAD
    PyObject *source;       /* iterator of lists, NULL when exhausted */
    PyObject *list;         /* current list */
    Py_ssize_t pos;
} ChainListsObject;

static PyObject *
ChainLists_next(PyObject *self)
{
    ChainListsObject *c = (ChainListsObject *)self;
    for (;;) {
        if (c->list != NULL) {
            if (c->pos < PyList_GET_SIZE(c->list)) {
                PyObject *item = PyList_GET_ITEM(c->list, c->pos);
                PyList_SET_ITEM(c->list, c->pos, Py_NewRef(Py_None));
                c->pos++;
                return item;        /* the list's reference, moved */
            }
            Py_CLEAR(c->list);
        }
        if (c->source == NULL) {
            return NULL;
        }
        PyObject *next = PyIter_Next(c->source);
        if (next == NULL) {
            Py_CLEAR(c->source);
            return NULL;            /* exhausted, or the source's error */
        }
        if (!PyList_Check(next)) {
            PyErr_SetString(PyExc_TypeError, "expected a list of results");
            Py_DECREF(next);
            return NULL;
        }
        c->list = next;
        c->pos = 0;
    }
}

PyDoc_STRVAR(chain_close_doc,
"close($self, /)\n--\n\nClose the underlying result iterator.");

static PyObject *
ChainLists_close(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ChainListsObject *c = (ChainListsObject *)self;
    Py_CLEAR(c->list);
    PyObject *src = c->source;
    c->source = NULL;
    if (src != NULL) {
        PyObject *r = PyObject_CallMethod(src, "close", NULL);
        Py_DECREF(src);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                return NULL;
            }
            PyErr_Clear();
        }
        Py_XDECREF(r);
    }
    Py_RETURN_NONE;
}

static int
ChainLists_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((ChainListsObject *)self)->source);
    Py_VISIT(((ChainListsObject *)self)->list);
    return 0;
}

static int
ChainLists_clear(PyObject *self)
{
    Py_CLEAR(((ChainListsObject *)self)->source);
    Py_CLEAR(((ChainListsObject *)self)->list);
    return 0;
}

static void
ChainLists_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ChainLists_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef ChainLists_methods[] = {
    {"close", ChainLists_close, METH_NOARGS, chain_close_doc},
    {NULL, NULL}
};

static PyType_Slot ChainLists_slots[] = {
    {Py_tp_dealloc, ChainLists_dealloc},
    {Py_tp_traverse, ChainLists_traverse},
    {Py_tp_clear, ChainLists_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, ChainLists_next},
    {Py_tp_methods, ChainLists_methods},
    {0, NULL},
};

static PyType_Spec ChainLists_spec = {
    .name = "cfutures._cfutures._chain_lists",
    .basicsize = sizeof(ChainListsObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_DISALLOW_INSTANTIATION),
    .slots = ChainLists_slots,
};

PyDoc_STRVAR(chain_lists_doc,
"_chain_lists($module, iterable, /)\n--\n\n"
"Flatten an iterable of lists, dropping references as items are yielded.");

static PyObject *
chain_lists(PyObject *mod, PyObject *iterable)
{
    cf_state *st = cf_get_state(mod);
    PyObject *it = PyObject_GetIter(iterable);
    if (it == NULL) {
        return NULL;
    }
    ChainListsObject *c = PyObject_GC_New(ChainListsObject,
                                          st->ChainLists_type);
    if (c == NULL) {
        Py_DECREF(it);
        return NULL;
    }
    c->source = it;
    c->list = NULL;
    c->pos = 0;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

/* =================================================== module functions */

PyDoc_STRVAR(process_init_doc,
"_process_init($module, helpers, /)\n--\n\n"
"Called once by cfutures.process with a tuple of (BrokenProcessPool,\n"
"_RemoteTraceback, Pickler, loads, protocol, copyreg_table,\n"
"extra_reducers, format_exception).");

static PyObject *
process_init(PyObject *mod, PyObject *helpers)
{
    cf_state *st = cf_get_state(mod);
    if (!PyTuple_CheckExact(helpers) || PyTuple_GET_SIZE(helpers) != H_COUNT
        || !PyDict_Check(PyTuple_GET_ITEM(helpers, H_COPYREG_TABLE))
        || !PyDict_Check(PyTuple_GET_ITEM(helpers, H_EXTRA_REDUCERS))) {
        PyErr_SetString(PyExc_TypeError, "_process_init: bad helpers");
        return NULL;
    }
    if (st->proc_helpers != NULL) {
        cf_processpool_state_clear(st);     /* watching the old tables */
    }
    Py_XSETREF(st->proc_helpers, Py_NewRef(helpers));
#if PY_VERSION_HEX >= 0x030C0000
    tables_watch(st);
#endif
    Py_RETURN_NONE;
}

PyDoc_STRVAR(process_global_shutdown_doc,
"_process_global_shutdown($module, /)\n--\n\n"
"Interpreter exit began: refuse new work in every process pool.");

static PyObject *
process_global_shutdown(PyObject *mod, PyObject *Py_UNUSED(ignored))
{
    cf_get_state(mod)->proc_global_shutdown = 1;
    Py_RETURN_NONE;
}

static PyMethodDef process_functions[] = {
    {"_process_init", process_init, METH_O, process_init_doc},
    {"_process_global_shutdown", process_global_shutdown, METH_NOARGS,
     process_global_shutdown_doc},
    {"_process_worker_loop", process_worker_loop, METH_VARARGS,
     worker_loop_doc},
    {"_chain_lists", chain_lists, METH_O, chain_lists_doc},
    {NULL, NULL}
};

int
cf_processpool_module_init(PyObject *mod, cf_state *st)
{
    st->FrameWriter_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &FrameWriter_spec, NULL);
    if (st->FrameWriter_type == NULL) {
        return -1;
    }
    st->ChainLists_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &ChainLists_spec, NULL);
    if (st->ChainLists_type == NULL) {
        return -1;
    }
    st->ProcessCore_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &ProcessCore_spec, NULL);
    if (st->ProcessCore_type == NULL) {
        return -1;
    }
    st->ProcessPool_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &ProcessPool_spec, NULL);
    if (st->ProcessPool_type == NULL
        || PyModule_AddType(mod, st->ProcessPool_type) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(mod, process_functions);
}
