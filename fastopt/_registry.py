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

__all__ = ["Hyper", "State", "Algorithm", "ALGORITHMS", "get_algorithm", "register"]


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


def _check_bool(name, value, message):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


CHECKS = {
    "nonneg": _check_nonneg,      # 0 <= x < inf (NaN fails)
    "finite": _check_finite,      # any finite real
    "unit": _check_unit,          # 0 <= x <= 1
    "betas": _check_betas,        # pair, each 0 <= x < 1
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


@dataclass
class Algorithm:
    """One row of the registry.  See the module docstring."""

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
    reference_url: str = ""
    cls: type | None = None
    functional: Callable | None = None
    reference: Callable | None = None

    def __post_init__(self):
        self.buffer_names, self.kernel_scalars = _kernels.KERNELS[self.kernel]
        provided = {n for h in self.hyper for n in h.flatten(h.default)} | set(self.fixed)
        self.per_param = tuple(n for n in self.kernel_scalars if n not in provided)
        unknown = set(self.per_param) - {"step", "first_step"}
        if unknown:
            raise ValueError(f"{self.name}: kernel scalars {sorted(unknown)} have no source")
        self.tracks_step = "step" in self.per_param
        state_names = tuple(s.name for s in self.state)
        if state_names != self.buffer_names[2:]:
            raise ValueError(f"{self.name}: state {state_names} does not match the kernel's "
                             f"buffers {self.buffer_names[2:]}")
        self._step_slot = (self.kernel_scalars.index("step")
                           if "step" in self.kernel_scalars else None)
        self._first_slot = (self.kernel_scalars.index("first_step")
                            if "first_step" in self.kernel_scalars else None)

    @property
    def defaults(self):
        """``{hyperparameter: default}``, in torch's constructor order."""
        return {h.name: h.default for h in self.hyper}

    @property
    def hyper_names(self):
        return tuple(h.name for h in self.hyper)

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
        """The kernel's scalars for `hyper`, with per-parameter slots left as 0."""
        flat = dict(self.fixed)
        for h in self.hyper:
            if h.kernel_names != ():
                flat.update(h.flatten(hyper[h.name]))
        return [float(flat.get(n, 0.0)) for n in self.kernel_scalars]

    def scalars(self, packed: list, step: int = 0, first_step: bool = False) -> tuple:
        """`packed` with this parameter's step (and first-step flag) filled in."""
        if self._step_slot is not None:
            packed[self._step_slot] = float(step)
        if self._first_slot is not None:
            packed[self._first_slot] = 1.0 if first_step else 0.0
        return tuple(packed)


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
    summary="bias-corrected running averages of the gradient and its square",
    hyper=_ADAM_HYPER + (Hyper("decoupled_weight_decay", False, "bool"),),
    state=_ADAM_STATE,
    configs=_ADAM_CONFIGS + tuple(dict(c, decoupled_weight_decay=True)
                                  for c in _ADAM_CONFIGS if c.get("weight_decay")),
))

register(Algorithm(
    name="adamw", cls_name="AdamW", kernel="adam", torch="AdamW", positional=5,
    summary="Adam with decoupled weight decay",
    hyper=tuple(Hyper("weight_decay", 1e-2, "nonneg", WD) if h.name == "weight_decay" else h
                for h in _ADAM_HYPER),
    state=_ADAM_STATE,
    fixed={"decoupled_weight_decay": True},
    configs=_combos(lr=(0.01,), weight_decay=(0.0, 0.1), amsgrad=(False, True),
                    maximize=(False, True)),
))
