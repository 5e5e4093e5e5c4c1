/* Time and wake-up helpers shared by every blocking call. */
#include "cfutures.h"

#include <errno.h>
#include <math.h>
#include <time.h>

int cf_gil_free_hint = 0;

void
cf_spin_for_gil(void)
{
    if (__atomic_load_n(&cf_gil_free_hint, __ATOMIC_ACQUIRE)) {
        return;
    }
    cf_time_t end = cf_monotonic_ns() + CF_SPIN_GIL_NS;
    for (int i = 0;; i++) {
        if (__atomic_load_n(&cf_gil_free_hint, __ATOMIC_ACQUIRE)) {
            return;
        }
        cf_cpu_relax();
        if ((i & 63) == 63 && cf_spin_check(i, end)) {
            return;
        }
    }
}

cf_time_t
cf_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (cf_time_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* threading.TIMEOUT_MAX is PY_TIMEOUT_MAX / 1e6 seconds. */
static double
timeout_max_seconds(void)
{
    return (double)PY_TIMEOUT_MAX / 1e6;
}

int
cf_timeout_to_deadline(PyObject *timeout, cf_time_t *deadline)
{
    if (timeout == Py_None) {
        *deadline = CF_FOREVER;
        return 0;
    }
    double secs;
    if (PyFloat_CheckExact(timeout)) {
        secs = PyFloat_AS_DOUBLE(timeout);
        if (!(secs > 0)) {              /* also NaN, as "timeout > 0" */
            *deadline = cf_monotonic_ns();
            return 0;
        }
    }
    else if (PyLong_CheckExact(timeout)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(timeout, &overflow);
        if (overflow < 0 || (!overflow && v <= 0)) {
            *deadline = cf_monotonic_ns();
            return 0;
        }
        secs = overflow ? HUGE_VAL : (double)v;
    }
    else {
        /* Same comparison (and TypeError) as Condition.wait(). */
        PyObject *zero = PyLong_FromLong(0);
        if (zero == NULL) {
            return -1;
        }
        int positive = PyObject_RichCompareBool(timeout, zero, Py_GT);
        Py_DECREF(zero);
        if (positive < 0) {
            return -1;
        }
        if (!positive) {
            *deadline = cf_monotonic_ns();
            return 0;
        }
        /* Then convert as Lock.acquire() does: a float, or an integer
         * (__index__); Fraction and Decimal are refused there too. */
        if (PyFloat_Check(timeout)) {
            secs = PyFloat_AsDouble(timeout);
        }
        else {
            long long v = PyLong_AsLongLong(timeout);
            if (v == -1 && PyErr_Occurred()) {
                return -1;
            }
            secs = (double)v;
        }
        if (secs == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (secs > timeout_max_seconds()) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return -1;
    }
    *deadline = cf_monotonic_ns() + (cf_time_t)(secs * 1e9);
    return 0;
}

void
cf_event_init(cf_event *ev)
{
    sem_init(&ev->sem, 0, 0);
}

void
cf_event_destroy(cf_event *ev)
{
    sem_destroy(&ev->sem);
}

void
cf_event_post(cf_event *ev)
{
    sem_post(&ev->sem);
}

int
cf_event_wait(cf_event *ev, cf_time_t deadline)
{
    int r;
    if (deadline == CF_FOREVER) {
        r = sem_wait(&ev->sem);
    }
    else {
        struct timespec ts;
        ts.tv_sec = (time_t)(deadline / 1000000000);
        ts.tv_nsec = (long)(deadline % 1000000000);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
        r = sem_clockwait(&ev->sem, CLOCK_MONOTONIC, &ts);
#else
        /* sem_timedwait takes CLOCK_REALTIME: convert the remaining time. */
        cf_time_t left = deadline - cf_monotonic_ns();
        if (left < 0) {
            left = 0;
        }
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        cf_time_t abs_ns = (cf_time_t)now.tv_sec * 1000000000 + now.tv_nsec + left;
        ts.tv_sec = (time_t)(abs_ns / 1000000000);
        ts.tv_nsec = (long)(abs_ns % 1000000000);
        r = sem_timedwait(&ev->sem, &ts);
#endif
    }
    if (r == 0) {
        return 1;
    }
    if (errno == EINTR) {
        return -1;
    }
    return 0;   /* ETIMEDOUT (EINVAL cannot happen with a valid sem) */
}

int
cf_event_wait_gil(cf_event *ev, cf_time_t deadline)
{
    /* Try without blocking first: no GIL round trip when already posted. */
    if (sem_trywait(&ev->sem) == 0) {
        return 1;
    }
    for (;;) {
        if (deadline != CF_FOREVER && cf_monotonic_ns() >= deadline) {
            return 0;
        }
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = cf_event_wait(ev, deadline);
        Py_END_ALLOW_THREADS
        if (r >= 0) {
            return r;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* LOGGER.<level>(*args, exc_info=exc) on the "concurrent.futures" logger,
 * the way the stdlib logs callback and worker errors (LOGGER.exception is
 * error with exc_info); never raises, keeps a pending exception. */
void
cf_log_exc(cf_state *st, PyObject *level, PyObject *args, PyObject *exc)
{
    PyObject *saved = cf_PyErr_GetRaisedException();
    PyObject *meth = NULL, *kwargs = NULL, *r = NULL;
    meth = PyObject_GetAttr(st->logger, level);
    kwargs = PyDict_New();
    if (meth != NULL && args != NULL && kwargs != NULL
        && PyDict_SetItem(kwargs, st->str_exc_info,
                          exc ? exc : Py_True) == 0) {
        r = PyObject_Call(meth, args, kwargs);
    }
    if (r == NULL) {
        PyErr_WriteUnraisable(st->logger);
    }
    Py_XDECREF(r);
    Py_XDECREF(meth);
    Py_XDECREF(kwargs);
    cf_PyErr_SetRaisedException(saved);
}

void
cf_log_critical(cf_state *st, const char *msg, PyObject *exc)
{
    PyObject *saved = cf_PyErr_GetRaisedException();
    PyObject *args = Py_BuildValue("(s)", msg);
    cf_PyErr_SetRaisedException(saved);
    cf_log_exc(st, st->str_critical, args, exc);
    Py_XDECREF(args);
}

/* t.join() for each thread of a snapshot of `threads` (join() releases
 * the GIL and stays interruptible).  0, or -1 with the join's error. */
int
cf_join_threads(PyObject *threads)
{
    PyObject *snap = PySequence_List(threads);
    if (snap == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(snap); i++) {
        PyObject *r = PyObject_CallMethod(PyList_GET_ITEM(snap, i), "join",
                                          NULL);
        if (r == NULL) {
            Py_DECREF(snap);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(snap);
    return 0;
}
