"""MultiOptimizer: several optimizers over their own parameters, stepped as one."""
import numpy as np
import pytest

import fastopt
from conftest import random_problem


def make(rng=None, dtype=np.float64):
    """Adam over two parameters (two groups) and SGD with momentum over one, with
    twins stepped separately."""
    rng = rng or np.random.default_rng(0)
    a, ga = random_problem(rng, 50, dtype, 12)
    b, gb = random_problem(rng, 9, dtype, 12)
    c, gc = random_problem(rng, 1030, dtype, 12)
    twins = [x.copy() for x in (a, b, c)]
    adam = fastopt.Adam([{"params": [a]}, {"params": [b], "lr": 0.02}], lr=0.01,
                        amsgrad=True)
    sgd = fastopt.SGD([c], lr=0.05, momentum=0.9, nesterov=True)
    multi = fastopt.MultiOptimizer([adam, sgd])
    twin_adam = fastopt.Adam([{"params": [twins[0]]}, {"params": [twins[1]], "lr": 0.02}],
                             lr=0.01, amsgrad=True)
    twin_sgd = fastopt.SGD([twins[2]], lr=0.05, momentum=0.9, nesterov=True)
    grads = [list(g) for g in zip(ga, gb, gc)]
    return multi, (twin_adam, twin_sgd), [a, b, c], twins, grads


def assert_same(xs, ys):
    for x, y in zip(xs, ys):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_equals_each_optimizer_stepping_alone(dtype):
    multi, (twin_adam, twin_sgd), params, twins, grads = make(dtype=dtype)
    for k, (ga, gb, gc) in enumerate(grads):
        if k == 4:
            gb = None  # a skipped parameter stays skipped
        multi.step([ga, gb, gc])
        twin_adam.step([ga, gb])
        twin_sgd.step([gc])
    assert_same(params, twins)
    assert multi.state[0]["step"] == 12 and multi.state[1]["step"] == 11
    assert multi.state[2]["momentum_buffer"].tobytes() == \
        twin_sgd.state[0]["momentum_buffer"].tobytes()


def test_param_groups_are_the_concatenation_and_live():
    multi, _, params, _, grads = make()
    adam, sgd = multi.optimizers
    assert multi.param_groups == adam.param_groups + sgd.param_groups
    assert all(g is h for g, h in zip(multi.param_groups, adam.param_groups + sgd.param_groups))
    assert [p is q for p, q in zip(multi.params, params)] == [True] * 3
    multi.param_groups[2]["lr"] = 0.0  # edits SGD's own group
    assert sgd.param_groups[0]["lr"] == 0.0
    before = params[2].copy()
    multi.step(grads[0])
    np.testing.assert_array_equal(params[2], before)
    extra = np.zeros(4)
    sgd.add_param_group({"params": [extra], "lr": 0.1})
    assert len(multi.param_groups) == 4 and multi.params[-1] is extra
    multi.step(grads[1] + [np.ones(4)])
    np.testing.assert_allclose(extra, -0.1 * (1 + 0.9))  # nesterov: g + momentum * buf


def test_state_dict_round_trip_continues_the_same_trajectory():
    multi, _, params, _, grads = make()
    for g in grads[:5]:
        multi.step(g)
    saved = multi.state_dict()
    assert [set(sd) for sd in saved["optimizers"]] == [{"state", "param_groups"}] * 2
    second, _, params2, _, _ = make()
    for p, q in zip(params2, params):
        np.copyto(p, q)
    second.load_state_dict(saved)
    for g in grads[5:]:
        multi.step(g)
        second.step(g)
    assert_same(params, params2)


def test_load_state_dict_failure_in_a_later_optimizer_changes_nothing():
    multi, _, params, _, grads = make()
    for g in grads[:3]:
        multi.step(g)
    adam, sgd = multi.optimizers
    good = multi.state_dict()
    groups_before = [dict(g) for g in multi.param_groups]
    group_objects = list(multi.param_groups)
    buffers = {(i, k): v for i, s in multi.state.items() for k, v in s.items()
               if isinstance(v, np.ndarray)}
    contents = {key: v.copy() for key, v in buffers.items()}
    # a good first entry (different values) and a bad second one
    first = adam.state_dict()
    first["param_groups"] = [dict(g, lr=0.5) for g in first["param_groups"]]
    first["state"] = {i: {k: (np.zeros_like(v) if isinstance(v, np.ndarray) else v)
                          for k, v in s.items()} for i, s in first["state"].items()}
    bad_second = dict(good["optimizers"][1],
                      state={0: {"momentum_buffer": np.zeros(3)}})
    for bad, exc in [({"optimizers": [first, bad_second]}, ValueError),
                     ({"optimizers": [first]}, ValueError),
                     ({"optimizers": [first, "x"]}, TypeError),
                     ({"state": {}}, ValueError)]:
        with pytest.raises(exc):
            multi.load_state_dict(bad)
        assert [dict(g) for g in multi.param_groups] == groups_before
        assert all(g is h for g, h in zip(multi.param_groups, group_objects))
        for (i, k), v in buffers.items():
            assert multi.state[i][k] is v
            assert v.tobytes() == contents[(i, k)].tobytes()
    multi.load_state_dict({"optimizers": [first, good["optimizers"][1]]})
    assert multi.param_groups[0]["lr"] == 0.5


def bad_steps(params):
    a, b, c = params
    ok = [np.ones_like(a), np.ones_like(b)]
    return [
        (ok + [np.ones(1030, np.float32)], TypeError, r"grads\[2\] has dtype float32"),
        (ok + [np.ones(1031)], ValueError, r"grads\[2\] has shape"),
        (ok + [np.ones(2060)[::2]], ValueError, r"grads\[2\] must be C-contiguous"),
        (ok, ValueError, "expected 3 gradients"),
        (ok + [c], ValueError, r"params\[2\] and grads\[2\] are the same memory"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_bad_gradient_for_a_later_optimizer_writes_nothing(case):
    multi, _, params, _, grads = make()
    multi.step(grads[0])
    before = [p.copy() for p in params]
    state_before = {i: s["step"] for i, s in multi.state.items() if "step" in s}
    g, exc, match = bad_steps(params)[case]
    with pytest.raises(exc, match=match):
        multi.step(g)
    assert_same(params, before)
    assert {i: s["step"] for i, s in multi.state.items() if "step" in s} == state_before


def test_gradient_aliasing_another_optimizers_parameter_is_rejected():
    a, c = np.zeros(6), np.zeros(6)
    multi = fastopt.MultiOptimizer([fastopt.SGD([a], lr=0.1), fastopt.SGD([c], lr=0.1)])
    with pytest.raises(ValueError, match=r"params\[0\] and grads\[1\] are the same memory"):
        multi.step([np.ones(6), a])
    np.testing.assert_array_equal(a, 0.0)


def test_bad_hyperparameter_in_a_later_optimizer_writes_nothing():
    multi, _, params, _, grads = make()
    before = [p.copy() for p in params]
    multi.optimizers[1].param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        multi.step(grads[0])
    assert_same(params, before)
    assert multi.state == {}
    multi.optimizers[1].param_groups[0]["lr"] = 0.05
    with pytest.raises(TypeError):
        multi.step(grads[0], no_such_option=1)  # rejected by the first optimizer's step
    assert_same(params, before)


def test_skip_if_nonfinite_covers_every_optimizer():
    multi, (twin_adam, twin_sgd), params, twins, grads = make()
    for k, (ga, gb, gc) in enumerate(grads):
        if k % 4 == 2:
            bad = gc.copy()
            bad[-1] = np.inf
            before = [p.copy() for p in params]
            assert multi.step([ga, gb, bad], skip_if_nonfinite=True) is False
            assert_same(params, before)
        assert multi.step([ga, gb, gc], skip_if_nonfinite=True) is True
        twin_adam.step([ga, gb])
        twin_sgd.step([gc])
    assert multi.skipped_steps == 3
    assert all(opt.skipped_steps == 0 for opt in multi.optimizers)
    assert_same(params, twins)
    assert multi.step(grads[0]) is None


def test_constructor_rejects_bad_combinations():
    a, b = np.zeros(2), np.zeros(3)
    sgd = fastopt.SGD([a])
    with pytest.raises(ValueError, match="at least one"):
        fastopt.MultiOptimizer([])
    with pytest.raises(TypeError, match="wrap a single one"):
        fastopt.MultiOptimizer(sgd)
    with pytest.raises(TypeError, match=r"optimizers\[1\] must be a fastopt Optimizer"):
        fastopt.MultiOptimizer([sgd, object()])
    with pytest.raises(ValueError, match=r"optimizers\[1\] appears more than once"):
        fastopt.MultiOptimizer([sgd, sgd])
    with pytest.raises(ValueError, match="each parameter may be in one optimizer"):
        fastopt.MultiOptimizer([sgd, fastopt.Adam([b, a])])
    with pytest.raises(TypeError, match="iterable of fastopt optimizers"):
        fastopt.MultiOptimizer(3)
    assert "SGD" in repr(fastopt.MultiOptimizer([sgd, fastopt.Adam([b])]))


def test_parameters_sharing_memory_across_optimizers_are_rejected_at_step():
    base = np.zeros(10)
    multi = fastopt.MultiOptimizer([fastopt.SGD([base[:6]], lr=0.1),
                                    fastopt.Adam([base[4:]], lr=0.1)])
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] overlap"):
        multi.step([np.ones(6), np.ones(6)])
    np.testing.assert_array_equal(base, 0.0)
