/* Time, timeouts, the C stack, logging: helpers shared by every part
 * (the blocking waits themselves are in block.c). */
#include "cfutures.h"

#include <errno.h>
#include <math.h>
#include <time.h>

/* ---------------------------------------------------------- C stack */

/* Lowest address this thread's native recursion may reach: the stack's
 * end plus a margin left for the Python code (and logging) that runs at
 * the deepest level.  Found once per thread; 1 = not yet known. */
#define CF_STACK_MARGIN (256 * 1024)
static _Thread_local uintptr_t stack_floor = 1;

int
cf_stack_low(void)
{
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    if (stack_floor == 1) {
        stack_floor = 0;        /* unknown: no check */
        pthread_attr_t a;
        if (pthread_getattr_np(pthread_self(), &a) == 0) {
            void *lo;
            size_t size;
            if (pthread_attr_getstack(&a, &lo, &size) == 0
                && (uintptr_t)lo < here && here - (uintptr_t)lo <= size) {
                size_t margin = size / 4 < CF_STACK_MARGIN ? size / 4
                                                           : CF_STACK_MARGIN;
                stack_floor = (uintptr_t)lo + margin;
            }
            pthread_attr_destroy(&a);
        }
    }
    return here < stack_floor;
}

cf_time_t
cf_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (cf_time_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------ timeouts
 *
 * One reading of a timeout for every entry point: the stdlib's.  Its
 * Condition.wait(timeout) tests "timeout > 0" (TypeError for what does not
 * compare; false, NaN included, means a poll), then Lock.acquire(True,
 * timeout) converts the value (_PyTime_FromSecondsObject, then the
 * PY_TIMEOUT_MAX check).  Plain floats and ints well inside every
 * version's range are converted here; anything else (huge, inf, bool,
 * Decimal, Fraction, ...) is first handed to a fresh lock's acquire(),
 * which cannot block, so that the running version raises its own error:
 * messages differ between 3.10, 3.11 and 3.13, and 3.15 accepts Fraction
 * and Decimal.  What it accepts is then converted here with saturation. */

#define SAFE_SECS 1e9           /* ~31 years: accepted by every version */

/* Let the running version's Lock.acquire judge the value. */
static int
acquire_accepts(PyObject *timeout)
{
    PyObject *mod = PyImport_ImportModule("_thread");
    if (mod == NULL) {
        return -1;
    }
    PyObject *lock = PyObject_CallMethod(mod, "allocate_lock", NULL);
    Py_DECREF(mod);
    if (lock == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethod(lock, "acquire", "OO", Py_True, timeout);
    Py_DECREF(lock);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Seconds (double) to nanoseconds, rounded up like _PyTime_ROUND_TIMEOUT,
 * saturated instead of overflowing (a cast of an out-of-range double is
 * undefined behaviour). */
static cf_time_t
secs_to_ns(double secs)
{
    double ns = ceil(secs * 1e9);
    if (!(ns > 0)) {
        return 0;
    }
    if (ns >= 9223372036854775808.0) {
        return INT64_MAX;
    }
    return (cf_time_t)ns;
}

/* now + ns, saturated below CF_FOREVER's bit pattern. */
static cf_time_t
deadline_after(cf_time_t ns)
{
    cf_time_t now = cf_monotonic_ns();
    return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

/* A value acquire() accepted (and "> 0"), as nanoseconds. */
static int
accepted_to_ns(PyObject *timeout, cf_time_t *ns)
{
    if (PyFloat_Check(timeout)) {
        *ns = secs_to_ns(PyFloat_AS_DOUBLE(timeout));
        return 0;
    }
    if (PyIndex_Check(timeout)) {
        int overflow = 0;
        PyObject *v = PyNumber_Index(timeout);
        if (v == NULL) {
            return -1;
        }
        long long s = PyLong_AsLongLongAndOverflow(v, &overflow);
        Py_DECREF(v);
        if (s == -1 && PyErr_Occurred()) {
            return -1;
        }
        *ns = (overflow || s > INT64_MAX / 1000000000) ? INT64_MAX
                                                       : (cf_time_t)s * 1000000000;
        return 0;
    }
    /* A real number a newer version accepts (3.15: Fraction, Decimal). */
    double d = PyFloat_AsDouble(timeout);
    if (d == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *ns = secs_to_ns(d);
    return 0;
}

int
cf_timeout_to_deadline(PyObject *timeout, cf_time_t *deadline)
{
    if (timeout == Py_None) {
        *deadline = CF_FOREVER;
        return 0;
    }
    if (PyFloat_CheckExact(timeout)) {
        double secs = PyFloat_AS_DOUBLE(timeout);
        if (!(secs > 0)) {              /* NaN too: "timeout > 0" is false */
            *deadline = cf_monotonic_ns();
            return 0;
        }
        if (secs < SAFE_SECS) {
            *deadline = deadline_after(secs_to_ns(secs));
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
        if (!overflow && v < (long long)SAFE_SECS) {
            *deadline = deadline_after((cf_time_t)v * 1000000000);
            return 0;
        }
    }
    else {
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
    }
    cf_time_t ns;
    if (acquire_accepts(timeout) < 0 || accepted_to_ns(timeout, &ns) < 0) {
        return -1;
    }
    *deadline = deadline_after(ns);
    return 0;
}

PyObject *
cf_end_time(PyObject *timeout)
{
    PyObject *now = PyFloat_FromDouble((double)cf_monotonic_ns() / 1e9);
    if (now == NULL) {
        return NULL;
    }
    PyObject *end = PyNumber_Add(timeout, now);
    Py_DECREF(now);
    return end;
}

PyObject *
cf_end_time_left(PyObject *end)
{
    double now = (double)cf_monotonic_ns() / 1e9;
    if (PyFloat_CheckExact(end)) {
        return PyFloat_FromDouble(PyFloat_AS_DOUBLE(end) - now);
    }
    PyObject *n = PyFloat_FromDouble(now);
    if (n == NULL) {
        return NULL;
    }
    PyObject *left = PyNumber_Subtract(end, n);
    Py_DECREF(n);
    return left;
}

int
cf_end_time_deadline(PyObject *end, int check_expired, cf_time_t *deadline)
{
    if (PyFloat_CheckExact(end)) {
        /* the common case, without objects */
        double left = PyFloat_AS_DOUBLE(end)
                      - (double)cf_monotonic_ns() / 1e9;
        if (check_expired && left < 0) {
            return 1;
        }
        if (check_expired && isnan(left)) {
            /* as_completed() polls for ever: the same, asleep */
            *deadline = CF_FOREVER;
            return 0;
        }
        if (!(left > 0)) {
            *deadline = cf_monotonic_ns();
            return 0;
        }
        if (left < SAFE_SECS) {
            *deadline = deadline_after(secs_to_ns(left));
            return 0;
        }
    }
    PyObject *left = cf_end_time_left(end);
    if (left == NULL) {
        return -1;
    }
    int rc = 0;
    if (check_expired) {
        PyObject *zero = PyLong_FromLong(0);
        rc = zero ? PyObject_RichCompareBool(left, zero, Py_LT) : -1;
        Py_XDECREF(zero);
    }
    if (rc == 0) {
        rc = cf_timeout_to_deadline(left, deadline);
    }
    Py_DECREF(left);
    return rc;
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
