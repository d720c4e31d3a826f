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
    ctypedef void (*fo_reduce_fn)(char *const *buf, int64_t begin, int64_t end,
                                  const double *hyper, double *sums) noexcept nogil
    ctypedef struct fo_kernel_entry:
        const char *name
        fo_kernel_fn f32
        fo_kernel_fn f64
        const char *buffers
        const char *hyper
        fo_reduce_fn reduce_f32
        fo_reduce_fn reduce_f64
        int nsums
    ctypedef struct fo_task:
        fo_kernel_fn fn
        char *buf[FO_MAX_BUFS]
        int64_t n
        const double *hyper
        fo_reduce_fn reduce
        int nsums
        double *sums
    const fo_kernel_entry fo_kernels[]
    const int fo_nkernels
    ctypedef void (*fo_factored_fn)(char *const *buf, int64_t batch, int64_t rows,
                                    int64_t cols, const double *hyper) noexcept nogil
    ctypedef struct fo_factored_entry:
        const char *name
        fo_factored_fn f32
        fo_factored_fn f64
        const char *buffers
        const char *hyper
    const fo_factored_entry fo_factored_kernels[]
    const int fo_nfactored
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

#: ``{kernel name: names of the scalars its first pass computes}`` for the two-pass
#: kernels (the last names of its scalars; the runner fills them, see fastopt.h).
REDUCED = {_LAYOUTS[_i][0]: _LAYOUTS[_i][2][len(_LAYOUTS[_i][2]) - fo_kernels[_i].nsums:]
           for _i in range(fo_nkernels) if fo_kernels[_i].nsums > 0}


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
    if tasks[0][0] in FACTORED:
        return _run_factored(tasks, labels)
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
            _check_buffer(buffers[0], t, 0, buffers[0], True, labels)
            param = <cnp.ndarray>buffers[0]
            table[t].fn = entry.f32 if cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32 else entry.f64
            table[t].n = cnp.PyArray_SIZE(param)
            if entry.nsums > 0:
                table[t].reduce = (entry.reduce_f32 if cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32
                                   else entry.reduce_f64)
                table[t].nsums = entry.nsums
                table[t].sums = &hyper[t * FO_MAX_HYPER + nhyper - entry.nsums]
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


# -- factored kernels (Adafactor): whole-parameter steps with state not shaped like
# -- the parameter; see fastopt.h.

cdef dict _FACTORED_INDEX = {}
for _i in range(fo_nfactored):
    _FACTORED_INDEX[fo_factored_kernels[_i].name.decode()] = _i

#: ``{kernel name: (buffer names, scalar names)}`` of the factored kernels.
FACTORED = {fo_factored_kernels[_i].name.decode():
            (tuple(fo_factored_kernels[_i].buffers.decode().split()),
             tuple(fo_factored_kernels[_i].hyper.decode().split()))
            for _i in range(fo_nfactored)}


def factored_shapes(shape):
    """``(batch, rows, cols)`` a factored kernel sees a parameter of `shape` as, and
    the shapes of its row and column state (None for fewer than two dimensions)."""
    shape = tuple(shape)
    if len(shape) < 2:
        n = 1
        for s in shape:
            n *= s
        return (1, 1, n), None, None
    # (no negative indices: this module is compiled with wraparound=False)
    cdef Py_ssize_t k = len(shape)
    batch = 1
    for s in shape[:k - 2]:
        batch *= s
    return ((batch, shape[k - 2], shape[k - 1]), shape[:k - 1] + (1,),
            shape[:k - 2] + (1, shape[k - 1]))


def _run_factored(list tasks, labels):
    """`run` for factored kernels: the same checks, with the state's own shapes."""
    cdef Py_ssize_t ntasks = len(tasks), t, s, nspans = 0
    cdef cnp.ndarray a, param
    cdef char *bufs[FO_MAX_BUFS]
    cdef double hyper[FO_MAX_HYPER]
    cdef int64_t dims[3]
    cdef fo_factored_fn fn
    cdef const fo_factored_entry *entry
    cdef _Span *spans = <_Span *>malloc(ntasks * FO_MAX_BUFS * sizeof(_Span))
    if spans == NULL:
        raise MemoryError()
    prepared = []
    try:
        for t in range(ntasks):
            name, buffers, values = tasks[t]
            names, scalars = FACTORED[name]
            if len(buffers) != len(names) or len(values) != len(scalars):
                raise ValueError(f"kernel {name!r} takes {len(names)} buffers and "
                                 f"{len(scalars)} scalars")
            _check_buffer(buffers[0], t, 0, buffers[0], True, labels)
            param = <cnp.ndarray>buffers[0]
            (batch, rows, cols), row_shape, col_shape = factored_shapes((<object>param).shape)
            expected = {"row_var": row_shape, "col_var": col_shape,
                        "variance": None if row_shape is not None else (<object>param).shape}
            for s in range(len(names)):
                obj = buffers[s]
                if obj is None:
                    if s < 2 or expected.get(names[s], True) is not None:
                        raise TypeError(f"{_label(labels, t, s)} must be a numpy.ndarray, "
                                        "got None")
                    continue
                if s < 2:
                    if s == 1:
                        _check_buffer(obj, t, s, param, False, labels)
                elif expected[names[s]] is None:
                    raise ValueError(f"{_label(labels, t, s)} must be None for a parameter "
                                     f"of shape {(<object>param).shape}")
                else:
                    _check_buffer(obj, t, s, obj, True, labels)
                    if cnp.PyArray_TYPE(<cnp.ndarray>obj) != cnp.PyArray_TYPE(param):
                        raise TypeError(f"{_label(labels, t, s)} has dtype {obj.dtype} but "
                                        f"{_label(labels, t, 0)} has dtype {param.dtype}; "
                                        "they must match")
                    if obj.shape != expected[names[s]]:
                        raise ValueError(f"{_label(labels, t, s)} has shape {obj.shape} but "
                                         f"must have shape {expected[names[s]]} for "
                                         f"{_label(labels, t, 0)} of shape "
                                         f"{(<object>param).shape}")
                a = <cnp.ndarray>obj
                if cnp.PyArray_NBYTES(a) > 0:
                    spans[nspans].start = <uintptr_t>cnp.PyArray_DATA(a)
                    spans[nspans].end = spans[nspans].start + <uintptr_t>cnp.PyArray_NBYTES(a)
                    spans[nspans].writable = s != 1
                    spans[nspans].task = t
                    spans[nspans].slot = s
                    nspans += 1
            prepared.append((name, buffers, tuple(float(v) for v in values),
                             (batch, rows, cols)))
        _check_overlap(spans, nspans, labels)
    finally:
        free(spans)
    for name, buffers, values, shape in prepared:
        entry = &fo_factored_kernels[_FACTORED_INDEX[name]]
        fn = entry.f32 if cnp.PyArray_TYPE(<cnp.ndarray>buffers[0]) == cnp.NPY_FLOAT32 else entry.f64
        for s in range(FO_MAX_BUFS):
            bufs[s] = NULL
        for s in range(len(buffers)):
            if buffers[s] is not None:
                bufs[s] = <char *>cnp.PyArray_DATA(<cnp.ndarray>buffers[s])
        for s in range(len(values)):
            hyper[s] = values[s]
        dims[0], dims[1], dims[2] = shape
        with nogil:
            fn(bufs, dims[0], dims[1], dims[2], hyper)
