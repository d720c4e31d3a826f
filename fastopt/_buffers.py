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


def new_state_buffer(param, fill):
    """A new C-contiguous state buffer shaped like `param`.

    Parameters
    ----------
    param : ndarray
        The parameter the buffer belongs to (gives shape and dtype).
    fill : float or None
        The starting value, or None for a buffer the kernel initializes itself.
    """
    buffer = np.empty(param.shape, dtype=param.dtype)
    if fill is not None:
        buffer.fill(fill)
    return buffer
