"""Shared helpers for tests generated from the algorithm registry."""
import numpy as np
import pytest

import fastopt

ALGORITHMS = list(fastopt.ALGORITHMS.values())
DTYPES = [np.float32, np.float64]


def config_id(config):
    return ",".join(f"{k}={v}" for k, v in config.items()) or "defaults"


def algorithm_configs():
    """(algorithm, hyperparameters) for every test configuration of every algorithm."""
    cases = []
    for algorithm in ALGORITHMS:
        for config in algorithm.configs:
            cases.append(pytest.param(algorithm, dict(algorithm.defaults, **config),
                                      id=f"{algorithm.name}[{config_id(config)}]"))
    return cases


def functional_kwargs(algorithm, hyper, step, first_step, advanced=None):
    """Keyword arguments of `algorithm`'s functional kernel for a group `hyper`.

    `advanced` holds the scalars that `algorithm.advance_scalars` derives from its
    scalar state for this step; None computes them for a parameter without state
    (right on the first step only)."""
    kwargs = {h.name: hyper[h.name] for h in algorithm.hyper if h.kernel_names != ()}
    if "step" in algorithm.per_param:
        kwargs["step"] = step
    if "first_step" in algorithm.per_param:
        kwargs["first_step"] = first_step
    if algorithm.advanced:
        if advanced is None:
            advanced, _ = algorithm.advance_scalars(hyper, step, None)
        kwargs.update({name: advanced[name] for name in algorithm.advanced})
    return kwargs


def new_state(algorithm, hyper, param):
    """State buffers for the functional API; kernel-initialized ones start as NaN,
    so a kernel that reads them on the first step is caught."""
    buffers = []
    for spec in algorithm.state:
        shape = spec.shape_for(param.shape)
        if not spec.needed(hyper) or shape is None:
            buffers.append(None)
        elif spec.fill is None:
            buffers.append(np.full(shape, np.nan, dtype=param.dtype))
        else:
            buffers.append(np.full(shape, spec.fill(hyper), dtype=param.dtype))
    return buffers


def random_problem(rng, n, dtype, steps):
    """A parameter and `steps` gradients of `n` elements, with a spread of magnitudes."""
    param = (rng.standard_normal(n) * 2.0).astype(dtype)
    grads = []
    for _ in range(steps):
        g = rng.standard_normal(n) * np.exp(rng.uniform(-6, 2, n))
        g[rng.random(n) < 0.05] = 0.0
        grads.append(g.astype(dtype))
    return param, grads


def special_values(dtype, bound=None):
    """The values that break careless arithmetic, within `bound` if given."""
    info = np.finfo(dtype)
    values = [0.0, -0.0, 1.0, -1.0, float(info.smallest_subnormal),
              -float(info.smallest_subnormal), float(info.smallest_normal),
              float(info.tiny) * 3, float(info.eps), 1 - float(info.epsneg)]
    values += [float(info.max), -float(info.max), float(info.max) / 4] if bound is None else \
        [bound, -bound]
    return values


def assert_same_bits(actual, expected, what):
    """NaN in the same places, and every other element the same bits."""
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan, err_msg=f"{what}: NaN positions")
    assert actual[~nan].tobytes() == expected[~nan].tobytes(), \
        f"{what}: {actual[~nan]} != {expected[~nan]}"


def snapshot(opt):
    """Copies of every parameter and state entry of `opt`."""
    params = [p.copy() for p in opt.params]
    state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
             for i, s in opt.state.items()}
    return params, state


def assert_unchanged(opt, snap):
    """Every parameter and state entry of `opt` is byte-identical to `snap`."""
    params, state = snap
    for p, q in zip(opt.params, params):
        assert p.tobytes() == q.tobytes()
    assert set(opt.state) == set(state)
    for i, s in state.items():
        assert set(opt.state[i]) == set(s)
        for k, v in s.items():
            if isinstance(v, np.ndarray):
                assert opt.state[i][k].tobytes() == v.tobytes()
            else:
                assert opt.state[i][k] == v
