"""Learning-rate schedulers: the same learning rates (and momenta) as
torch.optim.lr_scheduler, float for float, over 100 steps in several settings."""
import warnings

import numpy as np
import pytest

import fastopt
from fastopt import lr_scheduler

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

CASES = [
    ("StepLR", {"step_size": 3, "gamma": 0.5}),
    ("StepLR", {"step_size": 7, "gamma": 0.9}),
    ("StepLR", {"step_size": 1}),
    ("MultiStepLR", {"milestones": [10, 30, 30, 80], "gamma": 0.5}),
    ("MultiStepLR", {"milestones": [5]}),
    ("ExponentialLR", {"gamma": 0.95}),
    ("ExponentialLR", {"gamma": 0.5}),
    ("CosineAnnealingLR", {"T_max": 10}),
    ("CosineAnnealingLR", {"T_max": 30, "eta_min": 1e-4}),
    ("CosineAnnealingLR", {"T_max": 100, "eta_min": 0.001}),
    ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.01}),  # past T_max: rises again
    ("LinearLR", {}),
    ("LinearLR", {"start_factor": 0.5, "total_iters": 10}),
    ("LinearLR", {"start_factor": 1.0, "end_factor": 0.1, "total_iters": 50}),
    ("LinearLR", {"start_factor": 0.25, "end_factor": 0.0, "total_iters": 20}),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 100}),
    ("OneCycleLR", {"max_lr": [0.5, 2.0], "total_steps": 100, "anneal_strategy": "linear"}),
    ("OneCycleLR", {"max_lr": 0.3, "epochs": 10, "steps_per_epoch": 10, "three_phase": True,
                    "pct_start": 0.25}),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": 100, "cycle_momentum": False,
                    "div_factor": 10.0, "final_div_factor": 100.0}),
    ("OneCycleLR", {"max_lr": 0.1, "total_steps": 100, "base_momentum": [0.8, 0.7],
                    "max_momentum": 0.99, "pct_start": 0.45}),
]
OPTIMIZERS = [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.01}),
              ("RMSprop", {"lr": 0.01, "momentum": 0.5})]


def pair(name, kwargs):
    """A fastopt optimizer and a torch one, each with two groups of different lr."""
    ours = getattr(fastopt, name)([{"params": [np.zeros(2)]},
                                   {"params": [np.zeros(3)], "lr": 0.3}], **kwargs)
    theirs = getattr(torch.optim, name)([{"params": [torch.zeros(2, requires_grad=True)]},
                                         {"params": [torch.zeros(3, requires_grad=True)],
                                          "lr": 0.3}], **kwargs)
    return ours, theirs


def momenta(groups):
    return [(g.get("momentum"), tuple(g["betas"]) if "betas" in g else None) for g in groups]


def case_id(case):
    return f"{case[0]}-{','.join(f'{k}={v}' for k, v in case[1].items()) or 'defaults'}"


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: o[0])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_learning_rates_equal_torchs_for_100_steps(case, optimizer):
    name, kwargs = case
    ours, theirs = pair(*optimizer)
    sched = getattr(lr_scheduler, name)(ours, **kwargs)
    tsched = getattr(torch.optim.lr_scheduler, name)(theirs, **kwargs)
    assert sched.get_last_lr() == tsched.get_last_lr()
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right call order warns about nothing
        for _ in range(100):
            ours.step([None, None])
            theirs.step()
            sched.step()
            tsched.step()
            assert sched.get_last_lr() == tsched.get_last_lr()  # exact float equality
            assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
            assert momenta(ours.param_groups) == momenta(theirs.param_groups)
            seen.add(tuple(sched.get_last_lr()))
    assert len(seen) > 1  # the schedule moved
    assert sched.last_epoch == tsched.last_epoch == 100
    for ours_group, their_group in zip(ours.param_groups, theirs.param_groups):
        for key in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
            assert ours_group.get(key) == their_group.get(key)
    assert sched.state_dict() == tsched.state_dict()


def test_one_cycle_raises_past_total_steps_like_torch():
    opt = fastopt.SGD([np.zeros(1)], lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    for _ in range(3):
        opt.step([None])
        sched.step()
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        sched.step()


@pytest.mark.parametrize("bad,error,match", [
    ({"total_steps": 0}, ValueError, "positive integer total_steps"),
    ({"total_steps": 10, "pct_start": 1.5}, ValueError, "pct_start"),
    ({"total_steps": 10, "anneal_strategy": "exp"}, ValueError, "anneal_strategy"),
    ({}, ValueError, "total_steps OR"),
    ({"total_steps": 10, "max_lr": [1.0, 2.0]}, ValueError, "max_lr must have the same length"),
])
def test_one_cycle_bad_arguments(bad, error, match):
    opt = fastopt.SGD([np.zeros(1)], lr=0.1, momentum=0.9)
    kwargs = dict({"max_lr": 1.0}, **bad)
    with pytest.raises(error, match=match):
        lr_scheduler.OneCycleLR(opt, **kwargs)


def test_one_cycle_needs_momentum_or_betas_to_cycle():
    opt = fastopt.Adagrad([np.zeros(1)], lr=0.1)
    with pytest.raises(ValueError, match="must support momentum or beta1"):
        lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, cycle_momentum=False)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "OneCycleLR"], ids=case_id)
def test_multi_optimizer_groups_follow_the_schedule(case):
    """A schedule over a MultiOptimizer sets each group's lr as a schedule over each
    optimizer alone would (the per-group formulas do not mix groups)."""
    name, kwargs = case
    adam, sgd = fastopt.Adam([np.zeros(2)], lr=0.01), fastopt.SGD([np.zeros(3)], lr=0.2)
    multi = fastopt.MultiOptimizer([adam, sgd])
    sched = getattr(lr_scheduler, name)(multi, **kwargs)
    t_adam = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=0.01)
    t_sgd = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.2)
    t_scheds = [getattr(torch.optim.lr_scheduler, name)(o, **kwargs) for o in (t_adam, t_sgd)]
    for _ in range(100):
        multi.step([None, None])
        sched.step()
        for o, s in zip((t_adam, t_sgd), t_scheds):
            o.step()
            s.step()
        assert sched.get_last_lr() == t_scheds[0].get_last_lr() + t_scheds[1].get_last_lr()
        assert adam.param_groups[0]["lr"] == t_adam.param_groups[0]["lr"]


def test_one_cycle_over_a_multi_optimizer_cycles_betas_and_momentum():
    adam = fastopt.Adam([np.zeros(2)], lr=0.01, betas=(0.9, 0.99))
    sgd = fastopt.SGD([np.zeros(3)], lr=0.1, momentum=0.9)
    multi = fastopt.MultiOptimizer([adam, sgd])
    sched = lr_scheduler.OneCycleLR(multi, max_lr=[0.01, 0.5], total_steps=100)
    t_adam = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=0.01, betas=(0.9, 0.99))
    t_sgd = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, momentum=0.9)
    t_scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=m, total_steps=100)
                for o, m in ((t_adam, 0.01), (t_sgd, 0.5))]
    assert not sched.use_beta1  # mixed: each group cycles its own hyperparameter
    rng = np.random.default_rng(0)
    for _ in range(100):
        multi.step([rng.standard_normal(2), rng.standard_normal(3)])
        sched.step()
        for o, s in zip((t_adam, t_sgd), t_scheds):
            o.step()
            s.step()
        assert adam.param_groups[0]["betas"] == t_adam.param_groups[0]["betas"]
        assert sgd.param_groups[0]["momentum"] == t_sgd.param_groups[0]["momentum"]
        assert sched.get_last_lr() == t_scheds[0].get_last_lr() + t_scheds[1].get_last_lr()
    assert adam.param_groups[0]["betas"][1] == 0.99


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_dict_round_trip_resumes_the_same_sequence(case):
    name, kwargs = case
    first, _ = pair("SGD", {"lr": 0.1, "momentum": 0.9})
    sched = getattr(lr_scheduler, name)(first, **kwargs)
    for _ in range(40):
        first.step([None, None])
        sched.step()
    saved_sched, saved_opt = sched.state_dict(), first.state_dict()
    second, _ = pair("SGD", {"lr": 0.1, "momentum": 0.9})
    resumed = getattr(lr_scheduler, name)(second, **kwargs)  # before the optimizer's load
    second.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    for _ in range(60):
        first.step([None, None])
        second.step([None, None])
        sched.step()
        resumed.step()
        assert resumed.get_last_lr() == sched.get_last_lr()
        assert momenta(second.param_groups) == momenta(first.param_groups)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "OneCycleLR"], ids=case_id)
def test_resuming_with_last_epoch_matches_torch(case):
    name, kwargs = case
    ours, theirs = pair("SGD", {"lr": 0.1})
    for groups in (ours.param_groups, theirs.param_groups):
        for g, initial in zip(groups, (0.1, 0.3)):
            g["initial_lr"] = initial
            g["lr"] = initial * 0.5
    sched = getattr(lr_scheduler, name)(ours, last_epoch=12, **kwargs)
    tsched = getattr(torch.optim.lr_scheduler, name)(theirs, last_epoch=12, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(30):
            assert sched.get_last_lr() == tsched.get_last_lr()
            ours.step([None, None])
            theirs.step()
            sched.step()
            tsched.step()


def test_resuming_without_initial_lr_raises():
    opt = fastopt.SGD([np.zeros(1)], lr=0.1)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, 3, last_epoch=4)


def test_deprecated_epoch_argument_uses_the_closed_form_like_torch():
    ours, theirs = pair("SGD", {"lr": 0.1})
    sched = lr_scheduler.StepLR(ours, step_size=3, gamma=0.5)
    tsched = torch.optim.lr_scheduler.StepLR(theirs, step_size=3, gamma=0.5)
    ours.step([None, None])
    theirs.step()
    with pytest.warns(UserWarning, match="epoch parameter"):
        sched.step(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tsched.step(10)
    assert sched.get_last_lr() == tsched.get_last_lr() == [0.1 * 0.5**3, 0.3 * 0.5**3]


def test_scheduler_step_before_optimizer_step_warns():
    opt = fastopt.SGD([np.zeros(1)], lr=0.1)
    sched = lr_scheduler.ExponentialLR(opt, 0.5)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()


def test_get_lr_outside_step_warns_and_get_last_lr_does_not():
    opt = fastopt.SGD([np.zeros(1)], lr=0.1)
    sched = lr_scheduler.StepLR(opt, 2)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sched.get_last_lr() == [0.1]


def test_wrapped_optimizer_step_still_reports_skips():
    opt = fastopt.SGD([np.zeros(2)], lr=0.1)
    lr_scheduler.StepLR(opt, 2)
    assert opt.step([np.array([np.nan, 1.0])], skip_if_nonfinite=True) is False
    assert opt.skipped_steps == 1


def test_load_state_dict_is_checked_first():
    opt = fastopt.SGD([{"params": [np.zeros(1)]}, {"params": [np.zeros(1)]}], lr=0.1)
    sched = lr_scheduler.StepLR(opt, 3)
    before = sched.state_dict()
    good = dict(before)
    for bad, error in [(dict(good, bogus=1), ValueError),
                       (dict(good, last_epoch=1.5), TypeError),
                       (dict(good, base_lrs=[0.1]), ValueError),
                       ([("last_epoch", 3)], TypeError)]:
        with pytest.raises(error):
            sched.load_state_dict(bad)
        assert sched.state_dict() == before
    with pytest.raises(ValueError, match="step_size.*CosineAnnealingLR"):
        lr_scheduler.CosineAnnealingLR(opt, 10).load_state_dict(dict(good))
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), 3)
