"""The optimizer classes' API: groups, skipped gradients, state dicts, and bad input
rejected before anything is written."""
import numpy as np
import pytest

import fastopt
from conftest import (ALGORITHMS, DTYPES, algorithm_configs, assert_unchanged,
                      random_problem, snapshot)


@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_size_zero_and_zero_d_parameters_anywhere(algorithm, hyper):
    rng = np.random.default_rng(0)
    shapes = [(0,), (5,), (0, 3), (), (7,), (0,)]
    params = [rng.standard_normal(s) for s in shapes]
    twins = [p.copy() for p in params if p.size]
    opt = algorithm.cls(params, **hyper)
    ref = algorithm.cls(twins, **hyper)
    for _ in range(3):
        grads = [rng.standard_normal(p.shape) for p in params]
        opt.step(grads)
        ref.step([g for g in grads if g.size])
    for p, q in zip([p for p in params if p.size], twins):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_none_gradient_skips_the_parameter(algorithm):
    a, b = np.ones(4), np.ones(3)
    opt = algorithm.cls([a, b], lr=0.1)
    opt.step([np.full(4, 0.5), None])
    assert 1 not in opt.state
    np.testing.assert_array_equal(b, np.ones(3))
    assert not np.array_equal(a, np.ones(4))


@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_state_dict_round_trip_continues_the_same_trajectory(algorithm, hyper):
    rng = np.random.default_rng(5)
    p, grads = random_problem(rng, 33, np.float64, 10)
    q = p.copy()
    first = algorithm.cls([p], **hyper)
    for g in grads[:5]:
        first.step([g])
    saved = first.state_dict()
    second = algorithm.cls([q], **hyper)
    np.copyto(q, p)
    second.load_state_dict(saved)
    for key, value in saved["state"].get(0, {}).items():
        if isinstance(value, np.ndarray):
            assert second.state[0][key] is not value  # loaded buffers are copies
    for g in grads[5:]:
        first.step([g])
        second.step([g])
    assert p.tobytes() == q.tobytes()


def test_param_groups_are_editable_between_steps():
    p = np.ones(3)
    opt = fastopt.SGD([p], lr=0.1)
    opt.step([np.ones(3)])
    opt.param_groups[0]["lr"] = 0.5
    opt.step([np.ones(3)])
    np.testing.assert_allclose(p, 1 - 0.1 - 0.5)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        opt.step([np.ones(3)])
    np.testing.assert_allclose(p, 1 - 0.1 - 0.5)


def test_param_groups_layout_matches_torch():
    a, b = np.zeros(2), np.zeros(3)
    opt = fastopt.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][0]["lr"] == 0.1
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)


BAD_CONSTRUCTOR = [
    ("sgd", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("sgd", {"lr": float("nan")}, ValueError, "Invalid learning rate: nan"),
    ("sgd", {"lr": float("inf")}, ValueError, "Invalid learning rate: inf"),
    ("sgd", {"lr": "0.1"}, TypeError, "lr must be a real number"),
    ("sgd", {"momentum": -0.5}, ValueError, "Invalid momentum value: -0.5"),
    ("sgd", {"nesterov": True}, ValueError, "Nesterov momentum requires"),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "Nesterov"),
    ("sgd", {"weight_decay": -1e-3}, ValueError, "Invalid weight_decay value"),
    ("adam", {"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("adam", {"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1"),
    ("adam", {"betas": 0.9}, TypeError, "betas must be a pair"),
    ("adam", {"eps": -1e-8}, ValueError, "Invalid epsilon value"),
    ("adam", {"amsgrad": 1}, TypeError, "amsgrad must be a bool"),
    ("adam", {"foo": 1}, TypeError, "unexpected keyword argument 'foo'"),
    ("adadelta", {"rho": 1.5}, ValueError, "Invalid rho value: 1.5"),
    ("rmsprop", {"alpha": -0.1}, ValueError, "Invalid alpha value"),
    ("adagrad", {"lr_decay": -1.0}, ValueError, "Invalid lr_decay value"),
    ("adagrad", {"initial_accumulator_value": -1.0}, ValueError,
     "Invalid initial_accumulator_value value"),
    ("adamax", {"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0"),
    ("adamax", {"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    ("nadam", {"momentum_decay": -1.0}, ValueError, "Invalid momentum_decay value: -1.0"),
    ("nadam", {"decoupled_weight_decay": "yes"}, TypeError,
     "decoupled_weight_decay must be a bool"),
    ("radam", {"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0"),
    ("asgd", {"weight_decay": -1.0}, ValueError, "Invalid weight_decay value: -1.0"),
    ("asgd", {"lambd": float("nan")}, ValueError, "Invalid lambd value: nan"),
    ("asgd", {"t0": "1"}, TypeError, "t0 must be a real number"),
    ("rprop", {"etas": (1.5, 1.2)}, ValueError, r"Invalid eta values: 1.5, 1.2"),
    ("rprop", {"etas": (0.5, 1.0)}, ValueError, r"Invalid eta values: 0.5, 1.0"),
    ("rprop", {"etas": 0.5}, TypeError, "etas must be a pair"),
    ("rprop", {"step_sizes": (float("nan"), 1.0)}, ValueError, "Invalid step_sizes value: nan"),
    ("rprop", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("adafactor", {"lr": -1.0}, ValueError, "Learning rate should be >= 0 but is: -1.0"),
    ("adafactor", {"beta2_decay": 0.5}, ValueError, "beta2_decay should be <= 0 but is: 0.5"),
    ("adafactor", {"eps": (-1.0, 1e-3)}, ValueError, "epsilon1 should be >= 0 but is: -1.0"),
    ("adafactor", {"eps": (None, -1.0)}, ValueError, "epsilon2 should be >= 0 but is: -1.0"),
    ("adafactor", {"eps": 1e-3}, TypeError, "eps must be a pair"),
    ("adafactor", {"d": 0.5}, ValueError, "Clipping threshold d should be >= 1 but is: 0.5"),
    ("adafactor", {"weight_decay": -1.0}, ValueError, "weight_decay should be >= 0 but is"),
    ("adan", {"betas": (0.9, 0.9)}, TypeError, "betas must be three floats"),
    ("adan", {"betas": (0.9, 0.9, 1.0)}, ValueError, "Invalid beta parameter at index 2: 1.0"),
    ("lars", {"trust_coefficient": -1.0}, ValueError, "Invalid trust_coefficient value"),
    ("yogi", {"initial_accumulator_value": -1.0}, ValueError,
     "Invalid initial_accumulator_value value"),
]


@pytest.mark.parametrize("name,kwargs,exc,match", BAD_CONSTRUCTOR)
def test_bad_hyperparameters_are_rejected(name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastopt.get_algorithm(name).cls([np.zeros(2)], **kwargs)


def test_bad_params_are_rejected():
    with pytest.raises(TypeError, match=r"params\[0\] must have dtype float32 or float64"):
        fastopt.SGD([np.zeros(3, dtype=np.int64)])
    with pytest.raises(ValueError, match=r"params\[1\] must be C-contiguous"):
        fastopt.SGD([np.zeros(3), np.zeros((4, 4))[:, 0]])
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        fastopt.SGD([ro])
    with pytest.raises(ValueError, match="empty parameter list"):
        fastopt.SGD([])
    with pytest.raises(TypeError, match="iterable of arrays or dicts"):
        fastopt.SGD(np.zeros(3))
    a = np.zeros(3)
    with pytest.raises(ValueError, match="more than once"):
        fastopt.SGD([a, a])


def bad_steps(p):
    """(grads, exception, message) for a two-parameter optimizer over float32 `p`."""
    ok = np.ones(4, np.float32)
    return [
        ([ok], ValueError, "expected 2 gradients"),
        (ok, TypeError, "grads must be a list or tuple"),
        ([ok, np.ones(5, np.float64)], TypeError, r"grads\[1\] has dtype float64"),
        ([ok, np.ones(4, np.float32)], ValueError, r"grads\[1\] has shape \(4,\)"),
        ([ok, [1.0] * 5], TypeError, r"grads\[1\] must be a numpy.ndarray, got list"),
        ([ok, np.ones(10, np.float32)[::2]], ValueError, r"grads\[1\] must be C-contiguous"),
        ([ok, np.ones(5, np.float32).byteswap().view(np.dtype(np.float32).newbyteorder())],
         ValueError, r"grads\[1\] is byte-swapped"),
        ([ok, p[1]], ValueError, r"params\[1\] and grads\[1\] are the same memory"),
        ([p[0], np.ones(5, np.float32)], ValueError, r"params\[0\] and grads\[0\]"),
    ]


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("case", range(9))
def test_bad_gradients_leave_everything_untouched(algorithm, case):
    rng = np.random.default_rng(case)
    p = [rng.standard_normal(4).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    opt = algorithm.cls(p, **richest_config(algorithm))
    opt.step([np.ones(4, np.float32), np.ones(5, np.float32)])
    snap = snapshot(opt)
    grads, exc, match = bad_steps(p)[case]
    with pytest.raises(exc, match=match):
        opt.step(grads)
    assert_unchanged(opt, snap)


def richest_config(algorithm):
    """The test configuration of `algorithm` that uses the most state buffers."""
    configs = [dict(algorithm.defaults, **c) for c in algorithm.configs]
    return max(configs, key=lambda h: sum(s.needed(h) for s in algorithm.state))


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_overlapping_state_is_rejected_in_the_functional_api(algorithm):
    from conftest import functional_kwargs, new_state
    hyper = richest_config(algorithm)
    grad = np.ones(8)
    state = new_state(algorithm, hyper, grad)
    slot = next(i for i, b in enumerate(state) if b is not None)
    memory = np.zeros(16)
    param = memory[:8]
    state[slot] = memory[4:12]  # half of this state buffer is the parameter's memory
    with pytest.raises(ValueError, match="overlap"):
        algorithm.functional(param, grad, *state, **functional_kwargs(algorithm, hyper, 1, True))
    assert np.all(memory == 0)


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    p = np.ones(3)
    opt = fastopt.Adam([p], lr=0.1)
    opt.step([np.ones(3)])
    good = opt.state_dict()
    snap = snapshot(opt)
    cases = [
        ({"state": {}, "param_groups": []}, ValueError, "different number of parameter groups"),
        ({"state": good["state"], "param_groups": [dict(good["param_groups"][0], params=[0, 1])]},
         ValueError, "doesn't match the size"),
        ({"state": {0: dict(good["state"][0], exp_avg=np.zeros(4))},
          "param_groups": good["param_groups"]}, ValueError, r"'exp_avg'\] has shape \(4,\)"),
        ({"state": {0: dict(good["state"][0], exp_avg=np.zeros(3, np.float32))},
          "param_groups": good["param_groups"]}, TypeError, "has dtype float32"),
        ({"state": {0: {"step": 1, "exp_avg": np.zeros(3)}},
          "param_groups": good["param_groups"]}, ValueError, "'exp_avg_sq'\\] is missing"),
        ({"state": {0: dict(good["state"][0], step=-1)},
          "param_groups": good["param_groups"]}, ValueError, "whole number >= 0"),
        ({"state": {0: dict(good["state"][0], bogus=np.zeros(3))},
          "param_groups": good["param_groups"]}, ValueError, "unknown key 'bogus'"),
        ({"state": {}, "param_groups": [dict(good["param_groups"][0], lr=-2.0)]},
         ValueError, "Invalid learning rate: -2.0"),
    ]
    for bad, exc, match in cases:
        with pytest.raises(exc, match=match):
            opt.load_state_dict(bad)
        assert_unchanged(opt, snap)
        assert opt.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("grad_scale,exc,match", [
    (0.0, ValueError, "grad_scale must be finite and > 0, got 0.0"),
    (-2.0, ValueError, "grad_scale must be finite and > 0"),
    (float("nan"), ValueError, "grad_scale must be finite and > 0, got nan"),
    (float("inf"), ValueError, "grad_scale must be finite and > 0, got inf"),
    ("2", TypeError, "grad_scale must be a real number or None, got str"),
    (True, TypeError, "grad_scale must be a real number or None, got bool"),
])
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_bad_grad_scale_is_rejected_before_anything_is_written(algorithm, grad_scale, exc,
                                                               match):
    p = [np.ones(4), np.ones(3)]
    opt = algorithm.cls(p, **richest_config(algorithm))
    opt.step([np.ones(4), np.ones(3)])
    snap = snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.step([np.ones(4), np.ones(3)], grad_scale=grad_scale)
    assert_unchanged(opt, snap)
    from conftest import functional_kwargs, new_state
    hyper = richest_config(algorithm)
    param = np.ones(4)
    with pytest.raises(exc, match=match):
        algorithm.functional(param, np.ones(4), *new_state(algorithm, hyper, param),
                             grad_scale=grad_scale,
                             **functional_kwargs(algorithm, hyper, 1, True))
    assert np.all(param == 1)


def test_grad_scale_is_keyword_only():
    opt = fastopt.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(TypeError):
        opt.step([np.ones(2)], 2.0)


@pytest.mark.parametrize("name", ["nadam", "asgd"])
def test_scalar_state_is_saved_and_loaded_as_torch_keeps_it(name):
    """NAdam's mu_product and ASGD's eta and mu live in the state dict as scalars; a
    torch state dict turned into NumPy holds them as 0-d float32 arrays."""
    algorithm = fastopt.get_algorithm(name)
    p = np.ones(3)
    opt = algorithm.cls([p], lr=0.1)
    opt.step([np.full(3, 0.5)])
    saved = opt.state_dict()
    names = [s.name for s in algorithm.scalar_state]
    for key in names:
        assert isinstance(saved["state"][0][key], float)
    as_torch = {"state": {0: {k: (np.asarray(v, np.float32) if k in names else v)
                              for k, v in saved["state"][0].items()}},
                "param_groups": saved["param_groups"]}
    q = p.copy()
    other = algorithm.cls([q], lr=0.1)
    other.load_state_dict(as_torch)
    assert {k: other.state[0][k] for k in names} == {k: saved["state"][0][k] for k in names}
    opt.step([np.full(3, 0.25)])
    other.step([np.full(3, 0.25)])
    assert p.tobytes() == q.tobytes()
    missing = {"state": {0: {k: v for k, v in saved["state"][0].items() if k != names[0]}},
               "param_groups": saved["param_groups"]}
    with pytest.raises(ValueError, match=f"'{names[0]}'\\] is missing"):
        other.load_state_dict(missing)


@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_each_parameter_is_updated_independently(algorithm, hyper):
    """Stepping parameters together equals stepping each alone: in particular the
    layer-wise norms of the two-pass kernels (LAMB, LARS) are per parameter."""
    rng = np.random.default_rng(9)
    a, grads_a = random_problem(rng, 40, np.float64, 6)
    b, grads_b = random_problem(rng, 9, np.float64, 6)
    b *= 30.0
    alone_a, alone_b = a.copy(), b.copy()
    together = algorithm.cls([a, b], **hyper)
    only_a = algorithm.cls([alone_a], **hyper)
    only_b = algorithm.cls([alone_b], **hyper)
    for ga, gb in zip(grads_a, grads_b):
        together.step([ga, gb])
        only_a.step([ga])
        only_b.step([gb])
    assert a.tobytes() == alone_a.tobytes()
    assert b.tobytes() == alone_b.tobytes()


def test_adafactor_state_dict_keeps_factored_shapes():
    p = np.ones((3, 4))
    opt = fastopt.Adafactor([p], lr=0.1)
    opt.step([np.full((3, 4), 0.5)])
    saved = opt.state_dict()
    q = p.copy()
    other = fastopt.Adafactor([q], lr=0.1)
    other.load_state_dict(saved)
    assert other.state[0]["col_var"].shape == (1, 4)
    opt.step([np.full((3, 4), 0.25)])
    other.step([np.full((3, 4), 0.25)])
    assert p.tobytes() == q.tobytes()
    bad = {"state": {0: dict(saved["state"][0], row_var=np.zeros((3, 4)))},
           "param_groups": saved["param_groups"]}
    with pytest.raises(ValueError, match=r"'row_var'\] has shape \(3, 4\).*expected \(3, 1\)"):
        other.load_state_dict(bad)
    bad = {"state": {0: dict(saved["state"][0], variance=np.zeros((3, 4)))},
           "param_groups": saved["param_groups"]}
    with pytest.raises(ValueError, match=r"'variance'\] is not used by params\[0\]"):
        other.load_state_dict(bad)
