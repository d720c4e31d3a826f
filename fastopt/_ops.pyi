from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

_Grad = NDArray[np.float32] | NDArray[np.float64]

NORM_BLOCK: int
NORM_LANES: int

def clip_grad_norm_(grads: _Grad | Iterable[_Grad | None], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float: ...
def clip_grad_value_(grads: _Grad | Iterable[_Grad | None], clip_value: float) -> None: ...
def check_grads(params: list[_Grad], grads: Sequence[_Grad | None], *,
                finite: bool = False) -> bool: ...
