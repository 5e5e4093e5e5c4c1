/* procdispatch: the process pool's dispatcher, in pure C.
 *
 * Holds no PyObject and never takes the GIL: it owns the workers' pipes
 * and pidfds, keeps the registry that the fork hooks walk, hands queued
 * task frames to the least loaded workers, writes them, ppoll()s, reads
 * and splits result frames.  What needs the GIL (completing futures,
 * starting and reaping processes, breaking the pool) is left to the
 * caller: ProcDispatch_Wait() returns CF_DISPATCH_GIL when a GIL phase
 * is due (processcore.c).
 *
 * A worker whose stream fails keeps the cause: `err` is the CF_ERR_* code
 * (procio.h) and `err_errno` the OS error, so the GIL side can tell a
 * corrupted or broken stream from a worker that died.
 *
 * Locking: ProcShared is shared by the dispatcher and GIL holders and is
 * protected by sh->mutex.  The dispatcher owns its worker array; it makes
 * structural changes (adopting, removing, closing fds) under the mutex so
 * that the fork hooks see a consistent snapshot, and reads it freely.
 * Nobody holds sh->mutex while taking the GIL or calling Python.
 */
#ifndef CF_PROCDISPATCH_H
#define CF_PROCDISPATCH_H

#include "cfutures.h"
#include "procio.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>

#define DEPTH_MIN 2
#define DEPTH_MAX 64
#define DEPTH_TARGET_US 1000.0
/* Tasks this long go one per worker: a second one queued behind a busy
 * worker would wait while another worker idles (at the end of a map), and
 * a round trip per task costs them under 5%. */
#define DEPTH_LONG_US 2000.0
#define READ_CHUNK (256 * 1024)
#define TERM_GRACE_NS ((cf_time_t)1000 * 1000 * 1000)

/* A well-formed frame of a kind the parent never receives. */
#define CF_ERR_PIPE_KIND   (-106)

/* ProcDispatch_Wait() */
#define CF_DISPATCH_GIL 1       /* a GIL phase is due */

typedef struct ProcWorker {
    struct ProcWorker *next;    /* launch list, before adoption */
    pid_t pid;
    int task_fd;                /* parent end, non-blocking */
    int result_fd;              /* parent end, non-blocking */
    int sentinel_fd;            /* pidfd (owned) or Process.sentinel */
    int own_sentinel;
    int launched;               /* pid/sentinel valid: may be adopted */
    int ready;                  /* READY frame seen */
    int exit_announced;         /* result carried CF_FRAME_F_EXIT */
    int stop_sent;
    int eof;                    /* result pipe at EOF */
    int exited;                 /* sentinel readable */
    int err;                    /* first stream failure: CF_ERR_*, or 0 */
    int err_errno;              /* its OS error (CF_ERR_PIPE_IO/NOMEM) */
    int counted_retired;        /* GIL side: left nprocs_active */
    int reaped;
    int signalled;              /* terminated by the break (dispatcher) */
    size_t need;                /* bytes of the frame being received */
    uint32_t inflight;
    uint64_t assigned;
    uint64_t budget;            /* max_tasks_per_child, 0: unlimited */
    ProcMsgQueue out;
    ProcBuf in;
    ProcShm *rshm;              /* its result region (owned), or NULL */
    ProcShm *tshm;              /* the pool's task region (borrowed) */
    ProcBuf tseqs;              /* (task id, span) pairs of the task region
                                 * it may still read, in its order */
} ProcWorker;

/* Record the first failure of a worker's stream (later ones follow it). */
static inline void
ProcWorker_Fail(ProcWorker *w, int err, int os_errno)
{
    if (w->err == 0) {
        w->err = err;
        w->err_errno = os_errno;
    }
}

/* A result frame, pointing into its worker's input buffer. */
typedef struct {
    ProcWorker *w;
    uint64_t id;
    uint32_t kind, aux;
    const char *p;
    size_t n;
} FrameRef;

typedef struct ProcShared {
    struct ProcShared *reg_prev, *reg_next;
    pthread_mutex_t mutex;
    int inherited;          /* this process is a fork child of the owner */
    int wake_fd;            /* eventfd */
    int sleeping;           /* dispatcher is in (or entering) poll() */
    int wake_pending;
    int kick;               /* a GIL holder wants a GIL phase */
    int abort_req;          /* _abort(): break the pool in the GIL phase */
    int depth;              /* per-worker in-flight target */
    ProcMsgQueue sendq;     /* RUNNING tasks not yet given to a worker */
    /* Tasks in sendq or at a worker and not yet answered.  Freed by the
     * dispatcher as soon as it parses a result (no GIL needed), so that
     * submit() can keep workers fed while it holds the GIL in a burst. */
    Py_ssize_t inflight_total;
    ProcWorker *launching;  /* launched by GIL holders, to adopt */
    ProcShm *tshm;          /* task region: made by the first launch */
    size_t shm_cap;         /* 0: no shm (pipes only) */
    /* dispatcher-owned */
    ProcWorker **w;
    int nw, wcap;
    FrameRef *batch;
    size_t nbatch, batchcap;
    cf_time_t kill_deadline;    /* CF_FOREVER unless terminating */
    int io_errno;               /* ppoll()/realloc() failed: break the pool */
    sigset_t launch_mask;       /* the dispatcher's mask before _run blocked
                                 * signals: workers it launches get it */
    cf_event done_ev;           /* posted when the dispatcher is done (latch) */
} ProcShared;

/* The dispatcher loop's own state, kept across GIL phases. */
typedef struct {
    struct pollfd *pfds;
    size_t pcap;
    int again;              /* progress made: poll without sleeping */
    int gil_needed;
    Py_ssize_t answered;
    long backoff_us;        /* > 0 while ppoll()/realloc() keep failing */
} ProcDispatchLoop;

/* Registered for the fork hooks; NULL on ENOMEM. */
ProcShared *ProcShared_New(void);
void ProcShared_Free(ProcShared *sh);
/* How many fork()s this process descends through since the first
 * ProcShared_New() (bumped in the child only: constant in a process). */
unsigned ProcShared_ForkGeneration(void);
void ProcWorker_Free(ProcWorker *w);
/* GIL holder launching w: give it a result region, and the pool a task
 * region if it has none; *tfd and *rfd are CLOEXEC dups for the child (-1:
 * none; the caller owns them).  0; -1 (errno) if the task region's fd
 * could not be duplicated; other failures only mean pipes alone. */
int ProcWorker_ShmFds(ProcShared *sh, ProcWorker *w, int *tfd, int *rfd);
void ProcWorker_CloseFds(ProcWorker *w);

/* Wake the dispatcher if it sleeps.  Called with sh->mutex held; returns
 * whether the caller must write the eventfd (ProcShared_WakeWrite) after
 * unlocking. */
static inline int
ProcShared_WakeLocked(ProcShared *sh)
{
    if (sh->sleeping && !sh->wake_pending) {
        sh->wake_pending = 1;
        return 1;
    }
    return 0;
}

void ProcShared_WakeWrite(ProcShared *sh);
/* Ask for a GIL phase (any thread, no lock held). */
void ProcShared_Kick(ProcShared *sh);

void ProcDispatchLoop_Init(ProcDispatchLoop *L);
void ProcDispatchLoop_Free(ProcDispatchLoop *L);
/* Adopt, assign, write, ppoll(), read and parse, GIL released, until a
 * GIL phase is due: results in sh->batch, a worker's end, a kick, the
 * kill deadline, an I/O failure (sh->io_errno).  Returns CF_DISPATCH_GIL. */
int ProcDispatch_Wait(ProcShared *sh, ProcDispatchLoop *L);

#endif /* CF_PROCDISPATCH_H */
