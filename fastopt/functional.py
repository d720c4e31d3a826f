"""The explicit-buffer API: one function per algorithm, over one parameter.

Each function updates `param` and its state buffers in place with one fused pass of the
compiled kernel and returns ``None``; `grad` is only read.  All buffers must be
C-contiguous NumPy arrays of one dtype (float32 or float64) and one shape, none of the
written ones may overlap any other, and every hyperparameter is keyword-only and
required.  Everything is checked before anything is written: a ``TypeError`` or
``ValueError`` names the offending argument and leaves every buffer as it was.

``step`` is the 1-based number of the step being taken (torch increments its ``step``
state before the update, so the first call passes ``step=1``).

The optimizer classes of :mod:`fastopt.optim` call the same kernels for all their
parameters at once; :mod:`fastopt.reference` holds the NumPy twin of each function here.
"""
import numbers

import numpy as np

from . import _kernels
from ._registry import get_algorithm

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw"]


#: The largest step count: the kernels receive the step as a double, exact up to 2**53.
MAX_STEP = 2**53


def _check_step(step):
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an integer, got {type(step).__name__}")
    if step < 1:
        raise ValueError(f"Invalid step: {step} (the first step is 1)")
    if step > MAX_STEP:
        raise ValueError(f"Invalid step: {step} (at most 2**53, the largest a double holds "
                         "exactly)")
    return int(step)


def _apply(name, buffers, hyper, step=None, first_step=False):
    algorithm = get_algorithm(name)
    algorithm.validate(hyper)
    if algorithm.tracks_step:
        step = _check_step(step)
    if not isinstance(first_step, (bool, np.bool_)):
        raise TypeError(f"first_step must be a bool, got {type(first_step).__name__}")
    buffer_names = algorithm.buffer_names
    for state, value in zip(algorithm.state, buffers[2:]):
        if state.needed(hyper) and value is None:
            raise TypeError(f"{state.name} is required with these options, got None")
    buffers = tuple(b if s < 2 or algorithm.state[s - 2].needed(hyper) else None
                    for s, b in enumerate(buffers))
    scalars = algorithm.scalars(algorithm.pack(hyper), step or 0, first_step)
    _kernels.run([(algorithm.kernel, buffers, scalars)],
                 lambda task, slot: buffer_names[slot])


def sgd(param, grad, momentum_buffer=None, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step):
    r"""Fused in-place SGD step (torch.optim.SGD semantics).

    .. math::

        d &= \pm g + \lambda\,\theta \\
        b &= d \text{ on the first step, else } \mu\, b + (1 - \tau)\, d \\
        \theta &\leftarrow \theta - \gamma\,(d + \mu\, b \text{ if nesterov else } b)

    with :math:`\gamma` = `lr`, :math:`\mu` = `momentum`, :math:`\tau` = `dampening`,
    :math:`\lambda` = `weight_decay`; without momentum :math:`\theta \leftarrow
    \theta - \gamma d`.

    Parameters
    ----------
    param : ndarray
        Updated in place.
    grad : ndarray
        Read only.
    momentum_buffer : ndarray or None
        Required when ``momentum != 0``; updated in place.
    lr, momentum, dampening, weight_decay : float
    nesterov, maximize : bool
    first_step : bool
        True on the first step with this momentum buffer: its contents are ignored and
        it is set to the gradient, as torch does when the buffer does not exist yet.
    """
    _apply("sgd", (param, grad, momentum_buffer),
           dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                nesterov=nesterov, maximize=maximize), first_step=first_step)


def adagrad(param, grad, sum, *, step, lr, lr_decay, weight_decay, eps, maximize):
    r"""Fused in-place Adagrad step (torch.optim.Adagrad semantics).

    .. math::

        \tilde\gamma &= \gamma / (1 + (t - 1)\,\eta) \\
        d &= \pm g + \lambda\,\theta \\
        s &\leftarrow s + d^2 \\
        \theta &\leftarrow \theta - \tilde\gamma\, d / (\sqrt{s} + \epsilon)

    with :math:`\gamma` = `lr`, :math:`\eta` = `lr_decay`, :math:`t` = `step`.
    ``sum`` is the accumulator (torch's state key).
    """
    _apply("adagrad", (param, grad, sum),
           dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                maximize=maximize), step)


def rmsprop(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *, step, lr,
            alpha, eps, weight_decay, momentum, centered, maximize):
    r"""Fused in-place RMSprop step (torch.optim.RMSprop semantics).

    .. math::

        d &= \pm g + \lambda\,\theta \\
        v &\leftarrow \alpha\, v + (1 - \alpha)\, d^2 \\
        \bar g &\leftarrow \alpha\, \bar g + (1 - \alpha)\, d \quad\text{(centered)} \\
        a &= \sqrt{v - \bar g^2} + \epsilon \ \text{(centered) or } \sqrt{v} + \epsilon \\
        b &\leftarrow \mu\, b + d / a, \quad \theta \leftarrow \theta - \gamma\, b
        \quad\text{(momentum > 0), else } \theta \leftarrow \theta - \gamma\, d / a

    `momentum_buffer` is required when ``momentum > 0``, `grad_avg` when `centered`.

    .. warning:: eps is added outside the square root, as in torch; Keras and TensorFlow
       add it inside.
    """
    _apply("rmsprop", (param, grad, square_avg, momentum_buffer, grad_avg),
           dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                centered=centered, maximize=maximize), step)


def adadelta(param, grad, square_avg, acc_delta, *, step, lr, rho, eps, weight_decay,
             maximize):
    r"""Fused in-place Adadelta step (torch.optim.Adadelta semantics).

    .. math::

        d &= \pm g + \lambda\,\theta \\
        v &\leftarrow \rho\, v + (1 - \rho)\, d^2 \\
        \Delta &= \sqrt{u + \epsilon} / \sqrt{v + \epsilon}\; d \\
        u &\leftarrow \rho\, u + (1 - \rho)\, \Delta^2 \\
        \theta &\leftarrow \theta - \gamma\, \Delta

    with :math:`v` = `square_avg`, :math:`u` = `acc_delta`.
    """
    _apply("adadelta", (param, grad, square_avg, acc_delta),
           dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize), step)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, betas, eps,
         weight_decay, amsgrad, maximize, decoupled_weight_decay):
    r"""Fused in-place Adam step (torch.optim.Adam semantics).

    .. math::

        d &= \pm g \ (+\ \lambda\,\theta \text{ unless decoupled}) \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d \\
        v &\leftarrow \beta_2 v + (1 - \beta_2)\, d^2 \\
        \hat v &= \max(\hat v, v) \text{ (amsgrad) or } v \\
        \theta &\leftarrow \theta\,(1 - \gamma\lambda) \text{ (decoupled)} \\
        \theta &\leftarrow \theta - \frac{\gamma}{1 - \beta_1^t}\,
            \frac{m}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \epsilon}

    `max_exp_avg_sq` is required when `amsgrad`.

    .. warning:: AMSGrad takes the maximum of the raw second moment (torch's choice;
       the paper's corrected version differs), and eps is added after the bias
       correction of the square root.
    """
    _apply("adam", (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
           dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                maximize=maximize, decoupled_weight_decay=decoupled_weight_decay), step)


def adamw(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, betas, eps,
          weight_decay, amsgrad, maximize):
    r"""Fused in-place AdamW step: :func:`adam` with ``decoupled_weight_decay=True``.

    .. math::

        \theta \leftarrow \theta\,(1 - \gamma\lambda), \text{ then the Adam update
        without weight decay in } d.
    """
    _apply("adamw", (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
           dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                maximize=maximize), step)
