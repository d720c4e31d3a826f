# cython: language_level=3
"""Compiled gradient operations around an optimizer step.

Gradient clipping by global norm and by value, and the all-finite check that
``step(grads, skip_if_nonfinite=True)`` runs.  Like :mod:`fastopt._kernels`, every
function checks every buffer first (type, dtype, byte order, C-contiguity, alignment,
writeability of what it writes, overlap of written buffers) and only then runs the C
loops of ``csrc/ops.c`` without the GIL.

Norms are summed in double in a fixed order (``csrc/ops.h``): per buffer, blocks of
1024 elements in 8 sequential lanes, the blocks combined by a fixed pairwise tree, then
the buffers in the order given.  The result therefore never depends on how many threads
compute it; :func:`fastopt.reference.clip_grad_norm_` reproduces it bit for bit.
"""
cimport numpy as cnp
from libc.math cimport INFINITY, isnan, pow, sqrt, isfinite
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc, qsort
import numbers

import numpy as np

cnp.import_array()

cdef extern from "ops.h" nogil:
    enum: FO_NORM_ONE
    enum: FO_NORM_TWO
    enum: FO_NORM_POW
    enum: FO_NORM_INF
    enum: FO_NORM_BLOCK
    enum: FO_NORM_LANES
    double fo_norm_partial_f32(const float *x, int64_t n, int kind, double p)
    double fo_norm_partial_f64(const double *x, int64_t n, int kind, double p)
    void fo_scale_f32(float *x, int64_t n, double coef)
    void fo_scale_f64(double *x, int64_t n, double coef)
    void fo_clamp_f32(float *x, int64_t n, double c)
    void fo_clamp_f64(double *x, int64_t n, double c)
    int fo_all_finite_f32(const float *x, int64_t n)
    int fo_all_finite_f64(const double *x, int64_t n)

#: Elements per block and lanes per block of the fixed norm reduction order.
NORM_BLOCK = FO_NORM_BLOCK
NORM_LANES = FO_NORM_LANES


cdef struct _Buf:
    char *data
    int64_t n
    int is_f32
    uintptr_t start
    uintptr_t end
    int writable
    Py_ssize_t index   # position in the table (ties in the overlap sort keep it)
    int kind           # _PARAMS or _GRADS, for messages
    Py_ssize_t number  # the user's index in that list, for messages


cdef int _buf_cmp(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const _Buf *>a).start, y = (<const _Buf *>b).start
    cdef Py_ssize_t i = (<const _Buf *>a).index, j = (<const _Buf *>b).index
    if x != y:
        return (x > y) - (x < y)
    return (i > j) - (i < j)  # ties in input order, so messages are deterministic


cdef int _check_overlap(_Buf *bufs, Py_ssize_t n) except -1:
    """Reject any overlap between a written buffer and any other (sorted sweep).

    Sorts a copy, so `bufs` keeps the caller's order; size-0 buffers own no memory.
    """
    cdef _Buf *spans = <_Buf *>malloc(max(n, 1) * sizeof(_Buf))
    cdef Py_ssize_t i, m = 0, far_all = -1, far_written = -1
    if spans == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            if bufs[i].n > 0:
                spans[m] = bufs[i]
                m += 1
        qsort(spans, m, sizeof(_Buf), _buf_cmp)
        for i in range(m):
            if far_written >= 0 and spans[i].start < spans[far_written].end:
                _raise_overlap(spans[far_written], spans[i])
            if spans[i].writable and far_all >= 0 and spans[i].start < spans[far_all].end:
                _raise_overlap(spans[far_all], spans[i])
            if far_all < 0 or spans[i].end > spans[far_all].end:
                far_all = i
            if spans[i].writable and (far_written < 0 or spans[i].end > spans[far_written].end):
                far_written = i
    finally:
        free(spans)
    return 0


cdef int _raise_overlap(_Buf a, _Buf b) except -1:
    first, second = _label(a.kind, a.number), _label(b.kind, b.number)
    if a.start == b.start and a.end == b.end:
        raise ValueError(f"{first} and {second} are the same memory; every buffer must be "
                         "distinct")
    raise ValueError(f"{first} and {second} overlap in memory; an in-place update over "
                     "overlapping buffers depends on the order of the writes")


cdef enum:
    _PARAMS = 0
    _GRADS = 1


cdef str _label(int kind, Py_ssize_t number):
    """A buffer's name in messages; built only when a message needs it."""
    return f"{'params' if kind == _PARAMS else 'grads'}[{number}]"


cdef int _check_array(object obj, int kind, Py_ssize_t number, bint writable) except -1:
    """Type, dtype, byte order, layout and (if written) writeability of one buffer."""
    if (cnp.PyArray_Check(obj) and _usable(<cnp.ndarray>obj)
            and (not writable or cnp.PyArray_ISWRITEABLE(<cnp.ndarray>obj))):
        return 0
    cdef str label = _label(kind, number)
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{label} must be a numpy.ndarray, got {type(obj).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray>obj
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"{label} must have dtype float32 or float64, got {a.dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise ValueError(f"{label} is byte-swapped; fastopt needs native byte order")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{label} must be C-contiguous (updating a copy would silently "
                         "do nothing)")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{label} is not aligned to its element size")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{label} is read-only; it is updated in place")
    return 0


cdef inline bint _usable(cnp.ndarray a):
    cdef int typenum = cnp.PyArray_TYPE(a)
    return ((typenum == cnp.NPY_FLOAT32 or typenum == cnp.NPY_FLOAT64)
            and cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a))


cdef void _fill(_Buf *b, cnp.ndarray a, bint writable, Py_ssize_t index, int kind,
                Py_ssize_t number):
    b.data = <char *>cnp.PyArray_DATA(a)
    b.n = cnp.PyArray_SIZE(a)
    b.is_f32 = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32
    b.start = <uintptr_t>b.data
    b.end = b.start + <uintptr_t>cnp.PyArray_NBYTES(a)
    b.writable = writable
    b.index = index
    b.kind = kind
    b.number = number


cdef list _grad_list(grads):
    """`grads` as a list: a single array, or an iterable of arrays (None entries are
    kept and skipped, as a parameter without a gradient)."""
    if cnp.PyArray_Check(grads):
        return [grads]
    if isinstance(grads, (str, bytes)):
        raise TypeError(f"grads must be an array or an iterable of arrays, got "
                        f"{type(grads).__name__}")
    try:
        return list(grads)
    except TypeError:
        raise TypeError(f"grads must be an array or an iterable of arrays, got "
                        f"{type(grads).__name__}") from None


cdef class _Bufs:
    """Validated, writable gradient buffers with their raw pointers (C-owned table)."""
    cdef _Buf *bufs
    cdef Py_ssize_t n
    cdef list keep  # the arrays, so the pointers stay valid

    def __cinit__(self):
        self.bufs = NULL
        self.n = 0

    def __dealloc__(self):
        free(self.bufs)


cdef _Bufs _writable_grads(grads):
    cdef list items = _grad_list(grads)
    cdef _Bufs out = _Bufs()
    cdef Py_ssize_t i
    out.keep = []
    out.bufs = <_Buf *>malloc(max(len(items), 1) * sizeof(_Buf))
    if out.bufs == NULL:
        raise MemoryError()
    for i, g in enumerate(items):
        if g is None:
            continue
        _check_array(g, _GRADS, i, True)
        _fill(&out.bufs[out.n], <cnp.ndarray>g, True, out.n, _GRADS, i)
        out.keep.append(g)
        out.n += 1
    _check_overlap(out.bufs, out.n)
    return out


cdef double _real(object value, str name) except? -1.0:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


cdef inline double _max_nan(double a, double b) noexcept nogil:
    return a if (a != a or a > b) else b


def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients in place so that their global norm is at most `max_norm`.

    torch.nn.utils.clip_grad_norm_ semantics: the total norm is the `norm_type`-norm
    of all gradients together (as if concatenated); the coefficient
    ``max_norm / (total_norm + 1e-6)`` is clamped to 1, so gradients are multiplied by
    it only when it is below 1 (or NaN, which torch also propagates into the
    gradients).

    Parameters
    ----------
    grads : ndarray or iterable of ndarray
        C-contiguous, writeable float32/float64 arrays (dtypes may be mixed); ``None``
        entries are skipped.
    max_norm : float
        The largest allowed total norm, ``>= 0`` (``inf`` never clips).
    norm_type : float, default 2.0
        The order ``p > 0`` of the norm, or ``inf`` for the largest absolute value.
    error_if_nonfinite : bool, default False
        Raise RuntimeError, before any gradient is written, if the total norm is NaN
        or infinite.

    Returns
    -------
    float
        The total norm of the gradients before clipping, computed in double.

    Notes
    -----
    Every element's term (``|x|``, ``x*x``, ``|x|**p``) is summed in double in a fixed
    order (blocks of 1024 elements in 8 sequential lanes, a fixed pairwise tree over
    the blocks, then the buffers in order), so the result does not depend on thread
    count.  torch sums each tensor in its own order and in the tensor's dtype
    (float32 gradients: float32 sums, about 1e-6 relative off the exact norm for 1e4
    elements) and returns a tensor of that dtype; ours is double throughout and
    closer to the exact norm, so the clipped gradients can differ from torch's by
    that relative amount (float64: by a few ulps of summation order).  torch refuses
    the inf-norm of an empty tensor; here a size-0 gradient adds nothing to any norm.

    Raises
    ------
    TypeError, ValueError
        Before anything is written, for a bad argument or buffer (wrong type or dtype,
        not C-contiguous, read-only, overlapping another gradient).
    RuntimeError
        If `error_if_nonfinite` and the total norm is not finite.
    """
    cdef double maxn = _real(max_norm, "max_norm")
    cdef double p = _real(norm_type, "norm_type")
    if isnan(maxn) or maxn < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm!r}")
    if isnan(p) or p <= 0:
        raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type!r}")
    cdef int kind = (FO_NORM_INF if p == INFINITY else FO_NORM_ONE if p == 1.0
                     else FO_NORM_TWO if p == 2.0 else FO_NORM_POW)
    cdef _Bufs bufs = _writable_grads(grads)
    cdef Py_ssize_t i
    cdef double total = 0.0, part, coef
    with nogil:
        for i in range(bufs.n):
            if bufs.bufs[i].is_f32:
                part = fo_norm_partial_f32(<const float *>bufs.bufs[i].data,
                                           bufs.bufs[i].n, kind, p)
            else:
                part = fo_norm_partial_f64(<const double *>bufs.bufs[i].data,
                                           bufs.bufs[i].n, kind, p)
            total = _max_nan(total, part) if kind == FO_NORM_INF else total + part
        if kind == FO_NORM_TWO:
            total = sqrt(total)
        elif kind == FO_NORM_POW:
            total = pow(total, 1.0 / p)
    if error_if_nonfinite and not isfinite(total):
        raise RuntimeError(
            f"The total norm of order {float(p)} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = maxn / (total + 1e-6)
    if coef < 1.0 or isnan(coef):
        with nogil:
            for i in range(bufs.n):
                if bufs.bufs[i].is_f32:
                    fo_scale_f32(<float *>bufs.bufs[i].data, bufs.bufs[i].n, coef)
                else:
                    fo_scale_f64(<double *>bufs.bufs[i].data, bufs.bufs[i].n, coef)
    return total


def clip_grad_value_(grads, clip_value):
    """Clamp every gradient element in place to ``[-clip_value, clip_value]``.

    torch.nn.utils.clip_grad_value_ semantics: the bound is cast to each gradient's
    dtype; NaN elements stay NaN.

    Parameters
    ----------
    grads : ndarray or iterable of ndarray
        C-contiguous, writeable float32/float64 arrays; ``None`` entries are skipped.
    clip_value : float
        The bound, ``>= 0``.

    Raises
    ------
    TypeError, ValueError
        Before anything is written, for a bad argument or buffer.
    """
    cdef double c = _real(clip_value, "clip_value")
    if isnan(c) or c < 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value!r}")
    cdef _Bufs bufs = _writable_grads(grads)
    cdef Py_ssize_t i
    with nogil:
        for i in range(bufs.n):
            if bufs.bufs[i].is_f32:
                fo_clamp_f32(<float *>bufs.bufs[i].data, bufs.bufs[i].n, c)
            else:
                fo_clamp_f64(<double *>bufs.bufs[i].data, bufs.bufs[i].n, c)


cdef inline bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int d
    if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


def check_grads(list params, grads, *, bint finite=False):
    """Check a step's gradients against its parameters; optionally scan for NaN/inf.

    Parameters
    ----------
    params : list of ndarray
        The parameters, in step order (written by the step).
    grads : list or tuple
        One gradient (or None) per parameter (read by the step).
    finite : bool, default False
        Also scan every gradient for NaN and +-inf (compiled, GIL released, stops at
        the first block that holds one).

    Returns
    -------
    bool
        With `finite`, whether every gradient is finite; otherwise True.

    Raises
    ------
    TypeError, ValueError
        If `grads` is not a list or tuple of the right length, if a gradient's type,
        dtype, byte order, layout or shape does not fit its parameter, if a parameter
        is not writeable, or if a parameter overlaps any other buffer in memory.
    """
    if not isinstance(grads, (list, tuple)):
        raise TypeError("grads must be a list or tuple with one array (or None) per "
                        f"parameter, got {type(grads).__name__}")
    cdef Py_ssize_t nparams = len(params), i, nb = 0
    if len(grads) != nparams:
        raise ValueError(f"step() expected {nparams} gradients (one per parameter, None "
                         f"to skip), got {len(grads)}")
    cdef _Bufs table = _Bufs()
    cdef cnp.ndarray param, grad
    cdef int ok = 1
    table.keep = [params, grads]
    table.bufs = <_Buf *>malloc(max(2 * nparams, 1) * sizeof(_Buf))
    if table.bufs == NULL:
        raise MemoryError()
    for i in range(nparams):
        _check_array(params[i], _PARAMS, i, True)
        param = <cnp.ndarray>params[i]
        _fill(&table.bufs[nb], param, True, nb, _PARAMS, i)
        nb += 1
        g = grads[i]
        if g is None:
            continue
        _check_array(g, _GRADS, i, False)
        grad = <cnp.ndarray>g
        if cnp.PyArray_TYPE(grad) != cnp.PyArray_TYPE(param):
            raise TypeError(f"grads[{i}] has dtype {grad.dtype} but params[{i}] has dtype "
                            f"{param.dtype}; they must match")
        if not _same_shape(grad, param):
            raise ValueError(f"grads[{i}] has shape {(<object>grad).shape} but params[{i}] "
                             f"has shape {(<object>param).shape}")
        _fill(&table.bufs[nb], grad, False, nb, _GRADS, i)
        nb += 1
    table.n = nb
    _check_overlap(table.bufs, nb)
    if not finite:
        return True
    with nogil:
        for i in range(nb):
            if table.bufs[i].writable:
                continue  # a parameter, not a gradient
            if table.bufs[i].is_f32:
                ok = fo_all_finite_f32(<const float *>table.bufs[i].data, table.bufs[i].n)
            else:
                ok = fo_all_finite_f64(<const double *>table.bufs[i].data, table.bufs[i].n)
            if not ok:
                break
    return bool(ok)
