"""fastopt: fused in-place optimizer updates for NumPy arrays on the CPU.

Each optimizer step is one pass over memory in compiled code, with the GIL released,
for float32 and float64 C-contiguous arrays; semantics, names and defaults are those of
torch.optim (2.13, ``foreach=False``).

>>> import numpy as np, fastopt
>>> w = np.zeros(3)
>>> opt = fastopt.Adam([w], lr=0.1)
>>> opt.step([np.array([1.0, -1.0, 0.0])])
>>> w
array([-0.1,  0.1,  0. ])
"""
from . import functional, lr_scheduler, reference
from ._ops import clip_grad_norm_, clip_grad_value_
from ._buffers import arena
from ._registry import ALGORITHMS, Algorithm, get_algorithm
from ._kernels import (get_flush_denormal, get_fma_division, get_num_threads, get_prefetch,
                       set_flush_denormal, set_fma_division, set_num_threads, set_prefetch)
from ._version import __version__
from .checkpoint import load, save
from .multi import MultiOptimizer
from .optim import *  # noqa: F401,F403  (one class per registry row)
from .optim import Optimizer

for _algorithm in ALGORITHMS.values():
    _algorithm.functional = getattr(functional, _algorithm.name)
    _algorithm.reference = getattr(reference, _algorithm.name)
del _algorithm

__all__ = [
    "ALGORITHMS", "Algorithm", "Optimizer", "get_algorithm", "functional", "reference",
    "__version__",
    # speed: a parameter arena, threads, flush-to-zero, per-CPU choices
    "arena", "set_num_threads", "get_num_threads", "set_flush_denormal", "get_flush_denormal",
    "set_prefetch", "get_prefetch", "set_fma_division", "get_fma_division",
    # around a step: several optimizers as one, clipping, schedules, checkpoints
    "MultiOptimizer", "clip_grad_norm_", "clip_grad_value_", "lr_scheduler", "save", "load",
] + [a.cls_name for a in ALGORITHMS.values()]
