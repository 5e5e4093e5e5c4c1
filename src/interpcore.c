/* interpcore: the interpreter pool's pure-C task queue (mutex + condvar,
 * fork handlers) and the raw buffers that carry calls and results
 * between interpreters (see interppool.h). */
#include "interppool.h"

#include <string.h>

/* ================================================================ core
 *
 * Pure C: no PyObject is touched here; the future pointer is carried,
 * never dereferenced.
 */



/* Every live core, for the fork handlers.  Lock order: all_lock, then a
 * core's mutex. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static InterpCore *all_cores = NULL;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Before fork: hold every pool mutex so the child never inherits one
 * locked by a worker.  Pool mutexes are never held while waiting for a
 * GIL, so the forking thread (holding its GIL) cannot deadlock here. */
static void
atfork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
    for (InterpCore *c = all_cores; c != NULL; c = c->all_next) {
        pthread_mutex_lock(&c->mutex);
    }
}

static void
atfork_parent(void)
{
    for (InterpCore *c = all_cores; c != NULL; c = c->all_next) {
        pthread_mutex_unlock(&c->mutex);
    }
    pthread_mutex_unlock(&all_lock);
}

/* The child has none of the worker threads: re-create the locks.  A pool
 * that had started workers refuses new work with a clear error rather
 * than queue it for workers that do not exist; one that never started
 * any just works in the child.  (CPython 3.13.0 itself aborts a child
 * forked while any sub-interpreter exists, so in practice the refusal is
 * seen once the parent's workers have gone, e.g. after an initializer
 * failure.) */
static void
atfork_child(void)
{
    for (InterpCore *c = all_cores; c != NULL; c = c->all_next) {
        pthread_mutex_init(&c->mutex, NULL);
        pthread_cond_init(&c->cond, NULL);
        c->idle = 0;
        if (c->nthreads > 0) {
            c->forked = 1;
        }
    }
    pthread_mutex_init(&all_lock, NULL);
}

static void
atfork_register(void)
{
    (void)pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

InterpCore *
InterpCore_New(int max_workers, const char *init, size_t init_len)
{
    InterpCore *c = PyMem_RawCalloc(1, sizeof(InterpCore));
    if (c == NULL) {
        return NULL;
    }
    if (init != NULL) {
        c->init_data = PyMem_RawMalloc(init_len ? init_len : 1);
        if (c->init_data == NULL) {
            PyMem_RawFree(c);
            return NULL;
        }
        memcpy(c->init_data, init, init_len);
        c->init_len = init_len;
    }
    pthread_mutex_init(&c->mutex, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->max_workers = max_workers;
    c->refcnt = 1;
    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&all_lock);
    c->all_next = all_cores;
    if (all_cores != NULL) {
        all_cores->all_prev = c;
    }
    all_cores = c;
    pthread_mutex_unlock(&all_lock);
    return c;
}

void
InterpCore_Incref(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->refcnt++;
    pthread_mutex_unlock(&c->mutex);
}

/* Drop a reference.  On the last one, return the tasks still queued (the
 * caller releases their futures under the GIL) and free the core. */
InterpTask *
InterpCore_Decref(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    Py_ssize_t left = --c->refcnt;
    pthread_mutex_unlock(&c->mutex);
    if (left > 0) {
        return NULL;
    }
    pthread_mutex_lock(&all_lock);
    if (c->all_prev != NULL) {
        c->all_prev->all_next = c->all_next;
    }
    else {
        all_cores = c->all_next;
    }
    if (c->all_next != NULL) {
        c->all_next->all_prev = c->all_prev;
    }
    pthread_mutex_unlock(&all_lock);
    InterpTask *rest = c->head;
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mutex);
    PyMem_RawFree(c->init_data);
    PyMem_RawFree(c);
    return rest;
}

/* The core whose future this worker thread is completing (interp_deliver()):
 * the worker counts as idle then, but not for a submit() from its own
 * done-callbacks -- it cannot take that task before they return. */
_Thread_local InterpCore *cf_delivering;

/* Queue a task.  *spawn is set to the index of a worker to start (the
 * caller must start it or call InterpCore_Unspawn), or -1.  A new worker
 * is wanted when queued tasks outnumber the idle workers. */
int
InterpCore_Push(InterpCore *c, InterpTask *t, int *spawn)
{
    *spawn = -1;
    pthread_mutex_lock(&c->mutex);
    int err = CF_ERR_IP_OK;
    if (c->broken) {
        err = CF_ERR_IP_BROKEN;
    }
    else if (c->shutdown) {
        err = CF_ERR_IP_SHUTDOWN;
    }
    else if (c->exiting) {
        err = CF_ERR_IP_EXITING;
    }
    else if (c->forked) {
        err = CF_ERR_IP_FORKED;
    }
    if (err != CF_ERR_IP_OK) {
        pthread_mutex_unlock(&c->mutex);
        return err;
    }
    t->next = NULL;
    if (c->tail != NULL) {
        c->tail->next = t;
    }
    else {
        c->head = t;
    }
    c->tail = t;
    c->ntasks++;
    int idle = c->idle - (cf_delivering == c);
    if (c->ntasks > idle && c->nthreads < c->max_workers) {
        *spawn = c->nthreads++;
    }
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mutex);
    return CF_ERR_IP_OK;
}

/* Starting the worker reserved by Push failed. */
void
InterpCore_Unspawn(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->nthreads--;
    pthread_mutex_unlock(&c->mutex);
}

static InterpTask *
pop_locked(InterpCore *c)
{
    InterpTask *t = c->head;
    if (t != NULL) {
        c->head = t->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        c->ntasks--;
        t->next = NULL;
    }
    return t;
}

/* A worker counts as idle from before it completes a future until it
 * takes the next task: a submit() woken by that future must not start
 * another worker.  Its own done-callbacks do not count it (cf_delivering),
 * as the stdlib releases its idle semaphore after them. */
void
InterpCore_SetIdle(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->idle++;
    pthread_mutex_unlock(&c->mutex);
}

/* An idle worker takes a queued task, if any, without waiting. */
InterpTask *
InterpCore_TryPop(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    InterpTask *t = pop_locked(c);
    if (t != NULL) {
        c->idle--;
    }
    pthread_mutex_unlock(&c->mutex);
    return t;
}

/* An idle worker blocks (holding no GIL) until there is a task, or until
 * the queue is empty and the pool stops: then return NULL.  Either way it
 * is no longer idle.  Queued work is always finished first, as with the
 * stdlib's sentinel at the queue end. */
InterpTask *
InterpCore_Pop(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    while (c->head == NULL && !c->shutdown && !c->exiting && !c->broken) {
        pthread_cond_wait(&c->cond, &c->mutex);
    }
    InterpTask *t = pop_locked(c);
    c->idle--;
    pthread_mutex_unlock(&c->mutex);
    return t;
}

/* Stop accepting work; wake every worker.  With cancel, take the queued
 * tasks out and return them. */
InterpTask *
InterpCore_Shutdown(InterpCore *c, int cancel)
{
    InterpTask *rest = NULL;
    pthread_mutex_lock(&c->mutex);
    c->shutdown = 1;
    if (cancel) {
        rest = c->head;
        c->head = c->tail = NULL;
        c->ntasks = 0;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
    return rest;
}

void
InterpCore_Exit(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->exiting = 1;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
}

/* Mark broken and take the queued tasks out (the caller fails them). */
InterpTask *
InterpCore_Break(InterpCore *c)
{
    pthread_mutex_lock(&c->mutex);
    c->broken = 1;
    InterpTask *rest = c->head;
    c->head = c->tail = NULL;
    c->ntasks = 0;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
    return rest;
}

void
InterpCore_Flags(InterpCore *c, int *shutdown, int *broken)
{
    pthread_mutex_lock(&c->mutex);
    *shutdown = c->shutdown;
    *broken = c->broken;
    pthread_mutex_unlock(&c->mutex);
}

/* ============================================================ raw data */


void
RawBuf_Clear(RawBuf *b)
{
    PyMem_RawFree(b->data);
    b->data = NULL;
    b->len = 0;
}

/* Copy a bytes object (0) or fail with MemoryError (-1). */
int
RawBuf_FromBytes(RawBuf *b, PyObject *bytes)
{
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    b->data = PyMem_RawMalloc(n ? (size_t)n : 1);
    if (b->data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(b->data, PyBytes_AS_STRING(bytes), (size_t)n);
    b->len = (size_t)n;
    return 0;
}

/* Copy a str's UTF-8 (surrogates kept); on failure leave b empty and
 * clear the error: text fields are best effort. */
void
RawBuf_FromStr(RawBuf *b, PyObject *s)
{
    if (s == NULL || !PyUnicode_Check(s)) {
        PyErr_Clear();
        return;
    }
    PyObject *u = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (u == NULL || RawBuf_FromBytes(b, u) < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(u);
}

PyObject *
RawBuf_AsStr(RawBuf *b)
{
    if (b->data == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(b->data, (Py_ssize_t)b->len, "surrogatepass");
}


void
InterpResult_Clear(InterpResult *r)
{
    RawBuf_Clear(&r->pickled);
    RawBuf_Clear(&r->type_name);
    RawBuf_Clear(&r->type_qualname);
    RawBuf_Clear(&r->type_module);
    RawBuf_Clear(&r->msg);
    RawBuf_Clear(&r->errdisplay);
    r->kind = RES_NONE;
}



