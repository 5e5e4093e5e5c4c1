/* waiters.h: the Waiter object and the helpers that wait() (waiters.c)
 * and as_completed() (ascompleted.c) share.  Internal to cfutures. */
#ifndef CF_WAITERS_H
#define CF_WAITERS_H

#include "cfutures.h"

#include <stddef.h>

enum {
    MODE_FIRST_COMPLETED,
    MODE_FIRST_EXCEPTION,
    MODE_ALL_COMPLETED,
    MODE_AS_COMPLETED,
};

typedef struct {
    PyObject_HEAD
    cf_waiter base;
    cf_event ev;
    int mode;
    int triggered;              /* wait(): the return condition holds */
    int sleeping;               /* owner is (about to be) asleep on ev */
    int posted;                 /* ev posted since the owner last woke */
    Py_ssize_t npending;        /* ALL/FIRST_EXCEPTION countdown */
    cf_link *links;
    Py_ssize_t nlinks;
    Py_ssize_t *fired;          /* FIFO of link indices, capacity nlinks */
    Py_ssize_t fired_head, fired_tail;
    PyObject *foreign;          /* dict: foreign future -> index, or NULL */
    CF_FT_MUTEX(w_mutex)        /* free-threaded: fired queue, flags */
} WaiterObject;

#define W_LOCK(w) CF_FT_LOCK((w)->w_mutex)
#define W_UNLOCK(w) CF_FT_UNLOCK((w)->w_mutex)

#define WAITER_OF(w) \
    ((WaiterObject *)((char *)(w) - offsetof(WaiterObject, base)))

/* waiters.c */
WaiterObject *waiter_new(cf_state *st, int mode, Py_ssize_t n);
int waiter_detach(cf_state *st, WaiterObject *w);
int waiter_drop_link(cf_state *st, WaiterObject *w, Py_ssize_t i);
int waiter_install(cf_state *st, WaiterObject *w, PyObject *f);
int waiter_sleep(WaiterObject *w, cf_time_t deadline);
int lock_foreign(cf_state *st, PyObject *items, PyObject **foreign);
int foreign_release_all(cf_state *st, PyObject *foreign);
int future_is_waited(cf_state *st, PyObject *f, int *done);

/* ascompleted.c: the as_completed iterator type and function */
int cf_as_completed_init(PyObject *mod, cf_state *st);

#endif /* CF_WAITERS_H */
