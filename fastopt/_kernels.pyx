# cython: language_level=3
"""Compiled core of fastopt: buffer validation and the fused in-place kernels.

The kernels themselves are C (``csrc/``); this module checks every buffer of a whole
step before the first byte is written, collects raw pointers into a task table, and
runs the table with the GIL released, in one call for all parameters.
"""
cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport malloc, free, qsort
from libc.string cimport memset
import numpy as np

cnp.import_array()

cdef extern from "fastopt.h" nogil:
    enum: FO_MAX_BUFS
    enum: FO_MAX_HYPER
    ctypedef void (*fo_kernel_fn)(char *const *buf, int64_t begin, int64_t end,
                                  const double *hyper) noexcept nogil
    ctypedef struct fo_kernel_entry:
        const char *name
        fo_kernel_fn f32
        fo_kernel_fn f64
        const char *buffers
        const char *hyper
    ctypedef struct fo_task:
        fo_kernel_fn fn
        char *buf[FO_MAX_BUFS]
        int64_t n
        const double *hyper
    const fo_kernel_entry fo_kernels[]
    const int fo_nkernels
    void fo_run(const fo_task *tasks, int64_t ntasks) noexcept nogil


cdef dict _INDEX = {}
cdef list _LAYOUTS = []
for _i in range(fo_nkernels):
    _name = fo_kernels[_i].name.decode()
    _INDEX[_name] = _i
    _LAYOUTS.append((_name, tuple(fo_kernels[_i].buffers.decode().split()),
                     tuple(fo_kernels[_i].hyper.decode().split())))

#: ``{kernel name: (buffer names, hyperparameter names)}`` as the C table declares them.
KERNELS = {name: (buffers, hyper) for name, buffers, hyper in _LAYOUTS}


def kernel_index(str name):
    """Index of the kernel called `name` in the C kernel table."""
    try:
        return _INDEX[name]
    except KeyError:
        raise ValueError(f"no compiled kernel named {name!r}") from None


cdef struct _Span:
    uintptr_t start
    uintptr_t end
    int writable
    Py_ssize_t task
    Py_ssize_t slot


cdef inline str _label(labels, Py_ssize_t task, Py_ssize_t slot):
    return labels(task, slot)


cdef str _dtype_name(cnp.ndarray a):
    return str(a.dtype)


cdef int _check_buffer(object obj, Py_ssize_t task, Py_ssize_t slot, cnp.ndarray param,
                       bint writable, object labels) except -1:
    """Check one buffer of a task against the task's parameter."""
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{_label(labels, task, slot)} must be a numpy.ndarray, "
                        f"got {type(obj).__name__}")
    a = <cnp.ndarray>obj
    cdef int typenum = cnp.PyArray_TYPE(a)
    if slot == 0:
        if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
            raise TypeError(f"{_label(labels, task, slot)} must have dtype float32 or "
                            f"float64, got {_dtype_name(a)}")
    elif typenum != cnp.PyArray_TYPE(param):
        raise TypeError(f"{_label(labels, task, slot)} has dtype {_dtype_name(a)} but "
                        f"{_label(labels, task, 0)} has dtype {_dtype_name(param)}; "
                        "they must match")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise ValueError(f"{_label(labels, task, slot)} is byte-swapped; fastopt needs "
                         "native byte order")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{_label(labels, task, slot)} must be C-contiguous "
                         "(updating a copy would silently do nothing)")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{_label(labels, task, slot)} is not aligned to its element size")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{_label(labels, task, slot)} is read-only; it is updated in place")
    cdef int d
    if slot != 0:
        mismatch = cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(param)
        if not mismatch:
            for d in range(cnp.PyArray_NDIM(a)):
                if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(param, d):
                    mismatch = True
                    break
        if mismatch:
            raise ValueError(f"{_label(labels, task, slot)} has shape {(<object>a).shape} "
                             f"but {_label(labels, task, 0)} has shape {(<object>param).shape}")
    return 0


def run(list tasks, labels):
    """Validate every buffer of every task, then run all tasks in one pass each.

    Parameters
    ----------
    tasks : list of (str, tuple, tuple)
        ``(kernel name, buffers, hyper)`` per parameter: `buffers` in the kernel
        table's order (parameter, gradient, state...; ``None`` for state the options
        do not use), `hyper` the kernel's scalars as floats in the table's order.
    labels : callable
        ``labels(task, slot)`` returns the name of a buffer for error messages; it is
        only called to build a message.

    Raises
    ------
    TypeError, ValueError
        Before anything is written, if any buffer has the wrong type, dtype, layout,
        shape or writeability, or if a written buffer overlaps any other buffer.
    """
    cdef Py_ssize_t ntasks = len(tasks), t, s, nbuf, nhyper, nspans = 0, k
    cdef Py_ssize_t maxspans = ntasks * FO_MAX_BUFS
    cdef fo_task *table = NULL
    cdef double *hyper = NULL
    cdef _Span *spans = NULL
    cdef cnp.ndarray param, a
    cdef int index
    cdef const fo_kernel_entry *entry
    if ntasks == 0:
        return
    table = <fo_task *>malloc(ntasks * sizeof(fo_task))
    hyper = <double *>malloc(ntasks * FO_MAX_HYPER * sizeof(double))
    spans = <_Span *>malloc(maxspans * sizeof(_Span))
    if table == NULL or hyper == NULL or spans == NULL:
        free(table); free(hyper); free(spans)
        raise MemoryError()
    try:
        memset(table, 0, ntasks * sizeof(fo_task))
        for t in range(ntasks):
            name, buffers, values = tasks[t]
            index = _INDEX[name]
            entry = &fo_kernels[index]
            layout = _LAYOUTS[index]
            nbuf = len(layout[1])
            nhyper = len(layout[2])
            if len(buffers) != nbuf:
                raise ValueError(f"kernel {name!r} takes {nbuf} buffers, got {len(buffers)}")
            if len(values) != nhyper:
                raise ValueError(f"kernel {name!r} takes {nhyper} scalars, got {len(values)}")
            # the parameter is checked against nothing (None), so that a non-array
            # reaches the check and its message rather than Cython's cast error
            _check_buffer(buffers[0], t, 0, None, True, labels)
            param = <cnp.ndarray>buffers[0]
            table[t].fn = entry.f32 if cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32 else entry.f64
            table[t].n = cnp.PyArray_SIZE(param)
            for s in range(nbuf):
                obj = buffers[s]
                if obj is None:
                    if s < 2:
                        raise TypeError(f"{_label(labels, t, s)} must be a numpy.ndarray, "
                                        "got None")
                    continue
                if s > 0:
                    _check_buffer(obj, t, s, param, s != 1, labels)
                a = <cnp.ndarray>obj
                table[t].buf[s] = <char *>cnp.PyArray_DATA(a)
                if table[t].n > 0:
                    spans[nspans].start = <uintptr_t>cnp.PyArray_DATA(a)
                    spans[nspans].end = spans[nspans].start + <uintptr_t>cnp.PyArray_NBYTES(a)
                    spans[nspans].writable = s != 1
                    spans[nspans].task = t
                    spans[nspans].slot = s
                    nspans += 1
            for k in range(nhyper):
                hyper[t * FO_MAX_HYPER + k] = values[k]
            table[t].hyper = &hyper[t * FO_MAX_HYPER]
        _check_overlap(spans, nspans, labels)
        with nogil:
            fo_run(table, ntasks)
    finally:
        free(table)
        free(hyper)
        free(spans)


cdef int _span_cmp(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const _Span *>a).start, y = (<const _Span *>b).start
    return (x > y) - (x < y)


cdef int _check_overlap(_Span *spans, Py_ssize_t n, labels) except -1:
    """Reject any overlap between a buffer that is written and any other buffer.

    Sorted by start, a later span overlaps an earlier one exactly when it starts
    before that one ends; tracking the furthest end of all earlier spans and of the
    earlier written spans finds every overlapping pair that involves a write.
    """
    cdef Py_ssize_t i, far_all = -1, far_written = -1
    if n < 2:
        return 0
    qsort(spans, n, sizeof(_Span), _span_cmp)
    for i in range(n):
        if far_written >= 0 and spans[i].start < spans[far_written].end:
            _raise_overlap(spans[far_written], spans[i], labels)
        if spans[i].writable and far_all >= 0 and spans[i].start < spans[far_all].end:
            _raise_overlap(spans[far_all], spans[i], labels)
        if far_all < 0 or spans[i].end > spans[far_all].end:
            far_all = i
        if spans[i].writable and (far_written < 0 or spans[i].end > spans[far_written].end):
            far_written = i
    return 0


cdef int _raise_overlap(_Span a, _Span b, labels) except -1:
    first = _label(labels, a.task, a.slot)
    second = _label(labels, b.task, b.slot)
    if a.start == b.start and a.end == b.end:
        raise ValueError(f"{first} and {second} are the same memory; every buffer of a "
                         "step must be distinct")
    raise ValueError(f"{first} and {second} overlap in memory; a fused in-place update "
                     "over overlapping buffers depends on the order of the writes")
