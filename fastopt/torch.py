"""fastopt's kernels as drop-in ``torch.optim`` optimizers for CPU tensors.

``fastopt.torch.Adam(model.parameters(), lr=1e-3)`` behaves like
``torch.optim.Adam(model.parameters(), lr=1e-3, foreach=False)``: same constructor
signature and defaults, ``param_groups``, ``state`` keyed by parameter with torch's keys
and tensors (``step`` is a 0-d float tensor, as torch keeps it, and so are NAdam's
``mu_product`` and ASGD's ``eta`` and ``mu``; Adafactor keeps torch's row and column
factors), ``zero_grad``, closures, hooks and torch's LR schedulers, and ``state_dict``
/ ``load_state_dict`` interchangeable with torch's own optimizer in both directions.
The step itself runs fastopt's compiled kernels on NumPy views of the parameters,
gradients and state tensors (zero-copy): one validated task table for all parameters,
one call, without the GIL.

There is one class per row of the fastopt registry (``fastopt.ALGORITHMS``), with the
row's class name.  Where torch has the algorithm, the constructor takes torch's exact
signature, including ``foreach``, ``fused``, ``capturable`` and ``differentiable``:
``foreach`` and ``fused`` are accepted and stored but change nothing (there is one
implementation, the fused kernel), and any other torch-only option must keep its
default (``capturable=True`` and ``differentiable=True`` are refused).

Supported tensors: dense (strided), C-contiguous, CPU, float32 or float64.  Anything
else (CUDA, float16, bfloat16, sparse, complex, non-contiguous) raises a TypeError or
ValueError naming the parameter, before anything is written.  A non-contiguous
*gradient* is copied first (it is only read, so the copy is safe).

This module imports torch; ``import fastopt`` does not import this module.
"""
from __future__ import annotations

import inspect
import numbers

import torch

try:
    from torch.optim.optimizer import _get_scalar_dtype
except ImportError:  # older torch: the same rule, written out
    def _get_scalar_dtype():
        """The dtype torch keeps ``step`` in: float64 under a float64 default dtype."""
        return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32

from . import _kernels
from ._registry import ALGORITHMS, Algorithm

__all__ = ["Optimizer"]

#: torch constructor options that choose among torch's implementations; fastopt has one,
#: so these are accepted with any value and ignored.
_IMPLEMENTATION_FLAGS = ("foreach", "fused")


def _parameter_label(group_index, param_index, group):
    names = group.get("param_names")
    if names is not None and param_index < len(names):
        return f"parameter {names[param_index]!r}"
    return f"param_groups[{group_index}]['params'][{param_index}]"


def _check_tensor(tensor, label, what="parameter"):
    """Raise TypeError/ValueError naming `label` unless the kernels can use `tensor`."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{label} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout is not torch.strided:
        raise TypeError(f"{label} is a {tensor.layout} tensor; fastopt.torch supports dense "
                        f"(strided) {what}s only")
    if tensor.device.type != "cpu":
        raise ValueError(f"{label} is on device {tensor.device}; fastopt.torch runs on CPU "
                         "tensors only")
    if tensor.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{label} has dtype {tensor.dtype}; fastopt.torch supports "
                        "torch.float32 and torch.float64 only")
    if tensor.is_conj() or tensor.is_neg():
        raise ValueError(f"{label} has a lazy conjugate/negative bit set; resolve it first")


def _param_view(param, label):
    """A NumPy view sharing memory with `param` (a leaf updated in place)."""
    _check_tensor(param, label)
    if not param.is_contiguous():
        raise ValueError(f"{label} must be contiguous (updating a copy would silently do "
                         f"nothing); it has shape {tuple(param.shape)} and strides "
                         f"{tuple(param.stride())}")
    return param.detach().numpy()


def _grad_view(param, label):
    grad = param.grad
    label = f"the gradient of {label}"
    _check_tensor(grad, label, "gradient")
    if not grad.is_contiguous():
        grad = grad.contiguous()  # only read: a copy changes nothing but the time
    return grad.detach().numpy()


def _scalar_view(state, name, label):
    """A NumPy view of the 1-element CPU float tensor ``state[name]`` (``step``,
    NAdam's ``mu_product``, ...), which the step reads and then updates in place."""
    tensor = state.get(name)
    if not isinstance(tensor, torch.Tensor) or tensor.numel() != 1 \
            or tensor.device.type != "cpu" or not tensor.is_floating_point() \
            or tensor.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"state[{name!r}] of {label} must be a 1-element CPU float32 or "
                        f"float64 tensor, got {tensor!r}")
    return tensor.detach().numpy()


def _hyper_value(value):
    # torch allows a 1-element tensor lr; the kernels take the value in double.
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        return value.item()
    return value


def _torch_counterpart(algorithm: Algorithm):
    """What fastopt.torch copies from torch's class for `algorithm`.

    Returns
    -------
    signature : inspect.Signature
        torch's own constructor signature (names, order, which are positional) with
        fastopt's defaults for its hyperparameters; the registry's signature where
        torch has no such class.
    torch_options : dict
        torch's options that fastopt has no hyperparameter for, with torch's values:
        the constructor's (``foreach``, ``capturable``, ...) and the ones torch's class
        sets without taking them (``decoupled_weight_decay=True`` for AdamW).  They are
        kept in ``defaults`` and every group, so the state dicts match torch's.
    eager_state : bool
        Whether torch's constructor creates every parameter's state (torch's Adagrad
        does); fastopt.torch then does the same, so its state dicts load into torch.
    """
    torch_cls = getattr(torch.optim, algorithm.torch, None) if algorithm.torch else None
    ours = algorithm.defaults
    if torch_cls is None:
        parameters = [inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        for index, h in enumerate(algorithm.hyper):
            kind = (inspect.Parameter.POSITIONAL_OR_KEYWORD if index < algorithm.positional
                    else inspect.Parameter.KEYWORD_ONLY)
            parameters.append(inspect.Parameter(h.name, kind, default=h.default))
        return inspect.Signature(parameters), {}, False
    parameters, torch_options = [], {}
    for name, p in inspect.signature(torch_cls.__init__).parameters.items():
        if name == "self":
            continue
        if name == "params":
            parameters.append(p.replace(annotation=inspect.Parameter.empty))
            continue
        if name in ours:
            default = ours[name]
        else:
            default = torch_options[name] = p.default
        parameters.append(p.replace(default=default, annotation=inspect.Parameter.empty))
    missing = set(ours) - {p.name for p in parameters}
    if missing:
        raise TypeError(f"torch.optim.{algorithm.torch} has no option(s) {sorted(missing)}")
    probe = torch_cls([torch.zeros(0)])
    for name, value in probe.defaults.items():
        if name not in ours:
            torch_options.setdefault(name, value)
    return inspect.Signature(parameters), torch_options, len(probe.state) > 0


class Optimizer(torch.optim.Optimizer):
    """Base class: a ``torch.optim.Optimizer`` whose step runs a fastopt kernel.

    Subclasses set ``algorithm`` to their registry row; the constructor signature,
    defaults and docstring are generated from it (and from torch's class of the same
    algorithm, where there is one).
    """

    algorithm: Algorithm | None = None
    _signature: inspect.Signature
    _torch_options: dict = {}
    _eager_state = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        algorithm = cls.algorithm
        if algorithm is None:
            return
        cls._signature, cls._torch_options, cls._eager_state = _torch_counterpart(algorithm)
        cls.__signature__ = cls._signature
        cls.__doc__ = _class_doc(algorithm, cls._torch_options)

    def __init__(self, params, *args, **kwargs):
        algorithm = self.algorithm
        if algorithm is None:
            raise TypeError("fastopt.torch.Optimizer is a base class; use one of its "
                            "algorithms (fastopt.torch.Adam, ...)")
        bound = self._signature.bind(params, *args, **kwargs)
        bound.apply_defaults()
        defaults = dict(bound.arguments)
        params = defaults.pop("params")
        for name, value in self._torch_options.items():
            defaults.setdefault(name, value)
        self._check_options(defaults, "defaults")
        super().__init__(params, defaults)
        if self._eager_state:
            for group in self.param_groups:
                hyper = self._check_options(group, "param_groups")
                for param in group["params"]:
                    self.state[param].update(self._new_state(param, hyper))

    # -- groups and options --------------------------------------------------------

    def _check_options(self, group, where):
        """Validate `group`'s hyperparameters and torch-only options."""
        algorithm = self.algorithm
        for name, default in self._torch_options.items():
            if name in _IMPLEMENTATION_FLAGS or name not in group:
                continue
            if group[name] != default:
                raise ValueError(f"fastopt.torch.{type(self).__name__} does not support "
                                 f"{name}={group[name]!r} (in {where})")
        hyper = {name: _hyper_value(group[name]) for name in algorithm.hyper_names
                 if name in group}
        if isinstance(hyper.get("betas"), list):
            hyper["betas"] = tuple(hyper["betas"])
        algorithm.validate(hyper)
        return hyper

    def add_param_group(self, param_group):
        """Add a parameter group (torch's ``add_param_group``), after checking that
        every parameter is a tensor fastopt can update and every option is valid."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        where = f"param_groups[{len(self.param_groups)}]"
        self._check_options(dict(self.defaults, **param_group), where)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            for index, param in enumerate(group["params"]):
                _param_view(param, _parameter_label(len(self.param_groups) - 1, index, group))
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def __setstate__(self, state):
        super().__setstate__(state)
        # A state dict from another torch version (or a group saved without some
        # option) keeps only its own keys; fill in the rest from our defaults.  Only
        # our own options: torch's base __setstate__ adds differentiable=False to
        # `defaults` even for classes (Adafactor, Lion, ...) that have no such option.
        options = [*self.algorithm.hyper_names, *self._torch_options]
        for group in self.param_groups:
            for name in options:
                if name in self.defaults:
                    group.setdefault(name, self.defaults[name])
        scalar_names = [spec.name for spec in self.algorithm.scalar_state]
        for param_state in self.state.values():
            step = param_state.get("step")
            if step is not None and not isinstance(step, torch.Tensor):
                param_state["step"] = torch.tensor(float(step), dtype=_get_scalar_dtype())
            # torch's load_state_dict casts every state tensor but `step` to its
            # parameter's dtype; the scalar state (mu_product, eta, mu) lives in the
            # dtype it was created in, as fastopt computes it, so put it back there
            for name in scalar_names:
                value = param_state.get(name)
                if isinstance(value, numbers.Real) and not isinstance(value, bool):
                    param_state[name] = torch.tensor(float(value), dtype=_get_scalar_dtype())
                elif isinstance(value, torch.Tensor) and value.dtype != _get_scalar_dtype() \
                        and value.is_floating_point():
                    param_state[name] = value.to(_get_scalar_dtype())

    # -- the step ------------------------------------------------------------------

    def _new_state(self, param, hyper):
        """The state a parameter starts with, as torch creates it: a 0-d ``step``
        tensor, 0-d tensors of the scalar state at their starting values (NAdam's
        ``mu_product``, ASGD's ``eta`` and ``mu``), and the buffers with a starting
        value that the options `hyper` use, in the shapes the registry gives.
        Buffers the kernel fills on its first step are created by `step`."""
        algorithm = self.algorithm
        state = {}
        if algorithm.tracks_step:
            state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
        for name, value in algorithm.initial_scalar_state(hyper).items():
            state[name] = torch.tensor(value, dtype=_get_scalar_dtype())
        fills = {spec.name: spec.fill for spec in algorithm.state}
        for name, shape in algorithm.state_shapes(hyper, tuple(param.shape)).items():
            if fills[name] is not None:
                state[name] = param.new_full(shape, fills[name](hyper))
        return state

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient, in place (one kernel call).

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; it runs with gradients
            enabled, before the update.

        Returns
        -------
        The closure's return value, or None.

        Raises
        ------
        TypeError, ValueError
            Before anything is written, if any option, parameter, gradient or state
            tensor of any group is invalid; the message names the parameter.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        algorithm = self.algorithm
        tasks, labels, updates = [], [], []
        for group_index, group in enumerate(self.param_groups):
            hyper = self._check_options(group, f"param_groups[{group_index}]")
            packed = algorithm.pack(hyper)
            for param_index, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                label = _parameter_label(group_index, param_index, group)
                buffers = [_param_view(param, label), _grad_view(param, label)]
                state = self.state.get(param)
                created = {}
                if not state:
                    state = created = self._new_state(param, hyper)

                def allocate(name, shape, fill, param=param, label=label):
                    if fill is not None:  # _new_state made it, unless it was removed
                        raise ValueError(f"state of {label} is missing {name!r}")
                    return param.new_empty(shape)

                state_buffers, kernel_filled, first_step = algorithm.step_buffers(
                    hyper, tuple(param.shape), state, allocate)
                created.update(kernel_filled)
                for spec, buffer in zip(algorithm.state, state_buffers):
                    if buffer is not None:
                        _check_tensor(buffer, f"state[{spec.name!r}] of {label}", "state")
                        buffer = buffer.detach().numpy()
                    buffers.append(buffer)
                step_view = None
                step = 0
                if algorithm.tracks_step:
                    step_view = _scalar_view(state, "step", label)
                    # torch increments the step in its own dtype before using it
                    step = float(step_view + step_view.dtype.type(1))
                scalar_views = {spec.name: _scalar_view(state, spec.name, label)
                                for spec in algorithm.scalar_state}
                advanced, scalar_state = algorithm.advance_scalars(
                    hyper, step, {name: view.item() for name, view in scalar_views.items()})
                tasks.append((algorithm.kernel, tuple(buffers),
                              algorithm.scalars(list(packed), step, first_step,
                                                advanced=advanced)))
                labels.append(label)
                updates.append((param, created, step_view,
                                [(scalar_views[name], value)
                                 for name, value in scalar_state.items()]))
        buffer_names = algorithm.buffer_names

        def label(task, slot):
            if slot == 0:
                return labels[task]
            if slot == 1:
                return f"the gradient of {labels[task]}"
            return f"state[{buffer_names[slot]!r}] of {labels[task]}"

        _kernels.run(tasks, label)
        for param, created, step_view, scalar_updates in updates:
            if created:
                self.state[param].update(created)
            if step_view is not None:
                step_view += step_view.dtype.type(1)
            # in place, as torch updates its 0-d tensors (mu_product *= mu, eta.copy_)
            for view, value in scalar_updates:
                view[...] = value
        return loss


def _class_doc(algorithm, torch_options):
    """The class docstring: summary, pointer to the NumPy class for the math, options."""
    lines = [f"{algorithm.cls_name}: {algorithm.summary}, as a torch.optim optimizer "
             "running fastopt's fused kernels on CPU float32/float64 tensors.", ""]
    if algorithm.torch:
        lines += [f"Drop-in for ``torch.optim.{algorithm.torch}`` (same signature, "
                  "defaults, state keys and state-dict layout; the update is that of its "
                  "``foreach=False`` path).", ""]
    lines += [f"See ``fastopt.{algorithm.cls_name}`` for the update rule.", "",
              "Parameters", "----------",
              "params : iterable of Tensor, of dict, or of (name, Tensor)",
              "    Contiguous CPU float32/float64 tensors, updated in place, or "
              "parameter groups."]
    for h in algorithm.hyper:
        lines.append(f"{h.name} : default {h.default!r}")
    for name, default in torch_options.items():
        note = ("accepted for compatibility; no effect" if name in _IMPLEMENTATION_FLAGS
                else f"only {default!r} is supported")
        lines.append(f"{name} : default {default!r}")
        lines.append(f"    {note}.")
    return "\n".join(lines)


# -- one class per registry row ----------------------------------------------------

for _algorithm in ALGORITHMS.values():
    globals()[_algorithm.cls_name] = type(_algorithm.cls_name, (Optimizer,), {
        "algorithm": _algorithm, "__module__": __name__,
        "__qualname__": _algorithm.cls_name})
    __all__.append(_algorithm.cls_name)
del _algorithm
