"""Learning-rate schedules with torch.optim.lr_scheduler's names and behaviour.

Each scheduler drives ``param_groups[i]["lr"]`` of a fastopt optimizer (or of a
:class:`fastopt.MultiOptimizer`) exactly as its torch.optim.lr_scheduler (2.13)
namesake drives a torch optimizer: the same constructor arguments and defaults, the
same chained (recursive) formulas evaluated in the same order with Python floats, so
the learning rates are the same floats; the same ``initial_lr`` (and, for
:class:`OneCycleLR`, ``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum``)
entries in the groups; the same ``last_epoch``, ``base_lrs``, ``get_last_lr()``,
``state_dict()`` keys, and warnings when ``scheduler.step()`` comes before
``optimizer.step()``.

>>> import numpy as np, fastopt
>>> opt = fastopt.SGD([np.zeros(2)], lr=0.1)
>>> sched = fastopt.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
>>> for _ in range(4):
...     _ = opt.step([np.ones(2)])
...     sched.step()
>>> sched.get_last_lr()
[0.025]
"""
from __future__ import annotations

import math
import numbers
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping
from functools import wraps
from weakref import ref

from .multi import MultiOptimizer
from .optim import Optimizer

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
           "LinearLR", "OneCycleLR"]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available."
)


def _check_optimizer(optimizer):
    if not isinstance(optimizer, (Optimizer, MultiOptimizer)):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _format_param(name, optimizer, param):
    """One value per param group: `param` itself if a list/tuple of the right length."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has "
                f"{len(optimizer.param_groups)}.")
        return list(param)
    return [param] * len(optimizer.param_groups)


def _group_values(optimizer, key):
    return [group[key] for group in optimizer.param_groups]


def _warn_get_lr_called_within_step(scheduler):
    if not scheduler._get_lr_called_within_step:
        warnings.warn("To get the last learning rate computed by the scheduler, "
                      "please use `get_last_lr()`.", UserWarning, stacklevel=3)


class _Flag:
    """Sets a boolean attribute of the scheduler for the duration of a block."""

    def __init__(self, scheduler, name):
        self.scheduler, self.name = scheduler, name

    def __enter__(self):
        setattr(self.scheduler, self.name, True)

    def __exit__(self, *exc):
        setattr(self.scheduler, self.name, False)


class LRScheduler:
    """Base class: adjusts the optimizer's ``param_groups[i]["lr"]`` at each `step`.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.MultiOptimizer
        The optimizer whose learning rates the schedule sets.
    last_epoch : int, default -1
        The index of the last epoch; -1 starts the schedule (and sets each group's
        ``initial_lr`` to its ``lr`` unless it has one).  Any other value resumes, and
        needs ``initial_lr`` in every group.

    Attributes
    ----------
    base_lrs : list of float
        Each group's ``initial_lr``.
    last_epoch : int
        How many times `step` has been called after the constructor's own step.

    Notes
    -----
    As in torch, the constructor overwrites every group's ``lr`` with the schedule's
    first value: when restoring a checkpoint, create the scheduler before calling the
    optimizer's ``load_state_dict``.
    """

    _get_lr_called_within_step = False
    _is_initial = False

    def __init__(self, optimizer, last_epoch=-1):
        _check_optimizer(optimizer)
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, numbers.Integral) \
                or last_epoch < -1:
            raise ValueError(f"last_epoch must be an integer >= -1, got {last_epoch!r}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for index, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in "
                                   f"param_groups[{index}] when resuming an optimizer")
        self.base_lrs = _group_values(optimizer, "initial_lr")
        self.last_epoch = int(last_epoch)
        self._patch_optimizer_step()
        self._initial_step()

    def _patch_optimizer_step(self):
        """Wrap the optimizer's bound ``step`` so that it records that it ran (torch
        does this to warn when ``scheduler.step()`` comes first)."""
        opt = self.optimizer
        if hasattr(opt.step, "_wrapped_by_lr_sched"):
            return
        opt_ref = ref(opt)
        func = opt.step.__func__

        @wraps(func)
        def wrapper(*args, **kwargs):
            owner = opt_ref()
            owner._opt_called = True
            return func.__get__(owner, owner.__class__)(*args, **kwargs)

        wrapper._wrapped_by_lr_sched = True
        opt.step = wrapper

    def _initial_step(self):
        self._step_count = 0
        with _Flag(self, "_is_initial"):
            self.step()

    def state_dict(self) -> dict:
        """Every attribute of the scheduler except the optimizer (torch's layout)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Load a dict made by `state_dict` of the same kind of scheduler.

        Checked first (a mapping; only this scheduler's keys; ``last_epoch`` an
        integer; ``base_lrs`` one per group); on any error nothing changes.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        known = set(self.state_dict())
        for key in state_dict:
            if key not in known:
                raise ValueError(f"state_dict has key {key!r}, which a "
                                 f"{type(self).__name__} does not have")
        if "last_epoch" in state_dict:
            last = state_dict["last_epoch"]
            if isinstance(last, bool) or not isinstance(last, numbers.Integral):
                raise TypeError(f"state_dict['last_epoch'] must be an integer, got "
                                f"{type(last).__name__}")
        if "base_lrs" in state_dict and \
                len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"state_dict['base_lrs'] has {len(state_dict['base_lrs'])} "
                             f"values, the optimizer has {len(self.optimizer.param_groups)} "
                             "param groups")
        self.__dict__.update({key: (list(value) if isinstance(value, list) else value)
                              for key, value in state_dict.items()})

    def get_last_lr(self) -> list:
        """The learning rates the last `step` set, one per param group."""
        return self._last_lr

    def get_lr(self) -> list:
        """The next learning rates (called by `step`; use `get_last_lr` to read)."""
        raise NotImplementedError

    def step(self, epoch=None) -> None:
        """Advance the schedule by one epoch (or batch) and set every group's ``lr``.

        Parameters
        ----------
        epoch : int, optional
            Deprecated, as in torch: sets `last_epoch` and uses the closed form.

        Call it after the optimizer's ``step``.
        """
        if self._step_count == 1:
            if not hasattr(self.optimizer.step, "_wrapped_by_lr_sched"):
                warnings.warn(
                    "Seems like `optimizer.step()` has been overridden after learning rate "
                    "scheduler initialization. Please, make sure to call `optimizer.step()` "
                    "before `lr_scheduler.step()`.", UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, "_opt_called", False):
                warnings.warn(
                    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
                    "You should call them in the opposite order: `optimizer.step()` before "
                    "`lr_scheduler.step()`.  Failure to do this will result in skipping "
                    "the first value of the learning rate schedule.", UserWarning,
                    stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        with _Flag(self, "_get_lr_called_within_step"):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                values = closed_form() if closed_form is not None else self.get_lr()
        groups = self.optimizer.param_groups
        if len(values) != len(groups):
            raise ValueError(f"the schedule computed {len(values)} learning rates for "
                             f"{len(groups)} param groups")
        for group, lr in zip(groups, values):
            group["lr"] = lr
        self._last_lr = _group_values(self.optimizer, "lr")


class StepLR(LRScheduler):
    """Multiply each group's learning rate by `gamma` every `step_size` epochs.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.MultiOptimizer
    step_size : int
        Period of the decay.
    gamma : float, default 0.1
        Multiplicative factor.
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if (self.last_epoch == 0) or (self.last_epoch % self.step_size != 0):
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size)
                for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply each group's learning rate by `gamma` at each milestone epoch.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.MultiOptimizer
    milestones : iterable of int
        Epoch indices; one listed ``n`` times multiplies by ``gamma ** n``.
    gamma : float, default 0.1
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self.last_epoch not in self.milestones:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch)
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale each group's learning rate by a factor that moves linearly from
    `start_factor` to `end_factor` over `total_iters` epochs.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.MultiOptimizer
    start_factor : float, default 1/3
        In ``(0, 1]``.
    end_factor : float, default 1.0
        In ``[0, 1]``.
    total_iters : int, default 5
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 "
                             "and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * (1.0 + (self.end_factor - self.start_factor)
                               / (self.total_iters * self.start_factor
                                  + (self.last_epoch - 1)
                                  * (self.end_factor - self.start_factor)))
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply each group's learning rate by `gamma` every epoch.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.MultiOptimizer
    gamma : float
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        # When resuming, the constructor's own step must not move the rate ahead.
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from each group's ``initial_lr`` to `eta_min` over `T_max`.

    torch's recursive form (so that changes made to ``lr`` from outside carry on):

    .. math::
        \eta_{t} = \eta_{min} + (\eta_{t-1} - \eta_{min})
        \frac{1 + \cos(\pi t / T_{max})}{1 + \cos(\pi (t - 1) / T_{max})}

    which tracks the closed form
    :math:`\eta_{min} + (\eta_{max} - \eta_{min})(1 + \cos(\pi t / T_{max})) / 2`; past
    `T_max` the rate rises again (no restarts), as in torch.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.MultiOptimizer
    T_max : int
        Half-period, in epochs.
    eta_min : float, default 0.0
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        if self._step_count == 1 and self.last_epoch > 0:
            return [self.eta_min + (base_lr - self.eta_min)
                    * (1 + math.cos((self.last_epoch) * math.pi / self.T_max)) / 2
                    for base_lr in self.base_lrs]
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [group["lr"] + (base_lr - self.eta_min)
                    * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)]
        return [(1 + math.cos(math.pi * self.last_epoch / self.T_max))
                / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
                * (group["lr"] - self.eta_min) + self.eta_min
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


def _momentum_key(group):
    """The group's momentum hyperparameter: ``betas`` (its first entry) or ``momentum``."""
    if "betas" in group:
        return "betas"
    if "momentum" in group:
        return "momentum"
    return None


class OneCycleLR(LRScheduler):
    """The 1cycle policy: the learning rate rises from ``max_lr / div_factor`` to
    `max_lr`, then anneals to ``initial_lr / final_div_factor``; momentum (or
    ``betas[0]``) cycles inversely between `max_momentum` and `base_momentum`.

    torch.optim.lr_scheduler.OneCycleLR's arguments, defaults, phase boundaries and
    annealing formulas (Smith and Topin, "Super-Convergence: Very Fast Training of
    Neural Networks Using Large Learning Rates", 2017, arXiv:1708.07120).  Call `step`
    after every batch; stepping past `total_steps` raises ValueError.

    Parameters
    ----------
    optimizer : fastopt.Optimizer or fastopt.MultiOptimizer
    max_lr : float or list of float
        Peak learning rate, per group if a list.
    total_steps : int, optional
        Length of the cycle; or give `epochs` and `steps_per_epoch`.
    epochs, steps_per_epoch : int, optional
    pct_start : float, default 0.3
        Fraction of the cycle spent increasing the learning rate.
    anneal_strategy : {"cos", "linear"}, default "cos"
    cycle_momentum : bool, default True
        Cycle each group's ``momentum``, or the first of its ``betas``; every group
        must have one of them (with a :class:`fastopt.MultiOptimizer`, groups may
        differ: Adam's groups cycle ``betas``, SGD's ``momentum``).
    base_momentum, max_momentum : float or list of float, default 0.85, 0.95
    div_factor : float, default 25.0
    final_div_factor : float, default 1e4
    three_phase : bool, default False
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None,
                 steps_per_epoch=None, pct_start=0.3, anneal_strategy="cos",
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError("Expected positive integer steps_per_epoch, but got "
                                 f"{steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND "
                             "steps_per_epoch)")
        if three_phase:
            self._schedule_phases = [
                {"end_step": float(pct_start * self.total_steps) - 1,
                 "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": float(2 * pct_start * self.total_steps) - 2,
                 "start_lr": "max_lr", "end_lr": "initial_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
                {"end_step": self.total_steps - 1,
                 "start_lr": "initial_lr", "end_lr": "min_lr",
                 "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
            ]
        else:
            self._schedule_phases = [
                {"end_step": float(pct_start * self.total_steps) - 1,
                 "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": self.total_steps - 1,
                 "start_lr": "max_lr", "end_lr": "min_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            ]
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError("anneal_strategy must be one of 'cos' or 'linear', instead got "
                             f"{anneal_strategy}")
        self._anneal_func_type = anneal_strategy

        groups = self.optimizer.param_groups
        max_lrs = _format_param("max_lr", self.optimizer, max_lr)
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            keys = [_momentum_key(group) for group in groups]
            if None in keys:
                raise ValueError("optimizer must support momentum or beta1 with "
                                 "`cycle_momentum` option enabled")
            self.use_beta1 = all(key == "betas" for key in keys)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
        if last_epoch == -1:
            for idx, group in enumerate(groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor
            if cycle_momentum:
                for m_momentum, b_momentum, group in zip(max_momentums, base_momentums,
                                                         groups):
                    _set_momentum(group, m_momentum)
                    group["max_momentum"] = m_momentum
                    group["base_momentum"] = b_momentum
        super().__init__(optimizer, last_epoch)

    def _anneal_func(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return self._annealing_cos(start, end, pct)
        return self._annealing_linear(start, end, pct)

    @staticmethod
    def _annealing_cos(start, end, pct):
        """Cosine anneal from `start` to `end` as pct goes from 0.0 to 1.0."""
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    @staticmethod
    def _annealing_linear(start, end, pct):
        """Linearly anneal from `start` to `end` as pct goes from 0.0 to 1.0."""
        return (end - start) * pct + start

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        lrs = []
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(f"Tried to step {step_num} times. The specified number of "
                             f"total steps is {self.total_steps}")
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == len(self._schedule_phases) - 1:
                    pct = (step_num - start_step) / (end_step - start_step)
                    computed_lr = self._anneal_func(group[phase["start_lr"]],
                                                    group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        computed_momentum = self._anneal_func(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(computed_lr)
            if self.cycle_momentum:
                _set_momentum(group, computed_momentum)
        return lrs


def _set_momentum(group, momentum):
    if _momentum_key(group) == "betas":
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum
