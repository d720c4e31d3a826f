"""The explicit-buffer API: one function per algorithm, over one parameter.

Each function updates `param` and its state buffers in place with one fused pass of the
compiled kernel and returns ``None``; `grad` is only read.  All buffers must be
C-contiguous NumPy arrays of one dtype (float32 or float64) and one shape, none of the
written ones may overlap any other, and every hyperparameter is keyword-only and
required.  Everything is checked before anything is written: a ``TypeError`` or
``ValueError`` names the offending argument and leaves every buffer as it was.

``step`` is the 1-based number of the step being taken (torch increments its ``step``
state before the update, so the first call passes ``step=1``).

``grad_scale`` (every function, default None): a loss scale the gradient is divided by
inside the pass, before anything else uses it (``d = (-g if maximize else g) /
grad_scale``, the order of torch's fused kernels); it must be finite and > 0.  None
runs the unscaled loop.

Calls are cheap when the hyperparameters repeat: each function hands its call to a
compiled front end first, which runs the kernel directly (well under a microsecond for
a small parameter) when the hyperparameters are equal, in type and bit for bit, to ones
this function validated before (the last four sets are kept), the step is an ``int``
and the buffers are plain ``numpy.ndarray`` objects the kernel takes.  Anything else
takes the full path in Python, which checks everything and raises the errors above.

The optimizer classes of :mod:`fastopt.optim` call the same kernels for all their
parameters at once; :mod:`fastopt.reference` holds the NumPy twin of each function here.
"""
import numbers

import numpy as np

from . import _kernels
from ._registry import check_grad_scale, get_algorithm

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam",
           "radam", "asgd", "rprop", "lion", "adabelief", "yogi", "adan", "lamb", "lars",
           "adafactor"]


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


def _check_real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _front(name):
    """The compiled front end (:class:`fastopt._kernels.FastStep`) of function `name`."""
    algorithm = get_algorithm(name)
    scalars = algorithm.kernel_scalars

    def slot(scalar):
        return scalars.index(scalar) if scalar in algorithm.per_param else -1

    return _kernels.FastStep(algorithm.kernel,
                             tuple(h.name for h in algorithm.hyper if h.kernel_names != ()),
                             slot("step"), slot("first_step"), slot("grad_scale"),
                             tuple(scalars.index(n) for n in algorithm.advanced))


def _apply(name, buffers, values, step, first_step, grad_scale, advanced):
    """The full path of function `name`: validate everything, then run the kernel.

    Each function first offers its call to its compiled front end, which runs it only
    when everything is known valid (hyperparameters that passed this function before,
    an int step, plain arrays the kernel takes); otherwise, having written nothing, it
    lands here.  `values` are the function's hyperparameters in the order of
    ``FastStep.names``, `advanced` the per-step scalars the caller keeps (in the order
    of ``Algorithm.advanced``).  Validated hyperparameters are handed to the front end
    for the next call.
    """
    algorithm = get_algorithm(name)
    front = _FRONTS[name]
    hyper = dict(zip(front.names, values))
    algorithm.validate(hyper)
    needed_flags = tuple(s.needed(hyper) for s in algorithm.state)
    packed = algorithm.pack(hyper)
    front.remember(values, packed, needed_flags)
    grad_scale = check_grad_scale(grad_scale)
    advanced = {n: _check_real(n, v) for n, v in zip(algorithm.advanced, advanced)}
    if "step" in algorithm.per_param:
        step = _check_step(step)
    if not isinstance(first_step, (bool, np.bool_)):
        raise TypeError(f"first_step must be a bool, got {type(first_step).__name__}")
    buffer_names = algorithm.buffer_names
    if not isinstance(buffers[0], np.ndarray):  # before the state it decides is needed
        raise TypeError(f"param must be a numpy.ndarray, got {type(buffers[0]).__name__}")
    shape = buffers[0].shape

    def used(state):
        return state.needed(hyper) and state.shape_for(shape) is not None

    for state, value in zip(algorithm.state, buffers[2:]):
        if used(state) and value is None:
            raise TypeError(f"{state.name} is required with these options, got None")
    buffers = tuple(b if s < 2 or used(algorithm.state[s - 2]) else None
                    for s, b in enumerate(buffers))
    scalars = algorithm.scalars(packed, step or 0, first_step, grad_scale, advanced)
    _kernels.run([(algorithm.kernel, buffers, scalars)],
                 lambda task, slot: buffer_names[slot])


def sgd(param, grad, momentum_buffer=None, *, lr, momentum, dampening, weight_decay,
        nesterov, maximize, first_step, grad_scale=None):
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
    buffers = (param, grad, momentum_buffer)
    values = (lr, momentum, dampening, weight_decay, nesterov, maximize)
    if not _SGD(buffers, values, None, first_step, grad_scale, ()):
        _apply("sgd", buffers, values, None, first_step, grad_scale, ())


def adagrad(param, grad, sum, *, step, lr, lr_decay, weight_decay, eps, maximize,
            grad_scale=None):
    r"""Fused in-place Adagrad step (torch.optim.Adagrad semantics).

    .. math::

        \tilde\gamma &= \gamma / (1 + (t - 1)\,\eta) \\
        d &= \pm g + \lambda\,\theta \\
        s &\leftarrow s + d^2 \\
        \theta &\leftarrow \theta - \tilde\gamma\, d / (\sqrt{s} + \epsilon)

    with :math:`\gamma` = `lr`, :math:`\eta` = `lr_decay`, :math:`t` = `step`.
    ``sum`` is the accumulator (torch's state key).
    """
    buffers = (param, grad, sum)
    values = (lr, lr_decay, weight_decay, eps, maximize)
    if not _ADAGRAD(buffers, values, step, False, grad_scale, ()):
        _apply("adagrad", buffers, values, step, False, grad_scale, ())


def rmsprop(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *, step, lr,
            alpha, eps, weight_decay, momentum, centered, maximize, grad_scale=None):
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
    buffers = (param, grad, square_avg, momentum_buffer, grad_avg)
    values = (lr, alpha, eps, weight_decay, momentum, centered, maximize)
    if not _RMSPROP(buffers, values, step, False, grad_scale, ()):
        _apply("rmsprop", buffers, values, step, False, grad_scale, ())


def adadelta(param, grad, square_avg, acc_delta, *, step, lr, rho, eps, weight_decay,
             maximize, grad_scale=None):
    r"""Fused in-place Adadelta step (torch.optim.Adadelta semantics).

    .. math::

        d &= \pm g + \lambda\,\theta \\
        v &\leftarrow \rho\, v + (1 - \rho)\, d^2 \\
        \Delta &= \sqrt{u + \epsilon} / \sqrt{v + \epsilon}\; d \\
        u &\leftarrow \rho\, u + (1 - \rho)\, \Delta^2 \\
        \theta &\leftarrow \theta - \gamma\, \Delta

    with :math:`v` = `square_avg`, :math:`u` = `acc_delta`.
    """
    buffers = (param, grad, square_avg, acc_delta)
    values = (lr, rho, eps, weight_decay, maximize)
    if not _ADADELTA(buffers, values, step, False, grad_scale, ()):
        _apply("adadelta", buffers, values, step, False, grad_scale, ())


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, betas, eps,
         weight_decay, amsgrad, maximize, decoupled_weight_decay, grad_scale=None):
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
    buffers = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    values = (lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)
    if not _ADAM(buffers, values, step, False, grad_scale, ()):
        _apply("adam", buffers, values, step, False, grad_scale, ())


def adamw(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, betas, eps,
          weight_decay, amsgrad, maximize, grad_scale=None):
    r"""Fused in-place AdamW step: :func:`adam` with ``decoupled_weight_decay=True``.

    .. math::

        \theta \leftarrow \theta\,(1 - \gamma\lambda), \text{ then the Adam update
        without weight decay in } d.
    """
    buffers = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    values = (lr, betas, eps, weight_decay, amsgrad, maximize)
    if not _ADAMW(buffers, values, step, False, grad_scale, ()):
        _apply("adamw", buffers, values, step, False, grad_scale, ())


def adamax(param, grad, exp_avg, exp_inf, *, step, lr, betas, eps, weight_decay, maximize,
           grad_scale=None):
    r"""Fused in-place Adamax step (torch.optim.Adamax semantics).

    .. math::

        d &= \pm g + \lambda\,\theta \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d \\
        u &\leftarrow \max(\beta_2 u,\ |d| + \epsilon) \\
        \theta &\leftarrow \theta - \frac{\gamma}{1 - \beta_1^t}\, \frac{m}{u}

    with :math:`u` = `exp_inf` (torch's state key), :math:`\gamma` = `lr`.

    .. warning:: eps is added to :math:`|d|` inside the maximum, as torch does; the
       paper (Kingma and Ba, 2015, Algorithm 2) has no eps, and optax adds it to the
       denominator.

    References
    ----------
    Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1.
    """
    buffers = (param, grad, exp_avg, exp_inf)
    values = (lr, betas, eps, weight_decay, maximize)
    if not _ADAMAX(buffers, values, step, False, grad_scale, ()):
        _apply("adamax", buffers, values, step, False, grad_scale, ())


def nadam(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas, eps, weight_decay,
          momentum_decay, decoupled_weight_decay, maximize, mu_product, grad_scale=None):
    r"""Fused in-place NAdam step (torch.optim.NAdam semantics).

    .. math::

        \mu_t &= \beta_1 \left(1 - \tfrac12\, 0.96^{t\,\psi}\right), \quad
            \Pi_t = \textstyle\prod_{i \le t} \mu_i \\
        d &= \pm g \ (+\ \lambda\,\theta \text{ unless decoupled}), \quad
            \theta \leftarrow \theta\,(1 - \gamma\lambda) \text{ (decoupled)} \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d, \quad
            v \leftarrow \beta_2 v + (1 - \beta_2)\, d^2 \\
        \theta &\leftarrow \theta - \gamma \frac{1 - \mu_t}{1 - \Pi_t}
            \frac{d}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}
            - \gamma \frac{\mu_{t+1}}{1 - \Pi_t\,\mu_{t+1}}
            \frac{m}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}

    with :math:`\psi` = `momentum_decay`.  `mu_product` is :math:`\Pi_t`, the product
    *including* this step's :math:`\mu_t` (torch multiplies its ``mu_product`` state
    before the update); the caller keeps it between steps, as :class:`fastopt.NAdam`
    does.

    .. warning:: :class:`fastopt.NAdam` keeps ``mu_product`` in float32 whatever the
       parameter's dtype, as torch keeps it in its default dtype (float32 unless
       ``torch.set_default_dtype(torch.float64)``).

    References
    ----------
    Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    """
    buffers = (param, grad, exp_avg, exp_avg_sq)
    values = (lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize)
    if not _NADAM(buffers, values, step, False, grad_scale, (mu_product,)):
        _apply("nadam", buffers, values, step, False, grad_scale, (mu_product,))


def radam(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas, eps, weight_decay,
          decoupled_weight_decay, maximize, grad_scale=None):
    r"""Fused in-place RAdam step (torch.optim.RAdam semantics).

    .. math::

        d &= \pm g \ (+\ \lambda\,\theta \text{ unless decoupled}), \quad
            \theta \leftarrow \theta\,(1 - \gamma\lambda) \text{ (decoupled)} \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d, \quad
            v \leftarrow \beta_2 v + (1 - \beta_2)\, d^2 \\
        \rho_\infty &= \frac{2}{1 - \beta_2} - 1, \quad
            \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t} \\
        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
            {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        \theta &\leftarrow \theta - \gamma \frac{m}{1 - \beta_1^t}
            \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v} + \epsilon}\, r_t
            \quad\text{if } \rho_t > 5, \text{ else }
            \theta \leftarrow \theta - \gamma \frac{m}{1 - \beta_1^t}

    The rectification branch is chosen once per step (it depends on the step only).

    References
    ----------
    Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """
    buffers = (param, grad, exp_avg, exp_avg_sq)
    values = (lr, betas, eps, weight_decay, decoupled_weight_decay, maximize)
    if not _RADAM(buffers, values, step, False, grad_scale, ()):
        _apply("radam", buffers, values, step, False, grad_scale, ())


def asgd(param, grad, ax, *, lambd, weight_decay, maximize, eta, mu, grad_scale=None):
    r"""Fused in-place ASGD (averaged SGD) step (torch.optim.ASGD semantics).

    .. math::

        d &= \pm g + \lambda_{wd}\,\theta \\
        \theta &\leftarrow \theta\,(1 - \lambda\,\eta) - \eta\, d \\
        \bar\theta &\leftarrow \theta \text{ if } \mu = 1 \text{ else }
            \bar\theta + \mu\,(\theta - \bar\theta)

    with :math:`\lambda` = `lambd`, :math:`\bar\theta` = `ax`.  `eta` and `mu` are
    the per-parameter scalars *before* this step; after it, torch sets
    :math:`\eta = \gamma / (1 + \lambda\gamma t)^{\alpha}` and
    :math:`\mu = 1 / \max(1, t - t_0)` (:class:`fastopt.ASGD` does this, from `lr`,
    `alpha` and `t0`, which the pass itself does not use).

    .. warning:: :class:`fastopt.ASGD` keeps ``eta`` and ``mu`` in float32, as torch
       keeps them in its default dtype.

    References
    ----------
    Polyak and Juditsky, "Acceleration of Stochastic Approximation by Averaging",
    SIAM J. Control Optim. 30(4), 1992.
    """
    buffers = (param, grad, ax)
    values = (lambd, weight_decay, maximize)
    if not _ASGD(buffers, values, None, False, grad_scale, (eta, mu)):
        _apply("asgd", buffers, values, None, False, grad_scale, (eta, mu))


def rprop(param, grad, prev, step_size, *, etas, step_sizes, maximize, grad_scale=None):
    r"""Fused in-place Rprop step (torch.optim.Rprop semantics).

    .. math::

        f &= \eta_+ \text{ if } d\, d_{prev} > 0,\ \eta_- \text{ if }
            d\, d_{prev} < 0,\ 1 \text{ otherwise} \\
        s &\leftarrow \operatorname{clamp}(f\, s,\ s_{min},\ s_{max}) \\
        d &\leftarrow 0 \text{ where } f = \eta_- \\
        \theta &\leftarrow \theta - \operatorname{sign}(d)\, s, \quad
            d_{prev} \leftarrow d

    with :math:`d = \pm g`, :math:`(\eta_-, \eta_+)` = `etas`, :math:`(s_{min},
    s_{max})` = `step_sizes`, :math:`s` = `step_size` (a new one starts at `lr`).
    The sign of NaN is 0, as torch.sign.

    References
    ----------
    Riedmiller and Braun, "A Direct Adaptive Method for Faster Backpropagation
    Learning: The RPROP Algorithm", IEEE ICNN 1993.
    """
    buffers = (param, grad, prev, step_size)
    values = (etas, step_sizes, maximize)
    if not _RPROP(buffers, values, None, False, grad_scale, ()):
        _apply("rprop", buffers, values, None, False, grad_scale, ())


def lion(param, grad, exp_avg, *, lr, betas, weight_decay, maximize, grad_scale=None):
    r"""Fused in-place Lion step.

    .. math::

        \theta &\leftarrow \theta\,(1 - \gamma\lambda) \\
        \theta &\leftarrow \theta - \gamma\, \operatorname{sign}(\beta_1 m + (1 - \beta_1)\, d) \\
        m &\leftarrow \beta_2 m + (1 - \beta_2)\, d

    with :math:`d = \pm g`, :math:`\gamma` = `lr`, :math:`\lambda` = `weight_decay`
    (decoupled, as in the paper), :math:`m` = `exp_avg`.

    Conventions: :math:`\operatorname{sign}(0) = 0` (a coordinate whose interpolated
    momentum is exactly zero does not move), and the sign of NaN is NaN, so a NaN
    gradient shows in the parameter instead of being silently dropped.  Defaults
    (``lr=1e-4, betas=(0.9, 0.99), weight_decay=0``) follow the paper's advice of a
    learning rate 3-10x smaller than AdamW's.

    .. warning:: The paper and optax write weight decay as
       :math:`\theta - \gamma(\operatorname{sign}(c) + \lambda\theta)`; here it is
       applied first as :math:`\theta (1 - \gamma\lambda)`, as the authors' PyTorch
       code does: equal in exact arithmetic, different in rounding.

    References
    ----------
    Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
    arXiv:2302.06675, Program 1.
    """
    buffers = (param, grad, exp_avg)
    values = (lr, betas, weight_decay, maximize)
    if not _LION(buffers, values, None, False, grad_scale, ()):
        _apply("lion", buffers, values, None, False, grad_scale, ())


def adabelief(param, grad, exp_avg, exp_avg_var, *, step, lr, betas, eps, weight_decay,
              decoupled_weight_decay, maximize, grad_scale=None):
    r"""Fused in-place AdaBelief step.

    .. math::

        d &= \pm g \ (+\ \lambda\,\theta \text{ unless decoupled}), \quad
            \theta \leftarrow \theta\,(1 - \gamma\lambda) \text{ (decoupled)} \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d \\
        s &\leftarrow \beta_2 s + (1 - \beta_2)\,(d - m)^2 + \epsilon \\
        \theta &\leftarrow \theta - \frac{\gamma}{1 - \beta_1^t}\,
            \frac{m}{\sqrt{s} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`s` = `exp_avg_var`: the step is scaled by the "belief" in the gradient,
    the running variance of its deviation from the momentum :math:`m` (already updated
    with :math:`d`, as in the paper).

    .. warning:: eps enters twice, as in the paper's Algorithm 2 and the authors'
       code: added to :math:`s` inside the state, and to the denominator (optax calls
       the first one ``eps_root``; with ``eps_root = eps`` it computes this update).
       The authors' code's optional rectification (``rectify=True`` there) is not part
       of this update.

    References
    ----------
    Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
    Gradients", NeurIPS 2020, Algorithm 2.
    """
    buffers = (param, grad, exp_avg, exp_avg_var)
    values = (lr, betas, eps, weight_decay, decoupled_weight_decay, maximize)
    if not _ADABELIEF(buffers, values, step, False, grad_scale, ()):
        _apply("adabelief", buffers, values, step, False, grad_scale, ())


def yogi(param, grad, exp_avg, exp_avg_sq, *, lr, betas, eps, weight_decay, maximize,
         grad_scale=None):
    r"""Fused in-place Yogi step.

    .. math::

        d &= \pm g + \lambda\,\theta \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d \\
        v &\leftarrow v - (1 - \beta_2)\, \operatorname{sign}(v - d^2)\, d^2 \\
        \theta &\leftarrow \theta - \gamma\, \frac{m}{\sqrt{v} + \epsilon}

    The second moment moves towards :math:`d^2` by at most :math:`(1 - \beta_2)\,d^2`
    per step, an additive change whose size does not depend on :math:`v`, where Adam's
    average can forget a large :math:`v` quickly.  No bias correction, as in the
    paper's Algorithm 2; :class:`fastopt.Yogi` starts :math:`v` at
    ``initial_accumulator_value`` (1e-6 by default, optax's default) and :math:`m` at 0.
    sign(0) = 0.

    .. warning:: optax (0.2.8) differs: it bias-corrects both moments and also starts
       :math:`m` at ``initial_accumulator_value``.  Weight decay here is an L2 term
       added to the gradient (the paper has none).

    References
    ----------
    Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018,
    Algorithm 2.
    """
    buffers = (param, grad, exp_avg, exp_avg_sq)
    values = (lr, betas, eps, weight_decay, maximize)
    if not _YOGI(buffers, values, None, False, grad_scale, ()):
        _apply("yogi", buffers, values, None, False, grad_scale, ())


def adan(param, grad, exp_avg, exp_avg_diff, exp_avg_sq, pre_grad, *, step, lr, betas, eps,
         weight_decay, no_prox, maximize, first_step, grad_scale=None):
    r"""Fused in-place Adan step.

    .. math::

        \Delta &= d - d_{prev} \ (0 \text{ on the first step}), \quad
            u = d + \beta_2 \Delta \\
        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d, \quad
            v \leftarrow \beta_2 v + (1 - \beta_2)\, \Delta, \quad
            n \leftarrow \beta_3 n + (1 - \beta_3)\, u^2 \\
        \theta &\leftarrow \left(\theta - \gamma\,
            \frac{m / (1 - \beta_1^t) + \beta_2\, v / (1 - \beta_2^t)}
            {\sqrt{n / (1 - \beta_3^t)} + \epsilon}\right) / (1 + \gamma\lambda)

    with :math:`d = \pm g`, :math:`(m, v, n)` = (`exp_avg`, `exp_avg_diff`,
    `exp_avg_sq`), :math:`d_{prev}` = `pre_grad` (set to :math:`d` by every step; on
    the first step, ``first_step=True``, its contents are ignored).  With `no_prox`,
    weight decay is decoupled instead: :math:`\theta \leftarrow \theta(1 - \gamma\lambda)`
    before the update.

    Conventions: the authors' PyTorch code's parameterization, ``betas=(0.98, 0.92,
    0.99)``, where each :math:`\beta_k` is one minus the paper's (the paper's
    :math:`(0.02, 0.08, 0.01)`), with its bias corrections and its zero difference on
    the first step (the paper starts from :math:`m_0 = g_0`); the update is applied as
    two divisions by the denominator, in that code's order.

    .. warning:: optax (0.2.8) weights the gradient difference by :math:`1 - \beta_2`
       (0.08 with the defaults) in :math:`u` and in the update, where the paper
       (:math:`1 - \beta_2^{paper}`) and the authors' code use :math:`\beta_2` (0.92);
       the two do not agree.

    References
    ----------
    Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
    Models", IEEE TPAMI 2024, arXiv:2208.06677, Algorithm 1.
    """
    buffers = (param, grad, exp_avg, exp_avg_diff, exp_avg_sq, pre_grad)
    values = (lr, betas, eps, weight_decay, no_prox, maximize)
    if not _ADAN(buffers, values, step, first_step, grad_scale, ()):
        _apply("adan", buffers, values, step, first_step, grad_scale, ())


def lamb(param, grad, exp_avg, exp_avg_sq, *, step, lr, betas, eps, weight_decay, maximize,
         grad_scale=None):
    r"""Fused in-place LAMB step: Adam's direction, scaled per parameter (layer) by a
    trust ratio.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1)\, d, \quad
            v \leftarrow \beta_2 v + (1 - \beta_2)\, d^2 \\
        u &= \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}
            + \lambda\,\theta \\
        \theta &\leftarrow \theta - \gamma\, \frac{\lVert\theta\rVert}{\lVert u\rVert}\, u

    with :math:`d = \pm g`; the ratio is 1 when either norm is 0.  The norms are over
    the whole parameter (one parameter is one "layer"), computed in double by a first
    compiled pass over the buffers that writes nothing (no NumPy temporaries), in a
    fixed order that does not depend on threads (see ``csrc/fastopt.h``); the second
    pass writes the moments and the parameter.

    Conventions: the paper's Algorithm 2 with :math:`\phi` the identity (no clipping
    of the parameter norm), bias correction and decoupled weight decay inside the
    update, as in the paper and optax.

    References
    ----------
    You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020, Algorithm 2.
    """
    buffers = (param, grad, exp_avg, exp_avg_sq)
    values = (lr, betas, eps, weight_decay, maximize)
    if not _LAMB(buffers, values, step, False, grad_scale, ()):
        _apply("lamb", buffers, values, step, False, grad_scale, ())


def lars(param, grad, momentum_buffer=None, *, lr, momentum, weight_decay, trust_coefficient,
         nesterov, maximize, grad_scale=None):
    r"""Fused in-place LARS step: momentum SGD with a per-parameter (layer) learning rate.

    .. math::

        \tilde\gamma &= \gamma\, \eta\, \frac{\lVert\theta\rVert}
            {\lVert d\rVert + \lambda \lVert\theta\rVert} \\
        b &\leftarrow \mu\, b + \tilde\gamma\,(d + \lambda\,\theta) \\
        \theta &\leftarrow \theta - b \quad\text{(or }
            \theta - (\tilde\gamma\,(d + \lambda\theta) + \mu\, b)\text{ with nesterov)}

    with :math:`d = \pm g`, :math:`\eta` = `trust_coefficient`, :math:`\mu` =
    `momentum` (without momentum, :math:`\theta \leftarrow \theta - \tilde\gamma(d +
    \lambda\theta)` and `momentum_buffer` may be None).  The trust ratio is 1 when
    :math:`\lVert\theta\rVert` or the denominator is 0.  Norms as in :func:`lamb`: a
    first compiled pass, in double, in a fixed order.

    .. warning:: optax's ``lars`` divides by the norm of the decayed update,
       :math:`\lVert d + \lambda\theta\rVert` (+ eps); the paper, followed here, by
       :math:`\lVert d\rVert + \lambda\lVert\theta\rVert`.  They agree without weight
       decay.

    References
    ----------
    You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks",
    arXiv:1708.03888, 2017, Algorithm 1.
    """
    buffers = (param, grad, momentum_buffer)
    values = (lr, momentum, weight_decay, trust_coefficient, nesterov, maximize)
    if not _LARS(buffers, values, None, False, grad_scale, ()):
        _apply("lars", buffers, values, None, False, grad_scale, ())


def adafactor(param, grad, row_var=None, col_var=None, variance=None, *, step, lr,
              beta2_decay, eps, d, weight_decay, maximize, grad_scale=None):
    r"""In-place Adafactor step (torch.optim.Adafactor semantics).

    .. math::

        \hat\beta_{2,t} &= 1 - t^{c}, \quad \rho_t = \min(\gamma, 1/\sqrt t), \quad
            \alpha_t = \max(\epsilon_2, \operatorname{RMS}(\theta))\,\rho_t \\
        R &\leftarrow \hat\beta_{2,t} R + (1 - \hat\beta_{2,t})\,
            \operatorname{mean}_{cols}(d^2), \quad
        C \leftarrow \hat\beta_{2,t} C + (1 - \hat\beta_{2,t})\,
            \operatorname{mean}_{rows}(d^2) \\
        \hat v &= \frac{R\, C}{\max(\operatorname{mean}_{rows}(R), \epsilon_1)}
            \quad\text{(two or more dimensions; else }
            \hat v \leftarrow \hat\beta_{2,t} \hat v + (1 - \hat\beta_{2,t})\, d^2) \\
        u &= d / \sqrt{\max(\hat v, \epsilon_1^2)} \\
        \theta &\leftarrow \theta\,(1 - \gamma\lambda) - \frac{\alpha_t}
            {\max(1, \operatorname{RMS}(u) / d_{clip})}\, u

    with :math:`c` = `beta2_decay`, :math:`(\epsilon_1, \epsilon_2)` = `eps`
    (:math:`\epsilon_1` None: the dtype's machine epsilon), :math:`d_{clip}` = `d`,
    :math:`d = \pm g`.  A parameter of shape ``(..., rows, cols)`` keeps `row_var` of
    shape ``(..., rows, 1)`` and `col_var` of shape ``(..., 1, cols)`` (and no
    `variance`); one of fewer than two dimensions keeps `variance`, shaped like it.

    This is not an element-wise pass: a compiled kernel makes three passes over the
    parameter (its norm and the row and column sums of :math:`d^2`; the norm of
    :math:`u`; the update), with every sum in double, in a fixed order, and no NumPy
    temporaries.

    .. warning:: Every parameter must have at least one element (torch divides by
       ``numel ** 0.5``; here an empty parameter is left alone).  torch computes the
       norms and means in the element type; here they are summed in double.

    References
    ----------
    Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018.
    """
    buffers = (param, grad, row_var, col_var, variance)
    values = (lr, beta2_decay, eps, d, weight_decay, maximize)
    if not _ADAFACTOR(buffers, values, step, False, grad_scale, ()):
        _apply("adafactor", buffers, values, step, False, grad_scale, ())


#: The compiled front end of each function, by name.
_FRONTS = {name: _front(name) for name in __all__}
_SGD = _FRONTS["sgd"].run
_ADAGRAD = _FRONTS["adagrad"].run
_RMSPROP = _FRONTS["rmsprop"].run
_ADADELTA = _FRONTS["adadelta"].run
_ADAM = _FRONTS["adam"].run
_ADAMW = _FRONTS["adamw"].run
_ADAMAX = _FRONTS["adamax"].run
_NADAM = _FRONTS["nadam"].run
_RADAM = _FRONTS["radam"].run
_ASGD = _FRONTS["asgd"].run
_RPROP = _FRONTS["rprop"].run
_LION = _FRONTS["lion"].run
_ADABELIEF = _FRONTS["adabelief"].run
_YOGI = _FRONTS["yogi"].run
_ADAN = _FRONTS["adan"].run
_LAMB = _FRONTS["lamb"].run
_LARS = _FRONTS["lars"].run
_ADAFACTOR = _FRONTS["adafactor"].run
