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
    cf_time_t posted_at;    /* last post, for cf_wake_sample() */
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

/* Threads about to sleep first spin, because a wake-up from a sleep costs
 * more than a short task.  What a sleep costs is measured, not assumed:
 * cf_wake_ns follows (EWMA) the time from each post to the sleeper it woke
 * running again.  No spin lasts longer than that: spinning that long and
 * then sleeping costs at most twice what the best choice in hindsight
 * would (spin-then-block), so CPU stays bounded at any request rate.
 * Within that cap each budget adapts to how long its waits really took,
 * and a GIL hand-off hint (set by our own threads around the GIL releases
 * they make) tells a spinner when taking the GIL will not block.  Pure C,
 * process-wide, holds no PyObject; a stale hint only costs a spin. */
#define CF_SPIN_MIN_NS 500          /* least budget: failing spins decay */
#define CF_WAKE_INIT_NS 20000       /* cf_wake_ns before any sample */
#define CF_WAKE_MIN_NS 2000         /* clamps of one sample: a preempted */
#define CF_WAKE_MAX_NS 50000        /* sleeper is not a slow wake-up */

extern cf_time_t cf_wake_ns;

static inline cf_time_t
cf_spin_cap(void)
{
    return __atomic_load_n(&cf_wake_ns, __ATOMIC_RELAXED);
}

/* Counters for _cfutures._spin_stats() (relaxed; tests and benchmarks). */
typedef struct {
    long long wake_samples;     /* wake-ups folded into cf_wake_ns */
    long long gil_spins_ok;     /* GIL-hint waits that saw the hint */
    long long gil_spins_failed; /* ... that spent their budget */
    long long gil_spins_failed_ns;  /* the budgets they spent */
} cf_spin_counters;
extern cf_spin_counters cf_spin_stats;

static inline void
cf_count(long long *c)
{
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* A sleeper woke: fold now - posted_at into cf_wake_ns (a lost update
 * between racing threads is harmless).  Under CF_WAKE_MIN_NS the post
 * came before the sleep began: not a wake-up, not a sample. */
static inline void
cf_wake_sample(cf_time_t posted_at, cf_time_t now)
{
    cf_time_t d = now - posted_at;
    if (posted_at <= 0 || d < CF_WAKE_MIN_NS) {
        return;
    }
    if (d > CF_WAKE_MAX_NS) {
        d = CF_WAKE_MAX_NS;
    }
    cf_time_t w = __atomic_load_n(&cf_wake_ns, __ATOMIC_RELAXED);
    __atomic_store_n(&cf_wake_ns, w + (d - w) / 8, __ATOMIC_RELAXED);
    cf_count(&cf_spin_stats.wake_samples);
}

/* A budget as spent now: never above the current cap. */
static inline cf_time_t
cf_spin_capped(cf_time_t budget)
{
    cf_time_t cap = cf_spin_cap();
    return budget < cap ? budget : cap;
}

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

/* Spin (GIL released) until the hint says the GIL is free, or for this
 * thread's adaptive budget.  Returns 0 if the hint came, else the time
 * the spin began: pass it to cf_gil_spin_after() once the GIL is taken,
 * so that the budget learns how long the wait really was. */
cf_time_t cf_spin_for_gil(void);
void cf_gil_spin_after(cf_time_t spin_start);
#else
/* Free-threaded: no GIL to hand over, so no hint and no spin for it. */
static inline void cf_hint_gil_released(void) {}
static inline void cf_hint_gil_acquired(void) {}
static inline cf_time_t cf_spin_for_gil(void) { return 0; }
static inline void cf_gil_spin_after(cf_time_t spin_start) { (void)spin_start; }
#endif

/* Adaptive budget, from how long the wait really took: a wait that a
 * full spin would have covered grows the budget, a longer one halves it;
 * so waits that are long anyway (slow tasks, idle gaps) stop costing a
 * CPU, and a budget that decayed recovers as soon as waits get short
 * again.  Never above cf_spin_cap(). */
static inline cf_time_t
cf_spin_adapt(cf_time_t budget, cf_time_t waited)
{
    cf_time_t cap = cf_spin_cap();
    if (waited <= cap) {
        cf_time_t b = budget * 2 > waited * 2 ? budget * 2 : waited * 2;
        return b > cap ? cap : b;
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
/* A worker woken from its sleep by a post made at posted_at. */
void cf_block_woken(cf_time_t posted_at);

#endif /* CF_BLOCK_H */
