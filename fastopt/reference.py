"""Pure-NumPy twins of the compiled kernels: the oracle the tests compare against.

Every function here has the same name, signature and in-place contract as its twin in
:mod:`fastopt.functional`: it updates ``param`` and the state buffers in place, never
writes ``grad``, and returns ``None``.  Each is written from the update rule of
torch.optim (2.13, ``foreach=False``), one NumPy operation per operation there, in the
same order and in the array's own precision (NumPy >= 2 casts a Python float to the
array's dtype before the operation, as torch casts a Python scalar).  The compiled
kernels are built without fused multiply-add, so for the same inputs they give the same
bits.

These functions favour being read over being fast: they allocate temporaries, and they
check nothing; use :mod:`fastopt.functional` for real work.
"""
import math

import numpy as np

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw"]


def _lerp(start, end, weight):
    """torch's ``start.lerp_(end, weight)`` with a scalar weight, in place on `start`.

    ATen casts the weight to the element type and takes the formula that is exact at
    the nearer end: ``start + w * (end - start)`` for ``|w| < 0.5``, otherwise
    ``end - (end - start) * (1 - w)``.
    """
    w = start.dtype.type(weight)
    if abs(w) < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (start.dtype.type(1) - w)


def _direction(param, grad, weight_decay, maximize):
    d = -grad if maximize else grad
    if weight_decay != 0:
        d = d + weight_decay * param
    return d


def sgd(param, grad, momentum_buffer=None, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step):
    """NumPy twin of :func:`fastopt.functional.sgd`."""
    d = _direction(param, grad, weight_decay, maximize)
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = d
        else:
            momentum_buffer[...] = momentum_buffer * momentum + (1 - dampening) * d
        d = d + momentum * momentum_buffer if nesterov else momentum_buffer
    param += -lr * d


def adagrad(param, grad, sum, *, step, lr, lr_decay, weight_decay, eps, maximize):
    """NumPy twin of :func:`fastopt.functional.adagrad`."""
    clr = lr / (1 + (step - 1) * lr_decay)
    d = _direction(param, grad, weight_decay, maximize)
    sum += d * d
    param += (-clr * d) / (np.sqrt(sum) + eps)


def rmsprop(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *, step, lr,
            alpha, eps, weight_decay, momentum, centered, maximize):
    """NumPy twin of :func:`fastopt.functional.rmsprop`."""
    d = _direction(param, grad, weight_decay, maximize)
    square_avg[...] = square_avg * alpha + ((1 - alpha) * d) * d
    if centered:
        _lerp(grad_avg, d, 1 - alpha)
        avg = np.sqrt(square_avg + (-grad_avg) * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum > 0:
        momentum_buffer[...] = momentum_buffer * momentum + d / avg
        param += -lr * momentum_buffer
    else:
        param += (-lr * d) / avg


def adadelta(param, grad, square_avg, acc_delta, *, step, lr, rho, eps, weight_decay,
             maximize):
    """NumPy twin of :func:`fastopt.functional.adadelta`."""
    d = _direction(param, grad, weight_decay, maximize)
    square_avg[...] = square_avg * rho + ((1 - rho) * d) * d
    std = np.sqrt(square_avg + eps)
    delta = np.sqrt(acc_delta + eps) / std * d
    acc_delta[...] = acc_delta * rho + ((1 - rho) * delta) * delta
    param += -lr * delta


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, betas, eps,
         weight_decay, amsgrad, maximize, decoupled_weight_decay):
    """NumPy twin of :func:`fastopt.functional.adam`."""
    beta1, beta2 = betas
    d = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            d = d + weight_decay * param
    _lerp(exp_avg, d, 1 - beta1)
    exp_avg_sq[...] = exp_avg_sq * beta2 + ((1 - beta2) * d) * d
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = np.sqrt(max_exp_avg_sq) / bias_correction2_sqrt + eps
    else:
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    param += (-step_size * exp_avg) / denom


def adamw(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, betas, eps,
          weight_decay, amsgrad, maximize):
    """NumPy twin of :func:`fastopt.functional.adamw`."""
    adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, betas=betas,
         eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
         decoupled_weight_decay=True)


# -- gradient clipping (twins of fastopt._ops) ---------------------------------------

_NORM_BLOCK = 1024  # fastopt._ops.NORM_BLOCK
_NORM_LANES = 8     # fastopt._ops.NORM_LANES


def _norm_tree(block_sums, lo, hi, combine):
    if hi - lo == 1:
        return block_sums[lo]
    mid = lo + (hi - lo) // 2
    return combine(_norm_tree(block_sums, lo, mid, combine),
                   _norm_tree(block_sums, mid, hi, combine))


def _max_nan(a, b):
    return a if (a != a or a > b) else b


def _norm_partial(grad, norm_type):
    """One buffer's sum of norm terms (or maximum), in the compiled order: blocks of
    1024 elements, 8 sequential lanes per block (``cumsum`` adds strictly in order;
    zero padding adds exact zeros), the lanes' fixed tree, then the blocks' pairwise
    tree."""
    x = np.abs(grad.ravel().astype(np.float64))
    n = x.size
    if n == 0:
        return 0.0
    if norm_type == np.inf or norm_type == 1.0:
        terms = x
    elif norm_type == 2.0:
        terms = x * x
    else:
        terms = np.array([math.pow(v, norm_type) for v in x.tolist()])  # libm pow, as C
    nblocks = -(-n // _NORM_BLOCK)
    padded = np.zeros(nblocks * _NORM_BLOCK)
    padded[:n] = terms
    lanes = padded.reshape(nblocks, _NORM_BLOCK // _NORM_LANES, _NORM_LANES)
    if norm_type == np.inf:
        block = np.max(np.max(lanes, axis=1), axis=1)  # NaN propagates
        return float(_norm_tree(block.tolist(), 0, nblocks, _max_nan))
    acc = np.cumsum(lanes, axis=1)[:, -1, :]
    block = (((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3]))
             + ((acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7])))
    return float(_norm_tree(block.tolist(), 0, nblocks, lambda a, b: a + b))


def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """NumPy twin of :func:`fastopt.clip_grad_norm_` (same order of every operation)."""
    grads = [grads] if isinstance(grads, np.ndarray) else [g for g in grads if g is not None]
    norm_type = float(norm_type)
    total = 0.0
    for g in grads:
        part = _norm_partial(g, norm_type)
        total = _max_nan(total, part) if norm_type == np.inf else total + part
    if norm_type == 2.0:
        total = math.sqrt(total)
    elif norm_type not in (1.0, np.inf):
        total = math.pow(total, 1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients is non-finite")
    coef = float(max_norm) / (total + 1e-6)
    if coef < 1.0 or coef != coef:
        for g in grads:
            g *= g.dtype.type(coef)
    return total


def clip_grad_value_(grads, clip_value):
    """NumPy twin of :func:`fastopt.clip_grad_value_`."""
    grads = [grads] if isinstance(grads, np.ndarray) else [g for g in grads if g is not None]
    for g in grads:
        c = g.dtype.type(clip_value)
        np.clip(g, -c, c, out=g)


__all__ += ["clip_grad_norm_", "clip_grad_value_"]
