/* procworker: the body of a process pool worker (in the child process).
 *
 * Reads task frames in large chunks, unpickles, calls, pickles the result
 * and writes it at once (never held back behind the next task, which may
 * run for a long time).  A READY frame tells the parent the initializer
 * is done; a result frame flagged CF_FRAME_F_EXIT that the worker leaves
 * (max_tasks_per_child). */
#include "procpool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>

/* Run one task frame; append the answer (header + pickle) to out. */
static void
worker_run_task(cf_state *st, ProcPickler *pp, const ProcFrameHeader *h,
                const char *payload, ProcBuf *out, uint32_t flags,
                ProcShm *tshm, ProcShm *rshm)
{
    cf_time_t t0 = cf_monotonic_ns();
    size_t hdr_at = out->len;
    uint32_t kind = CF_FRAME_RESULT;
    if (ProcBuf_Reserve(out, CF_FRAME_HDR) < 0) {
        PyErr_NoMemory();
        goto fatal;
    }
    out->len += CF_FRAME_HDR;

    PyObject *call = cf_proc_loads_shm(st, payload, (size_t)h->len,
                                       tshm, 0);
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
        int r = ProcPickler_DumpShm(st, pp, res, out, rshm);
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
        PyObject *text = cf_proc_format_tb(st, exc);
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
        int r = ProcPickler_DumpShm(st, pp, pair, out, rshm);
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

const char cf_process_worker_loop_doc[] =
"_process_worker_loop($module, task_fd, result_fd, max_tasks,\n"
"                     tshm_fd=-1, rshm_fd=-1, /)\n--\n\n"
"Body of a worker process: run framed tasks until STOP, EOF or\n"
"max_tasks (0: unlimited) tasks.  The shared memory regions' fds (the\n"
"pool's task region, this worker's result region) are taken over.";

PyObject *
cf_process_worker_loop(PyObject *mod, PyObject *args)
{
    cf_state *st = cf_get_state(mod);
    int task_fd, result_fd, tshm_fd = -1, rshm_fd = -1;
    unsigned long long max_tasks;
    if (!PyArg_ParseTuple(args, "iiK|ii:_process_worker_loop", &task_fd,
                          &result_fd, &max_tasks, &tshm_fd, &rshm_fd)) {
        return NULL;
    }
    if (st->proc.BrokenProcessPool == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cfutures.process was not initialised");
        return NULL;
    }
    ProcShm *tshm = tshm_fd >= 0 ? ProcShm_Open(tshm_fd) : NULL;
    ProcShm *rshm = rshm_fd >= 0 ? ProcShm_Open(rshm_fd) : NULL;
    ProcPickler pp;
    if (ProcPickler_Init(st, &pp) < 0) {
        ProcShm_Free(tshm);
        ProcShm_Free(rshm);
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
                        last ? CF_FRAME_F_EXIT : 0, tshm, rshm);
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
    ProcPickler_Clear(&pp);
    ProcShm_Free(tshm);
    ProcShm_Free(rshm);
    return ret;
}

