/* procdispatch: the process pool's dispatcher in pure C (see
 * procdispatch.h).  Runs with the GIL released; every failure is kept as
 * a CF_ERR_* code on the worker (or sh->io_errno) for the GIL phase. */
#include "procdispatch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- registry + fork hooks: a child must not keep the parent's pipes
 * (workers would miss EOF when the parent dies) nor lock its mutexes. */

static pthread_mutex_t reg_mutex = PTHREAD_MUTEX_INITIALIZER;
static ProcShared *reg_head;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static unsigned fork_generation;

unsigned
ProcShared_ForkGeneration(void)
{
    return __atomic_load_n(&fork_generation, __ATOMIC_RELAXED);
}

static void
reg_prepare(void)
{
    pthread_mutex_lock(&reg_mutex);
    for (ProcShared *s = reg_head; s != NULL; s = s->reg_next) {
        if (!s->inherited) {
            pthread_mutex_lock(&s->mutex);
            if (s->tshm != NULL) {
                pthread_mutex_lock(&s->tshm->mutex);
            }
        }
    }
    ProcShm_CacheLock();
}

static void
reg_parent(void)
{
    ProcShm_CacheUnlock();
    for (ProcShared *s = reg_head; s != NULL; s = s->reg_next) {
        if (!s->inherited) {
            if (s->tshm != NULL) {
                pthread_mutex_unlock(&s->tshm->mutex);
            }
            pthread_mutex_unlock(&s->mutex);
        }
    }
    pthread_mutex_unlock(&reg_mutex);
}

void
ProcWorker_CloseFds(ProcWorker *w)
{
    if (w->task_fd >= 0) {
        close(w->task_fd);
        w->task_fd = -1;
    }
    if (w->result_fd >= 0) {
        close(w->result_fd);
        w->result_fd = -1;
    }
    if (w->own_sentinel && w->sentinel_fd >= 0) {
        close(w->sentinel_fd);
    }
    w->sentinel_fd = -1;
}

static void
reg_child(void)
{
    /* Only async-signal-safe work: close fds, unmap, reset mutexes. */
    fork_generation++;
    for (ProcShared *s = reg_head; s != NULL; s = s->reg_next) {
        if (!s->inherited) {
            s->inherited = 1;
            if (s->wake_fd >= 0) {
                close(s->wake_fd);
                s->wake_fd = -1;
            }
            for (ProcWorker *w = s->launching; w != NULL; w = w->next) {
                ProcWorker_CloseFds(w);
                ProcShm_ForkChild(w->rshm);
            }
            for (int i = 0; i < s->nw; i++) {
                ProcWorker_CloseFds(s->w[i]);
                ProcShm_ForkChild(s->w[i]->rshm);
            }
            ProcShm_ForkChild(s->tshm);
        }
        if (s->tshm != NULL) {
            pthread_mutex_init(&s->tshm->mutex, NULL);
        }
        pthread_mutex_init(&s->mutex, NULL);
    }
    ProcShm_CacheForkChild();
    pthread_mutex_init(&reg_mutex, NULL);
}

static void
reg_install(void)
{
    pthread_atfork(reg_prepare, reg_parent, reg_child);
}

ProcShared *
ProcShared_New(void)
{
    pthread_once(&reg_once, reg_install);
    ProcShared *sh = calloc(1, sizeof(ProcShared));
    if (sh == NULL) {
        return NULL;
    }
    sh->wake_fd = -1;       /* made by the first submit() */
    pthread_mutex_init(&sh->mutex, NULL);
    sh->depth = DEPTH_MIN;
    sh->kill_deadline = CF_FOREVER;
    sh->shm_cap = CF_SHM_CAP;
    const char *cap = getenv("CFUTURES_SHM_MAX");  /* tests: a small region */
    if (cap != NULL && *cap) {
        unsigned long long v = strtoull(cap, NULL, 0);
        sh->shm_cap = v < CF_SHM_CAP ? (size_t)v : CF_SHM_CAP;
    }
    /* Under an address space limit a region reserves 1/256 of it at most
     * (each process maps several); under 1 MiB: pipes only. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        size_t part = (size_t)(rl.rlim_cur / 256) & ~(size_t)4095;
        if (part < sh->shm_cap) {
            sh->shm_cap = part < ((size_t)1 << 20) ? 0 : part;
        }
    }
    cf_event_init(&sh->done_ev);
    pthread_mutex_lock(&reg_mutex);
    sh->reg_next = reg_head;
    if (reg_head) {
        reg_head->reg_prev = sh;
    }
    reg_head = sh;
    pthread_mutex_unlock(&reg_mutex);
    return sh;
}

/* Spans of the task region that w will no longer read: those of task id
 * (its answer came), or all of them (it is gone). */
static void
worker_release_tasks(ProcWorker *w, int all, uint64_t id)
{
    uint64_t pair[2];
    while (ProcBuf_Unread(&w->tseqs) >= sizeof(pair)) {
        memcpy(pair, w->tseqs.data + w->tseqs.off, sizeof(pair));
        if (!all && pair[0] != id) {
            break;
        }
        w->tseqs.off += sizeof(pair);
        if (w->tshm != NULL) {
            ProcShm_Release(w->tshm, pair[1]);
        }
    }
    if (w->tseqs.off == w->tseqs.len) {
        w->tseqs.off = w->tseqs.len = 0;
    }
}

void
ProcWorker_Free(ProcWorker *w)
{
    ProcWorker_CloseFds(w);
    ProcMsgQueue_Clear(&w->out);
    ProcBuf_Free(&w->in);
    worker_release_tasks(w, 1, 0);
    ProcBuf_Free(&w->tseqs);
    if (w->reaped) {
        /* its process is gone: nobody else maps its regions */
        if (w->tshm != NULL) {
            __atomic_sub_fetch(&w->tshm->users, 1, __ATOMIC_ACQ_REL);
        }
        ProcShm_Recycle(w->rshm);
    }
    else {
        ProcShm_Free(w->rshm);
    }
    free(w);
}

int
ProcWorker_ShmFds(ProcShared *sh, ProcWorker *w, int *tfd, int *rfd)
{
    *tfd = *rfd = -1;
    if (sh->shm_cap == 0 || sh->inherited) {
        return 0;
    }
    if (sh->tshm == NULL) {
        ProcShm *t = ProcShm_Create(sh->shm_cap);
        if (t == NULL) {
            sh->shm_cap = 0;        /* not available here: pipes only */
            return 0;
        }
        pthread_mutex_lock(&sh->mutex);
        sh->tshm = t;
        pthread_mutex_unlock(&sh->mutex);
    }
    w->tshm = sh->tshm;
    __atomic_add_fetch(&w->tshm->users, 1, __ATOMIC_ACQ_REL);
    *tfd = fcntl(sh->tshm->fd, F_DUPFD_CLOEXEC, 0);
    if (*tfd < 0) {
        /* tasks may have holes in the region: no worker without it */
        __atomic_sub_fetch(&w->tshm->users, 1, __ATOMIC_ACQ_REL);
        w->tshm = NULL;
        return -1;
    }
    w->rshm = ProcShm_Create(sh->shm_cap);
    if (w->rshm != NULL) {
        *rfd = fcntl(w->rshm->fd, F_DUPFD_CLOEXEC, 0);
    }
    return 0;
}

void
ProcShared_Free(ProcShared *sh)
{
    pthread_mutex_lock(&reg_mutex);
    if (sh->reg_prev) {
        sh->reg_prev->reg_next = sh->reg_next;
    }
    else {
        reg_head = sh->reg_next;
    }
    if (sh->reg_next) {
        sh->reg_next->reg_prev = sh->reg_prev;
    }
    pthread_mutex_unlock(&reg_mutex);
    ProcWorker *w;
    while ((w = sh->launching) != NULL) {
        sh->launching = w->next;
        ProcWorker_Free(w);
    }
    for (int i = 0; i < sh->nw; i++) {
        ProcWorker_Free(sh->w[i]);
    }
    free(sh->w);
    free(sh->batch);
    ProcMsgQueue_Clear(&sh->sendq);
    if (sh->tshm != NULL && !sh->inherited
        && __atomic_load_n(&sh->tshm->users, __ATOMIC_ACQUIRE) == 0) {
        ProcShm_Recycle(sh->tshm);      /* every worker given it reaped */
    }
    else {
        ProcShm_Free(sh->tshm);
    }
    if (sh->wake_fd >= 0) {
        close(sh->wake_fd);
    }
    if (!sh->inherited) {
        pthread_mutex_destroy(&sh->mutex);
    }
    cf_event_destroy(&sh->done_ev);
    free(sh);
}

void
ProcShared_WakeWrite(ProcShared *sh)
{
    uint64_t one = 1;
    if (sh->wake_fd >= 0) {
        ssize_t r = write(sh->wake_fd, &one, sizeof(one));
        (void)r;
    }
}

void
ProcShared_Kick(ProcShared *sh)
{
    if (sh == NULL || sh->inherited) {
        return;
    }
    pthread_mutex_lock(&sh->mutex);
    sh->kick = 1;
    int w = ProcShared_WakeLocked(sh);
    pthread_mutex_unlock(&sh->mutex);
    if (w) {
        ProcShared_WakeWrite(sh);
    }
}

/* Dispatcher, mutex held: take in launched workers. */
static int
adopt_launched(ProcShared *sh)
{
    ProcWorker **pp = &sh->launching;
    int n = 0;
    while (*pp != NULL) {
        ProcWorker *w = *pp;
        if (!w->launched) {
            pp = &w->next;
            continue;
        }
        if (sh->nw == sh->wcap) {
            int ncap = sh->wcap ? sh->wcap * 2 : 8;
            ProcWorker **nw = realloc(sh->w, ncap * sizeof(ProcWorker *));
            if (nw == NULL) {
                return n;       /* retry on the next round */
            }
            sh->w = nw;
            sh->wcap = ncap;
        }
        *pp = w->next;
        w->next = NULL;
        sh->w[sh->nw++] = w;
        n++;
    }
    return n;
}

/* m goes to w: its task-region spans are freed when w answers it (or
 * when w is gone), no longer with the message. */
static void
worker_take_holes(ProcWorker *w, ProcMsg *m)
{
    const char *table;
    size_t nh, plen;
    if (ProcShm_Holes(m->frame + CF_FRAME_HDR, m->len - CF_FRAME_HDR,
                      &table, &nh, &plen) != 1
        || ProcBuf_Reserve(&w->tseqs, nh * 2 * sizeof(uint64_t)) < 0) {
        /* ENOMEM: leak them rather than free what w may still read */
        m->shm = NULL;
        return;
    }
    for (size_t i = 0; i < nh; i++) {
        ProcHole h;
        ProcShm_Hole(table, i, &h);
        uint64_t pair[2] = {m->id, h.seq};
        memcpy(w->tseqs.data + w->tseqs.len, pair, sizeof(pair));
        w->tseqs.len += sizeof(pair);
    }
    m->shm = NULL;
}

/* Dispatcher, mutex held: hand queued tasks to the least loaded workers. */
static void
assign_tasks(ProcShared *sh)
{
    /* Booting workers get work only while none is ready (start-up: the
     * first tasks wait in their pipe instead of for a READY round trip);
     * later a slow-starting replacement must not hold work an idle ready
     * worker could run. */
    int any_ready = 0;
    for (int i = 0; i < sh->nw; i++) {
        any_ready |= sh->w[i]->ready;
    }
    while (sh->sendq.head != NULL) {
        ProcWorker *best = NULL;
        for (int i = 0; i < sh->nw; i++) {
            ProcWorker *w = sh->w[i];
            if ((any_ready && !w->ready) || w->stop_sent || w->err
                || w->eof || w->exited
                || w->inflight >= (uint32_t)sh->depth
                || (w->budget && w->assigned >= w->budget)) {
                continue;
            }
            if (best == NULL || w->inflight < best->inflight) {
                best = w;
            }
        }
        if (best == NULL) {
            return;
        }
        ProcMsg *m = ProcMsgQueue_Pop(&sh->sendq);
        if (m->shm != NULL) {
            worker_take_holes(best, m);
        }
        ProcMsgQueue_Push(&best->out, m);
        best->inflight++;
        best->assigned++;
    }
}

static int
batch_push(ProcShared *sh, FrameRef *f)
{
    if (sh->nbatch == sh->batchcap) {
        size_t ncap = sh->batchcap ? sh->batchcap * 2 : 256;
        FrameRef *n = realloc(sh->batch, ncap * sizeof(FrameRef));
        if (n == NULL) {
            return CF_ERR_PIPE_NOMEM;
        }
        sh->batch = n;
        sh->batchcap = ncap;
    }
    sh->batch[sh->nbatch++] = *f;
    return 0;
}

/* Dispatcher: read what a worker has written (bounded per round). */
static void
read_worker(ProcWorker *w)
{
    if (w->result_fd < 0 || w->eof) {
        return;
    }
    for (int i = 0; i < 64; i++) {
        size_t unread = ProcBuf_Unread(&w->in);
        size_t want = READ_CHUNK;
        if (w->need > unread && w->need - unread > want) {
            want = w->need - unread;
        }
        ssize_t n = ProcBuf_ReadFd(&w->in, w->result_fd, want);
        if (n > 0) {
            continue;
        }
        if (n == CF_ERR_PIPE_AGAIN && errno == EINTR) {
            continue;
        }
        if (n == CF_ERR_PIPE_AGAIN) {
            return;
        }
        if (n == CF_ERR_PIPE_EOF) {
            w->eof = 1;
            return;
        }
        ProcWorker_Fail(w, (int)n, errno);     /* read error, ENOMEM */
        return;
    }
}

/* Dispatcher: split complete frames; results go to the batch. */
static int
parse_worker(ProcShared *sh, ProcWorker *w, Py_ssize_t *answered)
{
    int progress = 0;
    for (;;) {
        ProcFrameHeader h;
        const char *payload;
        size_t need;
        int r = ProcBuf_NextFrame(&w->in, &h, &payload, &need);
        if (r == 0) {
            /* Grown by the next read_worker(), after this round's batch
             * (which points into w->in) has been consumed. */
            w->need = need;
            return progress;
        }
        if (r < 0) {
            ProcWorker_Fail(w, r, 0);       /* malformed header */
            return progress;
        }
        uint32_t kind = CF_FRAME_KIND(h.kind);
        if (kind == CF_FRAME_READY) {
            w->ready = 1;
            progress = 1;
            continue;
        }
        if (kind != CF_FRAME_RESULT && kind != CF_FRAME_EXC
            && kind != CF_FRAME_ERRTEXT) {
            ProcWorker_Fail(w, CF_ERR_PIPE_KIND, 0);
            return progress;
        }
        if (h.kind & CF_FRAME_F_EXIT) {
            w->exit_announced = 1;
        }
        if (ProcBuf_Unread(&w->tseqs) > 0) {
            worker_release_tasks(w, 0, h.id);   /* it has read that task */
        }
        if (w->inflight > 0) {
            w->inflight--;
        }
        (*answered)++;
        FrameRef f = {.w = w, .id = h.id, .kind = kind, .aux = h.aux,
                      .p = payload, .n = (size_t)h.len};
        if (batch_push(sh, &f) < 0) {
            ProcWorker_Fail(w, CF_ERR_PIPE_NOMEM, ENOMEM);
            return progress;
        }
        progress = 1;
    }
}

/* ---- the loop */

/* Dispatcher (no GIL): ppoll() or realloc() failed.  The first failure
 * breaks the pool (GIL phase, with the OS error as cause); while failures
 * go on, sleep with a growing delay instead of spinning (the loop still
 * needs to see the workers end). */
static void
io_failed(ProcShared *sh, long *backoff_us, int *gil_needed)
{
    if (sh->io_errno == 0) {
        sh->io_errno = errno ? errno : EIO;
        *gil_needed = 1;
        return;                 /* break the pool first */
    }
    *backoff_us = *backoff_us ? *backoff_us * 2 : 1000;
    if (*backoff_us > 100000) {
        *backoff_us = 100000;
    }
    struct timespec d = {0, *backoff_us * 1000};
    nanosleep(&d, NULL);
    *gil_needed = 1;            /* kill deadline, ends of workers */
}

/* Dispatcher (no GIL): ppoll() or realloc() failed, so no sentinel was
 * polled: poll each alone (one fd fits any RLIMIT_NOFILE), or worker
 * ends would go unseen and shutdown wait for ever. */
static void
detect_exits_unpolled(ProcShared *sh)
{
    for (int i = 0; i < sh->nw; i++) {
        ProcWorker *w = sh->w[i];
        if (w->exited || w->sentinel_fd < 0) {
            continue;
        }
        struct pollfd p = {.fd = w->sentinel_fd, .events = POLLIN};
        if (poll(&p, 1, 0) > 0 && p.revents) {
            w->exited = 1;      /* dead: its writes are all in */
            read_worker(w);
        }
    }
}


void
ProcDispatchLoop_Init(ProcDispatchLoop *L)
{
    memset(L, 0, sizeof(*L));
    L->again = 1;           /* first round: GIL phase to settle state */
    L->gil_needed = 1;
}

void
ProcDispatchLoop_Free(ProcDispatchLoop *L)
{
    free(L->pfds);
    L->pfds = NULL;
    L->pcap = 0;
}

int
ProcDispatch_Wait(ProcShared *sh, ProcDispatchLoop *L)
{
    for (;;) {
        /* 1. adopt, assign, collect requests */
        pthread_mutex_lock(&sh->mutex);
        if (adopt_launched(sh)) {
            L->gil_needed = 1;
        }
        assign_tasks(sh);
        if (sh->kick) {
            sh->kick = 0;
            L->gil_needed = 1;
        }
        pthread_mutex_unlock(&sh->mutex);

        /* 2. write */
        for (int i = 0; i < sh->nw; i++) {
            ProcWorker *w = sh->w[i];
            if (w->out.head != NULL && w->task_fd >= 0 && !w->err) {
                if (ProcMsgQueue_WriteFd(&w->out, w->task_fd) < 0) {
                    /* EPIPE: the worker is gone */
                    ProcWorker_Fail(w, CF_ERR_PIPE_IO, errno);
                    ProcMsgQueue_Clear(&w->out);
                    L->gil_needed = 1;
                }
            }
        }

        /* 3. wait */
        size_t need = 1 + 3 * (size_t)sh->nw;
        if (need > L->pcap) {
            struct pollfd *n = realloc(L->pfds, need * sizeof(*L->pfds));
            if (n == NULL) {
                errno = ENOMEM;
                io_failed(sh, &L->backoff_us, &L->gil_needed);
                detect_exits_unpolled(sh);
                L->gil_needed = 0;
                return CF_DISPATCH_GIL;     /* pfds too short to poll */
            }
            L->pfds = n;
            L->pcap = need;
        }
        struct pollfd *pfds = L->pfds;
        size_t np = 0;
        pfds[np++] = (struct pollfd){.fd = sh->wake_fd, .events = POLLIN};
        for (int i = 0; i < sh->nw; i++) {
            ProcWorker *w = sh->w[i];
            pfds[np++] = (struct pollfd){
                .fd = (w->eof || w->err) ? -1 : w->result_fd,
                .events = POLLIN};
            pfds[np++] = (struct pollfd){
                .fd = (w->out.head && !w->err) ? w->task_fd : -1,
                .events = POLLOUT};
            pfds[np++] = (struct pollfd){
                .fd = w->exited ? -1 : w->sentinel_fd, .events = POLLIN};
        }
        int timeout = -1;
        if (L->gil_needed || L->again) {
            timeout = 0;
        }
        else if (sh->kill_deadline != CF_FOREVER) {
            cf_time_t left = sh->kill_deadline - cf_monotonic_ns();
            timeout = left <= 0 ? 0 : (int)(left / 1000000) + 1;
        }
        int slept = 0;
        if (timeout != 0) {
            pthread_mutex_lock(&sh->mutex);
            if (sh->sendq.head != NULL || sh->kick) {
                timeout = 0;
            }
            else {
                sh->sleeping = 1;
                slept = 1;
            }
            pthread_mutex_unlock(&sh->mutex);
        }
        L->again = 0;
        struct timespec tsp, *tp = NULL;
        if (timeout >= 0) {
            tsp.tv_sec = timeout / 1000;
            tsp.tv_nsec = (long)(timeout % 1000) * 1000000;
            tp = &tsp;
        }
        int n = ppoll(pfds, np, tp, NULL);
        int poll_errno = n < 0 ? errno : 0;
        if (slept) {
            pthread_mutex_lock(&sh->mutex);
            sh->sleeping = 0;
            sh->wake_pending = 0;
            pthread_mutex_unlock(&sh->mutex);
        }
        if (n < 0 && poll_errno == EINTR) {
            /* only a synchronous signal is not blocked: poll again */
            for (size_t k = 0; k < np; k++) {
                pfds[k].revents = 0;
            }
            L->again = 1;
        }
        else if (n < 0) {
            /* EINVAL (more fds than RLIMIT_NOFILE), ENOMEM.  Read what
             * can be read anyway. */
            errno = poll_errno;
            io_failed(sh, &L->backoff_us, &L->gil_needed);
            for (size_t k = 0; k < np; k++) {
                pfds[k].revents = 0;
            }
            for (int i = 0; i < sh->nw; i++) {
                read_worker(sh->w[i]);
            }
            detect_exits_unpolled(sh);
        }
        else {
            L->backoff_us = 0;
        }
        if (pfds[0].revents) {
            uint64_t v;
            ssize_t r = read(sh->wake_fd, &v, sizeof(v));
            (void)r;
        }

        /* 4. read */
        for (int i = 0; i < sh->nw; i++) {
            ProcWorker *w = sh->w[i];
            struct pollfd *pr = &pfds[1 + 3 * i];
            int before = w->eof | ((w->err != 0) << 1) | (w->exited << 2);
            if (pr[2].revents) {
                w->exited = 1;          /* dead: its writes are all in */
            }
            if (pr[0].revents || w->exited) {
                read_worker(w);
            }
            if (pr[1].revents & (POLLERR | POLLHUP)) {
                /* the task pipe has no reader: the worker is gone */
                ProcWorker_Fail(w, CF_ERR_PIPE_IO, EPIPE);
            }
            if (parse_worker(sh, w, &L->answered)) {
                L->again = 1;
            }
            if ((w->eof | ((w->err != 0) << 1) | (w->exited << 2)) != before) {
                L->gil_needed = 1;      /* a worker's end: decide with GIL */
            }
        }
        if (L->answered > 0) {
            pthread_mutex_lock(&sh->mutex);
            sh->inflight_total -= L->answered < sh->inflight_total
                                  ? L->answered : sh->inflight_total;
            pthread_mutex_unlock(&sh->mutex);
            L->answered = 0;
        }
        if (sh->nbatch > 0) {
            L->gil_needed = 1;
        }
        if (sh->kill_deadline != CF_FOREVER
            && cf_monotonic_ns() >= sh->kill_deadline) {
            L->gil_needed = 1;
        }
        if (L->gil_needed) {
            L->gil_needed = 0;
            return CF_DISPATCH_GIL;
        }
    }
}
