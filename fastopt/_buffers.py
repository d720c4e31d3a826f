"""Parameter checks and state-buffer allocation, in one place.

Every state buffer fastopt creates comes from :func:`new_state_buffer`, so the choice
of alignment and placement of state memory is made here and nowhere else.
"""
import numpy as np

__all__ = ["check_param", "new_state_buffer"]


def check_param(param, label):
    """Raise TypeError/ValueError naming `label` unless `param` can be updated in place."""
    if not isinstance(param, np.ndarray):
        raise TypeError(f"{label} must be a numpy.ndarray, got {type(param).__name__}")
    if param.dtype not in (np.float32, np.float64):
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


def new_state_buffer(param, fill, slot=0):
    """A new C-contiguous state buffer shaped like `param`.

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
    slot : int
        Which state buffer of the parameter this is (0 for the first); buffers of one
        parameter get different placements.
    """
    nbytes = param.size * param.dtype.itemsize
    if nbytes < PLACED_MIN_BYTES:
        buffer = np.empty(param.shape, dtype=param.dtype)
    else:
        raw = np.empty(nbytes + 2 * _PAGE, dtype=np.uint8)
        target = (param.ctypes.data + (slot + 1) * _STAGGER) % _PAGE
        offset = (target - raw.ctypes.data) % _PAGE
        buffer = raw[offset:offset + nbytes].view(param.dtype).reshape(param.shape)
    if fill is not None:
        buffer.fill(fill)
    return buffer
