# cython: language_level=3
"""Compiled core of fastopt: buffer validation and the fused in-place kernels.

The kernels themselves are C (``csrc/``); this module checks every buffer of a whole
step before the first byte is written, collects raw pointers into a task table, and
runs the table with the GIL released, in one call for all parameters.
"""
cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, calloc, free, qsort
from libc.string cimport memset, memcpy, memcmp
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject
import numpy as np

cnp.import_array()

cdef extern from "fastopt.h" nogil:
    enum: FO_MAX_BUFS
    enum: FO_MAX_HYPER
    ctypedef void (*fo_kernel_fn)(char *const *buf, int64_t begin, int64_t end,
                                  const double *hyper) noexcept nogil
    ctypedef void (*fo_reduce_fn)(char *const *buf, int64_t begin, int64_t end,
                                  const double *hyper, double *sums) noexcept nogil
    enum: FO_NISA
    enum: FO_CHUNK
    enum: FO_ALIGN
    enum: FO_ALIGN_MIN
    ctypedef struct fo_kernel_entry:
        const char *name
        fo_kernel_fn f32
        fo_kernel_fn f64
        const char *buffers
        const char *hyper
        fo_reduce_fn reduce_f32
        fo_reduce_fn reduce_f64
        int nsums
        fo_kernel_fn isa[FO_NISA][2]
        fo_reduce_fn reduce_isa[FO_NISA][2]
    ctypedef struct fo_task:
        fo_kernel_fn fn
        char *buf[FO_MAX_BUFS]
        int64_t n
        const double *hyper
        fo_reduce_fn reduce
        int nsums
        double *sums
        int itemsize
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
        fo_factored_fn isa[FO_NISA][2]
    const fo_factored_entry fo_factored_kernels[]
    const int fo_nfactored
    fo_factored_fn fo_select_factored(const fo_factored_entry *entry, int is_f64)
    void fo_run_factored(const fo_factored_entry *entry, int is_f64, char *const *buf,
                         int64_t batch, int64_t rows, int64_t cols, const double *hyper,
                         int nthreads)
    void fo_run(const fo_task *tasks, int64_t ntasks) noexcept nogil
    void fo_run_threads(const fo_task *tasks, int64_t ntasks, int nthreads) noexcept nogil
    int64_t fo_parallel_min
    const fo_kernel_entry fo_stream_kernel
    const fo_kernel_entry fo_divsqrt_kernel
    const char *const fo_isa_names[]
    int fo_isa_best()
    int fo_isa_get()
    int fo_isa_set(int isa)
    fo_kernel_fn fo_select(const fo_kernel_entry *entry, int is_f64)
    fo_reduce_fn fo_select_reduce(const fo_kernel_entry *entry, int is_f64)
    int fo_openmp()
    void fo_set_num_threads(int nthreads)
    int fo_get_num_threads_setting()
    int fo_default_threads()
    void fo_set_auto_threads(int on)
    int fo_get_auto_threads()
    double fo_own_load_average()
    void fo_set_flush_denormal(int on)
    int fo_get_flush_denormal()
    int fo_flush_supported()
    void fo_set_prefetch(int on)
    int fo_get_prefetch()
    int fo_prefetch_default()
    void fo_set_fma_division(int mode)
    int fo_get_fma_division()
    int fo_fma_division_default()
    int fo_fpflags_checked()


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


def run(list tasks, labels, int num_threads=0):
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

    Other Parameters
    ----------------
    num_threads : int
        Threads for a large step; 0 (default) uses :func:`get_num_threads`.
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
        return _run_factored(tasks, labels, num_threads)
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
            table[t].fn = fo_select(entry, cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT64)
            table[t].n = cnp.PyArray_SIZE(param)
            table[t].itemsize = cnp.PyArray_ITEMSIZE(param)
            if entry.nsums > 0:
                table[t].reduce = fo_select_reduce(entry,
                                                   cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT64)
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
            fo_run_threads(table, ntasks, num_threads)
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


# -- instruction sets, threads, subnormals -----------------------------------------

#: Names of the instruction sets the kernels can be compiled for, narrowest first.
ISA_NAMES = tuple(fo_isa_names[i].decode() for i in range(FO_NISA))


def _isa_variants():
    """The instruction sets this build has kernels for."""
    cdef int i
    return tuple([ISA_NAMES[i] for i in range(FO_NISA)
                  if i == 0 or fo_stream_kernel.isa[i][0] != NULL])


def _find_isa_available():
    variants = _isa_variants()
    return tuple(name for i, name in enumerate(ISA_NAMES)
                 if name in variants and i <= fo_isa_best())


# neither the build nor the CPU changes while the process runs, and set_isa reads
# it on every call (benchmarks switch instruction sets between timed steps)
cdef tuple _AVAILABLE = _find_isa_available()


def isa_available():
    """The instruction sets both this build and this CPU support, narrowest first."""
    return _AVAILABLE


def get_isa():
    """The instruction set the kernels run with now (``"avx512"``, ``"avx2"`` or
    ``"baseline"``)."""
    return ISA_NAMES[fo_isa_get()]


def set_isa(name=None):
    """Run the kernels with instruction set `name` (None: the best available).

    Every instruction set gives bitwise identical results; this exists for tests and
    benchmarks.  The environment variable ``FASTOPT_ISA`` sets it at import.

    Raises
    ------
    ValueError
        If `name` is unknown or not available in this build on this CPU.
    """
    if name is None:
        fo_isa_set(-1)
        return get_isa()
    if name not in _AVAILABLE:
        raise ValueError(f"instruction set {name!r} is not available here; available: "
                         f"{', '.join(_AVAILABLE)}")
    fo_isa_set(ISA_NAMES.index(name))
    return name


def openmp():
    """Whether this build has OpenMP (can split a step over threads)."""
    return bool(fo_openmp())


def _check_threads(value, name):
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def set_num_threads(num_threads):
    """Set how many threads a large step may use (None: follow OpenMP).

    With None (the default) fastopt uses OpenMP's setting, which follows
    ``OMP_NUM_THREADS`` and threadpoolctl's limits.  An optimizer's own
    ``num_threads`` attribute overrides this.  Results do not depend on it.
    """
    fo_set_num_threads(_check_threads(num_threads, "num_threads"))


def get_num_threads_setting():
    """fastopt's own setting from :func:`set_num_threads` (0: follow OpenMP)."""
    return fo_get_num_threads_setting()


def get_num_threads():
    """How many threads a large step uses now (1 without OpenMP)."""
    return fo_default_threads()


def set_load_aware_threads(bint on):
    """Whether a step with the default thread count uses only idle CPUs (default on).

    With no thread count set anywhere (neither :func:`set_num_threads`, an
    optimizer's ``num_threads`` nor ``OMP_NUM_THREADS``), a large step uses at most
    as many threads as the one-minute load average leaves CPUs idle, counting the
    calling thread: on a machine whose cores are busy, an OpenMP team waits at its
    barrier for workers the scheduler has not run, and a step can take ten times
    longer than on one thread.  This process's own CPU use, averaged the same way
    (:func:`own_load_average`), is not counted as load, so a run of fastopt's own
    threaded steps does not shrink its team.  Results do not depend on it.
    """
    fo_set_auto_threads(on)


def own_load_average():
    """This process's CPU seconds per second of wall time, averaged like the one-minute
    load average (updated when a large step picks its thread count; 0 where not
    tracked): the part of the load average the load-aware thread count discounts."""
    return fo_own_load_average()


def get_load_aware_threads():
    """See :func:`set_load_aware_threads`."""
    return bool(fo_get_auto_threads())


def get_parallel_min():
    """Fewest elements in one step (all parameters) for which threads are started."""
    return fo_parallel_min


def _set_parallel_min(int64_t elements):
    """Set the threshold of :func:`get_parallel_min` (for measuring it)."""
    global fo_parallel_min
    if elements < 1:
        raise ValueError("the threshold must be at least 1 element")
    fo_parallel_min = elements


def chunk_elements():
    """Elements per chunk when a step is split over threads (independent of threads)."""
    return FO_CHUNK


def alignment():
    """``(bytes, elements)``: a step over at least `elements` elements starts its bulk
    where the parameter is aligned to `bytes` (a second kernel call; no result
    changes)."""
    return FO_ALIGN, FO_ALIGN_MIN


def set_flush_denormal(bint on):
    """Flush subnormal numbers to zero inside fastopt's kernels (off by default).

    When on, each kernel call sets the CPU's flush-to-zero and denormals-are-zero
    modes on every thread it runs on and restores the previous modes before it
    returns; the rest of the process is never affected.  Results then differ from
    torch and from the NumPy reference wherever a value is subnormal.  Returns
    whether this CPU supports it.
    """
    if not fo_flush_supported():
        return False
    fo_set_flush_denormal(on)
    return True


def set_prefetch(on=None):
    """Whether the kernels prefetch the lines ahead of each block of their loop in
    software (None: this CPU's default).

    On by default, off on cores whose hardware prefetchers do better alone (AMD
    family 1Ah, Zen 5, measured); results never depend on it.  The environment
    variable ``FASTOPT_PREFETCH`` (``0`` or ``1``) sets it at import.  Returns the
    setting now in force.
    """
    if on is None:
        fo_set_prefetch(-1)
    elif isinstance(on, (bool, int)) and on in (0, 1):
        fo_set_prefetch(int(on))
    else:
        raise ValueError(f"on must be True, False or None, got {on!r}")
    return bool(fo_get_prefetch())


def get_prefetch():
    """Whether the kernels prefetch in software (see :func:`set_prefetch`)."""
    return bool(fo_get_prefetch())


def prefetch_default():
    """Whether the kernels prefetch in software on this CPU by default."""
    return bool(fo_prefetch_default())


FMA_DIVISION_MODES = ("off", "float64", "all")


def set_fma_division(mode=None):
    """Where the kernels divide by a divisor that is the same for the whole loop (Adam's,
    AdaBelief's and Adan's bias correction of a square root, NAdam's, LAMB's, RAdam's
    and Adafactor's), whether they do it with FMA operations that give the quotient's
    bits instead of the divide unit, where the instruction set allows (AVX-512; AVX2
    for float64): ``"all"`` (both dtypes, and float64 NAdam's two divisions by one
    denominator from one reciprocal), ``"float64"`` (float64 only, NAdam dividing
    twice) or ``"off"``; None: this CPU's default.

    ``"all"`` by default, ``"float64"`` on cores with a fast divider (AMD family 1Ah,
    Zen 5, measured).  Results never depend on it.  The environment variable
    ``FASTOPT_FMA_DIVISION`` sets it at import.  Returns the mode now in force.
    """
    if mode is None:
        fo_set_fma_division(-1)
    elif isinstance(mode, str) and mode in FMA_DIVISION_MODES:
        fo_set_fma_division(FMA_DIVISION_MODES.index(mode))
    else:
        raise ValueError(f"mode must be one of {', '.join(map(repr, FMA_DIVISION_MODES))} "
                         f"or None, got {mode!r}")
    return get_fma_division()


def get_fma_division():
    """The FMA-division mode in force (see :func:`set_fma_division`)."""
    return FMA_DIVISION_MODES[fo_get_fma_division()]


def fma_division_default():
    """This CPU's default FMA-division mode (see :func:`set_fma_division`)."""
    return FMA_DIVISION_MODES[fo_fma_division_default()]


def get_flush_denormal():
    """Whether kernels flush subnormals to zero (see :func:`set_flush_denormal`)."""
    return bool(fo_get_flush_denormal())


def fpflags_checked():
    """Whether the floating-point exception flags can be trusted to find the blocks
    that must divide, in the kernels that divide with FMA operations where the
    instruction set allows (LAMB, NAdam, float64 RAdam).  True on x86-64 hardware;
    false where this library was loaded under an emulator that does not raise the
    flags (valgrind), where those kernels divide every block (same results, the
    division's speed), and on other architectures, which have no FMA form."""
    return bool(fo_fpflags_checked())


def _stream(cnp.ndarray param, cnp.ndarray grad, list state, int num_threads=0,
            tuple reads_first=(), bint update=True, bint keep=False):
    """The benchmark's ceiling: one pass with an optimizer's memory shape.

    Reads `param`, `grad` and every array of `state`, and writes `param` and `state`
    (``x += grad``), through the same runner, threads and instruction set as the
    kernels.  `state` holds at most 6 arrays.  `reads_first` names buffers by index
    (0: `param`, 1: `grad`, 2 on: `state`) that a first pass reads once more before
    that, as a two-pass kernel's first pass does.  With `update` false only that
    first pass runs (nothing is written), so that the benchmark can time it alone.
    With `keep` the pass adds ``grad * 0`` instead, which leaves every value as it was
    (a zero's sign aside): a ceiling over an optimizer's own buffers, which sit where
    its step finds them in the caches, that leaves its state unchanged.
    """
    cdef fo_task task
    cdef Py_ssize_t k, nstate = len(state), nreads = len(reads_first)
    cdef double hyper[FO_MAX_HYPER]
    if nstate > 6:
        raise ValueError("at most 6 state buffers")
    if nreads > 6:
        raise ValueError("at most 6 buffers to read first")
    for k in range(nreads):
        if not 0 <= reads_first[k] < 2 + nstate:
            raise ValueError(f"reads_first: no buffer {reads_first[k]}")
    if not update and nreads == 0:
        raise ValueError("update=False needs buffers to read first (reads_first)")
    arrays = [param, grad] + state
    for a in arrays:
        if (not isinstance(a, np.ndarray) or a.dtype != param.dtype
                or not a.flags.c_contiguous or a.size != param.size
                or param.dtype not in (np.float32, np.float64)):
            raise ValueError("buffers must be C-contiguous float32/float64 arrays of one "
                             "dtype and size")
    memset(&task, 0, sizeof(fo_task))
    task.fn = fo_select(&fo_stream_kernel, cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT64)
    task.itemsize = cnp.PyArray_ITEMSIZE(param)
    for k in range(2 + nstate):
        task.buf[k] = <char *>cnp.PyArray_DATA(<cnp.ndarray>arrays[k])
    task.n = cnp.PyArray_SIZE(param)
    hyper[0] = nstate if update else -1
    hyper[1] = nreads
    hyper[8] = 1.0 if keep else 0.0
    for k in range(nreads):
        hyper[2 + k] = reads_first[k]
    if nreads > 0:
        task.reduce = fo_select_reduce(&fo_stream_kernel,
                                       cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT64)
        task.nsums = 1
        task.sums = &hyper[FO_MAX_HYPER - 1]
    task.hyper = hyper
    with nogil:
        fo_run_threads(&task, 1, num_threads)


def _divsqrt(cnp.ndarray x, cnp.ndarray y, int divisions, int square_roots):
    """The benchmark's divider floor: `square_roots` square roots and then `divisions`
    divisions per element of `x` (``x = sqrt(x + y)``, then ``x = y / (x + y)``) and
    nothing else, on one thread with the instruction set in use.  `y` should lie in
    [1, 2) and `x` be non-negative, so that every value stays normal."""
    cdef fo_task task
    cdef double hyper[FO_MAX_HYPER]
    if not 0 <= divisions <= 6 or not 0 <= square_roots <= 2:
        raise ValueError("divisions must be 0 to 6 and square_roots 0 to 2")
    for a in (x, y):
        if (a.dtype != x.dtype or not a.flags.c_contiguous or a.size != x.size
                or x.dtype not in (np.float32, np.float64)):
            raise ValueError("x and y must be C-contiguous float32/float64 arrays of one "
                             "dtype and size")
    if not x.flags.writeable:
        raise ValueError("x must be writeable")
    memset(&task, 0, sizeof(fo_task))
    task.fn = fo_select(&fo_divsqrt_kernel, cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64)
    task.buf[0] = <char *>cnp.PyArray_DATA(x)
    task.buf[1] = <char *>cnp.PyArray_DATA(y)
    task.n = cnp.PyArray_SIZE(x)
    hyper[0] = divisions
    hyper[1] = square_roots
    task.hyper = hyper
    with nogil:
        fo_run_threads(&task, 1, 1)


# -- hyperparameter snapshots ----------------------------------------------------------

cdef object _MISSING = object()


def hyper_snapshot(dict group, tuple names):
    """The objects `group` holds under `names`, and the items of any list or tuple.

    A group for which :func:`snapshot_holds` is true of an earlier snapshot still
    holds the very same hyperparameter objects (an edit, even to a list in place,
    replaces one), so its validation and packed scalars can be reused.
    """
    cdef list out = []
    cdef PyObject *found
    for name in names:
        found = PyDict_GetItem(group, name)
        if found == NULL:
            out.append(_MISSING)
            continue
        value = <object>found
        out.append(value)
        if type(value) is tuple or type(value) is list:
            out.append(len(value))
            out.extend(value)
    return out


cpdef bint snapshot_holds(dict group, tuple names, list snapshot):
    """Whether :func:`hyper_snapshot` of `group` would be `snapshot` item by item
    (identity; lengths compared by value), without building it."""
    cdef Py_ssize_t pos = 0, n = PyList_GET_SIZE(snapshot), k, m
    cdef PyObject *found
    cdef PyObject *item
    for name in names:
        found = PyDict_GetItem(group, name)
        if pos >= n:
            return False
        item = PyList_GET_ITEM(snapshot, pos)
        pos += 1
        if found == NULL:
            if item != <PyObject *>_MISSING:
                return False
            continue
        if found != item:
            return False
        value = <object>found
        if type(value) is tuple or type(value) is list:
            m = len(value)
            if pos >= n or <object>PyList_GET_ITEM(snapshot, pos) != m or pos + 1 + m > n:
                return False
            pos += 1
            for k in range(m):
                if <PyObject *>value[k] != PyList_GET_ITEM(snapshot, pos + k):
                    return False
            pos += m
    return pos == n


def reuse_packed(groups, cache, tuple names):
    """Each group's cached packed scalars and state flags, if still valid.

    `cache` holds one ``(group, snapshot, packed, needed)`` per group, `snapshot`
    being :func:`hyper_snapshot` of the group when `packed` and `needed` were made.
    Returns ``(list of packed, tuple of needed)`` when every group is the same dict
    as its entry's and still holds the very same hyperparameter objects; None
    otherwise.  One compiled call: a small step costs about as much as a few Python
    statements.
    """
    cdef Py_ssize_t g, n
    if type(groups) is not list or type(cache) is not list:
        return None
    n = PyList_GET_SIZE(groups)
    if PyList_GET_SIZE(cache) != n:
        return None
    packed, needed = [], []
    for g in range(n):
        entry = <object>PyList_GET_ITEM(cache, g)
        group = <object>PyList_GET_ITEM(groups, g)
        if type(entry) is not tuple or len(entry) != 4 or entry[0] is not group \
                or type(group) is not dict \
                or not snapshot_holds(group, names, entry[1]):
            return None
        packed.append(entry[2])
        needed.append(entry[3])
    return packed, tuple(needed)


# -- the cached step plan ------------------------------------------------------------

cdef extern from *:
    """
    /* Plan.run's per-parameter checks on borrowed references: no reference counting,
     * and dictionary lookups that do not save and restore the error state. */
    static inline char *fo_arr_data(PyObject *o)
    { return (char *)PyArray_DATA((PyArrayObject *)o); }
    static inline npy_intp fo_arr_size(PyObject *o)
    { return PyArray_SIZE((PyArrayObject *)o); }
    static inline npy_intp fo_arr_nbytes(PyObject *o)
    { return PyArray_NBYTES((PyArrayObject *)o); }
    static inline int fo_arr_writeable(PyObject *o)
    { return PyArray_ISWRITEABLE((PyArrayObject *)o); }
    static inline int fo_is_array(PyObject *o) { return PyArray_Check(o); }
    /* `a` has `typenum`, native order, C order, alignment and `param`'s shape. */
    static inline int fo_arr_same_layout(PyObject *a_, PyObject *param_, int typenum)
    {
        PyArrayObject *a = (PyArrayObject *)a_, *param = (PyArrayObject *)param_;
        const int nd = PyArray_NDIM(a);
        if (PyArray_TYPE(a) != typenum || !PyArray_ISNOTSWAPPED(a)
                || !PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)
                || nd != PyArray_NDIM(param))
            return 0;
        for (int d = 0; d < nd; d++)
            if (PyArray_DIM(a, d) != PyArray_DIM(param, d)) return 0;
        return 1;
    }
    /* The item of dict `d` at `key` (borrowed), or NULL, with no error left set:
     * the keys here are ints and interned strings, whose lookups cannot fail. */
    static inline PyObject *fo_dict_get(PyObject *d, PyObject *key)
    {
        PyObject *found = PyDict_GetItemWithError(d, key);
        if (found == NULL && PyErr_Occurred()) PyErr_Clear();
        return found;
    }
    /* A dict's version tag (PEP 509): a number that changes, to one no dict has had,
     * whenever the dict is modified.  While it is the one Plan.run recorded after its
     * own writes, the dict holds what that step verified and wrote, and the step can
     * skip looking its entries up.  CPython keeps the field up to 3.13 (deprecated
     * from 3.12, still updated on every modification: the tests that edit state
     * between planned steps pass on 3.12 and 3.13) and drops it in 3.14; there, and on
     * other implementations, this is 0 ("unknown") and every step looks up. */
    #if !defined(PYPY_VERSION) && PY_VERSION_HEX < 0x030E0000
    #pragma GCC diagnostic push
    #pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    static inline uint64_t fo_dict_version(PyObject *d)
    { return PyDict_Check(d) ? ((PyDictObject *)d)->ma_version_tag : 0; }
    #pragma GCC diagnostic pop
    #else
    static inline uint64_t fo_dict_version(PyObject *d) { (void)d; return 0; }
    #endif
    /* A step count from an exact int; -1 for anything else (or out of range). */
    static inline long long fo_step_value(PyObject *o)
    {
        int overflow = 0;
        long long v;
        if (!PyLong_CheckExact(o)) return -1;
        v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow || v < 0 || v > ((long long)1 << 53)) { PyErr_Clear(); return -1; }
        return v;
    }
    """
    char *fo_arr_data(PyObject *o) noexcept
    cnp.npy_intp fo_arr_size(PyObject *o) noexcept
    cnp.npy_intp fo_arr_nbytes(PyObject *o) noexcept
    bint fo_arr_writeable(PyObject *o) noexcept
    bint fo_is_array(PyObject *o) noexcept
    bint fo_arr_same_layout(PyObject *a, PyObject *param, int typenum) noexcept
    PyObject *fo_dict_get(PyObject *d, PyObject *key) noexcept
    long long fo_step_value(PyObject *o) noexcept
    uint64_t fo_dict_version(PyObject *d) noexcept
    PyObject *fo_list_item "PyList_GET_ITEM"(PyObject *lst, Py_ssize_t i) noexcept


cdef Py_ssize_t _coalesce(fo_task *tasks, Py_ssize_t ntasks,
                          int nbuf, int nhyper) noexcept:
    """Merge each task into the previous one when all its buffers continue the
    previous task's buffers in memory and its scalars are the same (parameters of an
    arena), so that a model in one arena is one streaming pass; drop empty tasks.
    Element-wise kernels give the same bits either way; two-pass kernels are never
    merged.  Returns the new count."""
    cdef Py_ssize_t k, out = 0
    cdef int s, itemsize
    cdef bint joins
    for k in range(ntasks):
        if tasks[k].n == 0:
            continue
        # a task with a first pass sums over its own parameter only (per-parameter
        # norms): never merged
        joins = out > 0 and tasks[k].reduce == NULL and tasks[out - 1].fn == tasks[k].fn \
            and memcmp(tasks[out - 1].hyper, tasks[k].hyper, nhyper * sizeof(double)) == 0
        if joins:
            itemsize = tasks[k].itemsize   # same kernel function, so same dtype as out - 1
            for s in range(nbuf):
                if (tasks[out - 1].buf[s] == NULL) != (tasks[k].buf[s] == NULL):
                    joins = False
                    break
                if tasks[k].buf[s] != NULL and \
                        tasks[out - 1].buf[s] + tasks[out - 1].n * itemsize != tasks[k].buf[s]:
                    joins = False
                    break
        if joins:
            tasks[out - 1].n += tasks[k].n
        else:
            if out != k:
                tasks[out] = tasks[k]
            out += 1
    return out


cdef class Plan:
    """A prepared task table for one optimizer: one compiled call per step.

    Built after a step that went through the full path, a plan holds the raw
    pointers of every parameter and state buffer and has checked them once (layout,
    no overlap).  :meth:`run` checks, per step, that the optimizer still has exactly
    the same parameters, state dicts and buffers (identity and unchanged layout) and
    that every gradient is valid and overlaps no buffer that is written; it then
    fills in gradient pointers and scalars and runs the whole table in one call
    without the GIL.  When anything differs it returns False without writing, and
    the optimizer takes the full path, which raises the precise error or creates the
    missing state, and builds a new plan.
    """
    cdef int isa
    cdef int nbuf, nhyper, nstate, step_slot, first_slot
    cdef bint tracks_step
    cdef Py_ssize_t nparams, ngroups, nspans
    cdef object groups
    cdef list group_lists, group_sizes, params, keys, state_dicts, state_bufs
    cdef tuple names, needed
    cdef object step_key
    cdef int *group_of
    cdef int *typenum
    cdef bint *active_flag
    cdef Py_ssize_t *active_index
    cdef uintptr_t *clear_start
    cdef uintptr_t *clear_end
    cdef int64_t *steps
    # the version of the optimizer's state dict at which every parameter's entry was
    # found to be the prepared one, and of each entry after the last step that checked
    # and wrote it, with the step count it then holds (0: none; fo_dict_version)
    cdef uint64_t state_version
    # how many kernel calls the last step made, after merging arena neighbours
    cdef readonly Py_ssize_t last_calls
    cdef uint64_t *entry_version
    cdef int64_t *entry_step
    cdef fo_task *table
    cdef fo_task *active
    cdef double *hyper
    cdef double *group_hyper
    cdef _Span *spans
    # borrowed from the lists above, which keep them alive: the parameters, their
    # state dicts (NULL: none), their state buffers (nparams x nstate, NULL: unused),
    # whether a parameter has all its state (has_bufs), the state's keys
    cdef PyObject **param_ptr
    cdef PyObject **dict_ptr
    cdef PyObject **buf_ptr
    cdef PyObject **key_ptr
    cdef bint *has_bufs
    cdef PyObject *name_ptr[FO_MAX_BUFS]
    # per-parameter scalar state advanced in Python (NAdam's mu_product, ASGD's eta
    # and mu): the registry's advance_scalars, the state's names, and the kernel
    # slots (slot, name) of the scalars it gives
    cdef object advance
    cdef tuple scalar_names
    cdef tuple advanced_names
    # the optimizer's hyperparameter names (Algorithm.hyper_names), for step(); and
    # what reuse_packed last gave step() with the group dicts it was given and their
    # versions (fo_dict_version), while no group holds a list under those names
    cdef object hyper_names
    cdef object memo_reused
    cdef list memo_groups
    cdef uint64_t *memo_version
    cdef Py_ssize_t nadvanced
    cdef Py_ssize_t advanced_slot[FO_MAX_HYPER]

    def __cinit__(self):
        self.group_of = NULL
        self.typenum = NULL
        self.active_flag = NULL
        self.active_index = NULL
        self.clear_start = NULL
        self.clear_end = NULL
        self.steps = NULL
        self.entry_version = NULL
        self.entry_step = NULL
        self.memo_version = NULL
        self.state_version = 0
        self.last_calls = 0
        self.table = NULL
        self.active = NULL
        self.hyper = NULL
        self.group_hyper = NULL
        self.spans = NULL
        self.param_ptr = NULL
        self.dict_ptr = NULL
        self.buf_ptr = NULL
        self.key_ptr = NULL
        self.has_bufs = NULL

    def __dealloc__(self):
        free(self.group_of); free(self.typenum); free(self.active_flag)
        free(self.active_index); free(self.steps)
        free(self.entry_version); free(self.entry_step); free(self.memo_version)
        free(self.clear_start); free(self.clear_end); free(self.table); free(self.active)
        free(self.hyper); free(self.group_hyper); free(self.spans)
        free(self.param_ptr); free(self.dict_ptr); free(self.buf_ptr); free(self.key_ptr)
        free(self.has_bufs)

    def __init__(self, str kernel, list groups, dict state, tuple state_names, tuple needed,
                 bint tracks_step, advance=None, tuple scalar_names=(),
                 tuple advanced_slots=(), hyper_names=None):
        """Prepare `groups` (an optimizer's ``param_groups``) and `state`.

        `advance`, for an algorithm with per-parameter scalar state, is its
        ``advance_scalars(group, step, state)``: `scalar_names` name that state and
        `advanced_slots` holds ``(kernel scalar slot, name)`` for the scalars it gives.
        `hyper_names` (the algorithm's ``hyper_names``, a tuple) is what :meth:`step`
        needs to reuse the optimizer's validated hyperparameters.

        Raises
        ------
        ValueError, TypeError
            If a parameter or state buffer cannot be used as it is; the optimizer
            then keeps taking the full path, which reports the problem.
        """
        cdef Py_ssize_t i, s, g, n
        cdef cnp.ndarray param, a
        cdef const fo_kernel_entry *entry = &fo_kernels[_INDEX[kernel]]
        layout = _LAYOUTS[_INDEX[kernel]]
        self.isa = fo_isa_get()
        self.nbuf = len(layout[1])
        self.nhyper = len(layout[2])
        self.nstate = self.nbuf - 2
        self.step_slot = layout[2].index("step") if "step" in layout[2] else -1
        self.first_slot = layout[2].index("first_step") if "first_step" in layout[2] else -1
        self.tracks_step = tracks_step
        self.advance = advance
        if hyper_names is not None and type(hyper_names) is not tuple:
            raise TypeError("hyper_names must be a tuple or None")
        self.hyper_names = hyper_names
        self.scalar_names = tuple(sys_intern(n) for n in scalar_names)
        if advance is not None and not tracks_step:
            raise ValueError("scalar state is advanced per step: tracks_step must be true")
        if len(advanced_slots) > FO_MAX_HYPER:
            raise ValueError(f"at most {FO_MAX_HYPER} advanced scalars")
        self.nadvanced = len(advanced_slots)
        self.advanced_names = tuple(name for _, name in advanced_slots)
        for i, (slot, _) in enumerate(advanced_slots):
            self.advanced_slot[i] = slot
        self.names = tuple(sys_intern(n) for n in state_names)
        self.step_key = sys_intern("step")
        self.needed = needed
        self.groups = groups
        self.ngroups = len(groups)
        self.group_lists = [group["params"] for group in groups]
        self.group_sizes = [len(lst) for lst in self.group_lists]
        self.params = [p for lst in self.group_lists for p in lst]
        self.nparams = n = len(self.params)
        self.keys = list(range(n))
        self.state_dicts = []
        self.state_bufs = []
        self.group_of = <int *>malloc(max(n, 1) * sizeof(int))
        self.typenum = <int *>malloc(max(n, 1) * sizeof(int))
        self.active_flag = <bint *>malloc(max(n, 1) * sizeof(bint))
        self.active_index = <Py_ssize_t *>malloc(max(n, 1) * sizeof(Py_ssize_t))
        self.clear_start = <uintptr_t *>calloc(max(n, 1), sizeof(uintptr_t))
        self.clear_end = <uintptr_t *>calloc(max(n, 1), sizeof(uintptr_t))
        self.steps = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
        self.entry_version = <uint64_t *>calloc(max(n, 1), sizeof(uint64_t))
        self.entry_step = <int64_t *>calloc(max(n, 1), sizeof(int64_t))
        self.memo_version = <uint64_t *>calloc(max(self.ngroups, 1), sizeof(uint64_t))
        self.table = <fo_task *>malloc(max(n, 1) * sizeof(fo_task))
        self.active = <fo_task *>malloc(max(n, 1) * sizeof(fo_task))
        self.hyper = <double *>malloc(max(n, 1) * FO_MAX_HYPER * sizeof(double))
        self.group_hyper = <double *>malloc(max(self.ngroups, 1) * FO_MAX_HYPER * sizeof(double))
        self.spans = <_Span *>malloc(max(n, 1) * FO_MAX_BUFS * sizeof(_Span))
        if (self.group_of == NULL or self.typenum == NULL or self.active_flag == NULL
                or self.active_index == NULL
                or self.clear_start == NULL or self.clear_end == NULL
                or self.steps == NULL or self.entry_version == NULL
                or self.entry_step == NULL or self.memo_version == NULL
                or self.table == NULL
                or self.active == NULL or self.hyper == NULL or self.group_hyper == NULL
                or self.spans == NULL):
            raise MemoryError()
        memset(self.table, 0, max(n, 1) * sizeof(fo_task))
        labels = lambda task, slot: f"buffer {slot} of parameter {task}"
        i = 0
        self.nspans = 0
        for g in range(self.ngroups):
            for _ in range(self.group_sizes[g]):
                obj = self.params[i]
                _check_buffer(obj, i, 0, obj, True, labels)
                param = <cnp.ndarray>obj
                self.group_of[i] = g
                self.typenum[i] = cnp.PyArray_TYPE(param)
                self.table[i].fn = fo_select(entry, self.typenum[i] == cnp.NPY_FLOAT64)
                self.table[i].n = cnp.PyArray_SIZE(param)
                self.table[i].itemsize = cnp.PyArray_ITEMSIZE(param)
                self.table[i].buf[0] = <char *>cnp.PyArray_DATA(param)
                if entry.nsums > 0:   # a first pass (LAMB's, LARS's norms)
                    self.table[i].reduce = fo_select_reduce(
                        entry, self.typenum[i] == cnp.NPY_FLOAT64)
                    self.table[i].nsums = entry.nsums
                entry_state = state.get(i)
                buffers = None
                if entry_state is not None:
                    buffers = []
                    for s in range(self.nstate):
                        b = None
                        if needed[g][s]:
                            b = entry_state.get(self.names[s])
                            if b is None:
                                buffers = None  # created by the next full step
                                break
                            _check_buffer(b, i, s + 2, param, True, labels)
                            self.table[i].buf[s + 2] = <char *>cnp.PyArray_DATA(<cnp.ndarray>b)
                        buffers.append(b)
                self.state_dicts.append(entry_state)
                self.state_bufs.append(buffers)
                if buffers is not None and self.table[i].n > 0:
                    for s in range(self.nbuf):
                        if s == 1 or self.table[i].buf[s] == NULL:
                            continue
                        a = <cnp.ndarray>(param if s == 0 else buffers[s - 2])
                        self.spans[self.nspans].start = <uintptr_t>cnp.PyArray_DATA(a)
                        self.spans[self.nspans].end = (self.spans[self.nspans].start
                                                       + <uintptr_t>cnp.PyArray_NBYTES(a))
                        self.spans[self.nspans].writable = True
                        self.spans[self.nspans].task = i
                        self.spans[self.nspans].slot = s
                        self.nspans += 1
                i += 1
        _check_overlap(self.spans, self.nspans, labels)   # also sorts the spans
        m = max(n, 1)
        self.param_ptr = <PyObject **>malloc(m * sizeof(PyObject *))
        self.dict_ptr = <PyObject **>malloc(m * sizeof(PyObject *))
        self.key_ptr = <PyObject **>malloc(m * sizeof(PyObject *))
        self.buf_ptr = <PyObject **>calloc(m * max(self.nstate, 1), sizeof(PyObject *))
        self.has_bufs = <bint *>calloc(m, sizeof(bint))
        if (self.param_ptr == NULL or self.dict_ptr == NULL or self.key_ptr == NULL
                or self.buf_ptr == NULL or self.has_bufs == NULL):
            raise MemoryError()
        for s in range(self.nstate):
            self.name_ptr[s] = <PyObject *>self.names[s]
        for i in range(n):
            self.param_ptr[i] = <PyObject *>self.params[i]
            self.key_ptr[i] = <PyObject *>self.keys[i]
            entry_state = self.state_dicts[i]
            self.dict_ptr[i] = NULL if entry_state is None else <PyObject *>entry_state
            buffers = self.state_bufs[i]
            self.has_bufs[i] = buffers is not None
            if buffers is not None:
                for s in range(self.nstate):
                    if buffers[s] is not None:
                        self.buf_ptr[i * self.nstate + s] = <PyObject *>buffers[s]

    def run(self, list groups, dict state, grads, list packed, tuple needed,
            int num_threads=0):
        """Run one step if everything is as prepared; return whether it ran.

        Parameters
        ----------
        groups, state
            The optimizer's ``param_groups`` and ``state``.
        grads : list or tuple
            One gradient or None per parameter.
        packed : list of list of float
            Each group's kernel scalars (``Algorithm.pack``).
        needed : tuple
            Each group's tuple of "state buffer used" flags.
        num_threads : int
            0 for the default.
        """
        return self._run(groups, state, grads, packed, needed, num_threads) == 1

    def step(self, opt, grads):
        """One step of `opt`, the optimizer that holds this plan, without a loss scale:
        ``Optimizer.step``'s common case in one compiled call.

        Under the optimizer's lock it reuses the optimizer's validated
        hyperparameters (:func:`reuse_packed`), checks its ``num_threads`` and runs
        (:meth:`run`).  Returns whether it ran; when it did not (the plan is no longer
        the optimizer's, a hyperparameter changed, `grads` is not a list or tuple, or
        anything :meth:`run` checks differs), nothing was written and
        ``Optimizer.step`` takes its general path, which reports any error.
        """
        if self.hyper_names is None:
            raise ValueError("this plan was built without hyper_names")
        if type(grads) is not list and type(grads) is not tuple:
            return False
        lock = opt._lock
        lock.acquire()
        try:
            groups = opt.param_groups
            state = opt.state
            if opt._plan is not self or type(groups) is not list \
                    or type(state) is not dict:
                return False
            reused = self._reuse(groups, opt)
            if reused is None:
                return False
            return self._run(groups, state, grads, (<tuple>reused)[0], (<tuple>reused)[1],
                             _check_threads(opt.num_threads, "num_threads")) == 1
        finally:
            lock.release()

    cdef object _reuse(self, list groups, opt):
        """:func:`reuse_packed` for `opt`, or what it gave last time while every group
        is the same dict at the same version: a dict's version changes, to a value no
        dict has had, on every modification, and reuse_packed's result depends only
        on the objects each group holds, unless one is a list (whose items it
        checks), so groups holding lists are not remembered."""
        cdef Py_ssize_t g, n = PyList_GET_SIZE(groups)
        cdef uint64_t version
        cdef PyObject *group
        cdef PyObject *found
        cdef bint same = (self.memo_reused is not None
                          and n == PyList_GET_SIZE(self.memo_groups))
        if same:
            for g in range(n):
                group = PyList_GET_ITEM(groups, g)
                if group != PyList_GET_ITEM(self.memo_groups, g) \
                        or fo_dict_version(group) != self.memo_version[g]:
                    same = False
                    break
        if same:
            return self.memo_reused
        self.memo_reused = None
        reused = reuse_packed(groups, opt._hyper_cache, self.hyper_names)
        if reused is None or n != self.ngroups:
            return reused
        for g in range(n):
            group = PyList_GET_ITEM(groups, g)
            version = fo_dict_version(group)   # a dict: reuse_packed checked
            if version == 0:
                return reused
            for name in self.hyper_names:
                found = PyDict_GetItem(<object>group, name)
                if found != NULL and type(<object>found) is list:
                    return reused
            self.memo_version[g] = version
        self.memo_groups = list(groups)
        self.memo_reused = reused
        return reused

    cdef int _run(self, list groups, dict state, grads, list packed, tuple needed,
                  int num_threads) except -1:
        """:meth:`run`: 1 if it ran, 0 if not."""
        cdef Py_ssize_t i, j, g, s, k, nactive = 0, lo, hi, mid, nrun
        cdef Py_ssize_t nstate = self.nstate
        cdef bint clear, entry_same
        cdef bint state_same = (self.state_version != 0
                                and fo_dict_version(<PyObject *>state) == self.state_version)
        cdef PyObject *found
        cdef PyObject *gobj
        cdef PyObject *pobj
        cdef PyObject *bobj
        cdef PyObject *entry
        cdef PyObject *none = <PyObject *>None
        cdef PyObject *glist
        cdef PyObject *lst_ptr
        cdef object lst, step_object = None
        cdef list grad_list
        cdef int64_t step_value = -1
        cdef long long count
        cdef double advanced[FO_MAX_HYPER]
        cdef object last_key = None, last_new = None, key
        cdef list new_scalars = [] if self.advance is not None else None
        cdef uintptr_t gs, ge
        cdef int typenum
        if fo_isa_get() != self.isa or groups is not self.groups \
                or len(groups) != self.ngroups or needed != self.needed \
                or len(grads) != self.nparams or len(packed) != self.ngroups:
            return False
        grad_list = grads if type(grads) is list else list(grads)
        glist = <PyObject *>grad_list
        i = 0
        for g in range(self.ngroups):
            lst = groups[g]["params"]
            if lst is not self.group_lists[g] or len(lst) != self.group_sizes[g]:
                return False
            lst_ptr = <PyObject *>lst
            for j in range(self.group_sizes[g]):
                if fo_list_item(lst_ptr, j) != self.param_ptr[i]:
                    return False
                i += 1
            values = packed[g]
            if len(values) != self.nhyper:
                return False
            for k in range(self.nhyper):
                self.group_hyper[g * FO_MAX_HYPER + k] = values[k]
        for i in range(self.nparams):
            self.active_flag[i] = False
            gobj = fo_list_item(glist, i)
            if gobj == none:
                continue
            if not self.has_bufs[i]:
                return False
            entry = self.dict_ptr[i]
            if not state_same and fo_dict_get(<PyObject *>state, self.key_ptr[i]) != entry:
                return False
            # unchanged since the last step wrote it: its buffers and step are known
            entry_same = (self.entry_version[i] != 0
                          and fo_dict_version(entry) == self.entry_version[i])
            pobj = self.param_ptr[i]
            typenum = self.typenum[i]
            if fo_arr_data(pobj) != self.table[i].buf[0] \
                    or fo_arr_size(pobj) != self.table[i].n \
                    or not fo_arr_writeable(pobj) \
                    or not fo_arr_same_layout(pobj, pobj, typenum):
                return False
            for s in range(nstate):
                bobj = self.buf_ptr[i * nstate + s]
                if bobj == NULL:
                    continue
                if not entry_same and fo_dict_get(entry, self.name_ptr[s]) != bobj:
                    return False
                if fo_arr_data(bobj) != self.table[i].buf[s + 2] \
                        or not fo_arr_writeable(bobj) \
                        or not fo_arr_same_layout(bobj, pobj, typenum):
                    return False
            if not fo_is_array(gobj) or not fo_arr_same_layout(gobj, pobj, typenum):
                return False
            if self.tracks_step:
                if entry_same:
                    count = self.entry_step[i]
                    found = NULL
                else:
                    found = fo_dict_get(entry, <PyObject *>self.step_key)
                    count = 0
                if found != NULL:
                    count = fo_step_value(found)
                    if count < 0:
                        return False  # the full path handles any other step value
                self.steps[nactive] = count + 1
            else:
                self.steps[nactive] = 0
            memcpy(&self.active[nactive], &self.table[i], sizeof(fo_task))
            self.active[nactive].buf[1] = fo_arr_data(gobj)
            memcpy(&self.hyper[nactive * FO_MAX_HYPER],
                   &self.group_hyper[self.group_of[i] * FO_MAX_HYPER],
                   self.nhyper * sizeof(double))
            if self.step_slot >= 0:
                self.hyper[nactive * FO_MAX_HYPER + self.step_slot] = <double>self.steps[nactive]
            if self.first_slot >= 0:
                self.hyper[nactive * FO_MAX_HYPER + self.first_slot] = 0.0
            if self.advance is not None:
                # the scalar state's next values and this step's scalars: computed
                # once for every run of parameters at the same step with the same
                # values (all of them, in a model trained from the start)
                scalar_values = []
                for name in self.scalar_names:
                    found = fo_dict_get(entry, <PyObject *>name)
                    if found == NULL or type(<object>found) is not float:
                        return False  # the full path handles any other value
                    scalar_values.append(<object>found)
                key = (self.group_of[i], self.steps[nactive], tuple(scalar_values))
                if key != last_key:
                    scalars, last_new = self.advance(groups[self.group_of[i]],
                                                     self.steps[nactive], <object>entry)
                    for k in range(self.nadvanced):
                        advanced[k] = float(scalars[self.advanced_names[k]])
                    last_key = key
                for k in range(self.nadvanced):
                    self.hyper[nactive * FO_MAX_HYPER + self.advanced_slot[k]] = advanced[k]
                new_scalars.append(last_new)
            self.active[nactive].hyper = &self.hyper[nactive * FO_MAX_HYPER]
            if self.active[nactive].nsums > 0:
                # the first pass writes its sums into the last scalars, where the
                # second pass reads them (as `run` lays them out)
                self.active[nactive].sums = &self.hyper[nactive * FO_MAX_HYPER + self.nhyper
                                                        - self.active[nactive].nsums]
            self.active_flag[i] = True
            self.active_index[nactive] = i
            nactive += 1
        # A gradient may not overlap a buffer written this step: the written spans are
        # sorted and disjoint, so a binary search finds the first candidate.  A
        # gradient at the same address and size as one that overlapped no span at
        # all (the spans are fixed for the plan's life) needs no search: training
        # loops usually reuse their gradient buffers.
        for k in range(nactive):
            if self.active[k].n == 0:
                continue
            i = self.active_index[k]
            gobj = fo_list_item(glist, i)
            gs = <uintptr_t>fo_arr_data(gobj)
            ge = gs + <uintptr_t>fo_arr_nbytes(gobj)
            if self.clear_start[i] == gs and self.clear_end[i] == ge:
                continue
            lo, hi = 0, self.nspans
            while lo < hi:
                mid = (lo + hi) // 2
                if self.spans[mid].end <= gs:
                    lo = mid + 1
                else:
                    hi = mid
            clear = True
            while lo < self.nspans and self.spans[lo].start < ge:
                clear = False
                if self.active_flag[self.spans[lo].task]:
                    return False
                lo += 1
            if clear:
                self.clear_start[i] = gs
                self.clear_end[i] = ge
        nrun = _coalesce(self.active, nactive, self.nbuf, self.nhyper)
        self.last_calls = nrun
        with nogil:
            fo_run_threads(self.active, nrun, num_threads)
        if self.tracks_step:
            for k in range(nactive):
                if self.steps[k] != step_value:   # parameters mostly share one step
                    step_value = self.steps[k]
                    step_object = step_value
                PyDict_SetItem(<object>self.dict_ptr[self.active_index[k]], self.step_key,
                               step_object)
        if new_scalars is not None:
            for k in range(nactive):
                last_new = new_scalars[k]
                for name in self.scalar_names:
                    PyDict_SetItem(<object>self.dict_ptr[self.active_index[k]], name,
                                   last_new[name])
        # what each checked entry now holds, at its version after these writes; the
        # state dict's version counts only when every parameter's entry was checked
        for k in range(nactive):
            i = self.active_index[k]
            self.entry_version[i] = fo_dict_version(self.dict_ptr[i])
            self.entry_step[i] = self.steps[k]
        self.state_version = (fo_dict_version(<PyObject *>state)
                              if nactive == self.nparams else 0)
        return True


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


def _run_factored(list tasks, labels, int num_threads=0):
    """`run` for factored kernels: the same checks, with the state's own shapes."""
    cdef Py_ssize_t ntasks = len(tasks), t, s, nspans = 0
    cdef cnp.ndarray a, param
    cdef char *bufs[FO_MAX_BUFS]
    cdef double hyper[FO_MAX_HYPER]
    cdef int64_t dims[3]
    cdef int is_f64
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
            _check_buffer(buffers[0], t, 0, None, True, labels)
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
                    if not cnp.PyArray_Check(obj):
                        raise TypeError(f"{_label(labels, t, s)} must be a numpy.ndarray, "
                                        f"got {type(obj).__name__}")
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
        is_f64 = cnp.PyArray_TYPE(<cnp.ndarray>buffers[0]) == cnp.NPY_FLOAT64
        for s in range(FO_MAX_BUFS):
            bufs[s] = NULL
        for s in range(len(buffers)):
            if buffers[s] is not None:
                bufs[s] = <char *>cnp.PyArray_DATA(<cnp.ndarray>buffers[s])
        for s in range(len(values)):
            hyper[s] = values[s]
        dims[0], dims[1], dims[2] = shape
        with nogil:
            fo_run_factored(entry, is_f64, bufs, dims[0], dims[1], dims[2], hyper,
                            num_threads)


from sys import intern as sys_intern
import os as _os
if _os.environ.get("FASTOPT_ISA"):
    set_isa(_os.environ["FASTOPT_ISA"].strip().lower())
_prefetch_env = _os.environ.get("FASTOPT_PREFETCH", "").strip()
if _prefetch_env not in ("", "0", "1"):
    raise ImportError(f"FASTOPT_PREFETCH must be 0 or 1, got {_prefetch_env!r}")
set_prefetch(None if _prefetch_env == "" else _prefetch_env == "1")
_fma_env = _os.environ.get("FASTOPT_FMA_DIVISION", "").strip()
if _fma_env not in ("",) + FMA_DIVISION_MODES:
    raise ImportError(f"FASTOPT_FMA_DIVISION must be one of {', '.join(FMA_DIVISION_MODES)}, "
                      f"got {_fma_env!r}")
set_fma_division(_fma_env or None)
# start the average of this process's own load now, so that the first large step
# already counts the CPU time this process used since it imported fastopt
fo_own_load_average()


# -- the functional API's compiled front end ---------------------------------------------

from cpython.object cimport PyObject_RichCompareBool, Py_EQ
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM

cdef enum:
    _FAST_SLOTS = 4     # sets of validated hyperparameters a FastStep keeps
cdef long long _MAX_STEP = 9007199254740992  # 2**53, the largest step a double holds exactly

cdef bint _same_value(object a, object b) noexcept:
    """Whether hyperparameter values `a` and `b` validate alike and pack to the same
    scalars: the same object, or the same exact type (float, int, bool, or a tuple of
    them) and the same value, floats compared bit for bit (so -0.0 is not 0.0)."""
    cdef double x, y
    cdef Py_ssize_t i, n
    if a is b:
        return True
    t = type(a)
    if t is not type(b):
        return False
    if t is float:
        x = PyFloat_AS_DOUBLE(a)
        y = PyFloat_AS_DOUBLE(b)
        return memcmp(&x, &y, sizeof(double)) == 0
    if t is int:
        try:
            return PyObject_RichCompareBool(a, b, Py_EQ) == 1
        except BaseException:
            return False
    if t is tuple:
        n = PyTuple_GET_SIZE(a)
        if n != PyTuple_GET_SIZE(b):
            return False
        for i in range(n):
            if not _same_value(<object>PyTuple_GET_ITEM(a, i), <object>PyTuple_GET_ITEM(b, i)):
                return False
        return True
    return False  # bool, None: two that are not the same object differ


cdef bint _cacheable(object value) noexcept:
    """Whether `value` is of a type :func:`_same_value` can compare (float, int, bool,
    None, or a tuple of them)."""
    t = type(value)
    if t is float or t is int or t is bool or value is None:
        return True
    if t is tuple:
        for item in value:
            if not _cacheable(item):
                return False
        return True
    return False


cdef int _PRESENT_FLAGS = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED


cdef class FastStep:
    """The compiled front end of one function of :mod:`fastopt.functional`.

    A call with hyperparameters equal (same types, same values) to ones that passed
    full validation before, an integer step, exact ``numpy.ndarray`` buffers whose
    layout the kernel takes and no overlap runs the kernel directly: no dict, no
    Python-level checks.  Anything else (a first call, new hyperparameters, a
    subclass, a bad buffer) returns False having written nothing, and the caller
    takes the full path, which validates everything and raises the documented
    errors; :meth:`remember` then stores the validated values.

    Parameters
    ----------
    kernel : str
        The kernel's name (element-wise or factored).
    names : tuple of str
        The hyperparameters the function passes, in the order it passes them.
    step_slot, first_slot, scale_slot : int
        Where the step, the first-step flag and the loss scale go among the kernel's
        scalars (-1: the kernel has no such scalar).
    advanced_slots : tuple of int
        Where the per-step scalars the caller keeps (NAdam's ``mu_product``, ASGD's
        ``eta`` and ``mu``) go, in the order they are passed.
    """
    cdef readonly str kernel
    cdef readonly tuple names
    cdef int index           # element-wise table index, or -1 for a factored kernel
    cdef int factored        # factored table index, or -1
    cdef int nbuf, nhyper
    cdef int step_slot, first_slot, scale_slot
    cdef int nadvanced
    cdef int advanced_slots[FO_MAX_HYPER]
    cdef list values        # _FAST_SLOTS validated hyperparameter tuples (or None)
    cdef double packed[_FAST_SLOTS][FO_MAX_HYPER]
    cdef int needed[_FAST_SLOTS][FO_MAX_BUFS]
    cdef Py_ssize_t last_use[_FAST_SLOTS]  # `uses` when each set was last used
    cdef Py_ssize_t uses
    cdef readonly Py_ssize_t hits

    def __init__(self, str kernel, tuple names, int step_slot, int first_slot,
                 int scale_slot, tuple advanced_slots=()):
        cdef int k
        self.kernel = kernel
        self.names = names
        if kernel in _INDEX:
            self.index = _INDEX[kernel]
            self.factored = -1
            self.nbuf = len(_LAYOUTS[self.index][1])
            self.nhyper = len(_LAYOUTS[self.index][2])
        elif kernel in _FACTORED_INDEX:
            self.index = -1
            self.factored = _FACTORED_INDEX[kernel]
            self.nbuf = len(FACTORED[kernel][0])
            self.nhyper = len(FACTORED[kernel][1])
        else:
            raise ValueError(f"no compiled kernel named {kernel!r}")
        if self.nbuf > FO_MAX_BUFS or self.nhyper > FO_MAX_HYPER:
            raise ValueError(f"kernel {kernel!r} has too many buffers or scalars")
        for k in (step_slot, first_slot, scale_slot) + advanced_slots:
            if k >= self.nhyper:
                raise ValueError(f"slot {k} is out of range for kernel {kernel!r}")
        self.step_slot = step_slot
        self.first_slot = first_slot
        self.scale_slot = scale_slot
        self.nadvanced = len(advanced_slots)
        for k in range(self.nadvanced):
            self.advanced_slots[k] = advanced_slots[k]
        self.values = [None] * _FAST_SLOTS
        self.uses = 0
        self.hits = 0

    def remember(self, tuple values, packed, needed):
        """Store `values` (validated) with the kernel scalars `packed` they give
        (per-step slots as they are) and the `needed` flag of each state buffer.
        Values of other types than float, int, bool and tuples of them are not
        stored (their equality cannot be checked here)."""
        cdef int k, slot
        if len(packed) != self.nhyper or len(needed) != self.nbuf - 2:
            raise ValueError("packed scalars or needed flags do not match the kernel")
        if not _cacheable(values):
            return
        self.uses += 1
        for slot in range(_FAST_SLOTS):
            if self.values[slot] is not None and _same_value(self.values[slot], values):
                self.last_use[slot] = self.uses
                return
        # replace an empty set, else the one used longest ago
        slot = 0
        for k in range(_FAST_SLOTS):
            if self.values[k] is None:
                slot = k
                break
            if self.last_use[k] < self.last_use[slot]:
                slot = k
        self.last_use[slot] = self.uses
        for k in range(self.nhyper):
            self.packed[slot][k] = packed[k]
        for k in range(FO_MAX_BUFS):
            self.needed[slot][k] = 1 if k < 2 or (k < self.nbuf and needed[k - 2]) else 0
        self.values[slot] = values

    def forget(self):
        """Drop every stored set of values."""
        self.values = [None] * _FAST_SLOTS

    cpdef bint run(self, tuple buffers, tuple values, object step, object first_step,
                   object grad_scale, tuple advanced) except -1:
        """Run the step if everything is known valid; else return False, having
        written nothing (the caller then takes the full path)."""
        cdef int slot, k, s, j, nd, typenum, nspans = 0
        cdef int overflow = 0
        cdef long long step_value
        cdef double hyper[FO_MAX_HYPER]
        cdef double scale
        cdef fo_task task
        cdef cnp.ndarray param, a
        cdef uintptr_t starts[FO_MAX_BUFS]
        cdef uintptr_t ends[FO_MAX_BUFS]
        cdef int writable[FO_MAX_BUFS]
        cdef int64_t n
        cdef const fo_kernel_entry *entry
        cdef const fo_factored_entry *fentry
        # hyperparameters validated before
        for slot in range(_FAST_SLOTS):
            known = <object>PyList_GET_ITEM(self.values, slot)
            if known is not None and _same_value(known, values):
                break
        else:
            return False
        memcpy(hyper, self.packed[slot], self.nhyper * sizeof(double))
        # per-step scalars
        if type(first_step) is not bool:
            return False
        if self.step_slot >= 0:
            if type(step) is not int:
                return False
            step_value = PyLong_AsLongLongAndOverflow(step, &overflow)
            if overflow != 0 or step_value < 1 or step_value > _MAX_STEP:
                return False
            hyper[self.step_slot] = <double>step_value
        if self.first_slot >= 0:
            hyper[self.first_slot] = 1.0 if first_step is True else 0.0
        if grad_scale is not None:
            if type(grad_scale) is not float:
                return False
            scale = PyFloat_AS_DOUBLE(grad_scale)
            if not (0.0 < scale < float("inf")):
                return False
            if self.scale_slot < 0:
                return False
            hyper[self.scale_slot] = scale
        elif self.scale_slot >= 0:
            hyper[self.scale_slot] = 1.0
        if PyTuple_GET_SIZE(advanced) != self.nadvanced:
            return False
        for k in range(self.nadvanced):
            item = <object>PyTuple_GET_ITEM(advanced, k)
            if type(item) is not float:
                return False
            hyper[self.advanced_slots[k]] = PyFloat_AS_DOUBLE(item)
        # buffers: exact ndarrays of the parameter's dtype, layout and shape
        if PyTuple_GET_SIZE(buffers) != self.nbuf:
            return False
        obj = <object>PyTuple_GET_ITEM(buffers, 0)
        if not cnp.PyArray_CheckExact(obj):
            return False
        param = <cnp.ndarray>obj
        typenum = cnp.PyArray_TYPE(param)
        if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
            return False
        nd = cnp.PyArray_NDIM(param)
        n = cnp.PyArray_SIZE(param)
        memset(&task, 0, sizeof(fo_task))
        for s in range(self.nbuf):
            obj = <object>PyTuple_GET_ITEM(buffers, s)
            if self.factored >= 0 and s >= 2:
                # a parameter of fewer than two dimensions keeps only `variance`, the
                # last buffer, shaped like itself (the row and column factors are not
                # used, as on the full path); matrices take the full path
                if nd >= 2:
                    return False
                if s < self.nbuf - 1:
                    continue
            elif not self.needed[slot][s]:
                continue  # the options do not use this buffer: never touched
            if not cnp.PyArray_CheckExact(obj):
                return False
            a = <cnp.ndarray>obj
            if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISNOTSWAPPED(a):
                return False
            if (cnp.PyArray_FLAGS(a) & _PRESENT_FLAGS) != _PRESENT_FLAGS:
                return False
            if s != 1 and not cnp.PyArray_ISWRITEABLE(a):
                return False
            if cnp.PyArray_NDIM(a) != nd:
                return False
            for j in range(nd):
                if cnp.PyArray_DIM(a, j) != cnp.PyArray_DIM(param, j):
                    return False
            task.buf[s] = <char *>cnp.PyArray_DATA(a)
            if n > 0:
                starts[nspans] = <uintptr_t>task.buf[s]
                ends[nspans] = starts[nspans] + <uintptr_t>cnp.PyArray_NBYTES(a)
                writable[nspans] = s != 1
                for j in range(nspans):
                    if (writable[j] or writable[nspans]) and starts[nspans] < ends[j] \
                            and starts[j] < ends[nspans]:
                        return False
                nspans += 1
        self.hits += 1
        self.uses += 1
        self.last_use[slot] = self.uses
        if n == 0:
            return True
        if self.factored >= 0:
            fentry = &fo_factored_kernels[self.factored]
            if n < FO_CHUNK:
                # as below: a step this short takes less time than releasing the GIL
                fo_run_factored(fentry, typenum == cnp.NPY_FLOAT64, task.buf, 1, 1, n, hyper,
                                0)
            else:
                with nogil:
                    fo_run_factored(fentry, typenum == cnp.NPY_FLOAT64, task.buf, 1, 1, n,
                                    hyper, 0)
            return True
        entry = &fo_kernels[self.index]
        task.fn = fo_select(entry, typenum == cnp.NPY_FLOAT64)
        task.n = n
        task.itemsize = 8 if typenum == cnp.NPY_FLOAT64 else 4
        task.hyper = hyper
        if entry.nsums > 0:
            task.reduce = fo_select_reduce(entry, typenum == cnp.NPY_FLOAT64)
            task.nsums = entry.nsums
            task.sums = &hyper[self.nhyper - entry.nsums]
        if n < FO_CHUNK:
            # a step this short takes less time than releasing the GIL would
            fo_run_threads(&task, 1, 0)
        else:
            with nogil:
                fo_run_threads(&task, 1, 0)
        return True
