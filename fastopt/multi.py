"""Different optimizers for different parameters, stepped as one.

:class:`MultiOptimizer` combines several fastopt optimizers, each over its own
parameters (say Adam for the embeddings and SGD with momentum for the rest), into one
object with one ``step(grads)``, one ``param_groups`` list (that learning-rate
schedulers drive) and one ``state_dict``.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping

from . import _ops
from .optim import Optimizer

__all__ = ["MultiOptimizer"]


class MultiOptimizer:
    """Several optimizers, each over its own parameters, stepped as one.

    Parameters
    ----------
    optimizers : iterable of fastopt.Optimizer
        At least one; no optimizer twice, and no parameter in two of them.  Each keeps
        its own algorithm, groups and state; the combined parameter order is theirs,
        concatenated in the order given.

    Attributes
    ----------
    optimizers : tuple of fastopt.Optimizer
        The combined optimizers, in order.
    skipped_steps : int
        How many steps ``skip_if_nonfinite`` has skipped.

    Examples
    --------
    >>> import numpy as np, fastopt
    >>> embedding, weight = np.zeros(4), np.zeros(3)
    >>> opt = fastopt.MultiOptimizer([fastopt.Adam([embedding], lr=0.01),
    ...                               fastopt.SGD([weight], lr=0.1, momentum=0.9)])
    >>> opt.step([np.ones(4), np.ones(3)])
    >>> [g["lr"] for g in opt.param_groups]
    [0.01, 0.1]
    """

    def __init__(self, optimizers):
        if isinstance(optimizers, Optimizer):
            raise TypeError("MultiOptimizer takes an iterable of optimizers; wrap a single "
                            "one in a list")
        try:
            optimizers = tuple(optimizers)
        except TypeError:
            raise TypeError("optimizers must be an iterable of fastopt optimizers, got "
                            f"{type(optimizers).__name__}") from None
        if not optimizers:
            raise ValueError("MultiOptimizer needs at least one optimizer")
        seen_optimizers, seen_params = set(), set()
        for index, opt in enumerate(optimizers):
            if not isinstance(opt, Optimizer):
                raise TypeError(f"optimizers[{index}] must be a fastopt Optimizer, got "
                                f"{type(opt).__name__}")
            if id(opt) in seen_optimizers:
                raise ValueError(f"optimizers[{index}] appears more than once")
            seen_optimizers.add(id(opt))
            for param in opt.params:
                if id(param) in seen_params:
                    raise ValueError(f"optimizers[{index}] has a parameter that an earlier "
                                     "optimizer also has; each parameter may be in one "
                                     "optimizer")
                seen_params.add(id(param))
        self.optimizers = optimizers
        self.skipped_steps = 0
        self._lock = threading.Lock()

    # -- the combined view ----------------------------------------------------------

    @property
    def param_groups(self) -> list:
        """Every optimizer's groups, concatenated in order.

        The list is new at each access but its dicts are the optimizers' own, so
        editing ``opt.param_groups[i]["lr"]`` edits that optimizer's group (as a
        learning-rate scheduler does).
        """
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property
    def params(self) -> list:
        """All parameters, in the order `step` expects their gradients."""
        return [p for opt in self.optimizers for p in opt.params]

    @property
    def state(self) -> dict:
        """Every optimizer's per-parameter state, keyed by combined parameter index.

        The dict is new at each access; its values are the optimizers' own state dicts.
        """
        combined, offset = {}, 0
        for opt in self.optimizers:
            for index, entry in opt.state.items():
                combined[offset + index] = entry
            offset += len(opt.params)
        return combined

    # -- the step ---------------------------------------------------------------------

    def step(self, grads, *, skip_if_nonfinite=False, **step_kwargs):
        """Update every parameter of every optimizer in place.

        Everything is checked before anything is written: the gradients against their
        parameters (type, dtype, shape, layout, and memory overlap across all the
        optimizers, in one compiled pass) and every group's hyperparameters.  Then
        each optimizer runs its own compiled step (one call per optimizer, no Python
        work per parameter here).

        Parameters
        ----------
        grads : list or tuple
            One gradient (or None to skip) per parameter, in the order of `params`:
            the first optimizer's parameters, then the second's, and so on.
        skip_if_nonfinite : bool, default False
            If any gradient of any optimizer holds NaN or +-inf, write nothing in any
            optimizer, add one to `skipped_steps` and return False.
        **step_kwargs
            Passed on to every optimizer's ``step``.

        Returns
        -------
        bool or None
            With `skip_if_nonfinite`: True if the step updated, False if it skipped.
            Without it: None.
        """
        with self._lock:
            finite = _ops.check_grads(self.params, grads, finite=skip_if_nonfinite)
            for opt in self.optimizers:
                for group in opt.param_groups:
                    opt.algorithm.validate(group)
            if not finite:
                self.skipped_steps += 1
                return False
            start = 0
            for opt in self.optimizers:
                count = sum(len(group["params"]) for group in opt.param_groups)
                opt.step(grads[start:start + count], **step_kwargs)
                start += count
        return True if skip_if_nonfinite else None

    # -- state dict -----------------------------------------------------------------

    def state_dict(self) -> dict:
        """``{"optimizers": [each optimizer's state_dict(), in order]}``.

        Each entry is in torch's layout with that optimizer's own parameter indices
        (from 0), as its ``load_state_dict`` expects.
        """
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Load a dict made by `state_dict`; on any error, nothing changes.

        The outer structure is checked first; each optimizer then checks its own
        entry completely before changing anything, and if a later optimizer rejects
        its entry, the optimizers already loaded get back their groups and state
        exactly as they were (the same dicts and buffers).
        """
        if not isinstance(state_dict, Mapping) or "optimizers" not in state_dict:
            raise ValueError("state_dict must be a dict with an 'optimizers' list")
        entries = state_dict["optimizers"]
        if not isinstance(entries, (list, tuple)):
            raise TypeError("state_dict['optimizers'] must be a list, got "
                            f"{type(entries).__name__}")
        if len(entries) != len(self.optimizers):
            raise ValueError(f"state_dict has {len(entries)} optimizers, this "
                             f"MultiOptimizer has {len(self.optimizers)}")
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise TypeError(f"state_dict['optimizers'][{index}] must be a dict, got "
                                f"{type(entry).__name__}")
        with self._lock:
            saved = [_snapshot(opt) for opt in self.optimizers]
            loaded = 0
            try:
                for opt, entry in zip(self.optimizers, entries):
                    opt.load_state_dict(entry)
                    loaded += 1
            except BaseException:
                for opt, snapshot in zip(self.optimizers[:loaded], saved):
                    _restore(opt, snapshot)
                raise

    def __repr__(self):
        inner = "\n".join("  " + line for opt in self.optimizers
                          for line in repr(opt).splitlines())
        return f"MultiOptimizer (\n{inner}\n)"


def _snapshot(opt):
    """The groups (dicts and their contents) and state (entries) of `opt`, by reference."""
    groups = [(group, dict(group)) for group in opt.param_groups]
    state = {index: (entry, dict(entry)) for index, entry in opt.state.items()}
    return groups, state


def _restore(opt, snapshot):
    groups, state = snapshot
    for group, contents in groups:
        group.clear()
        group.update(contents)
    opt.param_groups[:] = [group for group, _ in groups]
    opt.state.clear()
    for index, (entry, contents) in state.items():
        entry.clear()
        entry.update(contents)
        opt.state[index] = entry
