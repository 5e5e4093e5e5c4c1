/* block: every blocking wait and the spin / GIL hand-off policy (see
 * block.h). */
#include "cfutures.h"

#include <errno.h>
#include <time.h>

/* ---------------------------------------------------- GIL hand-off hint */

#if !CF_FT
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

#endif

/* ------------------------------------------------------------ cf_event */

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
        cf_time_t now_ns = (cf_time_t)now.tv_sec * 1000000000 + now.tv_nsec;
        /* saturate: deadlines of huge timeouts are near INT64_MAX */
        cf_time_t abs_ns = left > INT64_MAX - now_ns ? INT64_MAX
                                                      : now_ns + left;
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

/* ---------------------------------------------------- result() waiting */

/* Per-thread spin budget for result()/exception() waits. */
static _Thread_local cf_time_t spin_budget = 50000;

int
cf_block_wait_state(const int *state, int done, cf_event *ev,
                    cf_time_t deadline)
{
    int rc = 0;
    /* Spin a little with the GIL released before sleeping: most tasks
     * finish sooner than a futex wake-up takes. */
    int spun = 0;
    cf_time_t start;
    Py_BEGIN_ALLOW_THREADS
    cf_hint_gil_released();
    start = cf_monotonic_ns();
    cf_time_t end = start + spin_budget;
    if (deadline != CF_FOREVER && deadline < end) {
        end = deadline;
    }
    for (int i = 0;; i++) {
        if (__atomic_load_n(state, __ATOMIC_ACQUIRE) >= done) {
            spun = 1;
            break;
        }
        cf_cpu_relax();
        if ((i & 63) == 63 && cf_spin_check(i, end)) {
            break;
        }
    }
    if (spun) {
        /* the completer holds the GIL; wait until it lets go */
        cf_spin_for_gil();
    }
    Py_END_ALLOW_THREADS
    cf_hint_gil_acquired();
    while (*state < done) {
        int r = cf_event_wait_gil(ev, deadline);
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0) {
            break;
        }
    }
    if (*state >= done) {
        spin_budget = cf_spin_adapt(spin_budget, cf_monotonic_ns() - start);
    }
    return rc;
}

/* ------------------------------------------------ thread pool workers */

int
cf_block_spin_for_work(int *nspinning, void *const *head, const int *stop,
                       const cf_time_t *budget, cf_time_t start)
{
    int spinner = 0;
    if (__atomic_fetch_add(nspinning, 1, __ATOMIC_ACQ_REL) == 0) {
        spinner = 1;
        cf_time_t end = start + __atomic_load_n(budget, __ATOMIC_RELAXED);
        for (int i = 0;; i++) {
            if (__atomic_load_n(head, __ATOMIC_ACQUIRE) != NULL
                || __atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
                break;
            }
            cf_cpu_relax();
            if ((i & 63) == 63 && cf_spin_check(i, end)) {
                break;
            }
        }
    }
    __atomic_fetch_sub(nspinning, 1, __ATOMIC_ACQ_REL);
    return spinner;
}

void
cf_block_work_adapt(cf_time_t *budget, cf_time_t start)
{
    *budget = cf_spin_adapt(*budget, cf_monotonic_ns() - start);
}
