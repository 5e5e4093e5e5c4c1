/* Version shims, one per API, each naming the CPython version that added it. */
#ifndef CF_COMPAT_H
#define CF_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Py_NewRef / Py_XNewRef: 3.10 has them. */

/* PyModule_AddObjectRef: 3.10. PyModule_Add: 3.13. */
#if PY_VERSION_HEX < 0x030D0000
static inline int
cf_PyModule_Add(PyObject *mod, const char *name, PyObject *value)
{
    int res = PyModule_AddObjectRef(mod, name, value);
    Py_XDECREF(value);
    return res;
}
#else
#define cf_PyModule_Add PyModule_Add
#endif

/* PyType_GetModuleByDef: 3.11. Before that, walk the MRO ourselves. */
#if PY_VERSION_HEX < 0x030B0000
static inline PyObject *
cf_PyType_GetModuleByDef(PyTypeObject *type, PyModuleDef *def)
{
    PyObject *mro = type->tp_mro;
    if (mro != NULL) {
        Py_ssize_t n = PyTuple_GET_SIZE(mro);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
            if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
                continue;
            }
            PyObject *m = PyType_GetModule(t);
            if (m == NULL) {
                PyErr_Clear();
                continue;
            }
            if (PyModule_GetDef(m) == def) {
                return m;
            }
        }
    }
    PyErr_Format(PyExc_TypeError,
                 "PyType_GetModuleByDef: No superclass of '%s' has "
                 "the given module", type->tp_name);
    return NULL;
}
#else
#define cf_PyType_GetModuleByDef PyType_GetModuleByDef
#endif

/* PyErr_GetRaisedException / SetRaisedException: 3.12. */
#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *
cf_PyErr_GetRaisedException(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(v, tb);
    }
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}
static inline void
cf_PyErr_SetRaisedException(PyObject *exc)
{
    if (exc == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, tb);
}
#else
#define cf_PyErr_GetRaisedException PyErr_GetRaisedException
#define cf_PyErr_SetRaisedException PyErr_SetRaisedException
#endif

/* Py_IsFinalizing: public in 3.13; _Py_IsFinalizing before. */
#if PY_VERSION_HEX < 0x030D0000
#define cf_Py_IsFinalizing() _Py_IsFinalizing()
#else
#define cf_Py_IsFinalizing() Py_IsFinalizing()
#endif

/* PyObject_VisitManagedDict etc. are not needed: Python subclasses own
   their __dict__ and CPython's subtype_traverse visits it. */

/* PyUnicode_EqualToUTF8: 3.13. */
#if PY_VERSION_HEX < 0x030D0000
static inline int
cf_PyUnicode_EqualToUTF8(PyObject *u, const char *s)
{
    return PyUnicode_Check(u) && PyUnicode_CompareWithASCIIString(u, s) == 0;
}
#else
#define cf_PyUnicode_EqualToUTF8 PyUnicode_EqualToUTF8
#endif

/* PyWeakref_GetRef: 3.13 (PyWeakref_GetObject is deprecated there). */
#if PY_VERSION_HEX < 0x030D0000
static inline int
cf_PyWeakref_GetRef(PyObject *ref, PyObject **pobj)
{
    PyObject *obj = PyWeakref_GetObject(ref);
    if (obj == NULL) {
        *pobj = NULL;
        return -1;
    }
    if (obj == Py_None) {
        *pobj = NULL;
        return 0;
    }
    *pobj = Py_NewRef(obj);
    return 1;
}
#else
#define cf_PyWeakref_GetRef PyWeakref_GetRef
#endif

/* Recursion accounting of a done-callback chain (future.c).  The stdlib's
 * chain is Python frames: set_result, Condition.__enter__/notify_all,
 * _invoke_callbacks, the callback; a chain stops at the link where one of
 * them no longer fits under sys.getrecursionlimit().  Ours costs the
 * callback's frame (entered from C) and one Py_EnterRecursiveCall per
 * link; to stop at the same link, set_result() on a future with callbacks
 * first checks the head-room the stdlib's frames need and holds the
 * frames it keeps during the callbacks (counts measured against each
 * version's stdlib).  3.10-3.11 count C calls and Python frames on one
 * counter (Py_EnterRecursiveCall); 3.12+ count Python frames apart (3.14+
 * guard the C stack by its address instead of a C-call counter), so charge
 * PyThreadState.py_recursion_remaining as _Py_EnterRecursivePy does (a
 * field of the public cpython/pystate.h). */
#if PY_VERSION_HEX >= 0x030C0000
#define CF_SET_RESULT_CHECK 2
#define CF_SET_RESULT_HOLD 1
#define CF_CALLBACK_FRAMES 1
static inline int
cf_enter_py_frames(PyThreadState *ts, int n)
{
    ts->py_recursion_remaining -= n;
    if (ts->py_recursion_remaining < 0) {
        ts->py_recursion_remaining += n;
        PyErr_SetString(PyExc_RecursionError,
                        "maximum recursion depth exceeded");
        return -1;
    }
    return 0;
}
static inline void
cf_leave_py_frames(PyThreadState *ts, int n)
{
    ts->py_recursion_remaining += n;
}
#else
#define CF_SET_RESULT_CHECK 2
#define CF_SET_RESULT_HOLD 0
#define CF_CALLBACK_FRAMES 0
static inline int
cf_enter_py_frames(PyThreadState *ts, int n)
{
    for (int i = 0; i < n; i++) {
        if (Py_EnterRecursiveCall("")) {
            while (i-- > 0) {
                Py_LeaveRecursiveCall();
            }
            return -1;
        }
    }
    return 0;
}
static inline void
cf_leave_py_frames(PyThreadState *ts, int n)
{
    for (int i = 0; i < n; i++) {
        Py_LeaveRecursiveCall();
    }
}
#endif

/* ------------------------------------------------ free-threaded builds */

/* Free-threaded CPython (PEP 703, 3.13t/3.14t; Py_GIL_DISABLED): objects
 * that the GIL protected elsewhere get their own lock.  Written against
 * the API 3.13 and 3.14 share (PyMutex, Py_BEGIN_CRITICAL_SECTION,
 * PyDict_GetItemRef).  On GIL builds every CF_FT_* lock compiles to
 * nothing, as CPython's own critical-section macros do. */
#ifdef Py_GIL_DISABLED
#define CF_FT 1
#define CF_FT_MUTEX(name) PyMutex name;
#define CF_FT_LOCK(m) PyMutex_Lock(&(m))
#define CF_FT_UNLOCK(m) PyMutex_Unlock(&(m))
#define CF_FT_MUTEX_INIT(m) ((m) = (PyMutex){0})
#else
#define CF_FT 0
#define CF_FT_MUTEX(name)
#define CF_FT_LOCK(m) ((void)0)
#define CF_FT_UNLOCK(m) ((void)0)
#define CF_FT_MUTEX_INIT(m) ((void)0)
#endif

/* "A thread is inside": 1 if this thread got in (flag was 0). */
static inline int
cf_enter_flag(int *flag)
{
    return __atomic_exchange_n(flag, 1, __ATOMIC_ACQ_REL) == 0;
}

static inline void
cf_leave_flag(int *flag)
{
    __atomic_store_n(flag, 0, __ATOMIC_RELEASE);
}

/* Py_BEGIN_CRITICAL_SECTION: 3.13 (a no-op on GIL builds there too). */
#if PY_VERSION_HEX < 0x030D0000
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#define Py_BEGIN_CRITICAL_SECTION2(a, b) {
#define Py_END_CRITICAL_SECTION2() }
#endif

/* PyDict_GetItemRef: 3.13.  1 and a new reference, 0 (missing), -1. */
#if PY_VERSION_HEX < 0x030D0000
static inline int
cf_PyDict_GetItemRef(PyObject *d, PyObject *key, PyObject **res)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL) {
        *res = NULL;
        return PyErr_Occurred() ? -1 : 0;
    }
    *res = Py_NewRef(v);
    return 1;
}
static inline int
cf_PyDict_GetItemStringRef(PyObject *d, const char *key, PyObject **res)
{
    PyObject *k = PyUnicode_FromString(key);
    if (k == NULL) {
        *res = NULL;
        return -1;
    }
    int r = cf_PyDict_GetItemRef(d, k, res);
    Py_DECREF(k);
    return r;
}
#else
#define cf_PyDict_GetItemRef PyDict_GetItemRef
#define cf_PyDict_GetItemStringRef PyDict_GetItemStringRef
#endif

#endif /* CF_COMPAT_H */
