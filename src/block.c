/* block: every blocking wait and the spin / GIL hand-off policy (see
 * block.h). */
#include "cfutures.h"

#include <errno.h>
#include <time.h>

/* ---------------------------------------------------- GIL hand-off hint */

cf_time_t cf_wake_ns = CF_WAKE_INIT_NS;
cf_spin_counters cf_spin_stats;

#if !CF_FT
int cf_gil_free_hint = 0;

/* Per-thread budget for waiting on the hint: it shrinks in threads whose
 * GIL is mostly released by code that sets no hint (time.sleep, I/O) and
 * grows back when the GIL comes soon again. */
static _Thread_local cf_time_t gil_budget = CF_WAKE_INIT_NS;
/* Taking a free GIL takes less than this. */
#define CF_GIL_FREE_NS 2000

static _Thread_local cf_time_t gil_spent;    /* budget of the last failure */

cf_time_t
cf_spin_for_gil(void)
{
    if (__atomic_load_n(&cf_gil_free_hint, __ATOMIC_ACQUIRE)) {
        cf_count(&cf_spin_stats.gil_spins_ok);
        return 0;       /* says nothing about how long a spin should be */
    }
    cf_time_t start = cf_monotonic_ns();
    cf_time_t budget = cf_spin_capped(gil_budget);
    cf_time_t end = start + budget;
    for (int i = 0;; i++) {
        if (__atomic_load_n(&cf_gil_free_hint, __ATOMIC_ACQUIRE)) {
            gil_budget = cf_spin_adapt(gil_budget, cf_monotonic_ns() - start);
            cf_count(&cf_spin_stats.gil_spins_ok);
            return 0;
        }
        cf_cpu_relax();
        if ((i & 63) == 63 && cf_spin_check(i, end)) {
            cf_count(&cf_spin_stats.gil_spins_failed);
            __atomic_fetch_add(&cf_spin_stats.gil_spins_failed_ns, budget,
                               __ATOMIC_RELAXED);
            gil_spent = budget;
            return start;
        }
    }
}

/* After a failed spin: if the GIL was taken at once, it had been released
 * by code that sets no hint (time.sleep, I/O), and spinning for that hint
 * is dead: shrink.  If it came later, learn how long it really took. */
void
cf_gil_spin_after(cf_time_t spin_start)
{
    if (spin_start == 0) {
        return;
    }
    cf_time_t waited = cf_monotonic_ns() - spin_start;
    if (waited <= gil_spent + CF_GIL_FREE_NS) {
        waited = cf_spin_cap() + 1;
    }
    gil_budget = cf_spin_adapt(gil_budget, waited);
}
#endif

/* ------------------------------------------------------------ cf_event */

void
cf_event_init(cf_event *ev)
{
    sem_init(&ev->sem, 0, 0);
    ev->posted_at = 0;
}

void
cf_event_destroy(cf_event *ev)
{
    sem_destroy(&ev->sem);
}

void
cf_event_post(cf_event *ev)
{
    /* atomic: an event can be posted again while its waiter reads this */
    __atomic_store_n(&ev->posted_at, cf_monotonic_ns(), __ATOMIC_RELAXED);
    sem_post(&ev->sem);
}

int
cf_event_wait(cf_event *ev, cf_time_t deadline)
{
    int r;
    if (sem_trywait(&ev->sem) == 0) {
        return 1;
    }
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
        /* posted_at was written before the post that woke us */
        cf_wake_sample(__atomic_load_n(&ev->posted_at, __ATOMIC_RELAXED),
                       cf_monotonic_ns());
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
static _Thread_local cf_time_t spin_budget = CF_WAKE_INIT_NS;

int
cf_block_wait_state(const int *state, int done, cf_event *ev,
                    cf_time_t deadline)
{
    int r = 1;
    cf_time_t start, gil_spin = 0;
    Py_BEGIN_ALLOW_THREADS
    cf_hint_gil_released();
    start = cf_monotonic_ns();
    cf_time_t end = start + cf_spin_capped(spin_budget);
    if (deadline != CF_FOREVER && deadline < end) {
        end = deadline;
    }
    /* Spin a little before sleeping: most tasks finish sooner than a
     * wake-up takes. */
    for (int i = 0;; i++) {
        if (__atomic_load_n(state, __ATOMIC_ACQUIRE) >= done) {
            break;
        }
        cf_cpu_relax();
        if ((i & 63) == 63 && cf_spin_check(i, end)) {
            break;
        }
    }
    /* Then sleep without taking the GIL back in between (that would
     * release it again with no hint, a dead spin for the completer). */
    while (__atomic_load_n(state, __ATOMIC_ACQUIRE) < done) {
        r = cf_event_wait(ev, deadline);
        if (r <= 0) {
            break;      /* deadline, or a signal: handled with the GIL */
        }
    }
    if (r > 0) {
        /* the completer holds the GIL; wait until it lets go */
        gil_spin = cf_spin_for_gil();
    }
    Py_END_ALLOW_THREADS
    cf_hint_gil_acquired();
    cf_gil_spin_after(gil_spin);
    int rc = 0;
    if (r < 0) {
        /* EINTR: run the handlers, then go on waiting with the GIL. */
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        while (*state < done) {
            int w = cf_event_wait_gil(ev, deadline);
            if (w < 0) {
                rc = -1;
                break;
            }
            if (w == 0) {
                break;
            }
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
        cf_time_t end = start + cf_spin_capped(__atomic_load_n(budget,
                                                               __ATOMIC_RELAXED));
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

void
cf_block_woken(cf_time_t posted_at)
{
    cf_wake_sample(posted_at, cf_monotonic_ns());
}
