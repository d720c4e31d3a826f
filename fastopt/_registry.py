"""The one table of fastopt's algorithms.

Each :class:`Algorithm` row says everything the rest of the library needs about one
update rule: the compiled kernel that runs it, its hyperparameters with torch's names,
defaults and validation messages, the state it keeps and how that state starts, and the
option combinations the tests run it in.  The optimizer classes, the functional layer,
the tests, the benchmarks, ``__all__`` and the command line are all generated from
this table; adding an algorithm means adding a kernel, a reference twin and a row.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from . import _kernels

__all__ = ["Hyper", "State", "ScalarState", "Algorithm", "ALGORITHMS", "get_algorithm",
           "register"]


# -- hyperparameter checks ----------------------------------------------------------

def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond the double range: out of range, not a crash
        return math.inf if value > 0 else -math.inf


def _check_nonneg(name, value, message):
    v = _real(name, value)
    if not (0.0 <= v < math.inf):
        raise ValueError(message.format(value))


def _check_finite(name, value, message):
    v = _real(name, value)
    if not math.isfinite(v):
        raise ValueError(message.format(value))


def _check_unit(name, value, message):
    v = _real(name, value)
    if not (0.0 <= v <= 1.0):
        raise ValueError(message.format(value))


def _check_betas(name, value, message):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair of floats, got {value!r}")
    for index, beta in enumerate(value):
        v = _real(f"{name}[{index}]", beta)
        if not (0.0 <= v < 1.0):
            raise ValueError(message.format(beta, index=index))


def _check_pair(name, value, message):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair of floats, got {value!r}")
    for index, item in enumerate(value):
        if math.isnan(_real(f"{name}[{index}]", item)):
            raise ValueError(message.format(item, index=index))


def check_grad_scale(grad_scale):
    """`grad_scale` as a float, or None; TypeError/ValueError unless finite and > 0."""
    if grad_scale is None:
        return None
    if isinstance(grad_scale, (bool, np.bool_)) or not isinstance(grad_scale, numbers.Real):
        raise TypeError(f"grad_scale must be a real number or None, got "
                        f"{type(grad_scale).__name__}")
    value = float(grad_scale)
    if not (0.0 < value < math.inf):
        raise ValueError(f"grad_scale must be finite and > 0, got {grad_scale!r}")
    return value


def _check_real_value(name, value, message):
    if math.isnan(_real(name, value)):
        raise ValueError(message.format(value))


def _check_etas(name, value, message):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair of floats, got {value!r}")
    minus = _real(f"{name}[0]", value[0])
    plus = _real(f"{name}[1]", value[1])
    if not (0.0 < minus < 1.0 < plus):
        raise ValueError(message.format(value[0], value[1]))


def _check_betas3(name, value, message):
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise TypeError(f"{name} must be three floats, got {value!r}")
    for index, beta in enumerate(value):
        v = _real(f"{name}[{index}]", beta)
        if not (0.0 <= v < 1.0):
            raise ValueError(message.format(beta, index=index))


def _check_nonpos(name, value, message):
    v = _real(name, value)
    if not (-math.inf < v <= 0.0):
        raise ValueError(message.format(value))


def _check_at_least_one(name, value, message):
    v = _real(name, value)
    if not (1.0 <= v < math.inf):
        raise ValueError(message.format(value))


def _check_adafactor_eps(name, value, message):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (eps1 or None, eps2), got {value!r}")
    if value[0] is not None and not (0.0 <= _real(f"{name}[0]", value[0]) < math.inf):
        raise ValueError(f"epsilon1 should be >= 0 but is: {value[0]}")
    if not (0.0 <= _real(f"{name}[1]", value[1]) < math.inf):
        raise ValueError(f"epsilon2 should be >= 0 but is: {value[1]}")


def _check_bool(name, value, message):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


CHECKS = {
    "nonneg": _check_nonneg,      # 0 <= x < inf (NaN fails)
    "finite": _check_finite,      # any finite real
    "unit": _check_unit,          # 0 <= x <= 1
    "betas": _check_betas,        # pair, each 0 <= x < 1
    "pair": _check_pair,          # pair of reals, neither NaN
    "real": _check_real_value,    # any real but NaN (inf allowed)
    "etas": _check_etas,          # Rprop's 0 < etaminus < 1 < etaplus
    "betas3": _check_betas3,      # three, each 0 <= x < 1
    "nonpos": _check_nonpos,      # -inf < x <= 0
    "at_least_one": _check_at_least_one,   # 1 <= x < inf
    "adafactor_eps": _check_adafactor_eps,  # (None or >= 0, >= 0)
    "bool": _check_bool,
}


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: torch's name and default, and how to check it.

    Attributes
    ----------
    name, default
        As in the torch.optim constructor.
    check
        A key of :data:`CHECKS`.
    message
        torch's error wording, formatted with the offending value (and ``index=`` for
        a pair).
    kernel_names
        The kernel scalars this hyperparameter feeds: ``(name,)`` for a scalar, two
        names for a pair (``betas`` feeds ``beta1`` and ``beta2``), ``()`` when only
        the state's initialization uses it.
    """

    name: str
    default: object
    check: str
    message: str = ""
    kernel_names: tuple | None = None

    def validate(self, value):
        CHECKS[self.check](self.name, value, self.message or f"Invalid {self.name} value: {{}}")

    def flatten(self, value):
        names = (self.name,) if self.kernel_names is None else self.kernel_names
        if not names:
            return {}
        if len(names) == 1:
            return {names[0]: value}
        return dict(zip(names, value))


@dataclass(frozen=True)
class State:
    """One state buffer, with torch's key name.

    Attributes
    ----------
    name
        torch's state key (``exp_avg``, ``momentum_buffer``, ...).
    needed
        ``needed(group)`` says whether the group's options use this buffer.
    fill
        ``fill(group)`` gives the value a new buffer starts at; ``None`` means the
        kernel initializes it on the parameter's first step (``first_step``), as
        torch's SGD sets its momentum buffer to the first gradient.
    """

    name: str
    needed: Callable[[Mapping], bool] = lambda group: True
    fill: Callable[[Mapping], float] | None = lambda group: 0.0
    shape: Callable[[tuple], tuple | None] | None = None

    def shape_for(self, param_shape):
        """The buffer's shape for a parameter of `param_shape` (the parameter's own
        unless `shape` says otherwise), or None if such a parameter does not use it
        (Adafactor's factored state)."""
        return tuple(param_shape) if self.shape is None else self.shape(tuple(param_shape))


@dataclass(frozen=True)
class ScalarState:
    """One per-parameter scalar of state (torch keeps it as a 0-d tensor).

    Attributes
    ----------
    name
        torch's state key (``mu_product``, ``eta``, ``mu``).
    init
        ``init(group)`` gives its value before the parameter's first step.
    """

    name: str
    init: Callable[[Mapping], float]


#: The per-parameter kernel scalars that come from ``step()`` rather than from a
#: hyperparameter: the step count, the first-step flag, and the loss scale that the
#: gradients are divided by inside the pass (1 = no scale, the kernels' fast path).
STEP_SCALARS = ("step", "first_step", "grad_scale")


@dataclass
class Algorithm:
    """One row of the registry.  See the module docstring.

    Besides the fields every row fills, an algorithm may keep per-parameter scalar
    state (`scalar_state`, advanced in Python by ``advance(group, step, values) ->
    (kernel scalars, new values)``), may keep torch's ``step`` count without its kernel
    reading it (`keeps_step`), and may declare that a generic invariant does not hold
    for it: `lr_zero_is_no_op(group)` and `zero_grad_is_no_op(group)` (with weight
    decay 0) say whether lr = 0, or a zero gradient, leaves the parameter unchanged.

    `reads_first` names the buffers (``param``, ``grad`` or state) that an update
    needing sums over the whole parameter (LAMB's and LARS's norms, Adafactor's) must
    read in a pass of their own before the pass that writes: its memory shape, which
    the benchmark's ceiling and byte model follow, for a parameter of one dimension.

    `divider_ops` is ``(divisions, square roots)`` per element that an exact
    update with this memory shape runs on the core's divide unit: one division per
    value that changes from element to element and divides, and square roots (an
    exact division or square root from FMA operations alone, Newton steps from a
    reciprocal estimate with a proven error bound, would not need that unit; fastopt
    has none).  Divisions by one divisor for the whole loop are not counted (they can
    be done exactly with FMA operations for nearly every value; see
    fo_div_sqrt_const), nor a second division by the same value (NAdam's and Adan's
    two terms over one denominator: one division gives the reciprocal, and FMA
    operations both quotients; see fo_cdiv_make_shared), and an
    update the memory shape has no buffer for is counted as often as it must be
    computed (LAMB's and Adafactor's, twice).  The benchmark's divider floor times
    them alone.  `divider_ops_first` is the part of them the first pass of a
    `reads_first` algorithm does: it must finish before the writing pass can start,
    so the two passes are bounded apart.
    """

    name: str
    cls_name: str
    kernel: str
    hyper: tuple
    state: tuple
    summary: str
    configs: tuple = ({},)
    fixed: Mapping = field(default_factory=dict)
    cross_check: Callable[[Mapping], None] | None = None
    positional: int = 0
    torch: str | None = None
    torch_accepts_empty: bool = True
    reference_url: str = ""
    scalar_state: tuple = ()
    advance: Callable | None = None
    keeps_step: bool = False
    reads_first: tuple = ()
    divider_ops: tuple = (0, 0)
    divider_ops_first: tuple = (0, 0)
    lr_zero_is_no_op: Callable[[Mapping], bool] = lambda group: True
    zero_grad_is_no_op: Callable[[Mapping], bool] = lambda group: True
    cls: type | None = None
    functional: Callable | None = None
    reference: Callable | None = None

    def __post_init__(self):
        # read on every step: a plain attribute, not a property
        self.hyper_names = tuple(h.name for h in self.hyper)
        self.buffer_names, self.kernel_scalars = (_kernels.KERNELS.get(self.kernel)
                                                  or _kernels.FACTORED[self.kernel])
        # scalars a two-pass kernel's first pass computes (per-parameter norms)
        self.reduced = _kernels.REDUCED.get(self.kernel, ())
        provided = {n for h in self.hyper for n in h.flatten(h.default)} | set(self.fixed)
        provided |= set(self.reduced)
        self.per_param = tuple(n for n in self.kernel_scalars if n not in provided)
        self.advanced = tuple(n for n in self.per_param if n not in STEP_SCALARS)
        if self.advanced and self.advance is None:
            raise ValueError(f"{self.name}: kernel scalars {list(self.advanced)} have no source")
        self.tracks_step = "step" in self.per_param or self.keeps_step or bool(self.scalar_state)
        state_names = tuple(s.name for s in self.state)
        if state_names != self.buffer_names[2:]:
            raise ValueError(f"{self.name}: state {state_names} does not match the kernel's "
                             f"buffers {self.buffer_names[2:]}")
        if any(self.divider_ops_first) and not (
                self.reads_first and all(f <= n for f, n in
                                         zip(self.divider_ops_first, self.divider_ops))):
            raise ValueError(f"{self.name}: divider_ops_first {self.divider_ops_first} must "
                             f"be part of divider_ops {self.divider_ops}, for an algorithm "
                             "with reads_first")
        self._step_slot = (self.kernel_scalars.index("step")
                           if "step" in self.kernel_scalars else None)
        self._first_slot = (self.kernel_scalars.index("first_step")
                            if "first_step" in self.kernel_scalars else None)
        self._scale_slot = (self.kernel_scalars.index("grad_scale")
                            if "grad_scale" in self.kernel_scalars else None)

    @property
    def defaults(self):
        """``{hyperparameter: default}``, in torch's constructor order."""
        return {h.name: h.default for h in self.hyper}

    def validate(self, hyper: Mapping):
        """Check every hyperparameter in `hyper`; raise TypeError/ValueError naming it."""
        for h in self.hyper:
            if h.name not in hyper:
                if h.kernel_names == ():
                    continue  # only the state's initialization uses it
                raise TypeError(f"{self.cls_name}: missing hyperparameter {h.name!r}")
            h.validate(hyper[h.name])
        if self.cross_check is not None:
            self.cross_check(hyper)

    def pack(self, hyper: Mapping) -> list:
        """The kernel's scalars for `hyper`: per-parameter slots 0, grad_scale 1."""
        flat = dict(self.fixed)
        for h in self.hyper:
            if h.kernel_names != ():
                flat.update(h.flatten(hyper[h.name]))
        # None (Adafactor's eps[0]: "the dtype's epsilon") travels as NaN; grad_scale
        # starts at 1, "no loss scale", so packed scalars run as they are without one
        flat.setdefault("grad_scale", 1.0)
        return [math.nan if flat.get(n, 0.0) is None else float(flat.get(n, 0.0))
                for n in self.kernel_scalars]

    def scalars(self, packed: list, step: int = 0, first_step: bool = False,
                grad_scale: float | None = None, advanced: Mapping | None = None) -> tuple:
        """`packed` with this parameter's per-step scalars filled in.

        Parameters
        ----------
        packed : list
            From :meth:`pack`; modified and returned as a tuple.
        step, first_step
            The 1-based step being taken, and whether the kernel initializes its
            ``fill=None`` state on this step.
        grad_scale : float or None
            The loss scale the gradients are divided by; None (or 1) for none.
        advanced : mapping, optional
            The kernel scalars :attr:`advance` computed from the scalar state.
        """
        if self._step_slot is not None:
            packed[self._step_slot] = float(step)
        if self._first_slot is not None:
            packed[self._first_slot] = 1.0 if first_step else 0.0
        if self._scale_slot is not None:
            packed[self._scale_slot] = 1.0 if grad_scale is None else float(grad_scale)
        if self.advanced:
            for name in self.advanced:
                packed[self.kernel_scalars.index(name)] = float(advanced[name])
        return tuple(packed)

    def state_shapes(self, group: Mapping, param_shape) -> dict:
        """``{state name: shape}`` of the buffers a parameter of `param_shape` keeps
        under `group`'s options, in kernel order.

        A buffer is left out when the options do not use it (``needed``) or the
        parameter's shape does not (``shape_for``: Adafactor keeps row and column
        factors for a matrix, one full buffer for a vector).
        """
        shapes = {}
        for spec in self.state:
            shape = spec.shape_for(param_shape) if spec.needed(group) else None
            if shape is not None:
                shapes[spec.name] = shape
        return shapes

    def step_buffers(self, group: Mapping, param_shape, state: Mapping, allocate):
        """The state buffers of one parameter's step, in kernel order.

        The one place that decides which buffers a step uses and which it creates,
        shared by the NumPy and torch front ends (each allocates its own kind of
        buffer).

        Parameters
        ----------
        group : mapping
            The parameter's hyperparameters.
        param_shape : tuple
        state : mapping
            The parameter's state so far (``{}`` before its first step); a buffer
            found there is used as it is.
        allocate : callable
            ``allocate(name, shape, fill)`` returns a new buffer for state `name`,
            filled with `fill`, or left for the kernel to initialize when `fill` is
            None.

        Returns
        -------
        buffers : list
            One entry per kernel state buffer: the buffer, or None where unused.
        created : dict
            ``{name: buffer}`` of the buffers `allocate` made.
        first_step : bool
            Whether a buffer the kernel initializes was made (the kernel's
            ``first_step`` scalar).
        """
        shapes = self.state_shapes(group, param_shape)
        buffers, created, first_step = [], {}, False
        for spec in self.state:
            shape = shapes.get(spec.name)
            buffer = None if shape is None else state.get(spec.name)
            if shape is not None and buffer is None:
                fill = None if spec.fill is None else spec.fill(group)
                buffer = created[spec.name] = allocate(spec.name, shape, fill)
                first_step = first_step or fill is None
            buffers.append(buffer)
        return buffers, created, first_step

    def initial_scalar_state(self, group: Mapping) -> dict:
        """``{name: value}`` of the scalar state before a parameter's first step."""
        return {s.name: s.init(group) for s in self.scalar_state}

    def advance_scalars(self, group: Mapping, step: int, values: Mapping | None):
        """(kernel scalars for `step`, scalar state after it) from the state before it.

        `values` None means the parameter has no state yet.
        """
        if self.advance is None:
            return {}, {}
        if values is None:
            values = self.initial_scalar_state(group)
        return self.advance(group, step, dict(values))


ALGORITHMS: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Add `algorithm` to the registry (its name must be new)."""
    if algorithm.name in ALGORITHMS:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered")
    ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def get_algorithm(name: str) -> Algorithm:
    """The registry row called `name` (case-insensitive).

    Raises
    ------
    ValueError
        If no algorithm has that name; the message lists the known names.
    """
    key = str(name).lower()
    try:
        return ALGORITHMS[key]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}") from None


# -- the rows -----------------------------------------------------------------------

LR = "Invalid learning rate: {}"
EPS = "Invalid epsilon value: {}"
WD = "Invalid weight_decay value: {}"
MOMENTUM = "Invalid momentum value: {}"
BETAS = "Invalid beta parameter at index {index}: {}"


def _sgd_cross_check(group):
    if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def _combos(**axes):
    """Every combination of the given option values, as dicts."""
    combos = [{}]
    for name, values in axes.items():
        combos = [dict(c, **{name: v}) for c in combos for v in values]
    return tuple(combos)


register(Algorithm(
    name="sgd", cls_name="SGD", kernel="sgd", torch="SGD", positional=5,
    summary="gradient descent, with optional (Nesterov) momentum",
    hyper=(
        Hyper("lr", 1e-3, "nonneg", LR),
        Hyper("momentum", 0.0, "nonneg", MOMENTUM),
        Hyper("dampening", 0.0, "finite", "Invalid dampening value: {}"),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("nesterov", False, "bool"),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("momentum_buffer", needed=lambda g: g["momentum"] != 0, fill=None),),
    cross_check=_sgd_cross_check,
    configs=(
        {"lr": 0.1},
        {"lr": 0.05, "weight_decay": 0.1},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
        {"lr": 0.05, "momentum": 0.5, "maximize": True},
        {"lr": 0.05, "maximize": True, "weight_decay": 0.1},
    ),
))

register(Algorithm(
    name="adagrad", cls_name="Adagrad", kernel="adagrad", torch="Adagrad", positional=5,
    divider_ops=(1, 1),
    summary="per-coordinate learning rates from the sum of squared gradients",
    hyper=(
        Hyper("lr", 1e-2, "nonneg", LR),
        Hyper("lr_decay", 0.0, "nonneg", "Invalid lr_decay value: {}"),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("initial_accumulator_value", 0.0, "nonneg",
              "Invalid initial_accumulator_value value: {}", kernel_names=()),
        Hyper("eps", 1e-10, "nonneg", EPS),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("sum", fill=lambda g: g["initial_accumulator_value"]),),
    configs=_combos(lr=(0.1,), lr_decay=(0.0, 0.01), weight_decay=(0.0, 0.1),
                    initial_accumulator_value=(0.0, 0.1), maximize=(False, True)),
))

register(Algorithm(
    name="rmsprop", cls_name="RMSprop", kernel="rmsprop", torch="RMSprop", positional=6,
    divider_ops=(1, 1),
    summary="gradients scaled by a running root mean square",
    hyper=(
        Hyper("lr", 1e-2, "nonneg", LR),
        Hyper("alpha", 0.99, "nonneg", "Invalid alpha value: {}"),
        Hyper("eps", 1e-8, "nonneg", EPS),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("momentum", 0.0, "nonneg", MOMENTUM),
        Hyper("centered", False, "bool"),
        Hyper("maximize", False, "bool"),
    ),
    state=(
        State("square_avg"),
        State("momentum_buffer", needed=lambda g: g["momentum"] > 0),
        State("grad_avg", needed=lambda g: g["centered"]),
    ),
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), momentum=(0.0, 0.9),
                    centered=(False, True), maximize=(False, True))
    + ({"lr": 0.01, "alpha": 0.3, "centered": True},),
))

register(Algorithm(
    name="adadelta", cls_name="Adadelta", kernel="adadelta", torch="Adadelta", positional=4,
    divider_ops=(1, 2),
    summary="RMSprop with a running average of squared updates in place of a learning rate",
    hyper=(
        Hyper("lr", 1.0, "nonneg", LR),
        Hyper("rho", 0.9, "unit", "Invalid rho value: {}"),
        Hyper("eps", 1e-6, "nonneg", EPS),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("square_avg"), State("acc_delta")),
    configs=_combos(lr=(1.0, 0.5), weight_decay=(0.0, 0.1), maximize=(False, True))
    + ({"rho": 0.0}, {"rho": 1.0}),
))

_ADAM_HYPER = (
    Hyper("lr", 1e-3, "nonneg", LR),
    Hyper("betas", (0.9, 0.999), "betas", BETAS, kernel_names=("beta1", "beta2")),
    Hyper("eps", 1e-8, "nonneg", EPS),
    Hyper("weight_decay", 0.0, "nonneg", WD),
    Hyper("amsgrad", False, "bool"),
    Hyper("maximize", False, "bool"),
)
_ADAM_STATE = (
    State("exp_avg"),
    State("exp_avg_sq"),
    State("max_exp_avg_sq", needed=lambda g: g["amsgrad"]),
)
_ADAM_CONFIGS = _combos(lr=(0.01,), weight_decay=(0.0, 0.1), amsgrad=(False, True),
                        maximize=(False, True)) + (
    {"lr": 0.01, "betas": (0.3, 0.5)},
    {"lr": 0.01, "betas": (0.0, 0.0), "eps": 1e-3},
    {"lr": 0.01, "betas": (0.6, 0.99), "amsgrad": True},
)

register(Algorithm(
    name="adam", cls_name="Adam", kernel="adam", torch="Adam", positional=5,
    divider_ops=(1, 1),
    summary="bias-corrected running averages of the gradient and its square",
    hyper=_ADAM_HYPER + (Hyper("decoupled_weight_decay", False, "bool"),),
    state=_ADAM_STATE,
    configs=_ADAM_CONFIGS + tuple(dict(c, decoupled_weight_decay=True)
                                  for c in _ADAM_CONFIGS if c.get("weight_decay")),
))

register(Algorithm(
    name="adamw", cls_name="AdamW", kernel="adam", torch="AdamW", positional=5,
    divider_ops=(1, 1),
    summary="Adam with decoupled weight decay",
    hyper=tuple(Hyper("weight_decay", 1e-2, "nonneg", WD) if h.name == "weight_decay" else h
                for h in _ADAM_HYPER),
    state=_ADAM_STATE,
    fixed={"decoupled_weight_decay": True},
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), amsgrad=(False, True),
                    maximize=(False, True)),
))


def _f32(value):
    """`value` rounded to float32: torch keeps per-parameter scalar state (NAdam's
    mu_product, ASGD's eta and mu) as 0-d tensors of its default dtype, float32."""
    return float(np.float32(value))


register(Algorithm(
    name="adamax", cls_name="Adamax", kernel="adamax", torch="Adamax", positional=4,
    divider_ops=(1, 0),
    summary="Adam with the infinity norm of past gradients in place of the second moment",
    hyper=(
        Hyper("lr", 2e-3, "nonneg", LR),
        Hyper("betas", (0.9, 0.999), "betas", BETAS, kernel_names=("beta1", "beta2")),
        Hyper("eps", 1e-8, "nonneg", EPS),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("exp_avg"), State("exp_inf")),
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), maximize=(False, True)) + (
        {"lr": 0.01, "betas": (0.3, 0.5), "eps": 1e-3},
        {"lr": 0.01, "betas": (0.0, 0.0)},
    ),
))


def _nadam_advance(group, step, values):
    beta1 = group["betas"][0]
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * group["momentum_decay"])))
    # torch: mu_product *= mu, on a float32 0-d tensor
    mu_product = _f32(np.float32(values["mu_product"]) * np.float32(mu))
    return {"mu_product": mu_product}, {"mu_product": mu_product}


_NADAM_CONFIGS = _combos(lr=(0.01,), weight_decay=(0.0, 0.1), maximize=(False, True)) + (
    {"lr": 0.01, "betas": (0.3, 0.5), "momentum_decay": 0.1},
    {"lr": 0.01, "momentum_decay": 0.0},
    {"lr": 0.01, "betas": (0.6, 0.0), "eps": 1e-3},
)

register(Algorithm(
    name="nadam", cls_name="NAdam", kernel="nadam", torch="NAdam", positional=6,
    divider_ops=(1, 1),  # one square root, two divisions by it sharing a reciprocal
    summary="Adam with Nesterov momentum",
    hyper=(
        Hyper("lr", 2e-3, "nonneg", LR),
        Hyper("betas", (0.9, 0.999), "betas", BETAS, kernel_names=("beta1", "beta2")),
        Hyper("eps", 1e-8, "nonneg", EPS),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("momentum_decay", 4e-3, "nonneg", "Invalid momentum_decay value: {}"),
        Hyper("decoupled_weight_decay", False, "bool"),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("exp_avg"), State("exp_avg_sq")),
    scalar_state=(ScalarState("mu_product", lambda group: 1.0),),
    advance=_nadam_advance,
    configs=_NADAM_CONFIGS + tuple(dict(c, decoupled_weight_decay=True)
                                   for c in _NADAM_CONFIGS if c.get("weight_decay")),
))

_RADAM_CONFIGS = _combos(lr=(0.01,), weight_decay=(0.0, 0.1), maximize=(False, True)) + (
    # rho_t > 5 from step 6 on with the default beta2: both branches within 30 steps
    {"lr": 0.01, "betas": (0.3, 0.5)},   # rho_inf = 3: never rectified
    {"lr": 0.01, "betas": (0.6, 0.9), "eps": 1e-3},
    {"lr": 0.01, "betas": (0.0, 0.0)},
)

register(Algorithm(
    name="radam", cls_name="RAdam", kernel="radam", torch="RAdam", positional=5,
    divider_ops=(1, 1),  # once the rectification is on
    summary="Adam with the variance of its adaptive learning rate rectified",
    hyper=(
        Hyper("lr", 1e-3, "nonneg", LR),
        Hyper("betas", (0.9, 0.999), "betas", BETAS, kernel_names=("beta1", "beta2")),
        Hyper("eps", 1e-8, "nonneg", EPS),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("decoupled_weight_decay", False, "bool"),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("exp_avg"), State("exp_avg_sq")),
    configs=_RADAM_CONFIGS + tuple(dict(c, decoupled_weight_decay=True)
                                   for c in _RADAM_CONFIGS if c.get("weight_decay")),
))


def _asgd_advance(group, step, values):
    lr, lambd = group["lr"], group["lambd"]
    eta = _f32(lr / ((1 + lambd * lr * step) ** group["alpha"]))
    mu = _f32(1 / max(1, step - group["t0"]))
    # the pass uses the values from before this step; torch updates them after it
    return {"eta": values["eta"], "mu": values["mu"]}, {"eta": eta, "mu": mu}


register(Algorithm(
    name="asgd", cls_name="ASGD", kernel="asgd", torch="ASGD", positional=5,
    summary="averaged stochastic gradient descent",
    hyper=(
        Hyper("lr", 1e-2, "nonneg", LR, kernel_names=()),
        Hyper("lambd", 1e-4, "real", "Invalid lambd value: {}"),
        Hyper("alpha", 0.75, "real", "Invalid alpha value: {}", kernel_names=()),
        Hyper("t0", 1e6, "real", "Invalid t0 value: {}", kernel_names=()),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("ax"),),
    scalar_state=(ScalarState("eta", lambda group: _f32(group["lr"])),
                  ScalarState("mu", lambda group: 1.0)),
    advance=_asgd_advance,
    # with lambd != 0, every step shrinks the parameter by (1 - lambd * eta)
    zero_grad_is_no_op=lambda group: group["lambd"] == 0,
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), t0=(1e6, 4.0),
                    maximize=(False, True)) + (
        {"lr": 0.05, "lambd": 0.0, "t0": 0.0},
        {"lr": 0.05, "lambd": 0.5, "alpha": 1.0, "t0": 10.0},
    ),
))

register(Algorithm(
    name="rprop", cls_name="Rprop", kernel="rprop", torch="Rprop", positional=3,
    summary="resilient backpropagation: per-coordinate step sizes driven by gradient signs",
    hyper=(
        Hyper("lr", 1e-2, "nonneg", LR, kernel_names=()),
        Hyper("etas", (0.5, 1.2), "etas", "Invalid eta values: {}, {}",
              kernel_names=("etaminus", "etaplus")),
        Hyper("step_sizes", (1e-6, 50), "pair", "Invalid step_sizes value: {}",
              kernel_names=("step_size_min", "step_size_max")),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("prev"), State("step_size", fill=lambda group: group["lr"])),
    keeps_step=True,
    # a new step size starts at lr and is clamped to step_sizes[0] > 0 on the first
    # step, so lr = 0 still moves the parameter
    lr_zero_is_no_op=lambda group: False,
    configs=_combos(lr=(0.01, 0.2), etas=((0.5, 1.2), (0.3, 1.7)), maximize=(False, True))
    + ({"lr": 0.01, "step_sizes": (1e-3, 0.05)},
       {"lr": 0.1, "step_sizes": (0.02, 0.01)}),   # min > max: torch clamps to max
))


# -- beyond torch.optim: each from its paper (see the functional's docstring) ----------

register(Algorithm(
    name="lion", cls_name="Lion", kernel="lion", positional=3,
    summary="sign of an interpolated momentum, with decoupled weight decay",
    hyper=(
        Hyper("lr", 1e-4, "nonneg", LR),
        Hyper("betas", (0.9, 0.99), "betas", BETAS, kernel_names=("beta1", "beta2")),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("exp_avg"),),
    configs=_combos(lr=(1e-3,), weight_decay=(0.0, 0.5), maximize=(False, True)) + (
        {"lr": 1e-3, "betas": (0.5, 0.9)},
        {"lr": 1e-3, "betas": (0.0, 0.0)},
    ),
))

_ADABELIEF_CONFIGS = _combos(lr=(0.01,), weight_decay=(0.0, 0.1), maximize=(False, True)) + (
    {"lr": 0.01, "betas": (0.3, 0.5), "eps": 1e-8},
    {"lr": 0.01, "betas": (0.0, 0.0), "eps": 1e-3},
)

register(Algorithm(
    name="adabelief", cls_name="AdaBelief", kernel="adabelief", positional=5,
    divider_ops=(1, 1),
    summary="Adam with the variance of the gradient around its momentum (the belief)",
    hyper=(
        Hyper("lr", 1e-3, "nonneg", LR),
        Hyper("betas", (0.9, 0.999), "betas", BETAS, kernel_names=("beta1", "beta2")),
        Hyper("eps", 1e-16, "nonneg", EPS),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("decoupled_weight_decay", False, "bool"),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("exp_avg"), State("exp_avg_var")),
    configs=_ADABELIEF_CONFIGS + tuple(dict(c, decoupled_weight_decay=True)
                                       for c in _ADABELIEF_CONFIGS if c.get("weight_decay")),
))

register(Algorithm(
    name="yogi", cls_name="Yogi", kernel="yogi", positional=5,
    divider_ops=(1, 1),
    summary="Adam with an additive, sign-controlled second-moment update",
    hyper=(
        Hyper("lr", 1e-2, "nonneg", LR),
        Hyper("betas", (0.9, 0.999), "betas", BETAS, kernel_names=("beta1", "beta2")),
        Hyper("eps", 1e-3, "nonneg", EPS),
        Hyper("initial_accumulator_value", 1e-6, "nonneg",
              "Invalid initial_accumulator_value value: {}", kernel_names=()),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("exp_avg"),
           State("exp_avg_sq", fill=lambda group: group["initial_accumulator_value"])),
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), maximize=(False, True)) + (
        {"lr": 0.01, "betas": (0.5, 0.9), "eps": 1e-6, "initial_accumulator_value": 0.0},
        {"lr": 0.01, "betas": (0.0, 0.3), "initial_accumulator_value": 0.5},
    ),
))

register(Algorithm(
    name="adan", cls_name="Adan", kernel="adan", positional=5,
    divider_ops=(1, 1),  # one square root, two divisions by it sharing a reciprocal
    summary="adaptive Nesterov momentum from the difference of successive gradients",
    hyper=(
        Hyper("lr", 1e-3, "nonneg", LR),
        Hyper("betas", (0.98, 0.92, 0.99), "betas3", BETAS,
              kernel_names=("beta1", "beta2", "beta3")),
        Hyper("eps", 1e-8, "nonneg", EPS),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("no_prox", False, "bool"),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("exp_avg"), State("exp_avg_diff"), State("exp_avg_sq"),
           State("pre_grad", fill=None)),
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), no_prox=(False, True),
                    maximize=(False, True)) + (
        {"lr": 0.01, "betas": (0.5, 0.3, 0.9), "eps": 1e-3},
        {"lr": 0.01, "betas": (0.0, 0.0, 0.0)},
    ),
))


register(Algorithm(
    name="lamb", cls_name="LAMB", kernel="lamb", positional=5,
    divider_ops=(2, 2),  # the update, in both passes
    divider_ops_first=(1, 1),
    summary="Adam scaled per parameter by the trust ratio |param| / |update|",
    reads_first=("param", "grad", "exp_avg", "exp_avg_sq"),  # |param| and |update|
    hyper=(
        Hyper("lr", 1e-3, "nonneg", LR),
        Hyper("betas", (0.9, 0.999), "betas", BETAS, kernel_names=("beta1", "beta2")),
        Hyper("eps", 1e-6, "nonneg", EPS),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("exp_avg"), State("exp_avg_sq")),
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), maximize=(False, True)) + (
        {"lr": 0.01, "betas": (0.3, 0.5), "eps": 1e-3},
        {"lr": 0.01, "betas": (0.0, 0.0)},
    ),
))

register(Algorithm(
    name="lars", cls_name="LARS", kernel="lars", positional=4,
    summary="momentum SGD with a per-parameter learning rate from |param| / |grad|",
    reads_first=("param", "grad"),  # |param| and |grad|
    hyper=(
        Hyper("lr", 1.0, "nonneg", LR),
        Hyper("momentum", 0.9, "nonneg", MOMENTUM),
        Hyper("weight_decay", 0.0, "nonneg", WD),
        Hyper("trust_coefficient", 1e-3, "nonneg", "Invalid trust_coefficient value: {}"),
        Hyper("nesterov", False, "bool"),
        Hyper("maximize", False, "bool"),
    ),
    state=(State("momentum_buffer", needed=lambda g: g["momentum"] != 0),),
    configs=_combos(lr=(1.0,), momentum=(0.0, 0.9), weight_decay=(0.0, 0.01),
                    maximize=(False, True)) + (
        {"lr": 0.5, "momentum": 0.9, "nesterov": True},
        {"lr": 0.5, "momentum": 0.5, "nesterov": True, "weight_decay": 0.1,
         "trust_coefficient": 0.02},
    ),
))


register(Algorithm(
    name="adafactor", cls_name="Adafactor", kernel="adafactor", torch="Adafactor",
    divider_ops=(2, 2),  # a vector: the update, in both passes
    divider_ops_first=(1, 1),
    positional=5, torch_accepts_empty=False,  # torch divides by numel ** 0.5
    summary="second moments factored into row and column averages, relative step sizes",
    # a vector: the first pass also updates the variance, so the writing pass reads
    # param, grad and variance again
    reads_first=("param", "grad", "variance"),
    hyper=(
        Hyper("lr", 1e-2, "nonneg", "Learning rate should be >= 0 but is: {}"),
        Hyper("beta2_decay", -0.8, "nonpos", "beta2_decay should be <= 0 but is: {}"),
        Hyper("eps", (None, 1e-3), "adafactor_eps", kernel_names=("eps1", "eps2")),
        Hyper("d", 1.0, "at_least_one", "Clipping threshold d should be >= 1 but is: {}"),
        Hyper("weight_decay", 0.0, "nonneg", "weight_decay should be >= 0 but is: {}"),
        Hyper("maximize", False, "bool"),
    ),
    state=(
        State("row_var", shape=lambda s: _kernels.factored_shapes(s)[1]),
        State("col_var", shape=lambda s: _kernels.factored_shapes(s)[2]),
        State("variance", shape=lambda s: s if len(s) < 2 else None),
    ),
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), maximize=(False, True)) + (
        {"lr": 0.5, "beta2_decay": -0.5, "eps": (1e-6, 1e-2), "d": 2.0},
        {"lr": 0.05, "beta2_decay": 0.0, "eps": (1e-20, 0.0)},
        {"lr": 0.05, "d": 1e6},
    ),
))
