/* processcore: the process pool's _ProcessCore object, everything that
 * needs the GIL between submit() and a future's completion: launching
 * workers (through cfutures.process._launch_worker), starting the
 * dispatcher thread, and its GIL phase, once per batch of results:
 * complete futures, promote backlog tasks, reap, replace or break.  The
 * dispatcher's GIL-free part is procdispatch.c; _run() alternates both.
 * See procpool.h for the whole path and the locking rules. */
#include "procpool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* ------------------------------------------------- the core object */

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
    return ProcPickler_Traverse(&c->pickler, visit, arg);
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
    ProcPickler_Clear(&c->pickler);
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
    int tshm_fd, rshm_fd;
    if (ProcWorker_ShmFds(sh, w, &tshm_fd, &rshm_fd) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        free(w);                /* holds nothing else yet */
        goto fail_fds;
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
        core->launch, "OiiOOOii", core->ctx, tp[0], rp[1],
        core->initializer ? core->initializer : Py_None,
        core->initargs, core->max_tasks, tshm_fd, rshm_fd);
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
        ProcWorker_CloseFds(w);
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
    int wk = p != NULL ? ProcShared_WakeLocked(sh) : 0;
    pthread_mutex_unlock(&sh->mutex);
    if (wk) {
        ProcShared_WakeWrite(sh);
    }
    if (p == NULL) {
        ProcWorker_Free(w);
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

/* ---- starting: workers and the dispatcher (GIL, submit()) */

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

int
cf_core_ensure_started(ProcessCoreObject *core)
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

/* ---- completing futures (dispatcher, GIL) */

PyObject *
cf_core_pop_item(ProcessCoreObject *core, uint64_t id)
{
    PyObject *key = PyLong_FromUnsignedLongLong(id);
    if (key == NULL) {
        return NULL;
    }
    PyObject *fut;
    if (cf_PyDict_GetItemRef(core->work_items, key, &fut) > 0) {
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

    PyObject *fut = cf_core_pop_item(core, f->id);
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
        obj = cf_proc_loads_shm(st, f->p, f->n, f->w->rshm, 1);
        if (obj != NULL && f->kind == CF_FRAME_EXC) {
            if (PyTuple_Check(obj) && PyTuple_GET_SIZE(obj) == 2) {
                exc = Py_NewRef(PyTuple_GET_ITEM(obj, 0));
                if (cf_proc_attach_tb(st, exc, PyTuple_GET_ITEM(obj, 1)) < 0) {
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
    if (core->ewma_us >= DEPTH_LONG_US) {
        d = 1;
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
int
cf_core_promote(ProcessCoreObject *core, int wake)
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
        PyObject *fut = NULL;
        if (key != NULL) {
            (void)cf_PyDict_GetItemRef(core->work_items, key, &fut);
        }
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
    int w = wake ? ProcShared_WakeLocked(sh) : 0;
    pthread_mutex_unlock(&sh->mutex);
    if (w) {
        ProcShared_WakeWrite(sh);
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

/* ---- breaking the pool: every pending future fails, every worker stops */

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

    /* A worker died (no other cause): say which, and how it ended. */
    PyObject *note = NULL, *dead_cause = NULL;
    if (cause == NULL) {
        note = cf_proc_dead_workers_text(core->sh, core->procs);
#if PY_VERSION_HEX >= 0x030F0000
        if (note != NULL) {
            PyObject *tb = PyUnicode_FromFormat("\n'''\n%U'''", note);
            Py_CLEAR(note);
            if (tb != NULL) {
                cause = dead_cause = PyObject_CallOneArg(
                    st->proc.RemoteTraceback, tb);
                Py_DECREF(tb);
            }
            PyErr_Clear();
        }
#endif
    }
    PyObject *bpe = cf_proc_broken_error(st, cause, msg, note);
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
            PyObject *own = cf_proc_broken_error(st, cause, msg, note);
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
    Py_XDECREF(note);
    Py_XDECREF(dead_cause);

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
        PyObject *p = NULL;
        if (key != NULL && cf_PyDict_GetItemRef(core->procs, key, &p) > 0) {
            call_process_method(p, "terminate");
            Py_DECREF(p);
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
    PyObject *p = NULL;
    if (key != NULL && cf_PyDict_GetItemRef(core->procs, key, &p) > 0) {
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
    ProcWorker_CloseFds(w);
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
        int gone = w->eof || w->exited || w->err;
        if (gone && !w->exit_announced && !w->stop_sent
            && core->broken == NULL) {
            /* a broken stream chains its cause; a death has none */
            PyObject *cause = cf_proc_stream_error(w);
            core_break(core, cause);
            Py_XDECREF(cause);
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
        cf_core_promote(core, 0);

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

PyDoc_STRVAR(core_run_doc,
"_run($self, /)\n--\n\n"
"Dispatcher loop (the body of the pool's IO thread).");

static PyObject *
ProcessCore_run(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ProcessCoreObject *core = (ProcessCoreObject *)self;
    ProcShared *sh = core->sh;
    if (core_inherited(core)) {
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
    Py_BEGIN_CRITICAL_SECTION(self);
    core->run_ident = PyThread_get_thread_ident();
    core->in_run = 1;
    Py_END_CRITICAL_SECTION();
    ProcDispatchLoop loop;
    ProcDispatchLoop_Init(&loop);
    PyThreadState *ts = PyEval_SaveThread();
    for (;;) {
        /* procdispatch.c, no GIL: until a GIL phase is due */
        (void)ProcDispatch_Wait(sh, &loop);
        PyEval_RestoreThread(ts);
        int done;
        Py_BEGIN_CRITICAL_SECTION(core);
        done = core_gil_phase(core);
        Py_END_CRITICAL_SECTION();
        ts = PyEval_SaveThread();
        if (done) {
            break;
        }
    }
    pthread_mutex_lock(&sh->mutex);
    close(sh->wake_fd);
    sh->wake_fd = -1;
    pthread_mutex_unlock(&sh->mutex);
    ProcDispatchLoop_Free(&loop);
    cf_event_post(&sh->done_ev);    /* every worker reaped */
    PyEval_RestoreThread(ts);
    /* Done: shutdown(wait=True) has nothing left to join, and the
     * registry of running dispatchers (thread -> core) must not be kept
     * alive through us. */
    PyObject *thread;
    Py_BEGIN_CRITICAL_SECTION(self);
    core->in_run = 0;
    thread = core->thread;
    core->thread = NULL;
    Py_END_CRITICAL_SECTION();
    Py_XDECREF(thread);
    Py_DECREF(self);
    Py_RETURN_NONE;
}

/* Wait (interruptibly) until the dispatcher is done: every worker reaped.
 * Not Thread.join(): on 3.11 a join() interrupted by Ctrl-C marks the
 * thread stopped while it still runs, so interpreter exit would not wait
 * for it and multiprocessing's atexit hook would race its reaping
 * ("process object is closed"). */
int
cf_core_wait_done(ProcessCoreObject *core)
{
    if (core_inherited(core)) {
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

PyDoc_STRVAR(core_exit_doc,
"_exit_wakeup($self, /)\n--\n\n"
"Interpreter exit: finish queued work, then stop the workers.");

static PyObject *
ProcessCore_exit_wakeup(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ProcShared_Kick(((ProcessCoreObject *)self)->sh);
    Py_RETURN_NONE;
}


PyDoc_STRVAR(core_wait_done_doc,
"_wait_done($self, /)\n--\n\n"
"Wait (interruptibly) until the dispatcher has reaped every worker.");

static PyObject *
ProcessCore_wait_done(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    int r;
    if (core_inherited((ProcessCoreObject *)self)) {
        Py_RETURN_NONE;     /* the parent's dispatcher is not ours */
    }
    Py_BEGIN_CRITICAL_SECTION(self);
    r = cf_core_wait_done((ProcessCoreObject *)self);
    Py_END_CRITICAL_SECTION();
    if (r < 0) {
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
        ProcShared_Kick(sh);
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


int
cf_processcore_module_init(PyObject *mod, cf_state *st)
{
    st->proc.ProcessCore_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &ProcessCore_spec, NULL);
    return st->proc.ProcessCore_type == NULL ? -1 : 0;
}
