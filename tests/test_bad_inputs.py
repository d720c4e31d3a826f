"""Hostile inputs, generated over every algorithm of the registry and both dtypes.

Every case is data: a rule that makes one argument of a good call hostile (wrong type,
dtype, layout, writeability, shape, aliasing, hyperparameter, step count, state dict),
the exception it must raise, and the names the message must contain.  Each case checks
that a ``TypeError``/``ValueError`` naming the argument is raised and that every
parameter and state buffer -- and every other array the call could reach -- is byte
for byte what it was.  The last part checks that legal but unusual inputs (read-only
gradients, size-0 parameters anywhere, 0-d arrays, a gradient shared by two
parameters) work and give the reference's bits.

The bad hyperparameter values come from each ``Hyper.check`` kind, so a new algorithm
or hyperparameter is covered without touching this file.
"""
import array
import math
import re

import numpy as np
import pytest

import fastopt
from conftest import ALGORITHMS, DTYPES, functional_kwargs

SHAPE = (3, 4)
DTYPE_IDS = ["float32", "float64"]


def richest_config(algorithm):
    """The test configuration of `algorithm` that uses the most state buffers."""
    configs = [dict(algorithm.defaults, **c) for c in algorithm.configs]
    return max(configs, key=lambda h: sum(s.needed(h) for s in algorithm.state))


def state_shape(spec, shape):
    """The shape of state `spec` for a parameter of `shape` (a factored state differs)."""
    shape_for = getattr(spec, "shape_for", None)
    return shape if shape_for is None else shape_for(shape)


def needed_slots(algorithm, hyper):
    """Names of the buffers the functional call takes with `hyper` (None-free)."""
    return ["param", "grad"] + [s.name for s in algorithm.state
                                if s.needed(hyper) and state_shape(s, SHAPE) is not None]


def assert_names(excinfo, names):
    message = str(excinfo.value)
    for name in names:
        assert name in message, f"message {message!r} does not name {name!r}"


class Snapshot:
    """Bytes of every array given, to prove that a rejected call wrote nothing."""

    def __init__(self, arrays):
        self.arrays = [a for a in arrays if isinstance(a, np.ndarray)]
        self.saved = [a.tobytes() for a in self.arrays]

    def check(self):
        for a, saved in zip(self.arrays, self.saved):
            assert a.tobytes() == saved, "a rejected call modified a buffer"


# -- hostile replacements for one buffer ---------------------------------------------
# Each takes the good buffer and a scratch directory and returns (hostile, backing
# arrays to snapshot).  `kinds` says which slots a case applies to: "written" (param,
# state), "grad", "shape" (any slot but the parameter, whose shape is free).

class ArrayLike:
    """Not an ndarray, but converts to one: converting would update a copy."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a


def _strided(a, _):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    view = big[..., ::2]
    view[...] = a
    return view, [big]


def _misaligned(a, _):
    raw = bytearray(a.nbytes + 1)
    view = np.frombuffer(raw, a.dtype, count=a.size, offset=1).reshape(a.shape)
    view[...] = a
    return view, [view]


def _readonly(a, _):
    b = a.copy()
    b.flags.writeable = False
    return b, [b]


def _readonly_memmap(a, tmp_path):
    path = tmp_path / "buffer.bin"
    a.tofile(path)
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape), []


def _other_float(a, _):
    return a.astype(np.float64 if a.dtype == np.float32 else np.float32), []


def _as(dtype):
    def make(a, _):
        return a.astype(dtype), []
    return make


def _shape(shape):
    def make(a, _):
        return np.resize(a, shape), []
    return make


ALL = ("written", "grad")
BUFFER_CASES = [
    # id, make, exception, applies to, message fragment besides the label
    ("list", lambda a, _: (a.tolist(), []), TypeError, ALL, "ndarray"),
    ("python-float", lambda a, _: (1.0, []), TypeError, ALL, "ndarray"),
    ("none", lambda a, _: (None, []), TypeError, ALL, "None"),
    ("array.array", lambda a, _: (array.array("d", a.ravel().tolist()), []), TypeError, ALL,
     "ndarray"),
    ("memoryview", lambda a, _: (memoryview(a), [a]), TypeError, ALL, "ndarray"),
    ("array-like", lambda a, _: (ArrayLike(a), [a]), TypeError, ALL, "ndarray"),
    ("float16", _as(np.float16), TypeError, ALL, "float16"),
    ("int32", _as(np.int32), TypeError, ALL, "int32"),
    ("int64", _as(np.int64), TypeError, ALL, "int64"),
    ("uint8", _as(np.uint8), TypeError, ALL, "uint8"),
    ("bool", _as(np.bool_), TypeError, ALL, "bool"),
    ("complex64", _as(np.complex64), TypeError, ALL, "complex64"),
    ("complex128", _as(np.complex128), TypeError, ALL, "complex128"),
    ("object", _as(object), TypeError, ALL, "object"),
    ("longdouble", _as(np.longdouble), TypeError, ALL, "float128"),
    ("other-float", _other_float, TypeError, ALL, "dtype"),
    ("strided", _strided, ValueError, ALL, "C-contiguous"),
    ("negative-strides", lambda a, _: (a.copy()[::-1], []), ValueError, ALL, "C-contiguous"),
    ("transposed", lambda a, _: (np.ascontiguousarray(a.T).T, []), ValueError, ALL,
     "C-contiguous"),
    ("fortran", lambda a, _: (np.asfortranarray(a), []), ValueError, ALL, "C-contiguous"),
    ("byte-swapped", lambda a, _: (a.astype(a.dtype.newbyteorder()), []), ValueError, ALL,
     "byte-swapped"),
    ("misaligned", _misaligned, ValueError, ALL, "aligned"),
    ("read-only", _readonly, ValueError, ("written",), "read-only"),
    ("read-only-memmap", _readonly_memmap, ValueError, ("written",), "read-only"),
    ("shape-transposed", _shape(SHAPE[::-1]), ValueError, ("shape",), "shape"),
    ("shape-flat", _shape((int(np.prod(SHAPE)),)), ValueError, ("shape",), "shape"),
    ("shape-larger", _shape((SHAPE[0], SHAPE[1] + 1)), ValueError, ("shape",), "shape"),
    ("shape-extra-axis", _shape((1,) + SHAPE), ValueError, ("shape",), "shape"),
    ("shape-empty", _shape((0,)), ValueError, ("shape",), "shape"),
]


def skip_if_still_contiguous(hostile, fragment):
    """A transposed or reversed buffer with at most one axis longer than 1 (a factored
    state of shape (3, 1), say) is still C-contiguous, and legal."""
    if fragment == "C-contiguous" and hostile.flags.c_contiguous:
        pytest.skip("this layout is C-contiguous for this shape")


def _applies(kinds, slot):
    if slot == "param":
        return "written" in kinds
    if slot == "grad":
        return "grad" in kinds or "shape" in kinds
    return "written" in kinds or "shape" in kinds


# -- hostile hyperparameter values, by check kind -------------------------------------

HUGE = 10**400  # an int no double holds
BAD_VALUES = {
    "nonneg": [(-1.0, ValueError), (-1e-300, ValueError), (math.nan, ValueError),
               (math.inf, ValueError), (-math.inf, ValueError), (HUGE, ValueError),
               ("0.1", TypeError), (None, TypeError), (True, TypeError),
               (1 + 0j, TypeError), (np.array([0.1]), TypeError)],
    "finite": [(math.nan, ValueError), (math.inf, ValueError), (-math.inf, ValueError),
               (HUGE, ValueError), ("0", TypeError), (None, TypeError), (False, TypeError)],
    "unit": [(-0.1, ValueError), (1.5, ValueError), (math.nan, ValueError),
             (math.inf, ValueError), (-math.inf, ValueError), (HUGE, ValueError),
             ("0.5", TypeError), (None, TypeError)],
    "betas": [((1.0, 0.999), ValueError), ((0.9, 1.0), ValueError),
              ((-0.1, 0.999), ValueError), ((0.9, -1e-3), ValueError),
              ((math.nan, 0.999), ValueError), ((0.9, math.inf), ValueError),
              ((0.9, HUGE), ValueError), (0.9, TypeError), ((0.9,), TypeError),
              ((0.9, 0.99, 0.9), TypeError), ("ab", TypeError), (None, TypeError),
              ((0.9, "0.99"), TypeError), ((None, 0.999), TypeError)],
    "bool": [(1, TypeError), (0, TypeError), ("True", TypeError), (None, TypeError),
             (1.0, TypeError), (np.array(True), TypeError)],
    "pair": [((math.nan, 1.0), ValueError), ((1.0, math.nan), ValueError), (0.5, TypeError),
             ((1.0,), TypeError), (None, TypeError), (("a", 1.0), TypeError)],
    "real": [(math.nan, ValueError), ("1", TypeError), (None, TypeError), (True, TypeError)],
    "etas": [((1.5, 1.2), ValueError), ((0.5, 0.9), ValueError), ((0.0, 1.2), ValueError),
             ((math.nan, 1.2), ValueError), ((0.5, math.nan), ValueError), (0.5, TypeError),
             ((0.5,), TypeError), (None, TypeError)],
    "betas3": [((1.0, 0.9, 0.9), ValueError), ((0.9, -0.1, 0.9), ValueError),
               ((0.9, 0.9, math.nan), ValueError), ((0.9, 0.9), TypeError), (0.9, TypeError),
               (None, TypeError)],
    "nonpos": [(0.1, ValueError), (math.inf, ValueError), (-math.inf, ValueError),
               (math.nan, ValueError), (HUGE, ValueError), ("0", TypeError), (None, TypeError)],
    "at_least_one": [(0.5, ValueError), (0, ValueError), (-1.0, ValueError),
                     (math.inf, ValueError), (math.nan, ValueError), (None, TypeError),
                     ("2", TypeError)],
    "adafactor_eps": [((-1.0, 1e-3), ValueError), ((None, -1e-3), ValueError),
                      ((None, math.nan), ValueError), ((None, math.inf), ValueError),
                      (1e-30, TypeError), ((None,), TypeError), (None, TypeError)],
}
# A check kind this file does not know yet still gets the wrong types.
GENERIC_BAD_VALUES = [(None, TypeError), ("0.5", TypeError), (object(), TypeError)]


def bad_values(kind):
    return BAD_VALUES.get(kind, GENERIC_BAD_VALUES)


def hyper_names(h):
    """What a message about hyperparameter `h` may call it: its name, or torch's wording."""
    names = [h.name]
    if h.message:
        names.append(h.message.split("{")[0].strip())
    return names


def assert_names_hyper(excinfo, h):
    message = str(excinfo.value)
    assert any(name in message for name in hyper_names(h)), \
        f"message {message!r} names none of {hyper_names(h)}"


def hyper_cases(functional_only):
    cases = []
    for algorithm in ALGORITHMS:
        for h in algorithm.hyper:
            if functional_only and h.kernel_names == ():
                continue
            for index, (value, exc) in enumerate(bad_values(h.check)):
                cases.append(pytest.param(algorithm, h, value, exc,
                                          id=f"{algorithm.name}-{h.name}-{index}"))
    return cases


BAD_STEPS = [(0, ValueError), (-1, ValueError), (2**53 + 1, ValueError), (HUGE, ValueError),
             (1.5, TypeError), (2.0, TypeError), (np.float64(2.0), TypeError),
             ("2", TypeError), (None, TypeError), (True, TypeError)]


# == the functional API ================================================================

class FunctionalCall:
    """A good functional call of `algorithm` over `SHAPE` arrays of `dtype`."""

    def __init__(self, algorithm, dtype, seed=0):
        self.algorithm = algorithm
        self.hyper = richest_config(algorithm)
        rng = np.random.default_rng(seed)
        self.slots = needed_slots(algorithm, self.hyper)
        self.buffers = {}
        shapes = {spec.name: state_shape(spec, SHAPE) for spec in algorithm.state}
        for name in self.slots:
            values = rng.standard_normal(shapes.get(name, SHAPE))
            self.buffers[name] = (values if name in ("param", "grad") else np.abs(values)
                                  ).astype(dtype)
        self.kwargs = functional_kwargs(algorithm, self.hyper, 3, False)
        self.extra = []

    def args(self):
        return [self.buffers.get(name) for name in self.algorithm.buffer_names]

    def snapshot(self):
        return Snapshot(list(self.buffers.values()) + self.extra)

    def __call__(self):
        self.algorithm.functional(*self.args(), **self.kwargs)


def buffer_cases():
    cases = []
    for algorithm in ALGORITHMS:
        slots = needed_slots(algorithm, richest_config(algorithm))
        for slot in slots:
            for case_id, make, exc, kinds, fragment in BUFFER_CASES:
                if _applies(kinds, slot):
                    cases.append(pytest.param(algorithm, slot, make, exc, fragment,
                                              id=f"{algorithm.name}-{slot}-{case_id}"))
    return cases


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm,slot,make,exc,fragment", buffer_cases())
def test_functional_rejects_bad_buffer(algorithm, slot, make, exc, fragment, dtype, tmp_path):
    call = FunctionalCall(algorithm, dtype)
    hostile, backing = make(call.buffers[slot], tmp_path)
    skip_if_still_contiguous(hostile, fragment)
    call.buffers[slot] = hostile
    call.extra += backing
    snap = call.snapshot()
    with pytest.raises(exc) as excinfo:
        call()
    assert_names(excinfo, [slot])
    assert re.search(fragment, str(excinfo.value)), str(excinfo.value)
    snap.check()


def pair_cases():
    cases = []
    for algorithm in ALGORITHMS:
        slots = needed_slots(algorithm, richest_config(algorithm))
        shapes = {spec.name: state_shape(spec, SHAPE) for spec in algorithm.state}
        for i, first in enumerate(slots):
            for second in slots[i + 1:]:
                if shapes.get(first, SHAPE) != shapes.get(second, SHAPE):
                    continue  # a shape mismatch is reported before any overlap
                for how in ("same", "partial"):
                    cases.append(pytest.param(algorithm, first, second, how,
                                              id=f"{algorithm.name}-{first}-{second}-{how}"))
    return cases


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm,first,second,how", pair_cases())
def test_functional_rejects_aliased_buffers(algorithm, first, second, how, dtype):
    """Any two buffers of a call that are the same memory, or overlap by half."""
    call = FunctionalCall(algorithm, dtype)
    if how == "same":
        call.buffers[second] = call.buffers[first]
    else:
        size = call.buffers[first].size
        backing = np.random.default_rng(1).standard_normal(2 * size).astype(dtype)
        call.buffers[first] = backing[:size].reshape(SHAPE)
        call.buffers[second] = backing[size // 2:size // 2 + size].reshape(SHAPE)
        call.extra.append(backing)
    snap = call.snapshot()
    with pytest.raises(ValueError, match="same memory" if how == "same" else "overlap") as info:
        call()
    assert_names(info, [first, second])
    snap.check()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm,h,value,exc", hyper_cases(functional_only=True))
def test_functional_rejects_bad_hyperparameter(algorithm, h, value, exc, dtype):
    call = FunctionalCall(algorithm, dtype)
    call.kwargs[h.name] = value
    snap = call.snapshot()
    with pytest.raises(exc) as excinfo:
        call()
    assert_names_hyper(excinfo, h)
    snap.check()


def step_cases():
    return [pytest.param(a, value, exc, id=f"{a.name}-{i}")
            for a in ALGORITHMS if "step" in a.per_param  # the functional takes a step
            for i, (value, exc) in enumerate(BAD_STEPS)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm,value,exc", step_cases())
def test_functional_rejects_bad_step(algorithm, value, exc, dtype):
    call = FunctionalCall(algorithm, dtype)
    call.kwargs["step"] = value
    snap = call.snapshot()
    with pytest.raises(exc, match="step"):
        call()
    snap.check()


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if "first_step" in a.per_param],
                         ids=lambda a: a.name)
@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_functional_rejects_bad_first_step(algorithm, value):
    call = FunctionalCall(algorithm, np.float64)
    call.kwargs["first_step"] = value
    snap = call.snapshot()
    with pytest.raises(TypeError, match="first_step"):
        call()
    snap.check()


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_functional_rejects_unknown_and_missing_keywords(algorithm):
    call = FunctionalCall(algorithm, np.float64)
    snap = call.snapshot()
    call.kwargs["bogus"] = 1.0
    with pytest.raises(TypeError, match="bogus"):
        call()
    del call.kwargs["bogus"]
    name = next(iter(call.kwargs))
    del call.kwargs[name]
    with pytest.raises(TypeError, match=name):
        call()
    snap.check()


# == the class API =====================================================================

def make_optimizer(algorithm, dtype, seed=0, steps=1):
    """An optimizer over three parameters in two groups, after `steps` good steps."""
    rng = np.random.default_rng(seed)
    hyper = richest_config(algorithm)
    params = [rng.standard_normal(s).astype(dtype) for s in (SHAPE, (5,), (2, 2))]
    opt = algorithm.cls([{"params": params[:2]}, {"params": params[2:], "lr": hyper["lr"] / 2}],
                        **hyper)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(dtype) for p in params])
    return opt


def good_grads(opt, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in opt.params]


class OptimizerSnapshot:
    """Parameters, state (buffers and steps) and hyperparameters of an optimizer."""

    def __init__(self, opt, extra=()):
        self.opt = opt
        self.params = [p.copy() for p in opt.params]
        self.state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                          for k, v in s.items()} for i, s in opt.state.items()}
        self.groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        self.extra = Snapshot(list(extra))

    def check(self):
        opt = self.opt
        for p, q in zip(opt.params, self.params):
            assert p.tobytes() == q.tobytes(), "a rejected call modified a parameter"
        assert set(opt.state) == set(self.state)
        for i, saved in self.state.items():
            assert set(opt.state[i]) == set(saved)
            for key, value in saved.items():
                if isinstance(value, np.ndarray):
                    assert opt.state[i][key].tobytes() == value.tobytes(), f"state[{i}][{key}]"
                else:
                    assert opt.state[i][key] == value
        assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] \
            == self.groups
        self.extra.check()


def grad_cases():
    cases = []
    for algorithm in ALGORITHMS:
        for case_id, make, exc, kinds, fragment in BUFFER_CASES:
            if _applies(kinds, "grad") and case_id != "none":  # None skips a parameter
                cases.append(pytest.param(algorithm, make, exc, fragment,
                                          id=f"{algorithm.name}-{case_id}"))
    return cases


@pytest.mark.parametrize("index", [0, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm,make,exc,fragment", grad_cases())
def test_step_rejects_bad_gradient(algorithm, make, exc, fragment, dtype, index, tmp_path):
    opt = make_optimizer(algorithm, dtype)
    grads = good_grads(opt)
    grads[index], backing = make(grads[index], tmp_path)
    snap = OptimizerSnapshot(opt, backing)
    with pytest.raises(exc) as excinfo:
        opt.step(grads)
    assert_names(excinfo, [f"grads[{index}]"])
    assert re.search(fragment, str(excinfo.value)), str(excinfo.value)
    snap.check()


def state_cases():
    cases = []
    for algorithm in ALGORITHMS:
        hyper = richest_config(algorithm)
        for spec in algorithm.state:
            if not spec.needed(hyper) or state_shape(spec, SHAPE) is None:
                continue
            for case_id, make, exc, kinds, fragment in BUFFER_CASES:
                # a state entry set to None counts as missing and is created afresh
                if _applies(kinds, spec.name) and case_id != "none":
                    cases.append(pytest.param(algorithm, spec.name, make, exc, fragment,
                                              id=f"{algorithm.name}-{spec.name}-{case_id}"))
    return cases


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm,key,make,exc,fragment", state_cases())
def test_step_rejects_bad_state_buffer(algorithm, key, make, exc, fragment, dtype, tmp_path):
    """A state buffer that someone replaced between steps."""
    opt = make_optimizer(algorithm, dtype)
    hostile, backing = make(opt.state[0][key], tmp_path)
    skip_if_still_contiguous(hostile, fragment)
    opt.state[0][key] = hostile
    snap = OptimizerSnapshot(opt, backing)
    with pytest.raises(exc) as excinfo:
        opt.step(good_grads(opt))
    assert_names(excinfo, [f"state[0][{key!r}]"])
    snap.check()


GRADS_CONTAINERS = [
    ("ndarray", lambda grads: np.stack([g.ravel()[:4] for g in grads]), TypeError),
    ("dict", lambda grads: dict(enumerate(grads)), TypeError),
    ("none", lambda grads: None, TypeError),
    ("generator", lambda grads: (g for g in grads), TypeError),
    ("short", lambda grads: grads[:-1], ValueError),
    ("long", lambda grads: grads + [grads[0].copy()], ValueError),
    ("empty", lambda grads: [], ValueError),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("case_id,make,exc", GRADS_CONTAINERS, ids=[c[0] for c in GRADS_CONTAINERS])
def test_step_rejects_bad_gradient_list(algorithm, case_id, make, exc):
    opt = make_optimizer(algorithm, np.float32)
    snap = OptimizerSnapshot(opt)
    with pytest.raises(exc, match="grads|gradients"):
        opt.step(make(good_grads(opt)))
    snap.check()


ALIASES = [
    # id, grads built from (opt, grads), the labels the message must name
    ("grad-is-its-param", lambda opt, g: (opt.params[0],) + tuple(g[1:]), ["params[0]", "grads[0]"]),
    ("grad-is-another-param", lambda opt, g: (g[0], g[1], opt.params[1][:4].reshape(2, 2)),
     ["params[1]", "grads[2]"]),
    ("grad-is-a-state-buffer", lambda opt, g: (opt.state[0][_first_state(opt)],) + tuple(g[1:]),
     ["grads[0]", "state[0]"]),
    ("grad-is-another-state-buffer",
     lambda opt, g: (g[0], g[1], opt.state[0][_first_state(opt)].ravel()[:4].reshape(2, 2)),
     ["grads[2]", "state[0]"]),
]


def _first_state(opt):
    """The first state buffer of parameter 0 shaped like it (factored state is not)."""
    return next(k for k, v in opt.state[0].items()
                if isinstance(v, np.ndarray) and v.shape == opt.params[0].shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("case_id,make,names", ALIASES, ids=[c[0] for c in ALIASES])
def test_step_rejects_aliased_gradients(algorithm, case_id, make, names, dtype):
    opt = make_optimizer(algorithm, dtype)
    if "state" in case_id and not any(isinstance(v, np.ndarray) and v.shape == SHAPE
                                      for v in opt.state.get(0, {}).values()):
        pytest.skip("this algorithm keeps no state buffer shaped like its parameter")
    grads = list(make(opt, good_grads(opt)))
    snap = OptimizerSnapshot(opt)
    with pytest.raises(ValueError, match="same memory|overlap") as excinfo:
        opt.step(grads)
    assert_names(excinfo, names)
    snap.check()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("how", ["same-array-twice-via-groups", "two-views-of-one-array",
                                 "partial-overlap"])
def test_aliased_parameters_are_rejected(algorithm, how, dtype):
    """The same parameter twice: refused at construction when it is the same object,
    at the first step (before any write) when two distinct views share memory."""
    hyper = richest_config(algorithm)
    backing = np.random.default_rng(0).standard_normal(16).astype(dtype)
    snap = Snapshot([backing])
    if how == "same-array-twice-via-groups":
        with pytest.raises(ValueError, match="more than once"):
            algorithm.cls([{"params": [backing]}, {"params": [backing]}], **hyper)
        return
    if how == "two-views-of-one-array":
        params = [backing[:8], backing[:8]]
        names = ["params[0]", "params[1]"]
    else:
        params = [backing[:8], backing[4:12]]
        names = ["params[0]", "params[1]"]
    opt = algorithm.cls(params, **hyper)
    with pytest.raises(ValueError, match="same memory|overlap") as excinfo:
        opt.step([np.ones(8, dtype), np.ones(8, dtype)])
    assert_names(excinfo, names)
    snap.check()
    assert opt.state == {}


def param_cases():
    cases = []
    for algorithm in ALGORITHMS:
        for case_id, make, exc, kinds, fragment in BUFFER_CASES:
            # parameters of different float dtypes may share an optimizer
            if "written" in kinds and case_id not in ("none", "other-float"):
                cases.append(pytest.param(algorithm, make, exc, fragment,
                                          id=f"{algorithm.name}-{case_id}"))
    return cases


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm,make,exc,fragment", param_cases())
def test_constructor_rejects_bad_parameter(algorithm, make, exc, fragment, dtype, tmp_path):
    good = np.arange(12, dtype=dtype).reshape(SHAPE)
    hostile, backing = make(good.copy(), tmp_path)
    snap = Snapshot([good, hostile] + backing)
    with pytest.raises(exc) as excinfo:
        algorithm.cls([good, hostile], **richest_config(algorithm))
    assert_names(excinfo, ["params[1]"])
    snap.check()


BAD_PARAMS_ARGUMENT = [
    ("none", lambda p: None, TypeError, "params"),
    ("scalar", lambda p: 3.0, TypeError, "params"),
    ("bare-array", lambda p: p, TypeError, "params"),
    ("dict", lambda p: {"params": [p]}, TypeError, "params"),
    ("empty", lambda p: [], ValueError, "empty parameter list"),
    ("group-without-params", lambda p: [{"lr": 0.1}], ValueError, "params"),
    ("group-not-a-dict", lambda p: [{"params": [p]}, [p]], TypeError, "param group"),
    ("list-of-lists", lambda p: [p.tolist()], TypeError, r"params\[0\]"),
    ("none-in-list", lambda p: [p, None], TypeError, r"params\[1\]"),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("case_id,make,exc,match", BAD_PARAMS_ARGUMENT,
                         ids=[c[0] for c in BAD_PARAMS_ARGUMENT])
def test_constructor_rejects_bad_params_argument(algorithm, case_id, make, exc, match):
    p = np.ones(4)
    with pytest.raises(exc, match=match):
        algorithm.cls(make(p))
    assert np.all(p == 1)


@pytest.mark.parametrize("algorithm,h,value,exc", hyper_cases(functional_only=False))
def test_constructor_rejects_bad_hyperparameter(algorithm, h, value, exc):
    p = np.ones(4)
    with pytest.raises(exc) as excinfo:
        algorithm.cls([p], **{h.name: value})
    assert_names_hyper(excinfo, h)
    with pytest.raises(exc) as excinfo:
        algorithm.cls([{"params": [p]}, {"params": [np.ones(2)], h.name: value}])
    assert_names_hyper(excinfo, h)


@pytest.mark.parametrize("algorithm,h,value,exc", hyper_cases(functional_only=False))
def test_step_rejects_hyperparameter_edited_to_bad_value(algorithm, h, value, exc):
    """A schedule that sets a bad value between steps: the step refuses, writes nothing."""
    opt = make_optimizer(algorithm, np.float64)
    snap = OptimizerSnapshot(opt)
    opt.param_groups[1][h.name] = value
    with pytest.raises(exc) as excinfo:
        opt.step(good_grads(opt))
    assert_names_hyper(excinfo, h)
    opt.param_groups[1][h.name] = snap.groups[1][h.name]
    snap.check()


# -- state dicts ------------------------------------------------------------------------

def _state_keys(opt):
    return [k for k, v in opt.state[0].items() if isinstance(v, np.ndarray)]


def state_dict_cases(algorithm):
    """(id, state dict edit, exception, message pattern) for `algorithm`."""
    cases = [
        ("not-a-dict", lambda sd: [sd["state"], sd["param_groups"]], ValueError, "state_dict"),
        ("no-state", lambda sd: {"param_groups": sd["param_groups"]}, ValueError, "state"),
        ("no-groups", lambda sd: {"state": sd["state"]}, ValueError, "param_groups"),
        ("state-not-a-dict", lambda sd: dict(sd, state=[1]), TypeError, "state"),
        ("one-group-too-few", lambda sd: dict(sd, param_groups=sd["param_groups"][:1]),
         ValueError, "number of parameter groups"),
        ("one-group-too-many", lambda sd: dict(sd, param_groups=sd["param_groups"] * 2),
         ValueError, "number of parameter groups"),
        ("group-too-small", lambda sd: dict(sd, param_groups=[
            dict(sd["param_groups"][0], params=[0]), sd["param_groups"][1]]),
         ValueError, "size of optimizer's group"),
        ("group-too-large", lambda sd: dict(sd, param_groups=[
            dict(sd["param_groups"][0], params=[0, 1, 5]), sd["param_groups"][1]]),
         ValueError, "size of optimizer's group"),
        ("group-not-a-dict", lambda sd: dict(sd, param_groups=[[0, 1], sd["param_groups"][1]]),
         ValueError, "group"),
        ("duplicate-ids", lambda sd: dict(sd, param_groups=[
            dict(sd["param_groups"][0], params=[0, 0]), sd["param_groups"][1]]),
         ValueError, "twice"),
        ("state-for-unknown-param", lambda sd: dict(sd, state=dict(sd["state"], **{"7": {}})),
         ValueError, "'7'"),
        ("entry-not-a-dict", lambda sd: _edit(sd, 0, None, replace=[1, 2]), TypeError,
         r"state\[0\]"),
        ("unknown-key", lambda sd: _edit(sd, 0, "bogus", np.zeros(SHAPE)), ValueError, "bogus"),
    ]
    if algorithm.tracks_step:
        cases += [
            ("missing-step", lambda sd: _edit(sd, 0, "step", delete=True), ValueError, "step"),
        ]
        for index, (value, exc) in enumerate([
                (-1, ValueError), (1.5, ValueError), (math.inf, ValueError),
                (math.nan, TypeError), ("x", TypeError), (None, TypeError), (True, TypeError),
                (2**53, ValueError), (HUGE, ValueError), (np.array([1, 2]), TypeError)]):
            cases.append((f"bad-step-{index}", lambda sd, v=value: _edit(sd, 0, "step", v),
                          exc, r"state\[0\]\['step'\]"))
    hyper = richest_config(algorithm)
    for spec in algorithm.state:
        if not spec.needed(hyper) or state_shape(spec, SHAPE) is None:
            continue
        key = spec.name
        label = rf"state\[0\]\['{key}'\]"
        cases += [
            (f"{key}-shape", lambda sd, k=key: _edit(sd, 0, k, np.resize(sd["state"][0][k],
                                                                        SHAPE[::-1])),
             ValueError, label),
            (f"{key}-size", lambda sd, k=key: _edit(sd, 0, k, np.resize(sd["state"][0][k], 5)),
             ValueError, label),
            (f"{key}-dtype", lambda sd, k=key: _edit(sd, 0, k, sd["state"][0][k].astype(
                np.float64 if sd["state"][0][k].dtype == np.float32 else np.float32)),
             TypeError, label),
            (f"{key}-int", lambda sd, k=key: _edit(sd, 0, k, np.zeros(SHAPE, np.int64)),
             TypeError, label),
            (f"{key}-byte-swapped", lambda sd, k=key: _edit(sd, 0, k, sd["state"][0][k].astype(
                sd["state"][0][k].dtype.newbyteorder())), TypeError, label),
            (f"{key}-list", lambda sd, k=key: _edit(sd, 0, k, sd["state"][0][k].tolist()),
             TypeError, label),
            (f"{key}-none", lambda sd, k=key: _edit(sd, 0, k, None), TypeError, label),
        ]
        if spec.fill is not None:
            cases.append((f"{key}-missing", lambda sd, k=key: _edit(sd, 0, k, delete=True),
                          ValueError, label))
    for h in algorithm.hyper:
        for index, (value, exc) in enumerate(bad_values(h.check)[:3]):
            cases.append((f"group-{h.name}-{index}", lambda sd, n=h.name, v=value: dict(
                sd, param_groups=[sd["param_groups"][0], dict(sd["param_groups"][1], **{n: v})]),
                exc, "|".join(re.escape(n) for n in hyper_names(h))))
    return cases


def _edit(sd, index, key, value=None, delete=False, replace=None):
    state = dict(sd["state"])
    if replace is not None:
        state[index] = replace
    else:
        entry = dict(state[index])
        if delete:
            del entry[key]
        else:
            entry[key] = value
        state[index] = entry
    return dict(sd, state=state)


def all_state_dict_cases():
    return [pytest.param(algorithm, edit, exc, match, id=f"{algorithm.name}-{case_id}")
            for algorithm in ALGORITHMS
            for case_id, edit, exc, match in state_dict_cases(algorithm)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm,edit,exc,match", all_state_dict_cases())
def test_load_state_dict_rejects_bad_state_dict(algorithm, edit, exc, match, dtype):
    opt = make_optimizer(algorithm, dtype, steps=2)
    good = opt.state_dict()
    good = {"state": {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                          for k, v in s.items()} for i, s in good["state"].items()},
            "param_groups": [dict(g) for g in good["param_groups"]]}
    snap = OptimizerSnapshot(opt)
    bad = edit(good)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(bad)
    snap.check()
    opt.load_state_dict(good)  # the good dict still loads after the refusal
    snap.check()


# -- regressions --------------------------------------------------------------------------

def test_huge_int_hyperparameter_is_a_value_error_not_an_overflow():
    # float(10**400) raises OverflowError; it used to escape the check
    with pytest.raises(ValueError, match="Invalid learning rate"):
        fastopt.SGD([np.zeros(2)], lr=HUGE)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        fastopt.Adam([np.zeros(2)], betas=(0.9, -HUGE))


def test_huge_step_is_a_value_error_not_an_overflow():
    a = np.zeros(2)
    with pytest.raises(ValueError, match="step"):
        fastopt.functional.adagrad(a, np.ones(2), np.zeros(2), step=HUGE, lr=0.1, lr_decay=0.0,
                                   weight_decay=0.0, eps=1e-10, maximize=False)
    opt = fastopt.Adam([a])
    opt.step([np.ones(2)])
    sd = opt.state_dict()
    for step in (math.inf, HUGE):
        with pytest.raises(ValueError, match="step"):
            opt.load_state_dict({"state": {0: dict(sd["state"][0], step=step)},
                                 "param_groups": sd["param_groups"]})


# == legal but unusual inputs ==========================================================

def _reference_run(algorithm, dtype, make_grad, tmp_path, shape=SHAPE, steps=3):
    """Run the functional kernel with gradients from `make_grad` and the reference with
    plain copies; they must agree bit for bit and the gradients must be untouched."""
    hyper = richest_config(algorithm)
    call = FunctionalCall(algorithm, dtype)
    rng = np.random.default_rng(3)
    shapes = {spec.name: state_shape(spec, shape) for spec in algorithm.state}
    call.buffers = {k: np.resize(v, shapes.get(k, shape)) for k, v in call.buffers.items()
                    if shapes.get(k, shape) is not None}
    for spec in algorithm.state:  # state this shape uses that the default shape does not
        if spec.needed(hyper) and shapes[spec.name] is not None and spec.name not in call.buffers:
            fill = 0.0 if spec.fill is None else spec.fill(hyper)
            call.buffers[spec.name] = np.full(shapes[spec.name], fill, dtype)
    ref = {k: v.copy() for k, v in call.buffers.items()}
    for step in range(1, steps + 1):
        plain = rng.standard_normal(shape).astype(dtype)
        grad = make_grad(plain, tmp_path / f"g{step}.bin")
        kwargs = functional_kwargs(algorithm, hyper, step, step == 1)
        call.buffers["grad"] = grad
        algorithm.functional(*call.args(), **kwargs)
        ref["grad"] = plain
        with np.errstate(invalid="ignore"):  # random state may make a centered sqrt NaN
            algorithm.reference(*[ref.get(n) for n in algorithm.buffer_names], **kwargs)
        assert np.asarray(grad).tobytes() == plain.tobytes()
    for name in call.buffers:
        if name != "grad":
            assert call.buffers[name].tobytes() == ref[name].tobytes(), name


def _ro_flag(plain, path):
    g = plain.copy()
    g.flags.writeable = False
    return g


def _ro_memmap(plain, path):
    plain.tofile(path)
    return np.memmap(path, dtype=plain.dtype, mode="r", shape=plain.shape)


def _ro_bytes(plain, path):
    return np.frombuffer(plain.tobytes(), plain.dtype).reshape(plain.shape)


READ_ONLY_GRADS = [("flag", _ro_flag), ("memmap", _ro_memmap), ("bytes", _ro_bytes)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("how,make", READ_ONLY_GRADS, ids=[c[0] for c in READ_ONLY_GRADS])
def test_read_only_gradients_work(algorithm, how, make, dtype, tmp_path):
    _reference_run(algorithm, dtype, make, tmp_path)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("shape", [(), (0,), (0, 4), (4, 0, 2)], ids=str)
def test_zero_d_and_size_zero_buffers_work(algorithm, shape, dtype, tmp_path):
    _reference_run(algorithm, dtype, lambda plain, path: plain.copy(), tmp_path, shape=shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_size_zero_parameters_in_every_position_with_odd_layouts(algorithm, dtype, tmp_path):
    """Size-0 parameters first, between and last, with read-only gradients and a
    gradient shared by two parameters (reading one array twice is legal)."""
    hyper = richest_config(algorithm)
    rng = np.random.default_rng(4)
    shapes = [(0,), (6,), (0, 3), (), (6,), (0,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    live = [i for i, p in enumerate(params) if p.size]
    twins = [params[i].copy() for i in live]
    opt = algorithm.cls([{"params": params[:3]}, {"params": params[3:]}], **hyper)
    ref = algorithm.cls([{"params": twins[:1]}, {"params": twins[1:]}], **hyper)
    for _ in range(3):
        shared = rng.standard_normal(6).astype(dtype)
        shared.flags.writeable = False
        grads = [np.zeros(p.shape, dtype) if p.size == 0 else None for p in params]
        grads[1] = grads[4] = shared
        grads[3] = np.asarray(rng.standard_normal(), dtype)
        opt.step(grads)
        ref.step([grads[i].copy() for i in live])
    for i, twin in zip(live, twins):
        assert params[i].tobytes() == twin.tobytes()
    assert all(p.size == 0 for i, p in enumerate(params) if i not in live)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_writable_memmap_parameter_is_updated_in_place(algorithm, tmp_path):
    hyper = richest_config(algorithm)
    start = np.random.default_rng(5).standard_normal(SHAPE)
    path = tmp_path / "param.bin"
    start.tofile(path)
    mapped = np.memmap(path, dtype=np.float64, mode="r+", shape=SHAPE)
    twin = start.copy()
    opt, ref = algorithm.cls([mapped], **hyper), algorithm.cls([twin], **hyper)
    for grad in np.random.default_rng(6).standard_normal((3,) + SHAPE):
        opt.step([grad])
        ref.step([grad])
    mapped.flush()
    assert np.fromfile(path, dtype=np.float64).tobytes() == twin.tobytes()


def test_battery_is_large():
    """The battery has at least 60 distinct hostile cases before multiplication."""
    distinct = (len(BUFFER_CASES) + sum(len(v) for v in BAD_VALUES.values())
                + len(BAD_STEPS) + len(GRADS_CONTAINERS) + len(ALIASES)
                + len(BAD_PARAMS_ARGUMENT) + len(state_dict_cases(ALGORITHMS[-1])))
    assert distinct >= 60
