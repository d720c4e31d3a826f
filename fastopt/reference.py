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

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam",
           "radam", "asgd", "rprop", "lion", "adabelief", "yogi", "adan", "lamb", "lars",
           "adafactor"]

#: The fixed order of the two-pass kernels' sums (csrc/fastopt.h): blocks of
#: SUM_BLOCK elements added in order, SUM_LANES running sums within a block.
SUM_BLOCK = 32768
SUM_LANES = 8


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


def _grad(grad, maximize, grad_scale):
    """The gradient the update uses: negated for maximize, divided by the loss scale."""
    d = -grad if maximize else grad
    if grad_scale is not None:
        d = d / grad_scale
    return d


def _direction(param, grad, weight_decay, maximize, grad_scale):
    d = _grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        d = d + weight_decay * param
    return d


def sgd(param, grad, momentum_buffer=None, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.sgd`."""
    d = _direction(param, grad, weight_decay, maximize, grad_scale)
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = d
        else:
            momentum_buffer[...] = momentum_buffer * momentum + (1 - dampening) * d
        d = d + momentum * momentum_buffer if nesterov else momentum_buffer
    param += -lr * d


def adagrad(param, grad, sum, *, step, lr, lr_decay, weight_decay, eps, maximize,
            grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.adagrad`."""
    clr = lr / (1 + (step - 1) * lr_decay)
    d = _direction(param, grad, weight_decay, maximize, grad_scale)
    sum += d * d
    param += (-clr * d) / (np.sqrt(sum) + eps)


def rmsprop(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *, step, lr,
            alpha, eps, weight_decay, momentum, centered, maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.rmsprop`."""
    d = _direction(param, grad, weight_decay, maximize, grad_scale)
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
             maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.adadelta`."""
    d = _direction(param, grad, weight_decay, maximize, grad_scale)
    square_avg[...] = square_avg * rho + ((1 - rho) * d) * d
    std = np.sqrt(square_avg + eps)
    delta = np.sqrt(acc_delta + eps) / std * d
    acc_delta[...] = acc_delta * rho + ((1 - rho) * delta) * delta
    param += -lr * delta


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, betas, eps,
         weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.adam`."""
    beta1, beta2 = betas
    d = _grad(grad, maximize, grad_scale)
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
          weight_decay, amsgrad, maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.adamw`."""
    adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, betas=betas,
         eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
         decoupled_weight_decay=True, grad_scale=grad_scale)


def _weight_decay(param, d, lr, weight_decay, decoupled_weight_decay):
    """Decoupled decay scales `param` in place; coupled decay is added to `d`."""
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            d = d + weight_decay * param
    return d


def adamax(param, grad, exp_avg, exp_inf, *, step, lr, betas, eps, weight_decay, maximize,
           grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.adamax`."""
    beta1, beta2 = betas
    d = _direction(param, grad, weight_decay, maximize, grad_scale)
    _lerp(exp_avg, d, 1 - beta1)
    np.maximum(exp_inf * beta2, np.abs(d) + eps, out=exp_inf)
    clr = lr / (1 - beta1**step)
    param += (-clr * exp_avg) / exp_inf


def nadam(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas, eps, weight_decay,
          momentum_decay, decoupled_weight_decay, maximize, mu_product, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.nadam`."""
    beta1, beta2 = betas
    bias_correction2 = 1 - beta2**step
    d = _weight_decay(param, _grad(grad, maximize, grad_scale), lr, weight_decay,
                      decoupled_weight_decay)
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
    _lerp(exp_avg, d, 1 - beta1)
    exp_avg_sq[...] = exp_avg_sq * beta2 + ((1 - beta2) * d) * d
    denom = np.sqrt(exp_avg_sq / bias_correction2) + eps
    param += ((-lr * (1.0 - mu) / (1.0 - mu_product)) * d) / denom
    param += (((-lr * mu_next) / (1.0 - mu_product * mu_next)) * exp_avg) / denom


def radam(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas, eps, weight_decay,
          decoupled_weight_decay, maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.radam`."""
    beta1, beta2 = betas
    d = _weight_decay(param, _grad(grad, maximize, grad_scale), lr, weight_decay,
                      decoupled_weight_decay)
    _lerp(exp_avg, d, 1 - beta1)
    exp_avg_sq[...] = exp_avg_sq * beta2 + ((1 - beta2) * d) * d
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    corrected = exp_avg / bias_correction1
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    if rho_t > 5.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        # torch evaluates `float / tensor` as `tensor.reciprocal() * float`
        adaptive = (1 / (np.sqrt(exp_avg_sq) + eps)) * bias_correction2**0.5
        param -= ((corrected * lr) * adaptive) * rect
    else:
        param -= corrected * lr


def asgd(param, grad, ax, *, lambd, weight_decay, maximize, eta, mu, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.asgd`."""
    d = _direction(param, grad, weight_decay, maximize, grad_scale)
    param *= 1 - lambd * eta
    param += -eta * d
    if mu != 1:
        ax += (param - ax) * mu
    else:
        ax[...] = param


def rprop(param, grad, prev, step_size, *, etas, step_sizes, maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.rprop`."""
    etaminus, etaplus = etas
    step_size_min, step_size_max = step_sizes
    one = param.dtype.type(1)
    d = _grad(grad, maximize, grad_scale)
    product = d * prev
    factor = np.where(product > 0, param.dtype.type(etaplus),
                      np.where(product < 0, param.dtype.type(etaminus), one))
    step_size[...] = np.minimum(np.maximum(step_size * factor, step_size_min), step_size_max)
    d = np.where(factor == param.dtype.type(etaminus), param.dtype.type(0), d)
    direction = (d > 0).astype(param.dtype) - (d < 0).astype(param.dtype)  # torch.sign
    param += -direction * step_size
    prev[...] = d


def _sign(x):
    """sign with sign(0) = 0, as (x > 0) - (x < 0) in the element type (NaN gives 0)."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def lion(param, grad, exp_avg, *, lr, betas, weight_decay, maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.lion`."""
    beta1, beta2 = betas
    d = _grad(grad, maximize, grad_scale)
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    c = exp_avg * beta1 + (1 - beta1) * d
    param += -lr * np.where(np.isnan(c), c, _sign(c))   # a NaN stays NaN
    exp_avg[...] = exp_avg * beta2 + (1 - beta2) * d


def adabelief(param, grad, exp_avg, exp_avg_var, *, step, lr, betas, eps, weight_decay,
              decoupled_weight_decay, maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.adabelief`."""
    beta1, beta2 = betas
    d = _weight_decay(param, _grad(grad, maximize, grad_scale), lr, weight_decay,
                      decoupled_weight_decay)
    exp_avg[...] = exp_avg * beta1 + (1 - beta1) * d
    residual = d - exp_avg
    exp_avg_var[...] = exp_avg_var * beta2 + ((1 - beta2) * residual) * residual
    exp_avg_var += eps
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    param += (-step_size * exp_avg) / (np.sqrt(exp_avg_var) / bias_correction2_sqrt + eps)


def yogi(param, grad, exp_avg, exp_avg_sq, *, lr, betas, eps, weight_decay, maximize,
         grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.yogi`."""
    beta1, beta2 = betas
    d = _direction(param, grad, weight_decay, maximize, grad_scale)
    exp_avg[...] = exp_avg * beta1 + (1 - beta1) * d
    d2 = d * d
    exp_avg_sq -= ((1 - beta2) * _sign(exp_avg_sq - d2)) * d2
    param += (-lr * exp_avg) / (np.sqrt(exp_avg_sq) + eps)


def adan(param, grad, exp_avg, exp_avg_diff, exp_avg_sq, pre_grad, *, step, lr, betas, eps,
         weight_decay, no_prox, maximize, first_step, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.adan`."""
    beta1, beta2, beta3 = betas
    d = _grad(grad, maximize, grad_scale)
    diff = np.zeros_like(d) if first_step else d - pre_grad
    u = diff * beta2 + d
    exp_avg[...] = exp_avg * beta1 + (1 - beta1) * d
    exp_avg_diff[...] = exp_avg_diff * beta2 + (1 - beta2) * diff
    exp_avg_sq[...] = exp_avg_sq * beta3 + ((1 - beta3) * u) * u
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    bias_correction3_sqrt = (1 - beta3**step) ** 0.5
    denom = np.sqrt(exp_avg_sq) / bias_correction3_sqrt + eps
    if weight_decay != 0 and no_prox:
        param *= 1 - lr * weight_decay
    param += (-(lr / bias_correction1) * exp_avg) / denom
    param += (-(lr * beta2 / bias_correction2) * exp_avg_diff) / denom
    if weight_decay != 0 and not no_prox:
        param /= 1 + lr * weight_decay
    pre_grad[...] = d


def _lane_total(lanes):
    a = [float(v) for v in lanes]
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


def _ordered_sum(values):
    """Sum of the float64 array `values` in the kernels' fixed order (see SUM_BLOCK)."""
    total = 0.0
    for begin in range(0, values.size, SUM_BLOCK):
        block = values[begin:begin + SUM_BLOCK]
        full = block.size - block.size % SUM_LANES
        lanes = np.zeros(SUM_LANES)
        if full:
            # accumulate runs down each column one row after another: lane j's
            # sequential running sum, as the kernel's lane j
            lanes = np.add.accumulate(block[:full].reshape(-1, SUM_LANES), axis=0)[-1].copy()
        lanes[:block.size - full] += block[full:]
        total += _lane_total(lanes)
    return total


def _squared_norm(x):
    x = x.reshape(-1).astype(np.float64)
    return _ordered_sum(x * x)


def lamb(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas, eps, weight_decay, maximize,
         grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.lamb`."""
    beta1, beta2 = betas
    d = _grad(grad, maximize, grad_scale)
    exp_avg[...] = exp_avg * beta1 + (1 - beta1) * d
    exp_avg_sq[...] = exp_avg_sq * beta2 + (1 - beta2) * (d * d)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    update = (exp_avg / bias_correction1) / (np.sqrt(exp_avg_sq / bias_correction2) + eps)
    if weight_decay != 0:
        update = update + weight_decay * param
    param_norm = math.sqrt(_squared_norm(param))
    update_norm = math.sqrt(_squared_norm(update))
    trust = param_norm / update_norm if param_norm > 0 and update_norm > 0 else 1.0
    param += -(lr * trust) * update


def lars(param, grad, momentum_buffer=None, *, lr, momentum, weight_decay, trust_coefficient,
         nesterov, maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.lars`."""
    d = _grad(grad, maximize, grad_scale)
    param_norm = math.sqrt(_squared_norm(param))
    grad_norm = math.sqrt(_squared_norm(d))
    denom = grad_norm + weight_decay * param_norm
    trust = trust_coefficient * param_norm / denom if param_norm > 0 and denom > 0 else 1.0
    if weight_decay != 0:
        d = d + weight_decay * param
    step = (lr * trust) * d
    if momentum != 0:
        momentum_buffer[...] = momentum_buffer * momentum + step
        step = step + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= step


def _last_of_running_sum(values, axis):
    """Sequential (left-to-right) sum along `axis`, as a loop that adds one at a time."""
    if values.shape[axis] == 0:
        return np.zeros(np.delete(values.shape, axis))
    return np.take(np.add.accumulate(values, axis=axis), -1, axis=axis)


def adafactor(param, grad, row_var=None, col_var=None, variance=None, *, step, lr,
              beta2_decay, eps, d, weight_decay, maximize, grad_scale=None):
    """NumPy twin of :func:`fastopt.functional.adafactor`."""
    eps1, eps2 = eps
    if eps1 is None:
        eps1 = float(np.finfo(param.dtype).eps)
    dtype = param.dtype.type
    g = _grad(grad, maximize, grad_scale)
    n = param.size
    one_minus_beta2_t = step**beta2_decay
    rho_t = min(lr, 1 / (step**0.5))
    param_rms = math.sqrt(_squared_norm(param)) / (n**0.5) if n else math.nan
    alpha = max(eps2, param_rms) * rho_t
    if param.ndim >= 2:
        batch, rows, cols = int(np.prod(param.shape[:-2])), param.shape[-2], param.shape[-1]
        squares = g.reshape(batch, rows, cols).astype(np.float64) ** 2
        row_sq = _last_of_running_sum(squares, 2)
        col_sq = _last_of_running_sum(squares, 1)
        rv = row_var.reshape(batch, rows)
        cv = col_var.reshape(batch, cols)
        with np.errstate(invalid="ignore", divide="ignore"):
            _lerp(rv, (row_sq / cols).astype(param.dtype), one_minus_beta2_t)
            _lerp(cv, (col_sq / rows).astype(param.dtype), one_minus_beta2_t)
            row_sum = _last_of_running_sum(rv.astype(np.float64), 1)
            row_mean = np.maximum((row_sum / rows).astype(param.dtype), dtype(eps1))
        estimate = ((rv[:, :, None] * cv[:, None, :]) / row_mean[:, None, None]).reshape(
            param.shape)
    else:
        _lerp(variance, g * g, one_minus_beta2_t)
        estimate = variance
    update = (1 / np.sqrt(np.maximum(estimate, dtype(eps1 * eps1)))) * g
    update_rms = math.sqrt(_squared_norm(update)) / ((n**0.5) * d) if n else math.nan
    denom = max(1.0, update_rms)
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    param += (-alpha / denom) * update


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
