"""step(grads, skip_if_nonfinite=True): a gradient with NaN or +-inf anywhere makes
the step write nothing at all and report that it skipped."""
import numpy as np
import pytest

import fastopt
from fastopt import _ops
from conftest import ALGORITHMS, algorithm_configs, assert_unchanged, random_problem, snapshot


BAD_VALUES = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_step_is_skipped_and_the_trajectory_goes_on(algorithm, hyper, dtype):
    rng = np.random.default_rng(2)
    p, grads = random_problem(rng, 3000, dtype, 8)
    q = np.ones(7, dtype)
    twin_p, twin_q = p.copy(), q.copy()
    opt = algorithm.cls([p, q], **hyper)
    twin = algorithm.cls([twin_p, twin_q], **hyper)
    q_grad = np.full(7, 0.25, dtype)
    for k, g in enumerate(grads):
        if k in (3, 5):  # a step with a bad value, somewhere in either gradient
            snap = snapshot(opt)
            bad = g.copy()
            bad[rng.integers(bad.size)] = BAD_VALUES[k % 3]
            assert opt.step([bad, q_grad], skip_if_nonfinite=True) is False
            assert_unchanged(opt, snap)
            bad_q = q_grad.copy()
            bad_q[-1] = BAD_VALUES[(k + 1) % 3]
            assert opt.step([g, bad_q], skip_if_nonfinite=True) is False
            assert_unchanged(opt, snap)
        assert opt.step([g, q_grad], skip_if_nonfinite=True) is True
        twin.step([g, q_grad])
    assert opt.skipped_steps == 4 and twin.skipped_steps == 0
    assert p.tobytes() == twin_p.tobytes() and q.tobytes() == twin_q.tobytes()
    for i, s in twin.state.items():
        for key, value in s.items():
            if isinstance(value, np.ndarray):
                assert opt.state[i][key].tobytes() == value.tobytes()
            else:
                assert opt.state[i][key] == value


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_skipped_first_step_creates_no_state(algorithm):
    p = np.ones(5)
    opt = algorithm.cls([p], lr=0.1)
    assert opt.step([np.array([0.0, 1.0, np.nan, 2.0, 3.0])], skip_if_nonfinite=True) is False
    assert opt.state == {}
    np.testing.assert_array_equal(p, np.ones(5))
    assert opt.step([None], skip_if_nonfinite=True) is True  # nothing to check, nothing to do
    assert opt.state == {}


def test_return_value_and_counter_without_the_flag():
    p = np.ones(3)
    opt = fastopt.SGD([p], lr=0.1)
    assert opt.skipped_steps == 0
    assert opt.step([np.ones(3)]) is None
    opt.step([np.array([np.nan, 0.0, 0.0])])  # without the flag, NaN goes through
    assert np.isnan(p[0]) and opt.skipped_steps == 0


@pytest.mark.parametrize("n", [1, 7, 8, 1023, 1024, 1025, 5000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_position_is_checked(n, dtype):
    positions = sorted({0, n // 2, n - 1, min(n - 1, 1023), min(n - 1, 1024)})
    params = [np.zeros(3, dtype), np.zeros(n, dtype)]
    for position in positions:
        for value in BAD_VALUES:
            g = np.ones(n, dtype)
            g[position] = value
            assert _ops.check_grads(params, [np.ones(3, dtype), g], finite=True) is False
    big = np.finfo(dtype).max
    g = np.full(n, big, dtype)
    g[0] = -big
    assert _ops.check_grads(params, [None, g], finite=True) is True


def bad_inputs(p):
    nan = np.full(4, np.nan)
    return [
        ([nan], ValueError, "expected 2 gradients"),
        (nan, TypeError, "grads must be a list or tuple"),
        ([nan, np.ones(5, np.float32)], TypeError, r"grads\[1\] has dtype float32"),
        ([nan, np.ones(4)], ValueError, r"grads\[1\] has shape \(4,\)"),
        ([nan, [1.0] * 5], TypeError, r"grads\[1\] must be a numpy.ndarray, got list"),
        ([nan, np.ones(10)[::2]], ValueError, r"grads\[1\] must be C-contiguous"),
        ([nan, p[1]], ValueError, r"params\[1\] and grads\[1\] are the same memory"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_bad_input_raises_even_when_the_step_would_be_skipped(case):
    p = [np.zeros(4), np.zeros(5)]
    opt = fastopt.Adam(p, lr=0.1)
    opt.step([np.ones(4), np.ones(5)])
    snap = snapshot(opt)
    grads, exc, match = bad_inputs(p)[case]
    with pytest.raises(exc, match=match):
        opt.step(grads, skip_if_nonfinite=True)
    assert_unchanged(opt, snap)
    assert opt.skipped_steps == 0


def test_bad_hyperparameter_raises_even_when_the_step_would_be_skipped():
    p = np.zeros(3)
    opt = fastopt.SGD([p], lr=0.1)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        opt.step([np.full(3, np.inf)], skip_if_nonfinite=True)
    assert opt.skipped_steps == 0
