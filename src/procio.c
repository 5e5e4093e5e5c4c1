/* procio: pure-C framing and pipe IO for the process pool (see procio.h). */
#include "procio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
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
