"""Parameter checks and state-buffer allocation, in one place.

Every state buffer fastopt creates comes from :func:`new_state_buffer`, so the choice
of alignment and placement of state memory is made here and nowhere else.
"""
import numpy as np

__all__ = ["check_param", "new_state_buffer", "new_state_run", "arena"]


def check_param(param, label):
    """Raise TypeError/ValueError naming `label` unless `param` can be updated in place."""
    if not isinstance(param, np.ndarray):
        raise TypeError(f"{label} must be a numpy.ndarray, got {type(param).__name__}")
    if param.dtype.type not in (np.float32, np.float64):  # '>f4' is byte-swapped float32
        raise TypeError(f"{label} must have dtype float32 or float64, got {param.dtype}")
    if not param.dtype.isnative:
        raise ValueError(f"{label} is byte-swapped; fastopt needs native byte order")
    if not param.flags.c_contiguous:
        raise ValueError(f"{label} must be C-contiguous (updating a copy would silently do "
                         "nothing)")
    if not param.flags.aligned:
        raise ValueError(f"{label} is not aligned to its element size")
    if not param.flags.writeable:
        raise ValueError(f"{label} is read-only; it is updated in place")


#: Buffers of at least this many bytes get a chosen placement (smaller ones: NumPy's).
PLACED_MIN_BYTES = 1 << 18
_PAGE = 4096
_STAGGER = 576  # bytes between the page offsets of consecutive state buffers


def new_state_buffer(param, fill, shape=None, slot=0):
    """A new C-contiguous state buffer shaped like `param` (or `shape`).

    Large buffers are placed so that their address modulo 4096 differs from the
    parameter's by ``(slot + 1) * 576`` bytes.  NumPy places every large array at the
    same offset within a page, so a loop that streams a parameter, its gradient and
    state buffers of 2**k elements would otherwise have all its loads and stores 4 KiB
    apart: stores then falsely appear to alias later loads (4K aliasing) and the
    streams compete for the same cache sets.  The parameter's alignment within a
    cache line is kept, so vector loops see the same misalignment on every stream.

    Parameters
    ----------
    param : ndarray
        The parameter the buffer belongs to (gives shape and dtype).
    fill : float or None
        The starting value, or None for a buffer the kernel initializes itself.
    shape : tuple, optional
        The buffer's shape when it is not the parameter's (Adafactor's factored
        state); such a buffer is allocated plainly.
    slot : int
        Which state buffer of the parameter this is (0 for the first); buffers of one
        parameter get different placements.
    """
    if shape is not None and tuple(shape) != param.shape:
        buffer = np.empty(shape, dtype=param.dtype)
    else:
        buffer = _allocate(param.size, param.dtype, param.ctypes.data, slot).reshape(param.shape)
    if fill is not None:
        buffer.fill(fill)
    return buffer


def _allocate(size, dtype, anchor, slot):
    """`size` elements of `dtype`, placed against address `anchor` (see above)."""
    dtype = np.dtype(dtype)
    nbytes = size * dtype.itemsize
    if nbytes < PLACED_MIN_BYTES:
        return np.empty(size, dtype=dtype)
    raw = np.empty(nbytes + 2 * _PAGE, dtype=np.uint8)
    target = (anchor + (slot + 1) * _STAGGER) % _PAGE
    offset = (target - raw.ctypes.data) % _PAGE
    return raw[offset:offset + nbytes].view(dtype)


def new_state_run(params, fill, slot=0):
    """State buffers for parameters that lie back to back in memory, as views of one
    buffer laid out the same way, so that the step over all of them is one pass.

    Parameters
    ----------
    params : list of ndarray
        Parameters of one dtype, each starting where the previous one ends.
    fill, slot
        As for :func:`new_state_buffer`.

    Returns
    -------
    list of ndarray
        One buffer per parameter, shaped like it.
    """
    total = sum(p.size for p in params)
    flat = _allocate(total, params[0].dtype, params[0].ctypes.data, slot)
    if fill is not None:
        flat.fill(fill)
    views, start = [], 0
    for p in params:
        views.append(flat[start:start + p.size].reshape(p.shape))
        start += p.size
    return views


def arena(shapes, dtype=np.float32):
    """Parameters allocated as views of one contiguous buffer.

    An optimizer over parameters that lie back to back (and gradients that do too)
    allocates their state back to back as well, and its step then streams the whole
    model in one pass, with no per-parameter overhead.

    Parameters
    ----------
    shapes : list of tuple
        The shape of each parameter.
    dtype : float32 or float64

    Returns
    -------
    flat : ndarray
        The one buffer, zero-filled, 64-byte aligned.
    views : list of ndarray
        One C-contiguous view of `flat` per shape, in order, back to back.

    Examples
    --------
    >>> flat, (w, b) = arena([(3, 2), (2,)])
    >>> w.base is flat or w.base.base is flat
    True
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    shapes = [tuple(int(d) for d in s) if isinstance(s, (tuple, list)) else (int(s),)
              for s in shapes]
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    total = sum(sizes)
    raw = np.zeros(total * dtype.itemsize + 64, dtype=np.uint8)
    offset = (-raw.ctypes.data) % 64
    flat = raw[offset:offset + total * dtype.itemsize].view(dtype)
    views, start = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(flat[start:start + size].reshape(shape))
        start += size
    return flat, views
