/* procbreak: why a process pool broke, in words and exceptions: the
 * BrokenProcessPool itself, a worker's stream failure as the exception to
 * chain, and which workers died with which exit code (waiting briefly, GIL
 * released, for a gone worker's exit status).  processcore.c decides when
 * to break; this file only says why.  GIL held unless said otherwise. */
#include "procpool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* BrokenProcessPool(msg) with __cause__ = cause and, when not NULL, note
 * added (3.11+) (GIL). */
PyObject *
cf_proc_broken_error(cf_state *st, PyObject *cause, const char *msg,
                 PyObject *note)
{
    PyObject *bpe = PyObject_CallFunction(st->proc.BrokenProcessPool, "s", msg);
    if (bpe != NULL && cause != NULL) {
        PyException_SetCause(bpe, Py_NewRef(cause));
    }
#if PY_VERSION_HEX >= 0x030B0000
    if (bpe != NULL && note != NULL) {
        PyObject *r = PyObject_CallMethod(bpe, "add_note", "O", note);
        if (r == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(r);
    }
#endif
    return bpe;
}

/* Why a worker's stream failed, as the exception to chain (new
 * reference), or NULL when it did not (the worker died: EOF, exit, or a
 * task pipe without reader).  Never leaves an exception set. */
PyObject *
cf_proc_stream_error(ProcWorker *w)
{
    if (w->err == 0 || (w->err == CF_ERR_PIPE_IO && w->err_errno == EPIPE)) {
        return NULL;
    }
    PyObject *exc;
    long pid = (long)w->pid;
    switch (w->err) {
    case CF_ERR_PIPE_NOMEM:
        exc = PyObject_CallFunction(
            PyExc_MemoryError, "s",
            "out of memory reading the results of a worker process");
        break;
    case CF_ERR_PIPE_PROTO:
    case CF_ERR_PIPE_KIND:
        exc = PyObject_CallFunction(
            PyExc_OSError, "iN", EPROTO,
            PyUnicode_FromFormat("corrupted result stream from worker "
                                 "process %ld: %s", pid,
                                 w->err == CF_ERR_PIPE_PROTO
                                 ? "malformed frame header"
                                 : "unexpected frame kind"));
        break;
    default: {
        int e = w->err_errno ? w->err_errno : EIO;
        exc = PyObject_CallFunction(
            PyExc_OSError, "iN", e,
            PyUnicode_FromFormat("%s (the pipes of worker process %ld)",
                                 strerror(e), pid));
        break;
    }
    }
    if (exc == NULL) {
        PyErr_Clear();
    }
    return exc;
}

/* 1 once fd is readable (or in error), 0 at the deadline; EINTR retried
 * with the time left.  GIL released by the caller. */
static int
wait_readable(int fd, cf_time_t deadline)
{
    for (;;) {
        cf_time_t left = deadline - cf_monotonic_ns();
        if (left <= 0) {
            return 0;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int r = poll(&pfd, 1, (int)((left + 999999) / 1000000));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return r != 0;          /* readable or error: 1; timed out: 0 */
    }
}

/* Wait, GIL released, until each of n workers seen gone has exited and
 * its exit status can be read, all within one second: a worker may close
 * its pipes (or exit slowly) well before its exit status exists, and one
 * that closed every fd yet runs on must not hold the break up for its
 * whole life.  pidfds[i]: a dup of its pidfd (readable once it exited), or
 * -1: then poll waitid(WNOHANG|WNOWAIT), which leaves the status for
 * multiprocessing.  sents[i]: a dup of Process.sentinel or -1 (forkserver:
 * readable once the server has sent the exit status). */
static void
wait_for_exits(const pid_t *pids, const int *pidfds, const int *sents, int n)
{
    cf_time_t deadline = cf_monotonic_ns() + 1000000000;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < n; i++) {
        if (pidfds[i] >= 0) {
            if (!wait_readable(pidfds[i], deadline)) {
                break;
            }
        }
        else {
            for (;;) {
                siginfo_t si;
                memset(&si, 0, sizeof(si));
                if (waitid(P_PID, pids[i], &si, WEXITED | WNOHANG | WNOWAIT) < 0
                        ? errno != EINTR : si.si_pid != 0) {
                    break;      /* exited (or not our child: forkserver) */
                }
                if (cf_monotonic_ns() >= deadline) {
                    break;
                }
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
        }
        if (sents[i] >= 0 && !wait_readable(sents[i], deadline)) {
            break;
        }
    }
    Py_END_ALLOW_THREADS
}

/* Each worker that ended with a non-zero exit code, one line each as
 * 3.15's stdlib words it ("Process N terminated abruptly with exit code
 * C"; a signal is a negative code).  Workers seen gone by their pipes are
 * waited for briefly first (wait_for_exits); Process.exitcode then never
 * blocks.  3.15 chains this as a _RemoteTraceback (gh-139462); before, it
 * is added as a note.  New reference, or NULL (nothing to say); never
 * leaves an exception set.  GIL held, no pool mutex. */
PyObject *
cf_proc_dead_workers_text(ProcShared *sh, PyObject *procs_dict)
{
    pid_t gone[64];
    int pidfds[64], sents[64];
    int ngone = 0;
    pthread_mutex_lock(&sh->mutex);
    for (int i = 0; i < sh->nw && ngone < 64; i++) {
        ProcWorker *w = sh->w[i];
        if ((w->eof || w->err || w->exited) && !w->exit_announced) {
            /* a dup: the pidfd itself may be closed by a reap meanwhile */
            pidfds[ngone] = w->own_sentinel && w->sentinel_fd >= 0
                            ? fcntl(w->sentinel_fd, F_DUPFD_CLOEXEC, 0) : -1;
            gone[ngone++] = w->pid;
        }
    }
    pthread_mutex_unlock(&sh->mutex);
    for (int i = 0; i < ngone; i++) {
        sents[i] = -1;
        PyObject *key = PyLong_FromLong((long)gone[i]);
        PyObject *p = NULL;
        if (key != NULL) {
            (void)cf_PyDict_GetItemRef(procs_dict, key, &p);
        }
        Py_XDECREF(key);
        PyObject *sent = p ? PyObject_GetAttrString(p, "sentinel") : NULL;
        int fd = sent && PyLong_Check(sent) ? PyLong_AsLong(sent) : -1;
        if (fd >= 0) {
            sents[i] = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        }
        Py_XDECREF(sent);
        Py_XDECREF(p);
        PyErr_Clear();
    }
    if (ngone > 0) {
        wait_for_exits(gone, pidfds, sents, ngone);
        for (int i = 0; i < ngone; i++) {
            if (pidfds[i] >= 0) {
                close(pidfds[i]);
            }
            if (sents[i] >= 0) {
                close(sents[i]);
            }
        }
    }

    PyObject *text = NULL, *procs = PyDict_Values(procs_dict);
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
        text = sep ? PyUnicode_Join(sep, lines) : NULL;
        Py_XDECREF(sep);
    }
done:
    Py_XDECREF(procs);
    Py_XDECREF(lines);
    PyErr_Clear();
    return text;
}

