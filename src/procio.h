/* procio: pure-C framing and pipe IO for the process pool.
 *
 * Holds no PyObject and never touches the GIL, so the dispatcher thread
 * can use it with the GIL released.  Errors are negative CF_ERR_* codes
 * (errno is left as the failing call set it).
 *
 * Wire format, both directions (one pipe per direction per worker):
 *
 *     +---------+---------+----------+---------+----------------+
 *     | len u64 | id u64  | kind u32 | aux u32 | payload (len)  |
 *     +---------+---------+----------+---------+----------------+
 *
 * Host byte order: both ends are processes on one machine.  Payloads are
 * pickles.  `aux` carries the worker's service time (microseconds) in
 * result frames, which the parent uses to size the in-flight depth.
 *
 * Large writes of the pickler (>= CF_SHM_MIN: the body of a big bytes,
 * bytearray or str, a full 64 KiB pickle frame) may instead go through a
 * shared memory region (ProcShm, below); the payload is then the pickle
 * with those writes cut out ("holes"), a table saying where each goes and
 * where it lies in the region, and a trailer:
 *
 *     | pickle minus holes | ProcHole[n] | n u32 | CF_SHM_MAGIC u32 |
 *
 * A plain payload is one pickle, so it ends with STOP ('.'), which the
 * magic's last byte never is.
 */
#ifndef CF_PROCIO_H
#define CF_PROCIO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <sys/types.h>

#define CF_ERR_PIPE_NOMEM  (-101)
#define CF_ERR_PIPE_IO     (-102)   /* read/write failed, see errno */
#define CF_ERR_PIPE_EOF    (-103)   /* peer closed its end */
#define CF_ERR_PIPE_PROTO  (-104)   /* malformed frame */
#define CF_ERR_PIPE_AGAIN  (-105)   /* non-blocking fd not ready */

/* Frame kinds (low 8 bits of `kind`). */
enum {
    CF_FRAME_TASK = 1,      /* parent -> worker: pickle((fn, args, kwargs)) */
    CF_FRAME_STOP = 2,      /* parent -> worker: exit cleanly */
    CF_FRAME_READY = 3,     /* worker -> parent: initializer done */
    CF_FRAME_RESULT = 4,    /* worker -> parent: pickle(result) */
    CF_FRAME_EXC = 5,       /* worker -> parent: pickle((exc, tb_text)) */
    CF_FRAME_ERRTEXT = 6,   /* worker -> parent: utf-8 text, last resort */
};
#define CF_FRAME_KIND(k)     ((k) & 0xffu)
#define CF_FRAME_F_EXIT      0x100u  /* worker exits after this frame */

typedef struct {
    uint64_t len;
    uint64_t id;
    uint32_t kind;
    uint32_t aux;
} ProcFrameHeader;

#define CF_FRAME_HDR ((size_t)sizeof(ProcFrameHeader))   /* 24 */
/* Refuse absurd lengths from a corrupted stream (not a limit on tasks). */
#define CF_FRAME_MAX ((uint64_t)1 << 46)

/* ------------------------------------------------------------ ProcBuf */

/* A growable byte buffer with a read offset: data[off, len) is unread. */
typedef struct {
    char *data;
    size_t off, len, cap;
} ProcBuf;

void ProcBuf_Init(ProcBuf *b);
void ProcBuf_Free(ProcBuf *b);
/* Make room for `extra` more bytes after len.  0 or CF_ERR_PIPE_NOMEM. */
int ProcBuf_Reserve(ProcBuf *b, size_t extra);
int ProcBuf_Append(ProcBuf *b, const void *p, size_t n);
/* Drop the consumed prefix (moves the unread bytes to the front). */
void ProcBuf_Compact(ProcBuf *b);
static inline size_t
ProcBuf_Unread(const ProcBuf *b)
{
    return b->len - b->off;
}

/* One read() into the buffer (at least `chunk` bytes of room).
 * >0: bytes read, CF_ERR_PIPE_EOF, CF_ERR_PIPE_AGAIN, CF_ERR_PIPE_IO.
 * EINTR is returned as CF_ERR_PIPE_AGAIN with errno == EINTR. */
ssize_t ProcBuf_ReadFd(ProcBuf *b, int fd, size_t chunk);

/* Parse the next complete frame at the read offset.  1: *hdr and
 * *payload set and the frame consumed, 0: incomplete (bytes needed so
 * far in *need, so the caller can reserve), CF_ERR_PIPE_PROTO. */
int ProcBuf_NextFrame(ProcBuf *b, ProcFrameHeader *hdr, const char **payload,
                      size_t *need);

/* Write all unread bytes to a (possibly non-blocking) fd, waiting with
 * poll() when it would block.  0, CF_ERR_PIPE_IO (EPIPE: reader gone) or,
 * when a signal interrupted the wait, CF_ERR_PIPE_AGAIN with EINTR (the
 * bytes written so far are consumed; call again). */
int ProcBuf_WriteAll(ProcBuf *b, int fd);

/* ------------------------------------------------------------ ProcMsg */

/* One outgoing frame owned by the dispatcher: header + payload inline. */
struct ProcShm;

typedef struct ProcMsg {
    struct ProcMsg *next;
    struct ProcShm *shm;    /* owns the frame's holes there (or NULL) */
    uint64_t id;
    size_t len;         /* frame bytes (header + payload) */
    size_t sent;        /* bytes already written */
    char frame[];       /* ProcFrameHeader, then the payload */
} ProcMsg;

/* Offset of the frame inside a ProcMsg block: a ProcBuf that starts with
 * this many reserved bytes can be turned into a ProcMsg without copying. */
#define CF_MSG_PREFIX ((size_t)offsetof(ProcMsg, frame))

ProcMsg *ProcMsg_New(uint64_t id, uint32_t kind, const void *payload,
                     size_t n);
/* Take over a ProcBuf whose first CF_MSG_PREFIX + CF_FRAME_HDR bytes were
 * reserved; fills both headers.  The buffer is left empty. */
ProcMsg *ProcMsg_FromBuf(ProcBuf *b, uint64_t id, uint32_t kind);
void ProcMsg_Free(ProcMsg *m);

typedef struct {
    ProcMsg *head, *tail;
    size_t count;
} ProcMsgQueue;

void ProcMsgQueue_Push(ProcMsgQueue *q, ProcMsg *m);
ProcMsg *ProcMsgQueue_Pop(ProcMsgQueue *q);
/* Move every message of src to the end of dst. */
void ProcMsgQueue_Splice(ProcMsgQueue *dst, ProcMsgQueue *src);
void ProcMsgQueue_Clear(ProcMsgQueue *q);
/* Coalesce queued frames into writev() calls on a non-blocking fd until
 * the queue is empty or the pipe is full.  Written messages are freed.
 * 1: queue drained, 0: pipe full, CF_ERR_PIPE_IO (EPIPE: worker gone). */
int ProcMsgQueue_WriteFd(ProcMsgQueue *q, int fd);

/* ------------------------------------------------------------ ProcShm */

/* A shared memory region (a memfd: no name, so nothing is left behind in
 * /dev/shm whatever happens) carrying large payloads.  Each side maps
 * `cap` bytes once; the file grows on demand (never past cap, never
 * shrinks: F_SEAL_SHRINK), so a mapping never moves and a reader never
 * touches memory past the end of the file.
 *
 * One writer allocates spans in a ring; a span is freed (by seq) once the
 * reader is done with it.  Task region: one per pool, written by submit()
 * (any thread), read by every worker; the dispatcher frees a task's spans
 * when its answer arrives.  Result region: one per worker, written by the
 * worker; the parent publishes in the region's header how far it has
 * consumed, and the worker frees up to there.  When a span does not fit,
 * the bytes go through the pipe as before: nobody ever waits for room.
 * The file only grows while the live spans would fill over half of it, so
 * one span held long (the ring's oldest end pinned) cannot grow it to cap. */
#define CF_SHM_MIN   ((size_t)64 * 1024)
#define CF_SHM_MAGIC 0x004d4853u     /* "SHM\0" */
#define CF_SHM_DATA0 ((size_t)4096)  /* header page */
#define CF_SHM_CAP   ((size_t)1 << 30)

typedef struct {
    uint64_t pos;       /* where it goes in the pickle minus holes */
    uint64_t off;       /* where it lies in the region */
    uint64_t len;
    uint64_t seq;       /* its span */
} ProcHole;

typedef struct {
    size_t off, len;
    int freed;
} ProcShmSpan;

typedef struct ProcShm {
    pthread_mutex_t mutex;      /* the allocator; a leaf lock */
    int fd;
    char *base;                 /* cap bytes mapped */
    size_t cap;
    size_t size;                /* file size */
    int consumer_frees;         /* free up to the header's `consumed` */
    uint64_t first_seq, next_seq;   /* live spans: [first, next) */
    ProcShmSpan *spans;         /* ring indexed by seq % spcap */
    size_t spcap;
    size_t head;                /* end of the newest span */
    size_t live;                /* bytes of spans not yet freed */
    int users;                  /* task region: workers not yet reaped */
    pid_t owner;                /* the process that created it */
    struct ProcShm *cache_next;
} ProcShm;

/* A new region (parent), from the cache if it holds one of this cap.
 * NULL if memfd/mmap are not available. */
ProcShm *ProcShm_Create(size_t cap);
/* Parent: a region no live process maps any more (every worker given it
 * reaped) goes to a process-wide cache, still mapped, so that a later
 * pool neither zeroes nor faults its pages again; at most
 * CF_SHM_CACHE_N (or 2 per CPU) regions and CF_SHM_CACHE_BYTES in all,
 * the rest are freed. */
#define CF_SHM_CACHE_N     4
#define CF_SHM_CACHE_BYTES ((size_t)256 << 20)
void ProcShm_Recycle(ProcShm *s);
/* Cache: number of regions and their bytes; drop: free them all. */
void ProcShm_CacheInfo(size_t *n, size_t *bytes, int drop);
/* Fork hooks: a child abandons the cache (closes and unmaps, async-
 * signal-safe), so it never hands out the parent's regions. */
void ProcShm_CacheLock(void);
void ProcShm_CacheUnlock(void);
void ProcShm_CacheForkChild(void);
/* Map a region received from the parent (worker); takes the fd. */
ProcShm *ProcShm_Open(int fd);
void ProcShm_Free(ProcShm *s);
/* Fork child: drop the parent's region (close, unmap; async-signal-safe)
 * so that it does not keep its pages alive; the struct stays, empty. */
void ProcShm_ForkChild(ProcShm *s);
/* Writer: room for n bytes at *off, span *seq.  0, or -1: no room. */
int ProcShm_Alloc(ProcShm *s, size_t n, size_t *off, uint64_t *seq);
/* Writer: span seq is no longer read. */
void ProcShm_Release(ProcShm *s, uint64_t seq);
/* Reader: [off, off + n) lies in the file (checked with fstat). */
int ProcShm_Valid(ProcShm *s, uint64_t off, uint64_t n);
/* Reader (result region): every span before seq has been read. */
void ProcShm_SetConsumed(ProcShm *s, uint64_t seq);
/* Split a payload: 0 plain, 1 with holes (*plen: the pickle's length,
 * *table: the hole table, unaligned: read it with ProcShm_Hole),
 * CF_ERR_PIPE_PROTO if its table is malformed. */
int ProcShm_Holes(const char *p, size_t n, const char **table,
                  size_t *nholes, size_t *plen);
static inline void
ProcShm_Hole(const char *table, size_t i, ProcHole *h)
{
    memcpy(h, table + i * sizeof(ProcHole), sizeof(ProcHole));
}
/* Free the spans of a payload's holes (frame dropped unread). */
void ProcShm_ReleaseHoles(ProcShm *s, const char *p, size_t n);

/* ------------------------------------------------------------- misc */

/* Grow a pipe's kernel buffer (best effort) and make fd non-blocking. */
void cf_pipe_tune(int fd, int nonblocking);

#endif /* CF_PROCIO_H */
