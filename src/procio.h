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
 */
#ifndef CF_PROCIO_H
#define CF_PROCIO_H

#include <stddef.h>
#include <stdint.h>
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
typedef struct ProcMsg {
    struct ProcMsg *next;
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

/* ------------------------------------------------------------- misc */

/* Grow a pipe's kernel buffer (best effort) and make fd non-blocking. */
void cf_pipe_tune(int fd, int nonblocking);

#endif /* CF_PROCIO_H */
