/* procio: pure-C framing and pipe IO for the process pool (see procio.h). */
#include "procio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* ------------------------------------------------------------ ProcBuf */

void
ProcBuf_Init(ProcBuf *b)
{
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void
ProcBuf_Free(ProcBuf *b)
{
    free(b->data);
    ProcBuf_Init(b);
}

int
ProcBuf_Reserve(ProcBuf *b, size_t extra)
{
    if (b->cap - b->len >= extra) {
        return 0;
    }
    /* Reclaim the consumed prefix before growing. */
    if (b->off > 0 && b->cap - (b->len - b->off) >= extra) {
        ProcBuf_Compact(b);
        return 0;
    }
    size_t need = b->len + extra;
    if (need < extra) {
        return CF_ERR_PIPE_NOMEM;
    }
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) {
            ncap = need;
            break;
        }
        ncap *= 2;
    }
    char *n = realloc(b->data, ncap);
    if (n == NULL) {
        return CF_ERR_PIPE_NOMEM;
    }
    b->data = n;
    b->cap = ncap;
    return 0;
}

int
ProcBuf_Append(ProcBuf *b, const void *p, size_t n)
{
    int r = ProcBuf_Reserve(b, n);
    if (r < 0) {
        return r;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void
ProcBuf_Compact(ProcBuf *b)
{
    if (b->off == 0) {
        return;
    }
    size_t unread = b->len - b->off;
    if (unread > 0) {
        memmove(b->data, b->data + b->off, unread);
    }
    b->off = 0;
    b->len = unread;
}

ssize_t
ProcBuf_ReadFd(ProcBuf *b, int fd, size_t chunk)
{
    if (b->off == b->len) {
        b->off = b->len = 0;            /* empty: restart at the front */
    }
    int r = ProcBuf_Reserve(b, chunk);
    if (r < 0) {
        return r;
    }
    ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
    if (n > 0) {
        b->len += (size_t)n;
        return n;
    }
    if (n == 0) {
        return CF_ERR_PIPE_EOF;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return CF_ERR_PIPE_AGAIN;
    }
    return CF_ERR_PIPE_IO;
}

int
ProcBuf_NextFrame(ProcBuf *b, ProcFrameHeader *hdr, const char **payload,
                  size_t *need)
{
    size_t avail = b->len - b->off;
    if (avail < CF_FRAME_HDR) {
        *need = CF_FRAME_HDR;
        return 0;
    }
    memcpy(hdr, b->data + b->off, CF_FRAME_HDR);
    if (hdr->len > CF_FRAME_MAX) {
        return CF_ERR_PIPE_PROTO;
    }
    if (avail - CF_FRAME_HDR < hdr->len) {
        *need = CF_FRAME_HDR + (size_t)hdr->len;
        return 0;
    }
    *payload = b->data + b->off + CF_FRAME_HDR;
    b->off += CF_FRAME_HDR + (size_t)hdr->len;
    return 1;
}

int
ProcBuf_WriteAll(ProcBuf *b, int fd)
{
    while (b->off < b->len) {
        ssize_t n = write(fd, b->data + b->off, b->len - b->off);
        if (n > 0) {
            b->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            return CF_ERR_PIPE_AGAIN;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, -1) < 0 && errno == EINTR) {
                return CF_ERR_PIPE_AGAIN;
            }
            continue;
        }
        return CF_ERR_PIPE_IO;
    }
    b->off = b->len = 0;
    return 0;
}

/* ------------------------------------------------------------ ProcMsg */

static void
fill_header(char *frame, uint64_t id, uint32_t kind, size_t payload_len)
{
    ProcFrameHeader h = {.len = payload_len, .id = id, .kind = kind, .aux = 0};
    memcpy(frame, &h, CF_FRAME_HDR);
}

ProcMsg *
ProcMsg_New(uint64_t id, uint32_t kind, const void *payload, size_t n)
{
    ProcMsg *m = malloc(CF_MSG_PREFIX + CF_FRAME_HDR + n);
    if (m == NULL) {
        return NULL;
    }
    m->next = NULL;
    m->shm = NULL;
    m->id = id;
    m->len = CF_FRAME_HDR + n;
    m->sent = 0;
    fill_header(m->frame, id, kind, n);
    if (n) {
        memcpy(m->frame + CF_FRAME_HDR, payload, n);
    }
    return m;
}

ProcMsg *
ProcMsg_FromBuf(ProcBuf *b, uint64_t id, uint32_t kind)
{
    if (b->off != 0 || b->len < CF_MSG_PREFIX + CF_FRAME_HDR) {
        return NULL;
    }
    ProcMsg *m = (ProcMsg *)b->data;
    m->next = NULL;
    m->shm = NULL;
    m->id = id;
    m->len = b->len - CF_MSG_PREFIX;
    m->sent = 0;
    fill_header(m->frame, id, kind, m->len - CF_FRAME_HDR);
    ProcBuf_Init(b);
    return m;
}

void
ProcMsg_Free(ProcMsg *m)
{
    if (m != NULL && m->shm != NULL) {
        ProcShm_ReleaseHoles(m->shm, m->frame + CF_FRAME_HDR,
                             m->len - CF_FRAME_HDR);
    }
    free(m);
}

void
ProcMsgQueue_Push(ProcMsgQueue *q, ProcMsg *m)
{
    m->next = NULL;
    if (q->tail) {
        q->tail->next = m;
    }
    else {
        q->head = m;
    }
    q->tail = m;
    q->count++;
}

ProcMsg *
ProcMsgQueue_Pop(ProcMsgQueue *q)
{
    ProcMsg *m = q->head;
    if (m == NULL) {
        return NULL;
    }
    q->head = m->next;
    if (q->head == NULL) {
        q->tail = NULL;
    }
    q->count--;
    m->next = NULL;
    return m;
}

void
ProcMsgQueue_Splice(ProcMsgQueue *dst, ProcMsgQueue *src)
{
    if (src->head == NULL) {
        return;
    }
    if (dst->tail) {
        dst->tail->next = src->head;
    }
    else {
        dst->head = src->head;
    }
    dst->tail = src->tail;
    dst->count += src->count;
    src->head = src->tail = NULL;
    src->count = 0;
}

void
ProcMsgQueue_Clear(ProcMsgQueue *q)
{
    ProcMsg *m;
    while ((m = ProcMsgQueue_Pop(q)) != NULL) {
        ProcMsg_Free(m);
    }
}

#define WRITE_IOV 64

int
ProcMsgQueue_WriteFd(ProcMsgQueue *q, int fd)
{
    while (q->head != NULL) {
        struct iovec iov[WRITE_IOV];
        int n = 0;
        for (ProcMsg *m = q->head; m != NULL && n < WRITE_IOV; m = m->next) {
            iov[n].iov_base = m->frame + m->sent;
            iov[n].iov_len = m->len - m->sent;
            n++;
        }
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            return CF_ERR_PIPE_IO;
        }
        size_t left = (size_t)w;
        while (left > 0) {
            ProcMsg *m = q->head;
            size_t rest = m->len - m->sent;
            if (left >= rest) {
                left -= rest;
                ProcMsg_Free(ProcMsgQueue_Pop(q));
            }
            else {
                m->sent += left;
                left = 0;
            }
        }
    }
    return 1;
}

/* ------------------------------------------------------------ ProcShm */

typedef struct {
    uint64_t magic;
    uint64_t cap;
    uint64_t consumed;          /* result region: spans before it are read */
} ShmHeader;

#define SHM_HDR_MAGIC 0x3130736d68736663ull    /* "cfshm01" */

static size_t
page_round(size_t n)
{
    return (n + 4095) & ~(size_t)4095;
}

static ProcShm *
shm_map(int fd, size_t cap, size_t size)
{
    ProcShm *s = calloc(1, sizeof(ProcShm));
    if (s == NULL) {
        return NULL;
    }
    void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mutex, NULL);
    s->fd = fd;
    s->base = p;
    s->cap = cap;
    s->size = size;
    s->head = CF_SHM_DATA0;
    return s;
}

/* ---- the region cache (parent) */

static pthread_mutex_t cache_mutex = PTHREAD_MUTEX_INITIALIZER;
static ProcShm *cache_head;
static size_t cache_n, cache_bytes;

/* The largest cached region of this cap (the first taker is a pool's task
 * region), reset for a new writer; or NULL. */
static ProcShm *
cache_take(size_t cap)
{
    pthread_mutex_lock(&cache_mutex);
    ProcShm **best = NULL;
    for (ProcShm **pp = &cache_head; *pp != NULL; pp = &(*pp)->cache_next) {
        if ((*pp)->cap == cap && (best == NULL || (*pp)->size > (*best)->size)) {
            best = pp;
        }
    }
    ProcShm *s = NULL;
    if (best != NULL) {
        s = *best;
        *best = s->cache_next;
        s->cache_next = NULL;
        cache_n--;
        cache_bytes -= s->size;
    }
    pthread_mutex_unlock(&cache_mutex);
    if (s != NULL) {
        s->first_seq = s->next_seq = 0;
        s->head = CF_SHM_DATA0;
        s->live = 0;
        s->users = 0;
        __atomic_store_n(&((ShmHeader *)s->base)->consumed, 0,
                         __ATOMIC_RELEASE);
    }
    return s;
}

void
ProcShm_Recycle(ProcShm *s)
{
    if (s == NULL) {
        return;
    }
    struct stat sb;
    if (s->fd >= 0 && s->base != NULL && !s->consumer_frees
        && s->owner == getpid() && fstat(s->fd, &sb) == 0) {
        s->size = (size_t)sb.st_size;       /* a worker may have grown it */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        size_t maxn = ncpu > CF_SHM_CACHE_N / 2 ? (size_t)ncpu * 2
                                                : CF_SHM_CACHE_N;
        pthread_mutex_lock(&cache_mutex);
        int keep = cache_n < maxn
                   && s->size <= CF_SHM_CACHE_BYTES - cache_bytes;
        if (keep) {
            s->cache_next = cache_head;
            cache_head = s;
            cache_n++;
            cache_bytes += s->size;
        }
        pthread_mutex_unlock(&cache_mutex);
        if (keep) {
            return;
        }
    }
    ProcShm_Free(s);
}

void
ProcShm_CacheInfo(size_t *n, size_t *bytes, int drop)
{
    pthread_mutex_lock(&cache_mutex);
    ProcShm *list = cache_head;
    *n = cache_n;
    *bytes = cache_bytes;
    if (drop) {
        cache_head = NULL;
        cache_n = cache_bytes = 0;
    }
    pthread_mutex_unlock(&cache_mutex);
    while (drop && list != NULL) {
        ProcShm *s = list;
        list = s->cache_next;
        ProcShm_Free(s);
    }
}

void
ProcShm_CacheLock(void)
{
    pthread_mutex_lock(&cache_mutex);
}

void
ProcShm_CacheUnlock(void)
{
    pthread_mutex_unlock(&cache_mutex);
}

void
ProcShm_CacheForkChild(void)
{
    /* the structs leak (free() is not async-signal-safe): a few bytes */
    for (ProcShm *s = cache_head; s != NULL; s = s->cache_next) {
        munmap(s->base, s->cap);
        close(s->fd);
    }
    cache_head = NULL;
    cache_n = cache_bytes = 0;
    pthread_mutex_init(&cache_mutex, NULL);
}

ProcShm *
ProcShm_Create(size_t cap)
{
#if defined(MFD_CLOEXEC) && defined(F_ADD_SEALS)
    cap = page_round(cap);
    if (cap < 2 * CF_SHM_DATA0) {
        return NULL;
    }
    ProcShm *cached = cache_take(cap);
    if (cached != NULL) {
        return cached;
    }
    int fd = memfd_create("cfutures", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        return NULL;
    }
    if (ftruncate(fd, (off_t)CF_SHM_DATA0) < 0
        || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
        close(fd);
        return NULL;
    }
    ProcShm *s = shm_map(fd, cap, CF_SHM_DATA0);
    if (s == NULL) {
        close(fd);
        return NULL;
    }
    ShmHeader h = {.magic = SHM_HDR_MAGIC, .cap = cap, .consumed = 0};
    memcpy(s->base, &h, sizeof(h));
    s->owner = getpid();
    return s;
#else
    (void)cap;
    return NULL;
#endif
}

ProcShm *
ProcShm_Open(int fd)
{
    struct stat sb;
    ShmHeader h;
    if (fstat(fd, &sb) < 0 || (size_t)sb.st_size < CF_SHM_DATA0
        || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)
        || h.magic != SHM_HDR_MAGIC || h.cap < 2 * CF_SHM_DATA0
        || h.cap > ((uint64_t)1 << 46)) {
        close(fd);
        return NULL;
    }
    ProcShm *s = shm_map(fd, (size_t)h.cap, (size_t)sb.st_size);
    if (s == NULL) {
        /* no address space for it: still readable with pread() */
        s = calloc(1, sizeof(ProcShm));
        if (s == NULL) {
            close(fd);
            return NULL;
        }
        pthread_mutex_init(&s->mutex, NULL);
        s->fd = fd;
        s->cap = (size_t)h.cap;
        s->size = (size_t)sb.st_size;
    }
    s->consumer_frees = 1;
    return s;
}

/* Unmap and close (async-signal-safe: a fork child's hook calls it). */
void
ProcShm_ForkChild(ProcShm *s)
{
    if (s == NULL) {
        return;
    }
    if (s->base != NULL) {
        munmap(s->base, s->cap);
        s->base = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

void
ProcShm_Free(ProcShm *s)
{
    if (s == NULL) {
        return;
    }
    ProcShm_ForkChild(s);
    free(s->spans);
    pthread_mutex_destroy(&s->mutex);
    free(s);
}

static ProcShmSpan *
span_at(ProcShm *s, uint64_t seq)
{
    return &s->spans[seq % s->spcap];
}

/* Mutex held: drop the freed spans at the front. */
static void
shm_trim(ProcShm *s)
{
    while (s->first_seq < s->next_seq && span_at(s, s->first_seq)->freed) {
        s->first_seq++;
    }
    if (s->first_seq == s->next_seq) {
        s->head = CF_SHM_DATA0;     /* empty: start again at the front */
    }
}

int
ProcShm_Alloc(ProcShm *s, size_t n, size_t *off, uint64_t *seq)
{
    size_t len = (n + 63) & ~(size_t)63;
    if (s->base == NULL || len < n || len > s->cap - CF_SHM_DATA0) {
        return -1;
    }
    pthread_mutex_lock(&s->mutex);
    if (s->consumer_frees) {
        uint64_t upto = __atomic_load_n(&((ShmHeader *)s->base)->consumed,
                                        __ATOMIC_ACQUIRE);
        for (uint64_t q = s->first_seq; q < upto && q < s->next_seq; q++) {
            ProcShmSpan *sp = span_at(s, q);
            if (!sp->freed) {
                sp->freed = 1;
                s->live -= sp->len;
            }
        }
        shm_trim(s);
    }
    if (s->next_seq - s->first_seq == s->spcap) {
        size_t ncap = s->spcap ? s->spcap * 2 : 16;
        ProcShmSpan *ns = malloc(ncap * sizeof(ProcShmSpan));
        if (ns == NULL) {
            goto full;
        }
        for (uint64_t q = s->first_seq; q < s->next_seq; q++) {
            ns[q % ncap] = *span_at(s, q);
        }
        free(s->spans);
        s->spans = ns;
        s->spcap = ncap;
    }
    /* Live data is [tail, head), or wrapped: [tail, cap) + [DATA0, head). */
    size_t at;
    if (s->first_seq == s->next_seq) {
        at = CF_SHM_DATA0;
    }
    else {
        size_t tail = span_at(s, s->first_seq)->off;
        int wrapped = span_at(s, s->next_seq - 1)->off < tail;
        if (!wrapped && s->cap - s->head >= len) {
            at = s->head;
        }
        else if (!wrapped && tail - CF_SHM_DATA0 >= len) {
            at = CF_SHM_DATA0;
        }
        else if (wrapped && tail - s->head >= len) {
            at = s->head;
        }
        else {
            goto full;
        }
    }
    if (at + len > s->size) {
        if (s->live + len <= s->size / 2) {
            goto full;      /* room enough but fragmented: do not grow */
        }
        /* grow: at least double, at most cap */
        size_t want = s->size * 2 > at + len ? s->size * 2 : at + len;
        want = page_round(want);
        if (want > s->cap) {
            want = s->cap;
        }
        if (ftruncate(s->fd, (off_t)want) < 0) {
            goto full;
        }
        /* Allocate the new pages and map them here in one go: a page
         * faulted in one at a time costs more than copying it. */
        (void)fallocate(s->fd, 0, (off_t)s->size, (off_t)(want - s->size));
#ifdef MADV_POPULATE_WRITE
        (void)madvise(s->base + s->size, want - s->size, MADV_POPULATE_WRITE);
#endif
        s->size = want;
    }
    ProcShmSpan *sp = span_at(s, s->next_seq);
    sp->off = at;
    sp->len = len;
    sp->freed = 0;
    s->live += len;
    *seq = s->next_seq++;
    *off = at;
    s->head = at + len;
    pthread_mutex_unlock(&s->mutex);
    return 0;
full:
    pthread_mutex_unlock(&s->mutex);
    return -1;
}

void
ProcShm_Release(ProcShm *s, uint64_t seq)
{
    pthread_mutex_lock(&s->mutex);
    if (seq >= s->first_seq && seq < s->next_seq && !span_at(s, seq)->freed) {
        span_at(s, seq)->freed = 1;
        s->live -= span_at(s, seq)->len;
        shm_trim(s);
    }
    pthread_mutex_unlock(&s->mutex);
}

int
ProcShm_Valid(ProcShm *s, uint64_t off, uint64_t n)
{
    if (off < CF_SHM_DATA0 || off > s->cap || n > s->cap - off) {
        return 0;
    }
    if (off + n > s->size) {
        struct stat sb;
        if (fstat(s->fd, &sb) < 0) {
            return 0;
        }
        s->size = (size_t)sb.st_size;       /* it only grows */
    }
    return off + n <= s->size;
}

void
ProcShm_SetConsumed(ProcShm *s, uint64_t seq)
{
    __atomic_store_n(&((ShmHeader *)s->base)->consumed, seq,
                     __ATOMIC_RELEASE);
}

int
ProcShm_Holes(const char *p, size_t n, const char **table, size_t *nholes,
              size_t *plen)
{
    uint32_t t[2];
    if (n < sizeof(t) || p[n - 1] == '.') {
        return 0;
    }
    memcpy(t, p + n - sizeof(t), sizeof(t));
    if (t[1] != CF_SHM_MAGIC
        || t[0] > (n - sizeof(t)) / sizeof(ProcHole)) {
        return CF_ERR_PIPE_PROTO;
    }
    size_t tab = (size_t)t[0] * sizeof(ProcHole);
    *nholes = t[0];
    *plen = n - sizeof(t) - tab;
    *table = p + *plen;
    return 1;
}

void
ProcShm_ReleaseHoles(ProcShm *s, const char *p, size_t n)
{
    const char *table;
    size_t nh, plen;
    if (ProcShm_Holes(p, n, &table, &nh, &plen) == 1) {
        for (size_t i = 0; i < nh; i++) {
            ProcHole h;
            ProcShm_Hole(table, i, &h);
            ProcShm_Release(s, h.seq);
        }
    }
}

/* ------------------------------------------------------------- misc */

void
cf_pipe_tune(int fd, int nonblocking)
{
#ifdef F_SETPIPE_SZ
    /* 1 MiB is the unprivileged default maximum; fewer wake-ups for
     * bursts of small frames and for large payloads. */
    (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
#endif
    if (nonblocking) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0) {
            (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        }
    }
}
