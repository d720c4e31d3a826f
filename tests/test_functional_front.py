"""The functional API's compiled front end (``fastopt._kernels.FastStep``).

A call whose hyperparameters passed validation before runs straight in compiled code;
these tests check that it is taken when it should be, that it computes the same bits
as the full path and the NumPy reference, and that every input it cannot vouch for
falls through to the full path, which raises the documented error with every buffer
unchanged.
"""
import inspect

import numpy as np
import pytest

import fastopt
from fastopt import functional
from conftest import ALGORITHMS, DTYPES, algorithm_configs, functional_kwargs, new_state, random_problem

FRONTS = functional._FRONTS
PER_STEP = {"step", "first_step", "grad_scale"}


def python_floats(kwargs):
    """`kwargs` with NumPy scalars (the advanced scalars of NAdam and ASGD are kept in
    float32 by their classes) turned into Python floats, the type the front end takes."""
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in kwargs.items()}


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_front_end_names_are_the_functions_keywords(algorithm):
    params = inspect.signature(algorithm.functional).parameters.values()
    keywords = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
    expected = [k for k in keywords if k not in PER_STEP and k not in algorithm.advanced]
    assert list(FRONTS[algorithm.name].names) == expected


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_front_end_runs_repeated_calls_with_the_references_bits(algorithm, hyper, dtype):
    rng = np.random.default_rng(31)
    param, grads = random_problem(rng, 37, dtype, 6)
    twin = param.copy()
    state = new_state(algorithm, hyper, param)
    twin_state = [None if s is None else s.copy() for s in state]
    front = FRONTS[algorithm.name]
    hits = front.hits
    scalar_state = None
    for step, grad in enumerate(grads, start=1):
        advanced, scalar_state = algorithm.advance_scalars(hyper, step, scalar_state)
        kwargs = python_floats(functional_kwargs(algorithm, hyper, step, step == 1, advanced))
        algorithm.functional(param, grad, *state, **kwargs)
        algorithm.reference(twin, grad, *twin_state, **kwargs)
        np.testing.assert_array_equal(param, twin)
    for mine, theirs in zip(state, twin_state):
        if mine is not None:
            np.testing.assert_array_equal(mine, theirs)
    # at most the first call validates in Python; the others run from the front end
    assert front.hits - hits >= len(grads) - 1


@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_front_end_with_a_loss_scale_matches_the_reference(algorithm, hyper):
    rng = np.random.default_rng(32)
    param, grads = random_problem(rng, 19, np.float64, 4)
    twin = param.copy()
    state = new_state(algorithm, hyper, param)
    twin_state = [None if s is None else s.copy() for s in state]
    scalar_state = None
    for step, grad in enumerate(grads, start=1):
        advanced, scalar_state = algorithm.advance_scalars(hyper, step, scalar_state)
        kwargs = python_floats(functional_kwargs(algorithm, hyper, step, step == 1, advanced))
        algorithm.functional(param, grad * 64.0, *state, grad_scale=64.0, **kwargs)
        algorithm.reference(twin, grad * 64.0, *twin_state, grad_scale=64.0, **kwargs)
    np.testing.assert_array_equal(param, twin)


def adam_call():
    p = np.linspace(-1.0, 1.0, 12)
    g = np.linspace(0.5, -0.5, 12)
    m, v = np.zeros(12), np.zeros(12)
    kw = dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
              maximize=False, decoupled_weight_decay=False)
    functional.adam(p, g, m, v, None, step=1, **kw)   # validates and remembers kw
    return p, g, m, v, kw


def test_new_values_take_the_full_path_and_are_then_remembered():
    p, g, m, v, kw = adam_call()
    front = FRONTS["adam"]
    hits = front.hits
    functional.adam(p, g, m, v, None, step=2, **dict(kw, lr=0.05))
    assert front.hits == hits
    functional.adam(p, g, m, v, None, step=3, **dict(kw, lr=0.05))
    assert front.hits == hits + 1


@pytest.mark.parametrize("change", [
    {"lr": -0.0},               # equal to 0.0, but not the same bits
    {"lr": 1},                  # equal to 1.0, but an int validates on its own
    {"amsgrad": 0},             # equal to False, but not a bool: rejected
    {"betas": [0.9, 0.999]},    # a list is not compared: always validated
    {"lr": np.float64(0.1)},    # a float subclass: always validated
], ids=["negative-zero", "int", "int-for-bool", "list", "numpy-float"])
def test_values_equal_in_python_are_not_mistaken_for_validated_ones(change):
    p, g, m, v, kw = adam_call()
    front = FRONTS["adam"]
    hits = front.hits
    call = dict(kw, **change)
    if change == {"amsgrad": 0}:
        with pytest.raises(TypeError, match="amsgrad"):
            functional.adam(p, g, m, v, None, step=2, **call)
        return
    q, m2, v2 = p.copy(), m.copy(), v.copy()
    functional.adam(p, g, m, v, None, step=2, **call)
    fastopt.reference.adam(q, g, m2, v2, None, step=2, **call)
    assert p.tobytes() == q.tobytes()
    if change in ({"lr": -0.0}, {"lr": 1}):
        assert front.hits == hits   # first sight of these exact values: full path


def test_lr_of_negative_zero_keeps_the_sign_of_zero_results():
    """lr = 0.0 and lr = -0.0 are remembered apart: their results differ in the sign
    of a parameter that is zero (0 - (+0) = +0 but 0 - (-0) = +0, -0 - (+0) = -0)."""
    kw = dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
              maximize=False, first_step=False)
    for lr in (0.0, -0.0, 0.0, -0.0):
        p, q = np.array([-0.0, 0.0]), np.array([-0.0, 0.0])
        g = np.array([1.0, -1.0])
        functional.sgd(p, g, None, lr=lr, **kw)
        fastopt.reference.sgd(q, g, None, lr=lr, **kw)
        assert p.tobytes() == q.tobytes()


class Subclass(np.ndarray):
    pass


def test_per_step_inputs_the_front_end_declines_still_work():
    p, g, m, v, kw = adam_call()
    q, m2, v2 = p.copy(), m.copy(), v.copy()
    fastopt.reference.adam(q, g, m2, v2, None, step=2, **kw)
    fastopt.reference.adam(q, g, m2, v2, None, step=3, grad_scale=2, **kw)
    fastopt.reference.adam(q, g, m2, v2, None, step=4, **kw)
    functional.adam(p, g, m, v, None, step=np.int64(2), **kw)       # numpy integer step
    functional.adam(p, g, m, v, None, step=3, grad_scale=2, **kw)    # int loss scale
    functional.adam(p.view(Subclass), g, m, v, None, step=4, **kw)   # ndarray subclass
    assert p.tobytes() == q.tobytes()
    sgd_kw = dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
                  maximize=False)
    a, b, buf_a, buf_b = p.copy(), p.copy(), np.zeros(12), np.zeros(12)
    functional.sgd(a, g, buf_a, first_step=True, **sgd_kw)
    functional.sgd(a, g, buf_a, first_step=np.False_, **sgd_kw)      # numpy bool
    fastopt.reference.sgd(b, g, buf_b, first_step=True, **sgd_kw)
    fastopt.reference.sgd(b, g, buf_b, first_step=False, **sgd_kw)
    assert a.tobytes() == b.tobytes()


def bad_buffers(p, g, m, v):
    """(name, buffers, exception, message) cases the front end must not run."""
    big = np.zeros(24)
    swapped = m.astype(m.dtype.newbyteorder())
    frozen = p.copy()
    frozen.flags.writeable = False
    unaligned = np.frombuffer(np.zeros(12 * 8 + 1, np.uint8)[1:].data, np.float64)
    return [
        ("same-memory", (p, g, m, m), ValueError, "same memory"),
        ("overlap", (p, g, big[:12], big[6:18]), ValueError, "overlap"),
        ("param-is-grad", (p, p, m, v), ValueError, "same memory"),
        ("strided", (p, g, big[::2], v), ValueError, "C-contiguous"),
        ("byte-swapped", (p, g, swapped, v), ValueError, "byte-swapped"),
        ("read-only", (frozen, g, m, v), ValueError, "read-only"),
        ("unaligned", (p, g, m, unaligned), ValueError, "aligned"),
        ("shape", (p, g, m, np.zeros(13)), ValueError, "shape"),
        ("2d-shape", (p, g, m, np.zeros((3, 4))), ValueError, "shape"),
        ("dtype", (p, g.astype(np.float32), m, v), TypeError, "dtype"),
        ("int-param", (np.arange(12), g, m, v), TypeError, "dtype"),
        ("list", (p, list(g), m, v), TypeError, "numpy.ndarray"),
        ("none", (p, g, m, None), TypeError, "exp_avg_sq"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_bad_buffers_after_a_remembered_call_raise_and_write_nothing(case):
    p, g, m, v, kw = adam_call()
    functional.adam(p, g, m, v, None, step=2, **kw)   # the front end runs this one
    name, buffers, error, message = bad_buffers(p, g, m, v)[case]
    before = [b.tobytes() if isinstance(b, np.ndarray) else None for b in buffers]
    with pytest.raises(error, match=message):
        functional.adam(*buffers, None, step=3, **kw)
    after = [b.tobytes() if isinstance(b, np.ndarray) else None for b in buffers]
    assert after == before, name


@pytest.mark.parametrize("step,error", [(0, ValueError), (2**53 + 1, ValueError),
                                        (True, TypeError), (2.0, TypeError)])
def test_bad_steps_after_a_remembered_call_raise_and_write_nothing(step, error):
    p, g, m, v, kw = adam_call()
    before = p.tobytes(), m.tobytes(), v.tobytes()
    with pytest.raises(error, match="step"):
        functional.adam(p, g, m, v, None, step=step, **kw)
    assert (p.tobytes(), m.tobytes(), v.tobytes()) == before


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_loss_scales_after_a_remembered_call_raise(scale):
    p, g, m, v, kw = adam_call()
    before = p.tobytes()
    with pytest.raises(ValueError, match="grad_scale"):
        functional.adam(p, g, m, v, None, step=2, grad_scale=scale, **kw)
    assert p.tobytes() == before


def test_front_end_keeps_several_sets_of_values():
    """Two parameter groups with different options, stepped in turn, both run from
    the front end once each has been validated."""
    p, g, m, v, kw = adam_call()
    other = dict(kw, weight_decay=0.01)
    functional.adam(p, g, m, v, None, step=2, **other)
    front = FRONTS["adam"]
    hits = front.hits
    for step in range(3, 9):
        functional.adam(p, g, m, v, None, step=step, **(kw if step % 2 else other))
    assert front.hits == hits + 6


def test_unused_state_is_never_touched():
    """A buffer the options do not use (max_exp_avg_sq without amsgrad) is ignored,
    whatever it is, on the front end as on the full path."""
    p, g, m, v, kw = adam_call()
    functional.adam(p, g, m, v, "not an array", step=2, **kw)
    functional.adam(p, g, m, v, np.zeros(3), step=3, **kw)


def test_adafactor_matrices_take_the_full_path():
    algorithm = fastopt.ALGORITHMS["adafactor"]
    hyper = dict(algorithm.defaults)
    rng = np.random.default_rng(5)
    p = rng.standard_normal((4, 6))
    q = p.copy()
    state, twin = new_state(algorithm, hyper, p), new_state(algorithm, hyper, q)
    for step in range(1, 4):
        g = rng.standard_normal((4, 6))
        kwargs = functional_kwargs(algorithm, hyper, step, step == 1)
        algorithm.functional(p, g, *state, **kwargs)
        algorithm.reference(q, g, *twin, **kwargs)
    np.testing.assert_array_equal(p, q)
