"""torch.optim-style optimizer classes over NumPy arrays.

``Optimizer`` holds ``param_groups`` and per-parameter ``state`` exactly as torch does
(state keys, hyperparameter names and defaults are torch's); one short subclass per
algorithm names its registry row.  A step validates every hyperparameter and every
buffer of every parameter first, then hands all parameters to the compiled kernels in
one call, without the GIL.
"""
from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Mapping

import numpy as np

from . import _kernels, _ops, functional
from ._buffers import check_param, new_state_buffer, new_state_run
from ._registry import ALGORITHMS, Algorithm, check_grad_scale, get_algorithm

__all__ = ["Optimizer"]


def _place(out, run, fill, slot):
    """New state buffers for a run of back-to-back parameters, into `out`."""
    if len(run) > 1:
        for (index, _), buffer in zip(run, new_state_run([p for _, p in run], fill, slot)):
            out[index, slot] = buffer
    elif run:
        out[run[0][0], slot] = new_state_buffer(run[0][1], fill, slot=slot)


def _param_list(params):
    if isinstance(params, np.ndarray) or isinstance(params, Mapping):
        raise TypeError("params argument given to the optimizer should be an iterable of "
                        f"arrays or dicts, but got {type(params).__name__}")
    try:
        groups = list(params)
    except TypeError:
        raise TypeError("params argument given to the optimizer should be an iterable of "
                        f"arrays or dicts, but got {type(params).__name__}") from None
    if len(groups) == 0:
        raise ValueError("optimizer got an empty parameter list")
    if not isinstance(groups[0], Mapping):
        groups = [{"params": groups}]
    return groups


class Optimizer:
    """Base class: ``param_groups``, lazy per-parameter ``state``, ``step``.

    Subclasses set ``algorithm`` to their registry row; the constructor takes
    ``params`` (a list of arrays, or a list of parameter-group dicts) and the
    algorithm's hyperparameters, with torch's names and defaults.

    Attributes
    ----------
    param_groups : list of dict
        torch's layout: each group's ``"params"`` list and its hyperparameters, which
        may be edited between steps (learning-rate schedules).
    state : dict
        ``{parameter index: {"step": int, <torch state key>: ndarray, ...}}``, where
        the index counts parameters across groups in order (arrays are not hashable,
        so state is keyed by position, as in torch's ``state_dict``).
    defaults : dict
        The hyperparameters that groups without their own value use.
    """

    algorithm: Algorithm | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        algorithm = cls.algorithm
        if algorithm is None:
            return
        algorithm.cls = cls
        parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                      inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        for index, h in enumerate(algorithm.hyper):
            kind = (inspect.Parameter.POSITIONAL_OR_KEYWORD if index < algorithm.positional
                    else inspect.Parameter.KEYWORD_ONLY)
            parameters.append(inspect.Parameter(h.name, kind, default=h.default))
        cls.__signature__ = inspect.Signature(parameters[1:])
        cls.__doc__ = _class_doc(cls, algorithm)

    def __init__(self, params, *args, **kwargs):
        algorithm = self.algorithm
        if algorithm is None:
            raise TypeError("Optimizer is a base class; use one of fastopt's algorithms")
        names = algorithm.hyper_names
        if len(args) > algorithm.positional:
            raise TypeError(f"{type(self).__name__}() takes at most {algorithm.positional + 1} "
                            f"positional arguments ({len(args) + 1} given)")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for "
                                f"argument '{name}'")
            kwargs[name] = value
        for name in kwargs:
            if name not in names:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword "
                                f"argument '{name}'")
        defaults = dict(algorithm.defaults, **kwargs)
        algorithm.validate(defaults)
        self.defaults = defaults
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._plan = None
        self._hyper_cache = []
        self.num_threads = None
        for group in _param_list(params):
            self.add_param_group(group)

    # -- groups ------------------------------------------------------------------

    def add_param_group(self, param_group):
        """Add a group of parameters, with hyperparameters that override the defaults.

        Parameters
        ----------
        param_group : dict
            ``{"params": [arrays...], <hyperparameter>: value, ...}``.
        """
        if not isinstance(param_group, Mapping):
            raise TypeError(f"param group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param group must have a 'params' entry")
        params = param_group["params"]
        if isinstance(params, np.ndarray):
            params = [params]
        else:
            params = list(params)
        first = sum(len(g["params"]) for g in self.param_groups)
        for offset, p in enumerate(params):
            check_param(p, f"params[{first + offset}]")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if id(p) in seen:
                raise ValueError("some parameters appear more than once; each parameter "
                                 "may be in one group, once")
            seen.add(id(p))
        group = {k: v for k, v in param_group.items() if k != "params"}
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self.algorithm.validate(group)
        group["params"] = params
        self.param_groups.append(group)
        self._plan = None

    @property
    def params(self) -> list:
        """All parameters, in ``param_groups`` order (the order `step` expects)."""
        return [p for g in self.param_groups for p in g["params"]]

    # -- the step ----------------------------------------------------------------

    #: How many steps ``skip_if_nonfinite`` has skipped (counted per optimizer).
    skipped_steps = 0

    def step(self, grads, *, grad_scale=None, skip_if_nonfinite=False):
        """Update every parameter in place with its gradient.

        Parameters
        ----------
        grads : list or tuple
            One gradient per parameter, in ``param_groups`` order; ``None`` skips that
            parameter (its state is neither created nor advanced).  Each gradient must
            have its parameter's dtype and shape and be C-contiguous; it is only read.
        grad_scale : float, optional
            A loss scale (mixed-precision training): every gradient is divided by it
            inside the update pass, as if the step were given ``grad / grad_scale``,
            without a temporary.  Must be finite and > 0.
        skip_if_nonfinite : bool, default False
            First check every gradient (compiled, without the GIL); if any element is
            NaN or +-inf, write nothing at all (no parameter, no state, no step count)
            and add one to `skipped_steps`.

        Returns
        -------
        bool or None
            With `skip_if_nonfinite`: True if the step updated, False if it skipped.
            Without it: None.

        Raises
        ------
        TypeError, ValueError
            Before anything is written, if any hyperparameter or buffer of any
            parameter is invalid.
        """
        # The common case (a prepared plan, no loss scale, no check) in one compiled
        # call: it writes nothing when it does not run, and the path below checks
        # everything again.
        plan = self._plan
        if plan is not None and grad_scale is None and not skip_if_nonfinite \
                and plan.step(self, grads):
            return None
        grad_scale = check_grad_scale(grad_scale)
        with self._lock:
            if skip_if_nonfinite and not _ops.check_grads(self.params, grads, finite=True):
                for group in self.param_groups:  # bad input raises even when skipping
                    self.algorithm.validate(group)
                self.skipped_steps += 1
                return False
            self._step(grads, grad_scale)
        return True if skip_if_nonfinite else None

    def _step(self, grads, grad_scale=None):
        algorithm = self.algorithm
        if not isinstance(grads, (list, tuple)):
            raise TypeError("grads must be a list or tuple with one array (or None) per "
                            f"parameter, got {type(grads).__name__}")
        # Validating and packing a group costs more than a small step: reuse the result
        # while every group holds the very same hyperparameter objects.
        reused = _kernels.reuse_packed(self.param_groups, self._hyper_cache,
                                       algorithm.hyper_names)
        if reused is None:
            self._check_grad_count(grads)
            reused = self._pack_groups()
        packed_groups, needed_groups = reused
        threads = _kernels._check_threads(self.num_threads, "num_threads")
        if not _plannable(algorithm):
            self._full_step(grads, packed_groups, needed_groups, threads, grad_scale)
            return
        # The common case: same parameters and state as the last step, so the
        # prepared plan runs every parameter in one compiled call.
        plan = self._plan
        if plan is not None:
            step_packed = packed_groups  # packed with grad_scale 1: no copy without one
            if grad_scale is not None and algorithm._scale_slot is not None:
                step_packed = [list(p) for p in packed_groups]
                for p in step_packed:
                    p[algorithm._scale_slot] = grad_scale
            if plan.run(self.param_groups, self.state, grads, step_packed, needed_groups,
                        threads):
                return
        self._full_step(grads, packed_groups, needed_groups, threads, grad_scale)
        try:
            self._plan = _kernels.Plan(
                algorithm.kernel, self.param_groups, self.state,
                tuple(s.name for s in algorithm.state), needed_groups, algorithm.tracks_step,
                algorithm.advance_scalars if algorithm.scalar_state else None,
                tuple(s.name for s in algorithm.scalar_state),
                tuple((algorithm.kernel_scalars.index(n), n) for n in algorithm.advanced),
                hyper_names=algorithm.hyper_names)
        except (TypeError, ValueError, AttributeError, KeyError):
            self._plan = None  # the full path reports the problem at the next step

    def _check_grad_count(self, grads):
        nparams = sum(len(g["params"]) for g in self.param_groups)
        if len(grads) != nparams:
            raise ValueError(f"step() expected {nparams} gradients (one per parameter, None "
                             f"to skip), got {len(grads)}")

    def _pack_groups(self):
        """Validate and pack every group, refilling the cache `_step` reuses."""
        algorithm = self.algorithm
        cache = self._hyper_cache
        names = algorithm.hyper_names
        packed_groups, needed_groups = [], []
        for g, group in enumerate(self.param_groups):
            if g < len(cache) and cache[g][0] is group \
                    and _kernels.snapshot_holds(group, names, cache[g][1]):
                packed, needed = cache[g][2], cache[g][3]
            else:
                snapshot = _kernels.hyper_snapshot(group, names)
                algorithm.validate(group)
                packed = algorithm.pack(group)
                needed = tuple(s.needed(group) for s in algorithm.state)
                del cache[g:]
                cache.append((group, snapshot, packed, needed))
            packed_groups.append(packed)
            needed_groups.append(needed)
        del cache[len(self.param_groups):]
        return packed_groups, tuple(needed_groups)

    def _full_step(self, grads, packed_groups, needed_groups, threads, grad_scale):
        """A step that checks everything from scratch and creates missing state."""
        self._check_grad_count(grads)
        algorithm = self.algorithm
        tasks, task_index, pending = [], [], []
        index = 0
        for group, packed, needed in zip(self.param_groups, packed_groups, needed_groups):
            new_buffers = self._new_state(group, index, grads, needed)
            for param in group["params"]:
                grad = grads[index]
                if grad is not None:
                    state = self.state.get(index, {})
                    created = {}
                    buffers = [param, grad]
                    first_step = False
                    for slot, (spec, need) in enumerate(zip(algorithm.state, needed)):
                        need = need and spec.shape_for(param.shape) is not None
                        buffer = state.get(spec.name) if need else None
                        if need and buffer is None:
                            buffer = new_buffers[index, slot]
                            created[spec.name] = buffer
                            first_step = first_step or spec.fill is None
                        buffers.append(buffer)
                    step = state.get("step", 0) + 1
                    advanced, scalar_state = algorithm.advance_scalars(
                        group, step, state if index in self.state else None)
                    created.update(scalar_state)
                    tasks.append((algorithm.kernel, tuple(buffers),
                                  algorithm.scalars(list(packed), step, first_step,
                                                    grad_scale, advanced)))
                    task_index.append(index)
                    pending.append((index, created, step))
                index += 1
        buffer_names = algorithm.buffer_names

        def label(task, slot):
            i = task_index[task]
            if slot == 0:
                return f"params[{i}]"
            if slot == 1:
                return f"grads[{i}]"
            return f"state[{i}][{buffer_names[slot]!r}]"

        _kernels.run(tasks, label, threads)
        for index, created, step in pending:
            state = self.state.get(index)
            if state is None:
                state = self.state[index] = {"step": step} if algorithm.tracks_step else {}
            elif algorithm.tracks_step:
                state["step"] = step
            state.update(created)

    def _new_state(self, group, first, grads, needed):
        """``{(parameter index, slot): new buffer}`` for the state this step creates.

        Parameters that lie back to back in memory (an :func:`fastopt.arena`) get
        their state back to back too, so that later steps stream them in one pass.
        State not shaped like its parameter (Adafactor's factored rows and columns)
        is allocated on its own.
        """
        algorithm = self.algorithm
        params = group["params"]
        out = {}
        for slot, (spec, need) in enumerate(zip(algorithm.state, needed)):
            if not need:
                continue
            fill = None if spec.fill is None else spec.fill(group)
            run, end = [], None
            for j, param in enumerate(params):
                index = first + j
                shape = spec.shape_for(param.shape)
                missing = grads[index] is not None and shape is not None and \
                    self.state.get(index, {}).get(spec.name) is None
                if missing and (param.size == 0 or tuple(shape) != param.shape):
                    out[index, slot] = new_state_buffer(param, fill, shape, slot=slot)
                    continue  # takes no memory, or has its own shape: does not break a run
                start = param.ctypes.data if missing else None
                if missing and run and start == end and param.dtype == run[-1][1].dtype:
                    run.append((index, param))
                else:
                    _place(out, run, fill, slot)
                    run = [(index, param)] if missing else []
                end = None if start is None else start + param.nbytes
            _place(out, run, fill, slot)
        return out

    # -- state dict ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """The optimizer's state in torch's layout.

        Returns
        -------
        dict
            ``{"state": {index: {"step": int, <key>: ndarray}}, "param_groups":
            [{<hyperparameters>, "params": [indices]}]}``.  The arrays are the live
            state buffers, as torch returns its tensors; copy them to keep a snapshot.
        """
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Load a state dict made by `state_dict` (of fastopt or of torch, as NumPy).

        Everything is checked first (group count and sizes, hyperparameters, state
        keys, shapes and dtypes); on any error nothing changes.  The buffers are
        copied, so the loaded dict stays independent of the optimizer.  It holds the
        step lock: a step running in another thread finishes first.
        """
        with self._lock:
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict: Mapping) -> None:
        algorithm = self.algorithm
        if not isinstance(state_dict, Mapping) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        if not isinstance(saved_state, Mapping):
            raise TypeError("state_dict['state'] must be a dict")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        new_groups, id_map = [], {}
        index = 0
        for group, saved in zip(self.param_groups, saved_groups):
            if not isinstance(saved, Mapping) or "params" not in saved:
                raise ValueError("each saved parameter group must be a dict with 'params'")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 "match the size of optimizer's group")
            merged = {k: v for k, v in group.items() if k != "params"}
            merged.update({k: v for k, v in saved.items() if k != "params"})
            if isinstance(merged.get("betas"), list):
                merged["betas"] = tuple(merged["betas"])
            algorithm.validate(merged)
            for saved_id in saved["params"]:
                if saved_id in id_map:
                    raise ValueError(f"parameter id {saved_id!r} appears twice in the state dict")
                id_map[saved_id] = (index, merged)
                index += 1
            merged["params"] = group["params"]
            new_groups.append(merged)
        params = self.params
        new_state = {}
        allowed = {s.name for s in algorithm.state} | ({"step"} if algorithm.tracks_step else set())
        allowed |= {s.name for s in algorithm.scalar_state}
        for saved_id, entry in saved_state.items():
            if saved_id not in id_map:
                raise ValueError(f"state dict has state for parameter {saved_id!r}, which no "
                                 "group lists")
            i, group = id_map[saved_id]
            if not isinstance(entry, Mapping):
                raise TypeError(f"state[{saved_id!r}] must be a dict")
            for key in entry:
                if key not in allowed:
                    raise ValueError(f"state[{saved_id!r}] has unknown key {key!r} for "
                                     f"{type(self).__name__}")
            loaded = {}
            if algorithm.tracks_step:
                if "step" not in entry:
                    raise ValueError(f"state[{saved_id!r}] is missing 'step'")
                loaded["step"] = _as_step(entry["step"], f"state[{saved_id!r}]['step']")
            for spec in algorithm.scalar_state:
                if spec.name not in entry:
                    raise ValueError(f"state[{saved_id!r}][{spec.name!r}] is missing")
                loaded[spec.name] = _as_scalar(entry[spec.name],
                                               f"state[{saved_id!r}][{spec.name!r}]")
            param = params[i]
            for slot, spec in enumerate(algorithm.state):
                label = f"state[{saved_id!r}][{spec.name!r}]"
                shape = spec.shape_for(param.shape)
                if spec.name not in entry:
                    if spec.needed(group) and spec.fill is not None and shape is not None:
                        raise ValueError(f"{label} is missing")
                    continue
                if shape is None:
                    raise ValueError(f"{label} is not used by params[{i}] of shape "
                                     f"{param.shape}")
                value = entry[spec.name]
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"{label} must be a numpy.ndarray, got {type(value).__name__}")
                if value.dtype != param.dtype:
                    raise TypeError(f"{label} has dtype {value.dtype} but params[{i}] has "
                                    f"dtype {param.dtype}")
                if value.shape != shape:
                    raise ValueError(f"{label} has shape {value.shape} but params[{i}] has "
                                     f"shape {param.shape}" + ("" if shape == param.shape else
                                                               f" (expected {shape})"))
                buffer = new_state_buffer(param, None, shape, slot=slot)
                np.copyto(buffer, value)
                loaded[spec.name] = buffer
            new_state[i] = loaded
        self.param_groups[:] = new_groups
        self.state.clear()
        self.state.update(new_state)
        self._plan = None  # release the old buffers now; the next step builds a new plan

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _plannable(algorithm):
    """Whether a cached :class:`fastopt._kernels.Plan` can run `algorithm`'s steps.

    Plans hold tasks whose scalars change through the step count and the
    per-parameter scalar state (NAdam's, ASGD's: advanced once per distinct step and
    values), two-pass kernels included (LAMB's and LARS's first pass fills in its
    norms per parameter); factored kernels (Adafactor) take the full path every step.
    """
    return algorithm.kernel not in _kernels.FACTORED


def _as_step(value, label):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{label} must be a whole number, got bool")
    try:
        step = int(value)
    except OverflowError:  # float infinity
        raise ValueError(f"{label} must be a whole number >= 0, got {value!r}") from None
    except (TypeError, ValueError):
        raise TypeError(f"{label} must be a whole number, got {type(value).__name__}") from None
    if step != value or step < 0:
        raise ValueError(f"{label} must be a whole number >= 0, got {value!r}")
    if step >= functional.MAX_STEP:  # the next step would be past what a double holds
        raise ValueError(f"{label} must be below 2**53, got {value!r}")
    return step


def _as_scalar(value, label):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{label} must be a real number, got {type(value).__name__}")
    return float(value)


def _class_doc(cls, algorithm):
    """The class docstring: summary, update rule (from the functional), parameters."""
    math = ""
    fdoc = inspect.getdoc(getattr(functional, algorithm.name)) or ""
    found = re.search(r"\.\. math::.*?(?=\n\S|\Z)", fdoc, re.S)
    if found:
        math = found.group(0)
    warning = re.search(r"\.\. warning::.*?(?=\n\S|\Z)", fdoc, re.S)
    origin = (f"torch.optim.{algorithm.torch} semantics" if algorithm.torch
              else "from its paper, see the References of the functional")
    lines = [f"{algorithm.cls_name}: {algorithm.summary} ({origin}, fused in-place kernels).",
             "", "Update rule:", "", math]
    if warning:
        lines += ["", warning.group(0)]
    lines += ["", "Parameters", "----------",
              "params : list of ndarray or list of dict",
              "    C-contiguous float32/float64 arrays, updated in place; or parameter",
              "    groups ``{'params': [...], <hyperparameter>: value}``."]
    for h in algorithm.hyper:
        lines.append(f"{h.name} : default {h.default!r}")
    state = ", ".join(f"``{s.name}``" for s in algorithm.scalar_state + algorithm.state)
    lines += ["", f"State per parameter: {'``step``, ' if algorithm.tracks_step else ''}{state}."]
    return "\n".join(lines)


# -- one short class per algorithm ------------------------------------------------

class SGD(Optimizer):
    algorithm = get_algorithm("sgd")


class Adagrad(Optimizer):
    algorithm = get_algorithm("adagrad")


class RMSprop(Optimizer):
    algorithm = get_algorithm("rmsprop")


class Adadelta(Optimizer):
    algorithm = get_algorithm("adadelta")


class Adam(Optimizer):
    algorithm = get_algorithm("adam")


class AdamW(Optimizer):
    algorithm = get_algorithm("adamw")


class Adamax(Optimizer):
    algorithm = get_algorithm("adamax")


class NAdam(Optimizer):
    algorithm = get_algorithm("nadam")


class RAdam(Optimizer):
    algorithm = get_algorithm("radam")


class ASGD(Optimizer):
    algorithm = get_algorithm("asgd")


class Rprop(Optimizer):
    algorithm = get_algorithm("rprop")


class Lion(Optimizer):
    algorithm = get_algorithm("lion")


class AdaBelief(Optimizer):
    algorithm = get_algorithm("adabelief")


class Yogi(Optimizer):
    algorithm = get_algorithm("yogi")


class Adan(Optimizer):
    algorithm = get_algorithm("adan")


class LAMB(Optimizer):
    algorithm = get_algorithm("lamb")


class LARS(Optimizer):
    algorithm = get_algorithm("lars")


class Adafactor(Optimizer):
    algorithm = get_algorithm("adafactor")


__all__ += [a.cls_name for a in ALGORITHMS.values()]
