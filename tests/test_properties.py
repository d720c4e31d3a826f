"""Property tests (hypothesis) over every algorithm of the registry and both dtypes.

Values are drawn from the whole float range -- subnormals, signed zeros, the largest and
smallest magnitudes -- and sizes from 0 up past a few vector widths.  The properties:

* the compiled kernel gives the reference's bits (NaN positions equal, every other
  element bit for bit, so signed zeros count);
* ``maximize=True`` on g gives the bits of ``maximize=False`` on -g;
* ``lr=0`` leaves the parameter's bits alone (except that IEEE addition turns -0.0 +
  +0.0 into +0.0, as torch does), as long as the update itself is not NaN;
* NaN and infinity in a gradient end up in the same elements as in torch.optim;
* where the build can run kernels on several threads, every thread count gives the
  bits of one thread.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastopt
from conftest import (ALGORITHMS, DTYPES, assert_same_bits, functional_kwargs, new_state,
                      special_values)

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
DTYPE_IDS = ["float32", "float64"]
WIDTH = {np.float32: 32, np.float64: 64}


def elements(dtype, bound=None, nonfinite=False):
    floats = st.floats(width=WIDTH[dtype], allow_nan=False, allow_infinity=False,
                       min_value=None if bound is None else -bound,
                       max_value=bound)
    specials = special_values(dtype, bound) + ([np.nan, np.inf, -np.inf] if nonfinite else [])
    return st.one_of(floats, st.sampled_from(specials))


@st.composite
def problems(draw, algorithm, dtype, bound=None, nonfinite=False, steps=3, max_size=70):
    """A configuration, a parameter and `steps` gradients for `algorithm`."""
    config = draw(st.sampled_from(algorithm.configs))
    hyper = dict(algorithm.defaults, **config)
    n = draw(st.integers(0, max_size))
    values = hnp.arrays(dtype, n, elements=elements(dtype, bound, nonfinite))
    param = draw(values)
    grads = [draw(values) for _ in range(draw(st.integers(1, steps)))]
    return hyper, param, grads


def run_kernel(algorithm, hyper, param, grads, reference=False):
    """Step `param` (in place) with each gradient; returns the state buffers."""
    state = new_state(algorithm, hyper, param)
    fn = algorithm.reference if reference else algorithm.functional
    with np.errstate(all="ignore"):
        for step, grad in enumerate(grads, start=1):
            fn(param, grad, *state, **functional_kwargs(algorithm, hyper, step, step == 1))
    return state


def cases():
    return [pytest.param(a, d, id=f"{a.name}-{i}") for a in ALGORITHMS
            for d, i in zip(DTYPES, DTYPE_IDS)]


@pytest.mark.parametrize("algorithm,dtype", cases())
@SETTINGS
@given(data=st.data())
def test_kernel_gives_the_reference_bits(algorithm, dtype, data):
    hyper, param, grads = data.draw(problems(algorithm, dtype, nonfinite=True))
    ref_param = param.copy()
    lr = data.draw(st.sampled_from([hyper["lr"], 0.0, 1.0, 1e-30, 1e30]))
    hyper["lr"] = lr
    state = run_kernel(algorithm, hyper, param, grads)
    ref_state = run_kernel(algorithm, hyper, ref_param, grads, reference=True)
    assert_same_bits(param, ref_param, "param")
    for spec, mine, ref in zip(algorithm.state, state, ref_state):
        if mine is not None:
            assert_same_bits(mine, ref, spec.name)


MAXIMIZING = [case for case in cases() if "maximize" in case.values[0].hyper_names]


@pytest.mark.parametrize("algorithm,dtype", MAXIMIZING)
@SETTINGS
@given(data=st.data())
def test_maximize_on_g_is_a_step_on_minus_g(algorithm, dtype, data):
    hyper, param, grads = data.draw(problems(algorithm, dtype))
    flipped = param.copy()
    state = run_kernel(algorithm, dict(hyper, maximize=True), param, grads)
    flipped_state = run_kernel(algorithm, dict(hyper, maximize=False), flipped,
                               [-g for g in grads])
    assert param.tobytes() == flipped.tobytes()
    for mine, theirs in zip(state, flipped_state):
        if mine is not None:
            assert mine.tobytes() == theirs.tobytes()


@pytest.mark.parametrize("algorithm,dtype", cases())
@SETTINGS
@given(data=st.data())
def test_lr_zero_leaves_the_parameter_bits_alone(algorithm, dtype, data):
    # Bounded values: an update that overflows to inf or NaN times lr=0 is NaN, and
    # then lr=0 is no no-op (in torch either).
    hyper, param, grads = data.draw(problems(algorithm, dtype, bound=1e8))
    lr_zero_is_no_op = getattr(algorithm, "lr_zero_is_no_op", None)  # a registry hook
    if lr_zero_is_no_op is not None and not lr_zero_is_no_op(hyper):
        return  # e.g. Rprop: its step sizes start at lr but are clamped from below
    start = param.copy()
    run_kernel(algorithm, dict(hyper, lr=0.0), param, grads)
    negative_zero = (start == 0) & np.signbit(start)
    assert param[~negative_zero].tobytes() == start[~negative_zero].tobytes()
    assert np.all(param[negative_zero] == 0)


TORCH_CASES = [case for case in cases() if case.values[0].torch is not None]


@pytest.mark.torch
@pytest.mark.parametrize("algorithm,dtype", TORCH_CASES)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(data=st.data())
def test_nan_and_inf_in_a_gradient_propagate_as_in_torch(algorithm, dtype, data):
    torch = pytest.importorskip("torch")
    config = data.draw(st.sampled_from(algorithm.configs))
    hyper = dict(algorithm.defaults, **config)
    n = data.draw(st.integers(1, 40))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    param = rng.standard_normal(n).astype(dtype)
    grads = []
    for _ in range(data.draw(st.integers(1, 4))):
        grad = rng.standard_normal(n).astype(dtype)
        special = data.draw(st.lists(st.tuples(st.integers(0, n - 1),
                                               st.sampled_from([np.nan, np.inf, -np.inf])),
                                     max_size=4))
        for index, value in special:
            grad[index] = value
        grads.append(grad)
    tparam = torch.tensor(param.copy(), requires_grad=True)
    kwargs = dict(hyper, foreach=False)
    theirs = getattr(torch.optim, algorithm.torch)([tparam], **kwargs)
    ours = algorithm.cls([param], **hyper)
    with np.errstate(all="ignore"):
        for grad in grads:
            tparam.grad = torch.from_numpy(grad.copy())
            theirs.step()
            ours.step([grad])
    expected = tparam.detach().numpy()
    np.testing.assert_array_equal(np.isnan(param), np.isnan(expected), err_msg="NaN positions")
    np.testing.assert_array_equal(np.isposinf(param), np.isposinf(expected), err_msg="+inf")
    np.testing.assert_array_equal(np.isneginf(param), np.isneginf(expected), err_msg="-inf")
    for key, value in theirs.state[tparam].items():
        if key == "step" or value is None:
            continue
        value = value.numpy()
        mine = ours.state[0][key]
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(value), err_msg=key)
        np.testing.assert_array_equal(np.isinf(mine), np.isinf(value), err_msg=key)


@pytest.mark.skipif(not (hasattr(fastopt, "set_num_threads")
                         and hasattr(fastopt, "get_num_threads")),
                    reason="this build has no thread-count control")
@pytest.mark.parametrize("algorithm,dtype", cases())
def test_results_do_not_depend_on_the_thread_count(algorithm, dtype):
    """Every thread count gives the bits of one thread, below and above any threshold
    for going parallel, with sizes that do not divide evenly between threads."""
    # restore the setting, not the count it resolves to (0 there means "follow OpenMP")
    setting = getattr(fastopt._kernels, "get_num_threads_setting", None)
    saved = setting() if setting is not None else fastopt.get_num_threads()
    rng = np.random.default_rng(11)
    try:
        for n in (1001, 2**21 + 7):
            hyper = dict(algorithm.defaults, **algorithm.configs[-1])
            start = rng.standard_normal(n).astype(dtype)
            grads = [rng.standard_normal(n).astype(dtype) for _ in range(2)]
            results = []
            for threads in (1, 2, 3, 4):
                fastopt.set_num_threads(threads)
                param = start.copy()
                state = run_kernel(algorithm, hyper, param, grads)
                results.append((param.tobytes(),
                                [None if b is None else b.tobytes() for b in state]))
            assert all(r == results[0] for r in results[1:]), f"n={n}"
    finally:
        fastopt.set_num_threads(None if setting is not None and saved == 0 else saved)
