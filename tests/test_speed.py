"""The machinery that makes steps fast must not change what a step computes: the cached
step plan (and when it is rebuilt), threads, instruction-set dispatch, state placement,
flush-to-zero, and the benchmark's command line."""
import inspect
import json
import math
import os
import threading
import time

import numpy as np
import pytest

import fastopt
from fastopt import _kernels
from fastopt._buffers import PLACED_MIN_BYTES, new_state_buffer
from conftest import ALGORITHMS, DTYPES, algorithm_configs, functional_kwargs, new_state, random_problem


def run_steps(algorithm, hyper, params, grads_per_step, **attrs):
    opt = algorithm.cls(params, **hyper)
    for name, value in attrs.items():
        setattr(opt, name, value)
    for grads in grads_per_step:
        opt.step(grads)
    return opt


def twin_problem(algorithm, seed=0, dtype=np.float64, sizes=(17, 0, 40, 5), steps=6):
    rng = np.random.default_rng(seed)
    params, grads = [], [[] for _ in range(steps)]
    for n in sizes:
        p, gs = random_problem(rng, n, dtype, steps)
        params.append(p)
        for s in range(steps):
            grads[s].append(gs[s])
    return params, grads


def assert_same_state(a, b):
    for p, q in zip(a.params, b.params):
        assert p.tobytes() == q.tobytes()
    assert set(a.state) == set(b.state)
    for i in a.state:
        assert set(a.state[i]) == set(b.state[i])
        for k, v in a.state[i].items():
            w = b.state[i][k]
            if isinstance(v, np.ndarray):
                assert v.tobytes() == w.tobytes(), (i, k)
            else:
                assert v == w, (i, k)


def full_path_twin(algorithm, hyper, params, grads_per_step, edit=None):
    """The same steps with the plan disabled: every step takes the full path."""
    opt = algorithm.cls(params, **hyper)
    for index, grads in enumerate(grads_per_step):
        if edit is not None:
            edit(opt, index)
        opt._plan = None
        opt.step(grads)
        opt._plan = None
    return opt


# -- the plan ------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_planned_steps_equal_full_steps_with_skips(algorithm, hyper):
    params, grads = twin_problem(algorithm)
    grads[2][0] = None   # a skipped parameter in the middle of the run
    grads[0][3] = None   # a parameter whose state starts late
    twins = [p.copy() for p in params]
    planned = run_steps(algorithm, hyper, params, grads)
    # algorithms with Python-advanced scalars, a first pass or factored state take the
    # full path every step (fastopt.optim._plannable)
    assert (planned._plan is not None) == fastopt.optim._plannable(algorithm)
    full = full_path_twin(algorithm, hyper, twins, grads)
    assert_same_state(planned, full)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_one_compiled_call_per_step(monkeypatch, algorithm):
    """Every algorithm but the factored one (Adafactor) runs its steps on the plan:
    scalar state (NAdam, ASGD) and first passes (LAMB, LARS) included."""
    params, grads = twin_problem(algorithm, sizes=(8,) * 50, steps=3)
    opt = algorithm.cls(params)
    opt.step(grads[0])
    calls = []
    monkeypatch.setattr(_kernels, "run", lambda *a, **k: calls.append(a))
    if algorithm.kernel in _kernels.FACTORED:
        opt.step(grads[1])
        assert len(calls) == 1   # the full path: one call with every task
        return
    opt.step(grads[1])
    opt.step(grads[2])
    assert calls == []  # the plan ran both steps; the per-task path was not used


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a.scalar_state],
                         ids=lambda a: a.name)
def test_scalar_state_of_another_type_takes_the_full_path(algorithm):
    """The plan advances scalar state held as Python floats (as steps store it); any
    other value (here a NumPy scalar put in by hand) goes the full path, which gives
    the same result as the float would."""
    params, grads = twin_problem(algorithm, seed=4, steps=4)
    twins = [p.copy() for p in params]
    a = algorithm.cls(params)
    b = algorithm.cls(twins)
    for index, g in enumerate(grads):
        if index == 2:
            for spec in algorithm.scalar_state:
                for state in a.state.values():
                    state[spec.name] = np.float64(state[spec.name])
        a.step(g)
        b.step([x if x is None else x.copy() for x in g])
    assert_same_state(a, b)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_hyperparameters_edited_between_steps_take_effect(algorithm):
    hyper = dict(algorithm.defaults)
    params, grads = twin_problem(algorithm, seed=1)
    twins = [p.copy() for p in params]

    def edit(opt, index):
        group = opt.param_groups[0]
        if index == 2:
            group["lr"] = group["lr"] * 0.5
        if index == 3 and "betas" in group:
            group["betas"] = (0.5, 0.6) + tuple(group["betas"][2:])  # Adan has three
        if index == 4 and "weight_decay" in group:
            group["weight_decay"] = 0.25
        if index == 5 and "maximize" in group:
            group["maximize"] = True

    planned = algorithm.cls(params, **hyper)
    for index, g in enumerate(grads):
        edit(planned, index)
        planned.step(g)
    full = full_path_twin(algorithm, hyper, twins, grads, edit)
    assert_same_state(planned, full)


def test_list_betas_edited_in_place_take_effect():
    p, q = np.ones(6), np.ones(6)
    a = fastopt.Adam([{"params": [p], "betas": [0.9, 0.999]}], lr=0.1)
    b = fastopt.Adam([{"params": [q], "betas": [0.9, 0.999]}], lr=0.1)
    g = np.linspace(-1, 1, 6)
    for opt in (a, b):
        opt.step([g])
        opt.step([g])
    a.param_groups[0]["betas"][0] = 0.3
    b.param_groups[0]["betas"] = [0.3, 0.999]
    a.step([g])
    b.step([g])
    assert p.tobytes() == q.tobytes()


def test_packed_scalars_are_reused_only_for_the_same_objects():
    """`step` skips validating and packing a group only while it holds the very
    objects it was packed from; every kind of edit must miss the cache."""
    names = fastopt.Adam.algorithm.hyper_names

    def cached():
        opt = fastopt.Adam([{"params": [np.ones(3)], "betas": [0.9, 0.999]},
                            {"params": [np.ones(2)], "lr": 0.5}])
        opt.step([np.ones(3), np.ones(2)])
        return opt

    opt = cached()
    hit = _kernels.reuse_packed(opt.param_groups, opt._hyper_cache, names)
    assert hit is not None
    assert hit[0] == [entry[2] for entry in opt._hyper_cache]
    assert hit[1] == tuple(entry[3] for entry in opt._hyper_cache)

    edits = {
        # an equal value, but another object: identity is what the cache compares
        "value replaced": lambda o: o.param_groups[1].__setitem__("lr", float("0.5")),
        "list edited in place": lambda o: o.param_groups[0]["betas"].__setitem__(1, 0.99),
        "list grown": lambda o: o.param_groups[0]["betas"].append(0.5),
        "list shrunk": lambda o: o.param_groups[0]["betas"].pop(),
        "key deleted": lambda o: o.param_groups[1].pop("eps"),
        "group replaced by a copy": lambda o: o.param_groups.__setitem__(
            1, dict(o.param_groups[1])),
        "group added": lambda o: o.param_groups.append(dict(o.param_groups[1], params=[])),
        "groups made a tuple": lambda o: setattr(o, "param_groups", tuple(o.param_groups)),
    }
    for what, edit in edits.items():
        opt = cached()
        edit(opt)
        assert _kernels.reuse_packed(opt.param_groups, opt._hyper_cache, names) is None, what


def test_planned_step_holds_the_optimizers_lock():
    """The compiled step (Plan.step) takes the optimizer's lock, as the general path
    does: a step from another thread waits while the lock is held elsewhere."""
    p = np.ones(64)
    opt = fastopt.Adam([p], lr=0.1)
    g = np.linspace(-1, 1, 64)
    opt.step([g])
    opt.step([g])
    assert opt._plan is not None
    before = p.copy()
    opt._lock.acquire()
    try:
        worker = threading.Thread(target=opt.step, args=([g],))
        worker.start()
        worker.join(0.2)
        assert worker.is_alive()
        assert p.tobytes() == before.tobytes()
    finally:
        opt._lock.release()
    worker.join()
    assert p.tobytes() != before.tobytes()
    assert opt.state[0]["step"] == 3


def test_planned_step_releases_the_lock_when_it_raises():
    p = np.ones(8)
    opt = fastopt.Adam([p], lr=0.1)
    opt.step([np.ones(8)])
    opt.step([np.ones(8)])
    opt.num_threads = 0
    before = p.copy()
    with pytest.raises(ValueError, match="num_threads must be at least 1"):
        opt.step([np.ones(8)])
    assert p.tobytes() == before.tobytes()
    assert opt._lock.acquire(blocking=False)
    opt._lock.release()
    opt.num_threads = 1
    opt.step([np.ones(8)])
    assert opt.state[0]["step"] == 3


def test_plan_no_longer_the_optimizers_does_not_step():
    """A plan read by one thread while another replaced it (load_state_dict drops the
    plan) runs nothing: Plan.step checks, under the lock, that it is still the
    optimizer's plan."""
    p = np.ones(5)
    opt = fastopt.Adam([p], lr=0.1)
    opt.step([np.ones(5)])
    opt.step([np.ones(5)])
    plan = opt._plan
    assert plan.step(opt, [np.ones(5)]) is True
    opt._plan = None
    before = p.copy()
    assert plan.step(opt, [np.ones(5)]) is False
    assert p.tobytes() == before.tobytes()
    assert opt.state[0]["step"] == 3


def test_planned_steps_reuse_hyperparameters_only_while_the_groups_are_unchanged():
    """Plan.step remembers the validated hyperparameters while every group is the
    same dict, unmodified (its version), and holds no list; every edit takes effect."""
    edits = {
        "value replaced": lambda group: group.__setitem__("lr", 0.05),
        "same value, another object": lambda group: group.__setitem__("lr", float("0.1")),
        "betas replaced": lambda group: group.__setitem__("betas", (0.5, 0.9)),
        "updated": lambda group: group.update(eps=1e-3, weight_decay=0.5),
        "key deleted and put back": lambda group: group.__setitem__("eps", group.pop("eps")),
        "betas made a list, then edited in place": lambda group: (
            group.__setitem__("betas", [0.9, 0.999]), group["betas"].__setitem__(0, 0.2)),
    }
    g = np.linspace(-1, 1, 6)
    for what, edit in edits.items():
        p, q = np.ones(6), np.ones(6)
        planned = fastopt.Adam([p], lr=0.1)
        full = fastopt.Adam([q], lr=0.1)
        for index in range(6):
            if index == 3:
                edit(planned.param_groups[0])
                edit(full.param_groups[0])
            if index == 4 and what.startswith("betas made a list"):
                planned.param_groups[0]["betas"][0] = 0.7   # in place again
                full.param_groups[0]["betas"][0] = 0.7
            planned.step([g])
            full._plan = None
            full.step([g])
        assert p.tobytes() == q.tobytes(), what


def test_invalid_edit_between_steps_is_still_rejected():
    p = np.ones(4)
    opt = fastopt.Adam([p], lr=0.1)
    opt.step([np.ones(4)])
    opt.step([np.ones(4)])
    opt.param_groups[0]["lr"] = -1.0
    before = p.copy()
    with pytest.raises(ValueError, match="Invalid learning rate"):
        opt.step([np.ones(4)])
    assert p.tobytes() == before.tobytes()


def test_momentum_switched_on_later_creates_its_buffer():
    p, q = np.ones(5), np.ones(5)
    g = np.arange(5.0)

    def edit(opt, index):
        if index == 2:
            opt.param_groups[0]["momentum"] = 0.9

    planned = fastopt.SGD([p], lr=0.1)
    for index in range(5):
        edit(planned, index)
        planned.step([g])
    assert "momentum_buffer" in planned.state[0]
    full = full_path_twin(fastopt.SGD.algorithm, {"lr": 0.1}, [q], [[g]] * 5, edit)
    assert_same_state(planned, full)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_load_state_dict_and_add_param_group_rebuild_the_plan(algorithm):
    hyper = dict(algorithm.defaults)
    params, grads = twin_problem(algorithm, seed=2, steps=8)
    twins = [p.copy() for p in params]
    extra, extra_twin = np.full(9, 0.5), np.full(9, 0.5)
    extra_grad = np.linspace(-2, 2, 9)
    a = algorithm.cls(params, **hyper)
    b = algorithm.cls(twins, **hyper)
    for g in grads[:3]:
        a.step(g)
        b.step(g)
        b._plan = None
    saved = a.state_dict()
    saved = {"state": {i: {k: (v * 0.5 if isinstance(v, np.ndarray) else v)
                           for k, v in s.items()} for i, s in saved["state"].items()},
             "param_groups": saved["param_groups"]}
    a.load_state_dict(saved)
    b.load_state_dict(saved)
    for g in grads[3:5]:
        a.step(g)
        b.step(g)
        b._plan = None
    a.add_param_group({"params": [extra]})
    b.add_param_group({"params": [extra_twin]})
    for g in grads[5:]:
        a.step(g + [extra_grad])
        b.step(g + [extra_grad])
        b._plan = None
    assert_same_state(a, b)
    assert extra.tobytes() == extra_twin.tobytes()
    assert not np.array_equal(extra, np.full(9, 0.5))


def test_state_buffer_replaced_by_hand_is_used():
    p, q = np.ones(7), np.ones(7)
    g = np.linspace(0, 1, 7)
    a, b = fastopt.Adam([p], lr=0.1), fastopt.Adam([q], lr=0.1)
    for opt in (a, b):
        opt.step([g])
        opt.step([g])
    a.state[0]["exp_avg"] = np.full(7, 3.0)
    b.state[0]["exp_avg"] = np.full(7, 3.0)
    b._plan = None
    a.step([g])
    b.step([g])
    assert p.tobytes() == q.tobytes()
    np.testing.assert_array_equal(a.state[0]["exp_avg"], b.state[0]["exp_avg"])


def _edit_state(kind):
    """An edit of parameter 2's state before step 3 (after two planned steps)."""
    def edit(opt, index):
        if index != 3:
            return
        state = opt.state
        if kind == "buffer":
            state[2]["exp_avg"] = np.full_like(state[2]["exp_avg"], 0.25)
        elif kind == "step":
            state[2]["step"] = 40
        elif kind == "update":
            state[2].update(step=11, exp_avg_sq=np.full_like(state[2]["exp_avg_sq"], 2.0))
        elif kind in ("new-entry", "new-entry-while-skipped"):
            state[2] = {**state[2], "step": 40, "exp_avg": state[2]["exp_avg"] * 2}
        elif kind == "same-entry-copied":
            state[2] = dict(state[2])
        else:
            raise AssertionError(kind)
    return edit


@pytest.mark.parametrize("kind", ["buffer", "step", "update", "new-entry",
                                  "new-entry-while-skipped", "same-entry-copied"])
def test_state_edited_between_planned_steps_is_used(kind):
    # Planned steps skip looking up state entries that have not changed since the
    # last step wrote them (the dictionaries' version tags, where CPython has them):
    # every kind of edit must still be seen.  "while-skipped" replaces an entry just
    # before a step in which its parameter has no gradient, so that step cannot vouch
    # for it; the next one must look it up.
    algorithm = fastopt.Adam.algorithm
    params, grads = twin_problem(algorithm, seed=6, steps=7)
    if kind == "new-entry-while-skipped":
        grads[3][2] = None
    twins = [p.copy() for p in params]
    edit = _edit_state(kind)
    planned = algorithm.cls(params, lr=0.01)
    for index, g in enumerate(grads):
        edit(planned, index)
        planned.step(g)
    assert planned._plan is not None
    full = full_path_twin(algorithm, {"lr": 0.01}, twins, grads, edit)
    assert_same_state(planned, full)
    # seven steps; the edit before the fourth sets the count (three so far)
    expected = {"buffer": 7, "step": 40 + 4, "update": 11 + 4, "new-entry": 40 + 4,
                "new-entry-while-skipped": 40 + 3, "same-entry-copied": 7}
    assert planned.state[2]["step"] == expected[kind]


def test_parameter_replaced_in_its_group_is_updated():
    p, other = np.ones(3), np.zeros(3)
    opt = fastopt.SGD([p], lr=1.0)
    opt.step([np.ones(3)])
    opt.step([np.ones(3)])
    opt.param_groups[0]["params"][0] = other
    opt.step([np.ones(3)])
    np.testing.assert_array_equal(other, -np.ones(3))
    np.testing.assert_array_equal(p, -np.ones(3))


def test_gradients_of_a_different_array_each_step():
    p, q = np.ones(11), np.ones(11)
    a, b = fastopt.RMSprop([p], lr=0.01), fastopt.RMSprop([q], lr=0.01)
    rng = np.random.default_rng(3)
    for _ in range(5):
        g = rng.standard_normal(11)
        a.step([g])
        b.step([g.copy()])
        b._plan = None
    assert p.tobytes() == q.tobytes()


def test_bad_gradient_after_planned_steps_raises_before_writing():
    p = np.ones(6)
    opt = fastopt.Adam([p], lr=0.1)
    opt.step([np.ones(6)])
    opt.step([np.ones(6)])
    before = p.copy()
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state[0].items()}
    for bad, error in ((np.ones(6, np.float32), TypeError), (np.ones(5), ValueError),
                       (np.ones(12)[::2], ValueError), (p, ValueError),
                       (opt.state[0]["exp_avg"], ValueError), ([1.0] * 6, TypeError)):
        with pytest.raises(error):
            opt.step([bad])
        assert p.tobytes() == before.tobytes()
        assert opt.state[0]["step"] == state["step"]


def test_parameter_made_read_only_after_planned_steps_is_rejected():
    p = np.ones(6)
    opt = fastopt.SGD([p], lr=0.1)
    opt.step([np.ones(6)])
    opt.step([np.ones(6)])
    p.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        opt.step([np.ones(6)])


def test_functional_cache_does_not_let_invalid_input_through():
    p, g, m, v = np.ones(5), np.ones(5), np.zeros(5), np.zeros(5)
    kw = dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
              maximize=False, decoupled_weight_decay=False)
    fastopt.functional.adam(p, g, m, v, None, step=1, **kw)
    fastopt.functional.adam(p, g, m, v, None, step=2, **kw)   # from the cache
    before = p.copy()
    with pytest.raises(TypeError, match="amsgrad"):
        fastopt.functional.adam(p, g, m, v, None, step=3, **dict(kw, amsgrad=0))
    with pytest.raises(TypeError, match="beta"):
        fastopt.functional.adam(p, g, m, v, None, step=3, **dict(kw, betas=(False, 0.999)))
    with pytest.raises(ValueError, match="step"):
        fastopt.functional.adam(p, g, m, v, None, step=0, **kw)
    with pytest.raises(TypeError, match="exp_avg_sq"):
        fastopt.functional.adam(p, g, m, None, None, step=3, **kw)
    with pytest.raises(ValueError, match="same memory"):
        fastopt.functional.adam(p, g, m, m, None, step=3, **kw)
    assert p.tobytes() == before.tobytes()


def test_functional_cache_gives_the_same_bits_as_a_fresh_call():
    rng = np.random.default_rng(8)
    p, grads = random_problem(rng, 50, np.float32, 4)
    q = p.copy()
    m, v, m2, v2 = (np.zeros_like(p) for _ in range(4))
    kw = dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1, amsgrad=False,
              maximize=False, decoupled_weight_decay=True)
    for step, g in enumerate(grads, start=1):
        fastopt.functional.adam(p, g, m, v, None, step=step, **kw)
        fastopt.reference.adam(q, g, m2, v2, None, step=step, **kw)
    assert p.tobytes() == q.tobytes()


@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_arena_parameters_step_like_separate_ones(algorithm, hyper):
    shapes = [(7,), (0,), (3, 4), (), (33,)]
    flat, views = fastopt.arena(shapes, np.float64)
    grad_flat, grad_views = fastopt.arena(shapes, np.float64)
    rng = np.random.default_rng(9)
    separate = []
    for view in views:
        view[...] = rng.standard_normal(view.shape)
        separate.append(view.copy())
    a = algorithm.cls(views, **hyper)
    b = algorithm.cls(separate, **hyper)
    for _ in range(4):
        grad_flat[:] = rng.standard_normal(grad_flat.size)
        a.step(grad_views)
        b.step([g.copy() for g in grad_views])
        b._plan = None
    assert_same_state(a, b)
    for spec in algorithm.state:
        shaped_like_params = all(spec.shape_for(shape) is not None
                                 and tuple(spec.shape_for(shape)) == shape for shape in shapes)
        if spec.name in a.state[0] and shaped_like_params:  # not factored state
            first, last = a.state[0][spec.name], a.state[4][spec.name]
            # state of back-to-back parameters is back to back too
            assert last.ctypes.data - first.ctypes.data == (7 + 12 + 1) * 8


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_arena_step_is_one_kernel_call(dtype):
    # Parameters in an arena with gradients in an arena are merged into one task
    # (empty ones dropped); separate arrays are not.
    shapes = [(7,), (0,), (3, 4), (), (33,)]
    flat, views = fastopt.arena(shapes, dtype)
    grad_flat, grad_views = fastopt.arena(shapes, dtype)
    grad_flat[:] = 0.5
    separate = [np.ones(shape, dtype) for shape in shapes]
    merged = fastopt.Adam(views, lr=0.1)
    apart = fastopt.Adam(separate, lr=0.1)
    for _ in range(2):
        merged.step(grad_views)
        apart.step([g.copy() for g in grad_views])
    assert merged._plan.last_calls == 1
    assert apart._plan.last_calls == 4


def test_arena_views_are_back_to_back():
    flat, (w, b, s) = fastopt.arena([(3, 2), (2,), ()], np.float32)
    assert flat.dtype == np.float32 and flat.size == 9 and flat.ctypes.data % 64 == 0
    assert w.shape == (3, 2) and b.shape == (2,) and s.shape == ()
    assert b.ctypes.data == w.ctypes.data + 24 and s.ctypes.data == b.ctypes.data + 8
    w[...] = 1
    assert flat[:6].sum() == 6
    with pytest.raises(TypeError):
        fastopt.arena([(2,)], np.int32)


def test_step_counter_set_by_hand_is_honoured():
    p, q = np.ones(4), np.ones(4)
    g = np.full(4, 0.5)
    a, b = fastopt.Adam([p], lr=0.1), fastopt.Adam([q], lr=0.1)
    for opt in (a, b):
        opt.step([g])
        opt.step([g])
    a.state[0]["step"] = 7
    b.state[0]["step"] = 7.0   # not an int: the full path takes it as torch would
    a.step([g])
    b.step([g])
    assert a.state[0]["step"] == 8 and b.state[0]["step"] == 8
    assert p.tobytes() == q.tobytes()


@pytest.mark.parametrize("count", [2**60, True, np.int64(7)],
                         ids=["huge", "bool", "numpy-int"])
def test_step_counter_the_plan_cannot_read_goes_the_full_path(count):
    # The plan reads a step count only from an exact int in 0..2**53; anything else
    # must reach the full path, which steps as the reference twin does with count + 1.
    p = np.linspace(-1, 1, 8)
    g = np.full(8, 0.25)
    opt = fastopt.Adam([p], lr=0.1)
    opt.step([g])
    opt.step([g])   # the second step runs the plan
    m, v = opt.state[0]["exp_avg"].copy(), opt.state[0]["exp_avg_sq"].copy()
    expected = p.copy()
    fastopt.reference.adam(expected, g, m, v, step=count + 1, lr=0.1, betas=(0.9, 0.999),
                           eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
                           decoupled_weight_decay=False)
    opt.state[0]["step"] = count
    opt.step([g])
    assert opt.state[0]["step"] == count + 1
    assert p.tobytes() == expected.tobytes()
    assert opt.state[0]["exp_avg"].tobytes() == m.tobytes()


# -- threads ---------------------------------------------------------------------------

@pytest.fixture
def low_parallel_threshold():
    before = _kernels.get_parallel_min()
    _kernels._set_parallel_min(1)
    yield
    _kernels._set_parallel_min(before)


@pytest.mark.skipif(not _kernels.openmp(), reason="built without OpenMP")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_results_are_identical_for_every_thread_count(algorithm, hyper, dtype,
                                                      low_parallel_threshold):
    chunk = _kernels.chunk_elements()
    sizes = (2 * chunk + 17, 5, 0, chunk - 1)
    results = []
    for threads in (1, 2, 3):
        params, grads = twin_problem(algorithm, seed=4, dtype=dtype, sizes=sizes, steps=2)
        opt = run_steps(algorithm, hyper, params, grads, num_threads=threads)
        results.append(opt)
    for other in results[1:]:
        assert_same_state(results[0], other)


def test_num_threads_is_checked():
    opt = fastopt.SGD([np.ones(3)], lr=0.1)
    opt.num_threads = 0
    with pytest.raises(ValueError, match="num_threads"):
        opt.step([np.ones(3)])
    opt.num_threads = 1.5
    with pytest.raises(TypeError, match="num_threads"):
        opt.step([np.ones(3)])
    with pytest.raises(ValueError, match="num_threads"):
        fastopt.set_num_threads(-2)


def test_set_num_threads_round_trip():
    before = _kernels.get_num_threads()
    try:
        fastopt.set_num_threads(3)
        assert fastopt.get_num_threads() == (3 if _kernels.openmp() else 1)
    finally:
        fastopt.set_num_threads(None)
    assert _kernels.get_num_threads() == before


@pytest.mark.skipif(not _kernels.openmp(), reason="built without OpenMP")
def test_threadpoolctl_limits_fastopt():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastopt.get_num_threads() == 1


@pytest.mark.skipif(not _kernels.openmp(), reason="built without OpenMP")
def test_omp_num_threads_is_the_default():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="3", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", "import fastopt; print(fastopt.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


@pytest.mark.skipif(not _kernels.openmp(), reason="built without OpenMP")
@pytest.mark.parametrize("load_aware", [True, False])
def test_load_aware_default_threads_give_the_same_bits(load_aware, low_parallel_threshold):
    before = _kernels.get_load_aware_threads()
    try:
        _kernels.set_load_aware_threads(load_aware)
        assert _kernels.get_load_aware_threads() is load_aware
        algorithm = fastopt.get_algorithm("adam")
        chunk = _kernels.chunk_elements()
        params, grads = twin_problem(algorithm, seed=5, sizes=(3 * chunk + 1, 9), steps=2)
        twins = [p.copy() for p in params]
        default = run_steps(algorithm, {}, params, grads)
        one = run_steps(algorithm, {}, twins, grads, num_threads=1)
        assert_same_state(default, one)
    finally:
        _kernels.set_load_aware_threads(before)


# -- instruction sets ------------------------------------------------------------------

@pytest.fixture
def restore_isa():
    before = _kernels.get_isa()
    yield
    _kernels.set_isa(before)


@pytest.mark.skipif(len(_kernels.isa_available()) < 2, reason="one instruction set here")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_every_instruction_set_gives_the_same_bits(algorithm, hyper, dtype, restore_isa):
    outputs = {}
    for isa in _kernels.isa_available():
        _kernels.set_isa(isa)
        assert _kernels.get_isa() == isa
        rng = np.random.default_rng(6)
        param, grads = random_problem(rng, 1000 + 37, dtype, 4)
        state = new_state(algorithm, hyper, param)
        for step, grad in enumerate(grads, start=1):
            algorithm.functional(param, grad, *state,
                                 **functional_kwargs(algorithm, hyper, step, step == 1))
        outputs[isa] = [param.tobytes()] + [b.tobytes() for b in state if b is not None]
    first = outputs.pop("baseline")
    for isa, out in outputs.items():
        assert out == first, isa


def test_unknown_instruction_set_is_rejected(restore_isa):
    with pytest.raises(ValueError, match="not available"):
        _kernels.set_isa("sse9")
    assert _kernels.set_isa(None) == _kernels.isa_available()[-1]


# -- placement and subnormals -----------------------------------------------------------

def test_large_state_buffers_avoid_the_parameters_page_offset():
    n = PLACED_MIN_BYTES // 4 * 2
    param = np.zeros(n, np.float32)
    offsets = {param.ctypes.data % 4096}
    for slot in range(3):
        buffer = new_state_buffer(param, 0.0, slot=slot)
        assert buffer.shape == param.shape and buffer.dtype == param.dtype
        assert buffer.flags.c_contiguous and buffer.flags.writeable
        assert buffer.ctypes.data % 64 == param.ctypes.data % 64
        offsets.add(buffer.ctypes.data % 4096)
        assert not buffer.any()
    assert len(offsets) == 4


@pytest.mark.parametrize("shape", [(64,), (8, 8)], ids=["vector", "matrix"])
def test_flush_to_zero_covers_the_factored_kernel(shape):
    """Adafactor runs outside the element-wise runner; flush-to-zero applies to it too:
    with a zero gradient the step only decays the parameter, and a subnormal parameter
    decays to zero only when subnormals are flushed."""
    sub = np.float32(np.finfo(np.float32).smallest_normal / 4)
    flushed = fastopt.Adafactor([np.full(shape, sub, np.float32)], weight_decay=0.1)
    kept = fastopt.Adafactor([np.full(shape, sub, np.float32)], weight_decay=0.1)
    grad = np.zeros(shape, np.float32)
    try:
        fastopt.set_flush_denormal(True)
        if not _kernels.get_flush_denormal():
            pytest.skip("no flush-to-zero on this CPU")
        flushed.step([grad])
    finally:
        fastopt.set_flush_denormal(False)
    kept.step([grad])
    assert np.all(flushed.param_groups[0]["params"][0] == 0)
    assert np.all(kept.param_groups[0]["params"][0] != 0)


def test_flush_to_zero_is_scoped_to_the_call():
    tiny = np.finfo(np.float32).smallest_normal
    sub = np.float32(tiny / 4)
    assert sub != 0
    param, grad = np.zeros(64, np.float32), np.full(64, sub, np.float32)
    try:
        assert fastopt.set_flush_denormal(True) in (True, False)
        if not _kernels.get_flush_denormal():
            pytest.skip("no flush-to-zero on this CPU")
        fastopt.functional.sgd(param, grad, lr=1.0, momentum=0.0, dampening=0.0,
                               weight_decay=0.0, nesterov=False, maximize=False,
                               first_step=False)
        np.testing.assert_array_equal(param, 0)   # -lr * subnormal read as zero
    finally:
        fastopt.set_flush_denormal(False)
    # NumPy after the call still sees subnormals: the mode was restored.
    assert np.float32(sub) * np.float32(1) != 0
    fastopt.functional.sgd(param, grad, lr=1.0, momentum=0.0, dampening=0.0,
                           weight_decay=0.0, nesterov=False, maximize=False, first_step=False)
    np.testing.assert_array_equal(param, -grad)


# -- the benchmark -------------------------------------------------------------------------

def test_bench_smoke(tmp_path):
    from fastopt import bench
    path = tmp_path / "bench.json"
    status = bench.main(["--sizes", "64", "--dtypes", "float32", "--rounds", "1",
                         "--min-batch", "0.0001", "--quiet", "--no-torch", "--json", str(path)])
    assert status == 0
    report = json.loads(path.read_text())
    assert {"environment", "byte_model", "roofline", "threads"} <= set(report)
    rows = report["roofline"]
    assert [r["algorithm"] for r in rows] == [a.name for a in ALGORITHMS]
    for row, algorithm in zip(rows, ALGORITHMS):
        assert row["size"] == 64 and row["dtype"] == "float32"
        assert {"fastopt", "numpy", "ceiling"} <= set(row["impls"])
        assert row["ceiling_again_us"] > 0 and "ceiling_again" not in row["impls"]
        for impl in row["impls"].values():
            assert impl["us"] > 0 and impl["gbps"] > 0
        reads, writes = row["reads"], row["writes"]
        assert row["bytes_per_element"] == 4 * (reads + writes)
        assert reads == writes + 1 + len(algorithm.reads_first)
        assert row["fraction_of_ceiling"] > 0 and row["speedup_vs_numpy"] > 0
        ops = algorithm.divider_ops
        assert row["divider_ops"] == list(ops)
        if any(ops):
            assert row["floor_us"] > 0 and 0 < row["best_fraction_of_ceiling"] <= 1
        else:
            assert row["floor_us"] is None and row["best_fraction_of_ceiling"] is None
        if algorithm.reads_first:
            assert 0 < row["ceiling_first_us"]
        else:
            assert row["ceiling_first_us"] is None
        if any(algorithm.divider_ops_first):
            floor = row["floor_us"]
            assert row["floor_first_us"] > 0
            # bounded pass by pass: never above the bound of the passes taken together
            ceiling = row["impls"]["ceiling"]["us"]
            assert row["best_fraction_of_ceiling"] <= ceiling / max(ceiling, floor) + 1e-12
        else:
            assert row["floor_first_us"] is None


def test_bench_timers_give_seconds_per_call_without_the_preparation(monkeypatch):
    # On a clock that only the calls advance: time_interleaved times batches of
    # several calls and reports one call's time; time_prepared leaves the
    # preparation out of the time.
    from fastopt import bench
    clock = {"now": 0.0}

    class FakeTime:
        @staticmethod
        def perf_counter():
            return clock["now"]

    def costs(seconds):
        def call():
            clock["now"] += seconds
        return call

    monkeypatch.setattr(bench, "time", FakeTime)
    timed = bench.time_interleaved({"a": costs(0.003), "b": costs(0.0005)}, 3, min_batch=0.01)
    assert timed["a"] == pytest.approx((0.003, 0.003))
    assert timed["b"] == pytest.approx((0.0005, 0.0005))
    timed = bench.time_prepared({"a": (costs(5.0), costs(0.25))}, 4)
    assert timed["a"] == pytest.approx((0.25, 0.25))


def test_bench_subnormal_table_times_both_states_side_by_side(monkeypatch):
    # The slowdown is a ratio of one run: normal and subnormal state are timed in the
    # same interleaved rounds, with and without flush-to-zero, which is put back; and
    # every timed step starts from the prepared values (a step moves subnormal state
    # towards zero, or out of the subnormals).
    from fastopt import bench
    seen = []
    real = bench.time_prepared
    tiny = np.finfo(np.float32).smallest_normal

    def spy(calls, rounds):
        seen.append((sorted(calls), _kernels.get_flush_denormal()))
        for label, (prepare, call) in calls.items():
            buffers = [b for b in call.args if b is not None]
            for _ in range(2):
                prepare()
                if label == "subnormal":
                    assert all(0 < abs(b).max() < tiny for b in buffers), label
                before = [b.copy() for b in buffers]
                call()
                prepare()
                assert all(np.array_equal(b, c) for b, c in zip(buffers, before)), label
        return real(calls, rounds)

    monkeypatch.setattr(bench, "time_prepared", spy)
    before = _kernels.get_flush_denormal()
    rows = bench.subnormal(size=256, rounds=1, passes=1)
    assert _kernels.get_flush_denormal() == before
    assert [r["algorithm"] for r in rows] == [a.name for a in ALGORITHMS]
    assert seen == [(["normal", "subnormal"], False), (["normal", "subnormal"], True)] * len(rows)
    for row in rows:
        us = row["us"]
        assert row["slowdown"] == us["subnormal"] / us["normal"]
        assert row["slowdown_ftz"] == us["subnormal_ftz"] / us["normal_ftz"]
        assert row["slowdown_passes"] == [row["slowdown"]]
        assert row["slowdown_ftz_passes"] == [row["slowdown_ftz"]]


def test_bench_subnormal_table_keeps_each_pass_and_the_best_of_them(monkeypatch):
    # Each time is the best over the passes, and each pass's own slowdown is kept: a
    # core's speed on subnormal operands can change between passes.
    from fastopt import bench
    times = iter([5.0, 9.0, 4.0, 4.0] * len(ALGORITHMS)    # pass 1: normal, subnormal x2
                 + [6.0, 7.0, 5.0, 3.0] * len(ALGORITHMS))  # pass 2

    def fake(calls, rounds):
        assert sorted(calls) == ["normal", "subnormal"]
        return {"normal": (next(times), 0.0), "subnormal": (next(times), 0.0)}

    monkeypatch.setattr(bench, "time_prepared", fake)
    rows = bench.subnormal(size=16, rounds=1, passes=2)
    for row in rows:
        assert row["us"] == pytest.approx({"normal": 5e6, "subnormal": 7e6,
                                           "normal_ftz": 4e6, "subnormal_ftz": 3e6})
        assert row["slowdown"] == pytest.approx(7 / 5)
        assert row["slowdown_passes"] == pytest.approx([9 / 5, 7 / 6])
        assert row["slowdown_ftz_passes"] == pytest.approx([1.0, 3 / 5])
    with pytest.raises(ValueError, match="passes"):
        bench.subnormal(size=16, passes=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_bench_times_steps_from_the_steady_step(algorithm):
    # RAdam skips its square root and division for its first five steps, and a large
    # case runs only a dozen steps: its timed steps must not be those (nor torch's).
    from fastopt import bench
    case = bench.Case(algorithm, np.float32, 64, 1)
    for name in ("fastopt", "torch"):
        if name in case.calls:
            case.calls[name]()
    if algorithm.tracks_step:
        assert case.optimizer.state[0]["step"] == bench.TIMED_STEP
    if case.torch_path is not None:
        steps = [float(s["step"]) for s in case.torch_optimizer.state.values() if "step" in s]
        assert steps == ([bench.TIMED_STEP] if algorithm.tracks_step else [])


def test_two_pass_bound_adds_the_passes_bounds(monkeypatch):
    # The writing pass cannot start before the first pass's sums are complete, so each
    # pass takes at least the longer of its memory time and its divider time.
    from fastopt import bench
    lamb = fastopt.ALGORITHMS["lamb"]
    case = bench.Case(lamb, np.float32, 64, 1, use_torch=False)
    assert {"ceiling_first", "floor_first", "floor"} <= set(case.calls)
    times = {"fastopt": 10.0, "numpy": 50.0, "ceiling": 6.0, "ceiling_again": 6.5,
             "ceiling_first": 1.0,
             "floor": 8.0 * case.floor_x.size / case.size,
             "floor_first": 4.0 * case.floor_x.size / case.size}
    monkeypatch.setattr(bench, "time_interleaved",
                        lambda calls, rounds, min_batch: {k: (times[k] * 1e-6,) * 2
                                                          for k in calls})
    row = bench.run_case(case, 1)
    # first pass: max(1, 4) = 4; writing pass: max(6 - 1, 8 - 4) = 5; best time 9
    assert row["best_fraction_of_ceiling"] == pytest.approx(6.0 / 9.0)
    assert row["ceiling_first_us"] == pytest.approx(1.0)
    assert row["floor_first_us"] == pytest.approx(4.0)
    assert "ceiling_first" not in row["impls"] and "floor" not in row["impls"]
    # the ceiling timed again serves the run's resolution only: not an implementation
    assert row["ceiling_again_us"] == pytest.approx(6.5) and "ceiling_again" not in row["impls"]
    assert row["fraction_of_ceiling"] == pytest.approx(0.6)


def test_divider_ops_first_must_be_part_of_a_first_pass():
    from dataclasses import replace
    lamb = fastopt.ALGORITHMS["lamb"]
    with pytest.raises(ValueError, match="divider_ops_first"):
        replace(lamb, divider_ops_first=(3, 1))
    with pytest.raises(ValueError, match="divider_ops_first"):
        replace(lamb, reads_first=())


def test_bench_memory_shape_follows_the_options():
    from fastopt import bench
    adam = fastopt.get_algorithm("adam")
    assert bench.memory_shape(adam, dict(adam.defaults)) == (4, 3)
    assert bench.memory_shape(adam, dict(adam.defaults, amsgrad=True)) == (5, 4)
    sgd = fastopt.get_algorithm("sgd")
    assert bench.memory_shape(sgd, dict(sgd.defaults)) == (2, 1)
    assert bench.memory_shape(sgd, dict(sgd.defaults, momentum=0.9)) == (3, 2)
    # sums over the whole parameter first: those buffers are read twice
    lamb, lars, adafactor = (fastopt.ALGORITHMS[n] for n in ("lamb", "lars", "adafactor"))
    assert bench.memory_shape(lamb, dict(lamb.defaults)) == (8, 3)
    assert bench.memory_shape(lars, dict(lars.defaults)) == (5, 2)
    assert bench.memory_shape(lars, dict(lars.defaults, momentum=0.0)) == (4, 1)
    assert bench.memory_shape(adafactor, dict(adafactor.defaults)) == (6, 2)
    assert bench.reads_first(lars, dict(lars.defaults)) == (0, 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_ceiling_first_pass_reads_and_changes_nothing(threads, low_parallel_threshold):
    n = 3 * _kernels.chunk_elements() + 5
    rng = np.random.default_rng(3)
    p, g, s0 = (rng.standard_normal(n) for _ in range(3))
    q, t0, before = p.copy(), s0.copy(), p.copy()
    _kernels._stream(p, g, [s0], threads, (0, 1, 2))
    _kernels._stream(q, g, [t0], threads)
    assert p.tobytes() == q.tobytes() and s0.tobytes() == t0.tobytes()
    np.testing.assert_array_equal(p, before + g)   # x += grad, once
    with pytest.raises(ValueError, match="reads_first"):
        _kernels._stream(p, g, [s0], threads, (3,))
    # the first pass alone, as the benchmark times it, writes nothing
    p_before, s_before = p.copy(), s0.copy()
    _kernels._stream(p, g, [s0], threads, (0, 1, 2), update=False)
    assert p.tobytes() == p_before.tobytes() and s0.tobytes() == s_before.tobytes()
    with pytest.raises(ValueError, match="reads_first"):
        _kernels._stream(p, g, [s0], threads, update=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nstate", [0, 2, 6])
def test_ceiling_that_keeps_changes_no_value(dtype, threads, nstate, low_parallel_threshold):
    # The benchmark's ceiling streams an optimizer's own buffers, adding grad * 0: the
    # values (here with zeros of both signs, infinities and subnormals) stay as they
    # were, and a zero's sign is all that may change.
    n = 3 * _kernels.chunk_elements() + 5
    rng = np.random.default_rng(4)
    tiny = np.finfo(dtype).smallest_subnormal
    special = np.array([0.0, -0.0, np.inf, -np.inf, tiny, -tiny], dtype=dtype)
    buffers = [rng.standard_normal(n).astype(dtype) for _ in range(1 + nstate)]
    for b in buffers:
        b[:special.size] = special
    before = [b.copy() for b in buffers]
    g = rng.standard_normal(n).astype(dtype)
    _kernels._stream(buffers[0], g, buffers[1:], threads, keep=True)
    for b, a in zip(buffers, before):
        np.testing.assert_array_equal(b, a)
    _kernels._stream(buffers[0], g, buffers[1:], threads)
    for b, a in zip(buffers, before):
        np.testing.assert_array_equal(b, a + g)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("divisions,square_roots", [(0, 0), (1, 0), (0, 2), (1, 1), (6, 2)])
def test_divider_floor_does_exactly_its_operations(dtype, divisions, square_roots,
                                                  restore_isa):
    # The floor must do the divisions and square roots it is named for, or it would
    # not bound the kernels: the same operations in NumPy give the same bits.
    rng = np.random.default_rng(5)
    n = 1000
    x = rng.random(n).astype(dtype)
    y = (1 + rng.random(n)).astype(dtype)
    expected = x.copy()
    for _ in range(square_roots):
        expected = np.sqrt(expected + y)
    for _ in range(divisions):
        expected = y / (expected + y)
    for isa in _kernels.isa_available():
        got = x.copy()
        _kernels.set_isa(isa)
        _kernels._divsqrt(got, y, divisions, square_roots)
        assert got.tobytes() == expected.tobytes(), isa
    with pytest.raises(ValueError, match="divisions"):
        _kernels._divsqrt(x, y, 7, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels._divsqrt(x, y[:-1], 1, 0)


def test_bench_functional_calls_are_timed_as_written_calls():
    from fastopt import bench
    seen = []

    def record(a, b, *, lr, eps):
        seen.append((a, b, lr, eps))

    bench._literal_call(record, (1, 2), {"lr": 0.5, "eps": 1e-8})()
    assert seen == [(1, 2, 0.5, 1e-8)]
    no_op = bench._same_signature_no_op(fastopt.functional.adam)
    assert inspect.signature(no_op) == inspect.signature(fastopt.functional.adam)
    results = bench.functional_small(rounds=1, min_batch=0.0001)
    assert list(results) == [a.name for a in ALGORITHMS]
    for row in results.values():
        assert row["us"] > 0 and row["no_op_us"] > 0


@pytest.mark.skipif(not _kernels.openmp(), reason="built without OpenMP")
def test_bench_thread_table_puts_openmps_default_back(monkeypatch):
    """The benchmark sets torch's thread count, which is OpenMP's and so fastopt's
    default; the thread table runs its "default" column with the count from before,
    and leaves torch's setting as it found it."""
    torch = pytest.importorskip("torch")
    from fastopt import bench
    seen = []
    def one(algorithm, *args):
        seen.append(_kernels.get_num_threads())
        return {"algorithm": algorithm.name, "dtype": "float32", "size": 16,
                "us": {"threads=1": 2.0, "threads=2": 1.0},
                "speedup": {"threads=1": 1.0, "threads=2": 2.0},
                "ceiling_us": {"threads=1": 2.0, "threads=2": 1.0}}
    monkeypatch.setattr(bench, "_thread_scaling_one", one)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _kernels.get_num_threads() == 1
        bench.thread_scaling(quiet=True, openmp_threads=3, passes=1)
        assert seen and set(seen) == {3}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not _kernels.openmp() or _kernels.get_num_threads() < 2
                    or "OMP_NUM_THREADS" in os.environ
                    or _kernels.get_num_threads_setting() != 0,
                    reason="the load-aware thread count applies to the default count only")
def test_own_load_is_tracked_for_the_load_aware_thread_count():
    """A run of large steps with the default thread count keeps an average of this
    process's own CPU use, which the load-aware count does not take for others' load."""
    assert _kernels.get_load_aware_threads()
    n = 2 * _kernels.get_parallel_min()
    opt = fastopt.SGD([np.zeros(n, dtype=np.float32)], lr=0.1)
    grad = np.ones(n, dtype=np.float32)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        opt.step([grad])
    assert _kernels.own_load_average() > 0


def _roofline_row(name, dtype, size, fastopt_us, ceiling_us, numpy_us, torch_us=None,
                  best_fraction=None, torch_path="fused"):
    impls = {"fastopt": {"us": fastopt_us}, "ceiling": {"us": ceiling_us},
             "numpy": {"us": numpy_us}}
    if torch_us is not None:
        impls["torch"] = {"us": torch_us}
    return {"algorithm": name, "dtype": dtype, "size": size, "threads": 1, "impls": impls,
            "torch_path": torch_path if torch_us is not None else None,
            "fraction_of_ceiling": ceiling_us / fastopt_us,
            "speedup_vs_numpy": numpy_us / fastopt_us,
            "speedup_vs_torch": None if torch_us is None else torch_us / fastopt_us,
            "best_fraction_of_ceiling": best_fraction}


def test_bench_subnormal_rows_of_each_dtype_are_told_apart():
    # The subnormal table has a row per algorithm and dtype: the targets name the dtype
    # ("adam 64"), and so does the table.
    from fastopt import bench

    def row(dtype, slowdown):
        return {"algorithm": "adam", "dtype": dtype, "size": 16,
                "us": {"normal": 1.0, "subnormal": slowdown, "normal_ftz": 1.0,
                       "subnormal_ftz": 1.0},
                "slowdown": slowdown, "slowdown_ftz": 1.0, "slowdown_passes": [slowdown],
                "slowdown_ftz_passes": [1.0]}

    report = {"subnormal": [row("float32", 1.25), row("float64", 2.5)]}
    targets = {t["target"]: t for t in bench.evaluate_targets(report)}
    assert [(c[0], c[1], c[3]) for c in targets["subnormal"]["cases"]] == \
        [("adam 32", 1.25, "met"), ("adam 64", 2.5, "open")]
    assert targets["subnormal"]["status"] == "partly met"
    table = bench.format_extra(report)
    assert "| adam | float32 | 1.0 | 1.2 | 1.25 |" in table
    assert "| adam | float64 | 1.0 | 2.5 | 2.50 |" in table


def test_bench_thread_table_keeps_each_pass_and_the_best_of_them(monkeypatch):
    # Each time (fastopt's and the ceiling's, per thread count) is the best over the
    # passes, the speedups are of those times, and each pass's speedups are kept.
    from fastopt import bench
    # (threads=1, threads=2, ceiling threads=1, ceiling threads=2): sgd and adam in the
    # first pass, then sgd and adam in the second
    times = iter([(10.0, 6.0, 9.0, 5.0), (8.0, 7.0, 10.0, 4.0),
                  (12.0, 12.0, 11.0, 4.0), (9.0, 9.0, 9.0, 9.0)])
    order = []

    def one(algorithm, size, dtype, thread_counts, rounds, min_batch, quiet):
        order.append(algorithm.name)
        t1, t2, c1, c2 = next(times)
        return {"algorithm": algorithm.name, "dtype": dtype, "size": size,
                "us": {"threads=1": t1, "threads=2": t2, "default": t2},
                "speedup": {"threads=1": 1.0, "threads=2": t1 / t2, "default": t1 / t2},
                "ceiling_us": {"threads=1": c1, "threads=2": c2}}

    monkeypatch.setattr(bench, "ALGORITHMS", {n: fastopt.ALGORITHMS[n] for n in ("sgd", "adam")})
    monkeypatch.setattr(bench, "_thread_scaling_one", one)
    rows = bench.thread_scaling(quiet=True, passes=2)
    assert order == ["sgd", "adam", "sgd", "adam"]   # pass after pass over the table
    sgd = rows[0]
    assert sgd["us"] == {"threads=1": 10.0, "threads=2": 6.0, "default": 6.0}
    assert sgd["ceiling_us"] == {"threads=1": 9.0, "threads=2": 4.0}
    assert sgd["speedup"]["threads=2"] == pytest.approx(10 / 6)
    assert sgd["ceiling_speedup"]["threads=2"] == pytest.approx(9 / 4)
    assert [p["threads=2"] for p in sgd["speedup_passes"]] == pytest.approx([10 / 6, 1.0])
    assert rows[1]["us"]["threads=1"] == 8.0
    assert "| sgd | 10.0 | 6.0 | 6.0 | 1.67 | 1.67 | 9.0 | 4.0 | 2.25 | 2.50 | 1.67, 1.00 " \
        in bench.format_extra({"threads_scaling": rows})
    with pytest.raises(ValueError, match="passes"):
        bench.thread_scaling(quiet=True, passes=0)


def test_bench_thread_row_times_its_two_thread_ceiling_again():
    # One row of the thread table, with real kernels: the ceiling with the most
    # threads is timed a second time, kept apart from fastopt's columns.
    from fastopt import bench
    row = bench._thread_scaling_one(fastopt.ALGORITHMS["sgd"], 64, "float32", (1, 2), 1,
                                    1e-4, True)
    assert set(row["us"]) == {"threads=1", "threads=2", "default"}
    assert set(row["ceiling_us"]) == {"threads=1", "threads=2"}
    again = row["ceiling_again_us"]
    assert set(again) == {"threads=2"} and again["threads=2"] > 0


def test_bench_thread_target_is_bounded_by_the_two_thread_ceiling():
    # Two threads cannot step faster than the ceiling with two threads, so fastopt's
    # one-thread time over that is the most they can gain: a miss under it is bounded
    # or ruled out; a row without the ceiling (JSON of an earlier version) is open.
    from fastopt import bench

    def row(name, one, two, ceiling_two=None):
        r = {"algorithm": name, "dtype": "float32", "size": 1 << 20,
             "us": {"threads=1": one, "threads=2": two, "default": two},
             "speedup": {"threads=1": 1.0, "threads=2": one / two, "default": one / two}}
        if ceiling_two is not None:
            r["ceiling_us"] = {"threads=1": one, "threads=2": ceiling_two}
            r["ceiling_speedup"] = {"threads=1": 1.0, "threads=2": one / ceiling_two}
        return r

    report = {"threads_scaling": [row("a", 100, 50, 45), row("b", 140, 97, 95),
                                  row("c", 140, 120, 110), row("d", 140, 100, 70),
                                  row("e", 140, 100)]}
    cases = {t["target"]: t for t in bench.evaluate_targets(report)}["threads"]["cases"]
    assert [c[3] for c in cases] == ["met", "bounded", "ruled out", "open", "open"]
    assert cases[1][2] == pytest.approx(140 / 95)
    assert cases[4][2] is None
    # with the two-thread ceiling timed again: the table's resolution.  f's 1.47 is
    # 0.97 of its bound 1.52, within it: at the ceiling; d's 1.40 is 0.70 of its bound
    # 2.0: still open; b's bound misses 1.5 anyway: bounded
    rows = [row("a", 100, 50, 45), row("b", 140, 97, 95), row("d", 140, 100, 70),
            row("f", 140, 95, 92)]
    pairs = [(45, 43), (95, 99), (70, 73), (92, 95)]
    for r, (_, again) in zip(rows, pairs):
        r["ceiling_again_us"] = {"threads=2": again}
    resolution = 2 * math.sqrt(sum(math.log(a / b) ** 2 for a, b in pairs) / 4)
    assert (140 / 100) / (140 / 70) < math.exp(-resolution) < (140 / 95) / (140 / 92)
    target = {t["target"]: t for t in bench.evaluate_targets({"threads_scaling": rows})}
    assert target["threads"]["resolution"] == pytest.approx(resolution)
    assert [c[3] for c in target["threads"]["cases"]] == ["met", "bounded", "open",
                                                          "at the ceiling"]
    table = bench.format_extra(report)
    assert "ceiling threads=2 us | ceiling speedup threads=2 | most threads=2 can gain |" \
        in table
    assert "| b | 140.0 | 97.0 | 97.0 | 1.44 | 1.44 | 140.0 | 95.0 | 1.47 | 1.47 |" in table
    assert "| e | 140.0 | 100.0 | 100.0 | 1.40 | 1.40 | - | - | - | - |" in table
    assert "ceiling" not in bench.format_extra({"threads_scaling": [row("e", 140, 100)]})


def test_bench_targets_tell_a_miss_within_the_runs_resolution_from_an_open_one():
    # The ceiling is timed twice: twice the RMS of log(ceiling / again) over a size's
    # rows is the run's resolution there.  A miss whose value lies within it of the
    # bound is "at the ceiling"; one further below the bound stays open; without the
    # second timing (JSON of earlier versions) nothing is at the ceiling.
    from fastopt import bench
    size = 16_000_000
    rows = [
        # 1.077x torch, the best 112 / 100 = 1.12: 0.96 of the bound
        _roofline_row("a", "float32", size, 104, 100, 2000, torch_us=112),
        # 1.091x torch, the best 1.20: 0.91 of the bound
        _roofline_row("b", "float32", size, 110, 100, 2000, torch_us=120),
        # the bound 1.05 misses 1.1 anyway: bounded, whatever the resolution
        _roofline_row("c", "float32", size, 100, 100, 2000, torch_us=105),
    ]
    old = {t["target"]: t for t in bench.evaluate_targets({"roofline": rows})}
    assert [c[3] for c in old["torch"]["cases"]] == ["open", "open", "bounded"]
    assert old["torch"]["resolution"] is None
    for row, again in zip(rows, (97.0, 103.0, 100.0)):
        row["ceiling_again_us"] = again
    logs = [math.log(100 / 97), math.log(100 / 103), 0.0]
    resolution = 2 * math.sqrt(sum(x * x for x in logs) / 3)
    assert 0.048 < resolution < 0.05   # 0.96 is within it of the bound, 0.91 is not
    targets = {t["target"]: t for t in bench.evaluate_targets({"roofline": rows})}
    assert targets["torch"]["resolution"] == pytest.approx(resolution)
    assert [c[3] for c in targets["torch"]["cases"]] == ["at the ceiling", "open", "bounded"]
    assert targets["torch"]["status"] == "not met"
    table = bench.format_targets({"roofline": rows})
    assert "at the ceiling: a 32; open: b 32" in table
    assert f"(resolution {100 * math.expm1(resolution):.1f}%)" in table


def test_bench_targets_sort_misses_by_what_bounds_them(tmp_path, capsys):
    from fastopt import bench
    size = 16_000_000
    report = {"roofline": [
        # at the ceiling: met
        _roofline_row("a", "float32", size, 100, 95, 2000, torch_us=120),
        # the floor allows 0.70: ruled out; torch no slower than the best: ruled out
        _roofline_row("b", "float64", size, 150, 100, 1000, torch_us=150, best_fraction=0.70),
        # the floor allows 0.85, inside the margin: bounded
        _roofline_row("c", "float64", size, 125, 100, 2000, best_fraction=0.85),
        # nothing bounds it: open
        _roofline_row("d", "float32", size, 130, 100, 2000),
    ], "many_small": {"count": 200, "size": 1000, "many_over_one": 1.6,
                      "speedup_vs_torch": 5.0}}
    targets = {t["target"]: t for t in bench.evaluate_targets(report)}
    assert [c[3] for c in targets["ceiling"]["cases"]] == ["met", "ruled out", "bounded", "open"]
    assert targets["ceiling"]["status"] == "partly met"
    # torch: a 120 / 100 = 1.2; b at best 150 / (100 / 0.7) = 1.05, under 1.1 by less
    # than the margin: bounded
    assert [c[3] for c in targets["torch"]["cases"]] == ["met", "bounded"]
    assert targets["torch"]["cases"][1][2] == pytest.approx(1.05)
    # NumPy: b at best 1000 / (100 / 0.7) = 7.0 < 10 / 1.1
    assert targets["numpy"]["cases"][1][3] == "ruled out"
    assert targets["many_small"]["status"] == "not met"
    assert targets["many_small_torch"]["status"] == "met"
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report))
    assert bench.main(["--targets", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ruled out: b 64" in out and "bounded: c 64" in out and "open: d 32" in out
    for bad, content in (("missing.json", None), ("garbled.json", "{"), ("list.json", "[]")):
        if content is not None:
            (tmp_path / bad).write_text(content)
        with pytest.raises(SystemExit):
            bench.main(["--targets", str(tmp_path / bad)])
        assert "--targets" in capsys.readouterr().err
