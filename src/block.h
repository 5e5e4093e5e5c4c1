/* block: every blocking wait of cfutures, and the whole spin / GIL
 * hand-off policy, in one place.
 *
 * A blocking call follows CPython's pattern: try without blocking,
 * release the GIL, (spin briefly,) timed wait, on EINTR run the signal
 * handlers, recompute the remaining time from a monotonic deadline.  The
 * spin policy: a cross-CPU wake-up costs more than a short task, so a
 * thread about to sleep first spins for an adaptive budget; and a GIL
 * hand-off hint, set by our own threads around the GIL releases they
 * make, tells a spinner when taking the GIL will not block.
 *
 * Included by cfutures.h (after cf_time_t).
 */
#ifndef CF_BLOCK_H
#define CF_BLOCK_H

/* ----------------------------------------------------------- cf_event */

/* A one-shot-ish wake-up: a POSIX semaphore (sem_wait is interrupted by
 * signal handlers regardless of SA_RESTART, which keeps Ctrl-C prompt). */
typedef struct {
    sem_t sem;
} cf_event;

void cf_event_init(cf_event *ev);
void cf_event_destroy(cf_event *ev);
void cf_event_post(cf_event *ev);          /* async-signal-safe, no GIL */
/* Wait with the GIL *released* by the caller.  1: posted, 0: deadline
 * passed, -1: interrupted by a signal (caller runs PyErr_CheckSignals). */
int cf_event_wait(cf_event *ev, cf_time_t deadline);

/* Block until the event is posted or the deadline passes, releasing the
 * GIL while asleep and running signal handlers on EINTR.  1: posted,
 * 0: timeout, -1: exception raised by a signal handler. */
int cf_event_wait_gil(cf_event *ev, cf_time_t deadline);

/* ------------------------------------------------------------ spinning */

/* A cross-CPU futex wake-up costs ~25 us on these machines, more than a
 * whole task.  Threads about to sleep first spin for a bounded time, and
 * a GIL hand-off hint (set by our own threads around the GIL releases
 * they make) tells a spinner when taking the GIL will not block.  Pure C,
 * process-wide, holds no PyObject; a stale hint only costs a spin. */
#define CF_SPIN_NS 250000     /* most a waiter spins for a result or work */
#define CF_SPIN_MIN_NS 1000   /* least: spinning that keeps failing decays */
#define CF_SPIN_GIL_NS 60000  /* waiting for the GIL hint */

static inline void
cf_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Every 64 spins: 1 when the budget is spent.  Every 256, yield the CPU
 * so that a spinner never starves the thread it waits for when the
 * machine is oversubscribed. */
static inline int
cf_spin_check(int i, cf_time_t end)
{
    if ((i & 255) == 255) {
        sched_yield();
    }
    return cf_monotonic_ns() > end;
}

#if !CF_FT
extern int cf_gil_free_hint;

static inline void
cf_hint_gil_released(void)
{
    __atomic_store_n(&cf_gil_free_hint, 1, __ATOMIC_RELEASE);
}

static inline void
cf_hint_gil_acquired(void)
{
    __atomic_store_n(&cf_gil_free_hint, 0, __ATOMIC_RELAXED);
}

/* Spin (GIL released) until the hint says the GIL is free, or budget. */
void cf_spin_for_gil(void);
#else
/* Free-threaded: no GIL to hand over, so no hint and no spin for it. */
static inline void cf_hint_gil_released(void) {}
static inline void cf_hint_gil_acquired(void) {}
static inline void cf_spin_for_gil(void) {}
#endif

/* Adaptive budget, from how long the wait really took: a wait that a
 * full spin would have covered grows the budget, a longer one halves it;
 * so waits that are long anyway (slow tasks) stop costing a CPU, and a
 * budget that decayed recovers as soon as waits get short again. */
static inline cf_time_t
cf_spin_adapt(cf_time_t budget, cf_time_t waited)
{
    if (waited <= CF_SPIN_NS) {
        cf_time_t b = budget * 2 > waited * 2 ? budget * 2 : waited * 2;
        return b > CF_SPIN_NS ? CF_SPIN_NS : b;
    }
    budget /= 2;
    return budget < CF_SPIN_MIN_NS ? CF_SPIN_MIN_NS : budget;
}

/* ------------------------------------------------------------- the waits */

/* result()/exception(): the caller holds the GIL and has linked a waiter
 * that posts ev when *state reaches `done` or more.  Spin (GIL released)
 * for this thread's adaptive budget, hand the GIL over, then sleep on ev
 * until done, the deadline or a signal.  0: returned (check the state),
 * -1: a signal handler raised. */
int cf_block_wait_state(const int *state, int done, cf_event *ev,
                        cf_time_t deadline);

/* A thread pool worker about to wait for work (GIL released): one worker
 * at a time (*nspinning) spins for up to *budget ns until *head is not
 * NULL or *stop is set.  Returns 1 when this thread was the spinner: then,
 * once it has work, cf_block_work_adapt() under the pool's mutex. */
int cf_block_spin_for_work(int *nspinning, void *const *head, const int *stop,
                           const cf_time_t *budget, cf_time_t start);
void cf_block_work_adapt(cf_time_t *budget, cf_time_t start);

#endif /* CF_BLOCK_H */
