"""Compiled kernels against their NumPy reference twins, for every algorithm of the
registry, every test configuration, both dtypes and sizes that exercise every vector
body and scalar tail.

The kernels are compiled without fused multiply-add and perform the reference's
operations in its order and precision, so the comparison is exact: any difference is a
real divergence, never rounding.
"""
import inspect
import platform
import sys

import numpy as np
import pytest

import fastopt
from conftest import (ALGORITHMS, DTYPES, algorithm_configs, assert_same_bits, functional_kwargs,
                      new_state, random_problem, special_values)

SIZES = [0, 1, 7, 8, 15, 16, 17, 63, 64, 65, 1023, 4097, 2**16 + 3]
STEPS = 20


@pytest.fixture(autouse=True)
def fma_division_everywhere():
    """The tests here run with every FMA form of a division the instruction set has
    (fastopt.set_fma_division("all")), whatever this CPU's default; the other test
    files run with the default."""
    before = fastopt.get_fma_division()
    fastopt.set_fma_division("all")
    yield
    fastopt.set_fma_division(before)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_kernel_matches_reference(algorithm, hyper, dtype):
    rng = np.random.default_rng(0)
    for n in SIZES:
        param, grads = random_problem(rng, n, dtype, STEPS)
        ref_param = param.copy()
        state = new_state(algorithm, hyper, param)
        ref_state = [None if b is None else b.copy() for b in state]
        scalar_state = None
        for step, grad in enumerate(grads, start=1):
            grad_before = grad.copy()
            advanced, scalar_state = algorithm.advance_scalars(hyper, step, scalar_state)
            kwargs = functional_kwargs(algorithm, hyper, step, step == 1, advanced)
            algorithm.functional(param, grad, *state, **kwargs)
            algorithm.reference(ref_param, grad, *ref_state, **kwargs)
            np.testing.assert_array_equal(grad, grad_before, err_msg="grad was modified")
            np.testing.assert_array_equal(param, ref_param, err_msg=f"param, n={n}, step={step}")
            for spec, mine, ref in zip(algorithm.state, state, ref_state):
                if mine is not None:
                    np.testing.assert_array_equal(mine, ref, err_msg=f"{spec.name}, n={n}, step={step}")
        assert param.dtype == dtype


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_reference_twin_has_the_same_signature(algorithm):
    assert inspect.signature(algorithm.functional) == inspect.signature(algorithm.reference)
    names = list(inspect.signature(algorithm.functional).parameters)
    assert tuple(names[:len(algorithm.buffer_names)]) == algorithm.buffer_names


def test_every_kernel_has_a_registry_row_and_a_twin():
    from fastopt import _kernels
    used = {a.kernel for a in ALGORITHMS}
    assert used == set(_kernels.KERNELS) | set(_kernels.FACTORED)
    for algorithm in ALGORITHMS:
        assert algorithm.cls is getattr(fastopt, algorithm.cls_name)
        assert algorithm.functional is getattr(fastopt.functional, algorithm.name)
        assert algorithm.reference is getattr(fastopt.reference, algorithm.name)
        assert algorithm.cls_name in fastopt.__all__
        assert len(algorithm.configs) >= 1


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_lr_zero_is_a_bit_exact_no_op(algorithm, hyper, dtype):
    if not algorithm.lr_zero_is_no_op(hyper):
        pytest.skip(f"lr = 0 is not a no-op for {algorithm.name} (see its registry row)")
    rng = np.random.default_rng(1)
    param, grads = random_problem(rng, 257, dtype, 5)
    param[:3] = [0.0, -0.0, 1e-30]
    start = param.copy()
    opt = algorithm.cls([param], **dict(hyper, lr=0.0))
    for grad in grads:
        opt.step([grad])
    # p + (-0.0 * d) is p bit for bit, except that IEEE addition turns -0.0 + +0.0 into
    # +0.0 (torch does the same): the -0.0 entry is equal, not bit-identical.
    np.testing.assert_array_equal(param, start)
    keep = np.arange(param.size) != 1
    assert param[keep].tobytes() == start[keep].tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_zero_gradient_without_weight_decay_is_a_no_op(algorithm, hyper, dtype):
    if "weight_decay" in hyper:
        hyper = dict(hyper, weight_decay=0.0)
    if not algorithm.zero_grad_is_no_op(hyper):
        pytest.skip(f"a zero gradient moves {algorithm.name} here (see its registry row)")
    rng = np.random.default_rng(2)
    param, _ = random_problem(rng, 100, dtype, 0)
    start = param.copy()
    opt = algorithm.cls([param], **hyper)
    for _ in range(5):
        opt.step([np.zeros_like(param)])
    assert param.tobytes() == start.tobytes()


@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_float32_and_float64_agree(algorithm, hyper):
    rng = np.random.default_rng(3)
    p64, grads = random_problem(rng, 500, np.float64, 20)
    p64 = p64.astype(np.float32).astype(np.float64)
    grads = [g.astype(np.float32).astype(np.float64) for g in grads]
    p32 = p64.astype(np.float32)
    start = p64.copy()
    o64 = algorithm.cls([p64], **hyper)
    o32 = algorithm.cls([p32], **hyper)
    for g in grads:
        o64.step([g])
        o32.step([g.astype(np.float32)])
    moved = np.max(np.abs(p64 - start))
    assert moved > 0
    assert np.max(np.abs(p32 - p64)) <= 2e-4 * moved


@pytest.mark.parametrize("grad_scale", [1024.0, 0.37])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_grad_scale_matches_reference(algorithm, hyper, dtype, grad_scale):
    """The scaled loop of every kernel against the reference's ``d / grad_scale``; 0.37
    is no power of two, so a kernel that multiplied by a rounded reciprocal would
    differ."""
    rng = np.random.default_rng(11)
    for n in (0, 1, 17, 1023):
        param, grads = random_problem(rng, n, dtype, 8)
        ref_param = param.copy()
        state = new_state(algorithm, hyper, param)
        ref_state = [None if b is None else b.copy() for b in state]
        scalar_state = None
        for step, grad in enumerate(grads, start=1):
            grad = grad * dtype(grad_scale)
            advanced, scalar_state = algorithm.advance_scalars(hyper, step, scalar_state)
            kwargs = functional_kwargs(algorithm, hyper, step, step == 1, advanced)
            algorithm.functional(param, grad, *state, grad_scale=grad_scale, **kwargs)
            algorithm.reference(ref_param, grad, *ref_state, grad_scale=grad_scale, **kwargs)
            np.testing.assert_array_equal(param, ref_param, err_msg=f"param, n={n}, step={step}")
            for spec, mine, ref in zip(algorithm.state, state, ref_state):
                if mine is not None:
                    np.testing.assert_array_equal(mine, ref, err_msg=f"{spec.name}, n={n}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_grad_scale_equals_stepping_with_divided_gradients(algorithm, hyper, dtype):
    rng = np.random.default_rng(12)
    scaled, grads = random_problem(rng, 300, dtype, 10)
    divided, start = scaled.copy(), scaled.copy()
    opt_scaled = algorithm.cls([scaled], **hyper)
    opt_divided = algorithm.cls([divided], **hyper)
    for grad in grads:
        opt_scaled.step([grad], grad_scale=3.0)
        opt_divided.step([grad / dtype(3.0)])
    assert scaled.tobytes() == divided.tobytes()
    assert not np.array_equal(scaled, start)


def special_array(dtype, n, rng):
    """`n` values of every magnitude, a third of them (and the first ones) taken from
    conftest's special values, infinities and NaN: what stresses a division."""
    special = np.array(special_values(dtype) + [np.inf, -np.inf, np.nan], dtype=dtype)
    values = (rng.standard_normal(n) * np.exp(rng.uniform(-40, 40, n))).astype(dtype)
    values[rng.integers(0, n, n // 3)] = rng.choice(special, n // 3)
    values[:special.size] = special
    return values


def assert_steps_give_reference_bits(algorithm, hyper, param, state, next_grad, where,
                                     steps=3, **extra):
    """`steps` steps of the functional kernel on `param` and `state` (in place) and of
    the reference on copies, each step's gradient from next_grad(), `extra` passed to
    both: the same bits after every step."""
    ref_param = param.copy()
    ref_state = [None if b is None else b.copy() for b in state]
    scalar_state = None
    for step in range(1, steps + 1):
        grad = next_grad()
        advanced, scalar_state = algorithm.advance_scalars(hyper, step, scalar_state)
        kwargs = functional_kwargs(algorithm, hyper, step, step == 1, advanced)
        with np.errstate(all="ignore"):
            algorithm.functional(param, grad, *state, **extra, **kwargs)
            algorithm.reference(ref_param, grad, *ref_state, **extra, **kwargs)
        at = f"{where}, step {step}"
        assert_same_bits(param, ref_param, f"param, {at}")
        for spec, mine, ref in zip(algorithm.state, state, ref_state):
            if mine is not None:
                assert_same_bits(mine, ref, f"{spec.name}, {at}")


@pytest.mark.parametrize("grad_scale", [None, 0.37, 3e-30, 7e25])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["adam", "adamw", "adabelief", "adan", "nadam", "radam",
                                  "lamb"])
def test_constant_divisors_match_reference_on_special_values(name, dtype, grad_scale):
    """Adam, AdamW, AdaBelief and Adan divide the square root of their second moment
    by its bias correction without the divider on AVX-512, and for float64 on AVX2
    (fo_div_sqrt_const in kernels_impl.h); LAMB and NAdam divide their new moments by
    their corrections so, and float64 RAdam on AVX-512 its first moment
    (fo_div_const_checked), in blocks whose operations raise no exception flag, and
    plainly in the others (an infinity or a subnormal among them must take the
    division); every kernel divides by the loss scale plainly.
    On every instruction set, gradients and state full of zeros, subnormals, huge
    values, infinities and NaN give the reference's bits."""
    from fastopt import _kernels
    algorithm = fastopt.get_algorithm(name)
    hyper = dict(algorithm.defaults)
    before = _kernels.get_isa()
    try:
        for isa in _kernels.isa_available():
            _kernels.set_isa(isa)
            rng = np.random.default_rng(21)
            n = 1000 + 37
            param = special_array(dtype, n, rng)
            state = new_state(algorithm, hyper, param)
            for b in state:
                if b is not None:
                    b[...] = special_array(dtype, b.size, rng).reshape(b.shape)
            assert_steps_give_reference_bits(algorithm, hyper, param, state,
                                             lambda: special_array(dtype, n, rng), isa,
                                             grad_scale=grad_scale)
    finally:
        _kernels.set_isa(before)


def subnormal_array(dtype, shape, rng):
    """Values of both signs, most of them subnormal (random mantissas), some zeros of
    both signs and some small normal numbers, whose products underflow."""
    info = np.finfo(dtype)
    n = int(np.prod(shape))
    values = rng.uniform(-1, 1, n) * float(info.smallest_normal)
    pick = rng.random(n)
    values[pick < 0.1] = 0.0
    values[(pick >= 0.1) & (pick < 0.15)] = -0.0
    small = pick >= 0.85
    values[small] = rng.uniform(-4, 4, small.sum()) * float(info.smallest_normal)
    return values.astype(dtype).reshape(shape)


@pytest.mark.parametrize("maximize", [False, True], ids=["minimize", "maximize"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(fastopt.ALGORITHMS))
def test_subnormal_state_and_gradients_give_reference_bits(name, dtype, maximize):
    """Parameter, gradient and state mostly subnormal, with signed zeros: products with
    subnormal operands and results, underflows to zeros of either sign, and the
    gradient's negation.  Adafactor and Rprop multiply as FMAs with a -0 addend on
    the instruction sets that have FMA (fo_mul_fma in kernels_impl.h), which must give
    the multiplication's bits, signed zeros included (with a +0 addend the zeros of
    negative underflows come out +0: this test fails, mutant built and run).  Every
    instruction set gives the reference's bits, over three steps, for a vector and,
    for Adafactor, a factored matrix."""
    from fastopt import _kernels
    algorithm = fastopt.get_algorithm(name)
    hyper = dict(algorithm.defaults)
    if "maximize" in hyper:
        hyper["maximize"] = maximize
    elif maximize:
        pytest.skip("no maximize option")
    shapes = [(1000 + 37,)] + ([(37, 29)] if name == "adafactor" else [])
    before = _kernels.get_isa()
    try:
        for shape, isa in [(shape, isa) for shape in shapes
                           for isa in _kernels.isa_available()]:
            _kernels.set_isa(isa)
            rng = np.random.default_rng(23)
            param = subnormal_array(dtype, shape, rng)
            state = new_state(algorithm, hyper, param)
            for b in state:
                if b is not None:
                    b[...] = np.abs(subnormal_array(dtype, b.shape, rng))
            assert_steps_give_reference_bits(algorithm, hyper, param, state,
                                             lambda: subnormal_array(dtype, shape, rng),
                                             f"{shape}, {isa}")
    finally:
        _kernels.set_isa(before)


def adam_like_start(dtype, n, rng):
    """Ordinary (param, grad, exp_avg, exp_avg_sq) of `n` elements, for the tests that
    then put edge cases into some of them."""
    return [rng.uniform(-1, 1, n).astype(dtype), (rng.standard_normal(n) * 1e-2).astype(dtype),
            (rng.standard_normal(n) * 1e-3).astype(dtype), (rng.random(n) * 1e-5).astype(dtype)]


def assert_every_isa_gives_from(function, start, kwargs, expected, nan_bits=False):
    """`function(param, grad, exp_avg, exp_avg_sq, **kwargs)` on copies of the four
    arrays of `start` leaves the bits of the four of `expected` on every instruction
    set (with `nan_bits`, a NaN's bits too)."""
    from fastopt import _kernels
    before = _kernels.get_isa()
    try:
        for isa in _kernels.isa_available():
            _kernels.set_isa(isa)
            mine = [a.copy() for a in start]
            with np.errstate(all="ignore"):
                function(*mine, **kwargs)
            for a, b, what in zip(mine, expected, ("param", "grad", "exp_avg", "exp_avg_sq")):
                if nan_bits:
                    assert a.tobytes() == b.tobytes(), f"{what}, {isa}"
                else:
                    assert_same_bits(a, b, f"{what}, {isa}")
    finally:
        _kernels.set_isa(before)


def assert_every_isa_gives(function, param, grad, kwargs, expected):
    """`function(param, grad, exp_avg, exp_avg_sq, **kwargs)` from zero moments, on a
    copy of `param`, gives the bits of `expected` (param, exp_avg, exp_avg_sq) on every
    instruction set."""
    zeros = np.zeros_like(param)
    assert_every_isa_gives_from(function, [param, grad, zeros, zeros], kwargs,
                                [expected[0], grad, expected[1], expected[2]])


@pytest.fixture
def one_thread():
    """Steps in one kernel call per buffer (no chunks for threads), put back after."""
    from fastopt import _kernels
    before = _kernels.get_num_threads_setting()
    fastopt.set_num_threads(1)
    yield
    fastopt.set_num_threads(before or None)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("n", [3000, 140_000, (1 << 20) + 4099])
def test_lamb_divides_plainly_where_a_moment_is_out_of_range(dtype, n, one_thread):
    """LAMB's FMA division by a bias correction (float64 on AVX-512 and AVX2, float32
    on AVX-512) is exact only where its operations do not underflow; a block in which
    an operation raises an exception flag (here underflow and denormal operands) is
    computed again with the division.  A subnormal new moment (beta1 = 0.5, so exp_avg' = grad / 2)
    over the correction 0.75 (step 2) is a quotient the FMA form gets wrong by an
    ulp; with the parameter 0 there, the step writes that quotient's bits into it."""
    tiny = np.finfo(dtype).tiny            # exp_avg' = tiny / 2: subnormal
    grad = np.full(n, 1e-2, dtype=dtype)
    param = np.ones(n, dtype=dtype)
    picks = np.arange(5, n, 397)           # in many blocks and tiles, not all
    grad[picks] = tiny
    param[picks] = 0
    kwargs = dict(step=2, lr=1e-3, betas=(0.5, 0.999), eps=1e-6, weight_decay=0.0,
                  maximize=False)
    ref = [param.copy(), np.zeros(n, dtype), np.zeros(n, dtype)]
    fastopt.reference.lamb(ref[0], grad, ref[1], ref[2], **kwargs)
    assert np.all(ref[0][picks] != 0)      # the quotient reaches the parameter
    assert_every_isa_gives(fastopt.functional.lamb, param, grad, kwargs, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_lamb_keeps_the_sign_of_a_zero_moment(dtype):
    """The FMA form of LAMB's division by a bias correction loses the sign of a zero
    dividend (its correction adds +0), so a zero new moment must be the quotient as it
    is: with parameter, gradient and first moment -0, the update is -0 and the new
    parameter -0 + (+0) = +0, where +0 would leave -0."""
    n = 300
    rng = np.random.default_rng(8)
    start = [rng.standard_normal(n).astype(dtype), (rng.standard_normal(n) * 1e-2).astype(dtype),
             (rng.standard_normal(n) * 1e-3).astype(dtype), (rng.random(n) * 1e-5).astype(dtype)]
    zeros = np.arange(3, n, 17)
    for a in start[:3]:
        a[zeros] = -0.0
    start[3][zeros] = 0.0
    kwargs = dict(step=3, lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                  maximize=False)
    ref = [a.copy() for a in start]
    fastopt.reference.lamb(ref[0], ref[1], ref[2], ref[3], **kwargs)
    assert np.all(np.signbit(ref[2][zeros])) and not np.any(np.signbit(ref[0][zeros]))
    assert_every_isa_gives_from(fastopt.functional.lamb, start, kwargs, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_nadam_divides_plainly_where_the_second_moment_is_out_of_range(dtype):
    """NAdam's FMA division of the new second moment by its bias correction
    (float64 on AVX-512 and AVX2, float32 on AVX-512) is exact only where its
    operations do not underflow; a block in which an operation raises an exception
    flag is computed again with the division.  Gradients
    whose squares are subnormal give subnormal moments and quotients, which the FMA
    form gets wrong by an ulp for some; with eps 0 and the parameter 0 there, the
    quotient's square root divides the update, so its bits reach the parameter."""
    info = np.finfo(dtype)
    n = 3000
    rng = np.random.default_rng(5)
    grad = rng.uniform(-1, 1, n).astype(dtype)
    param = rng.uniform(-1, 1, n).astype(dtype)
    picks = np.arange(5, n, 7)                # in every block, not every element
    # |grad| from the square root of the smallest normal down: squares (and moments,
    # a quarter of them) through most of the subnormals
    grad[picks] = (np.sqrt(float(info.tiny))
                   * np.exp2(-rng.uniform(0, info.nmant / 2 - 1, picks.size))
                   * rng.choice([-1, 1], picks.size)).astype(dtype)
    param[picks] = 0
    kwargs = dict(step=2, lr=1e-3, betas=(0.9, 0.75), eps=0.0, weight_decay=0.0,
                  momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
                  mu_product=0.9 * 0.95)
    ref = [param.copy(), np.zeros(n, dtype), np.zeros(n, dtype)]
    fastopt.reference.nadam(ref[0], grad, ref[1], ref[2], **kwargs)
    assert np.all(ref[2][picks] < info.tiny) and np.all(ref[2][picks] > 0)
    assert np.all(ref[0][picks] != 0)       # the quotients reach the parameter
    assert_every_isa_gives(fastopt.functional.nadam, param, grad, kwargs, ref)


def nadam_shared_divisor_case(case, dtype, n, rng):
    """Start (param, grad, exp_avg, exp_avg_sq) and eps for one of the cases at the
    edges of NAdam's FMA division by a shared denominator (double on AVX-512):
    "small dividends" (gradient terms near the smallest normal: the remainder's last
    bits lost to underflow, some quotients an ulp off), "large divisor" (a denom of
    1e25 or 1e50, quotients subnormal) and "small divisor" (eps 0 and a tiny denom,
    quotients that overflow: NaN for the FMA form).  Every third element is such a
    case, with parameter 0 so that its quotients' bits reach it; the rest are
    ordinary values.  Without the blocks' check of their exception flags the first
    and the third case fail (checked); the second's subnormal quotients the FMA form
    gives exactly wherever it raises no flag."""
    single = dtype == np.float32
    huge = 1e25 if single else 1e50
    param, grad, exp_avg, exp_avg_sq = adam_like_start(dtype, n, rng)
    picks = np.arange(2, n, 3)
    k = picks.size
    param[picks] = 0
    eps = 1e-8
    if case == "small dividends":
        # c_grad * grad and c_avg * exp_avg near the smallest normal: squares vanish
        tiny = float(np.finfo(dtype).tiny)
        grad[picks] = (tiny * 1e3 * rng.uniform(1, 100, k)).astype(dtype)
        exp_avg[picks] = 0
        exp_avg_sq[picks] = 0
    elif case == "large divisor":
        grad[picks] = 0
        exp_avg_sq[picks] = huge
        scale = 1e-28 if single else 1e-283
        exp_avg[picks] = (scale * rng.uniform(1, 1000, k)).astype(dtype)
    else:  # "small divisor"
        eps = 0.0
        grad[picks] = 0
        exp_avg_sq[picks] = 1 / huge
        # c_avg * exp_avg' (about 3.4e-3 * exp_avg) of 2**87 or more (float) or
        # 2**940 (double), over a denom near 4e-13 (float) or 1.3e-25 (double)
        low, spread = (8e28, 4.5) if single else (3e285, 800)
        exp_avg[picks] = (low * rng.uniform(1, spread, k)).astype(dtype)
    return [param, grad, exp_avg, exp_avg_sq], eps, picks


@pytest.mark.parametrize("case", ["small dividends", "large divisor", "small divisor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_nadam_divides_plainly_where_the_shared_divisor_is_inexact(case, dtype):
    """NAdam's two divisions by one denominator share its reciprocal for double on
    AVX-512 (fo_cdiv_make_shared), exact only where its operations neither underflow
    nor overflow; where one raises an exception flag (nadam_shared_divisor_case) the
    block divides, and every instruction set gives the reference's bits."""
    n = 3000
    rng = np.random.default_rng(9)
    start, eps, picks = nadam_shared_divisor_case(case, dtype, n, rng)
    kwargs = dict(step=2, lr=1e-3, betas=(0.9, 0.75), eps=eps, weight_decay=0.0,
                  momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
                  mu_product=0.9 * 0.95)
    ref = [a.copy() for a in start]
    with np.errstate(all="ignore"):
        fastopt.reference.nadam(ref[0], ref[1], ref[2], ref[3], **kwargs)
    info = np.finfo(dtype)
    moved = ref[0][picks]
    if case == "large divisor":     # subnormal quotients reach the parameter
        assert np.all(moved != 0) and np.mean(np.abs(moved) < info.tiny) > 0.5
    elif case == "small divisor":   # quotients that overflow
        assert np.mean(np.isinf(moved)) > 0.5
    else:
        assert np.all(np.isfinite(moved)) and np.all(moved != 0)
    assert_every_isa_gives_from(fastopt.functional.nadam, start, kwargs, ref)


ON_X86_LINUX = (sys.platform.startswith("linux")
                and platform.machine().lower() in ("x86_64", "amd64"))


def _libm():
    import ctypes
    import ctypes.util
    return ctypes.CDLL(ctypes.util.find_library("m"))


def _machine_keeps_flags():
    """Whether a flag raised through glibc reads back set: true on x86-64 hardware,
    false under an emulator that does not keep the status flags (valgrind's)."""
    libm = _libm()
    FE_DIVBYZERO, FE_ALL = 0x04, 0x3d
    libm.feclearexcept(FE_ALL)
    libm.feraiseexcept(FE_DIVBYZERO)
    kept = bool(libm.fetestexcept(FE_ALL) & FE_DIVBYZERO)
    libm.feclearexcept(FE_ALL)
    return kept


needs_kept_flags = pytest.mark.skipif(
    not ON_X86_LINUX or not _machine_keeps_flags(),
    reason="reads the x86 exception flags through glibc's fenv functions, on a machine "
           "that keeps them (not under valgrind)")


@needs_kept_flags
def test_exception_flags_are_trusted_on_x86_hardware():
    """The load probes that an operation of each kind raises its exception flag; on
    x86-64 hardware (not an emulator that drops them, which the skip tells apart through
    glibc) it must find they do, or LAMB, NAdam and float64 RAdam would divide every
    block, and `fastopt info` says which."""
    from fastopt import _kernels, info
    assert _kernels.fpflags_checked() is True
    assert info.describe()["fpflags_checked"] is True


@needs_kept_flags
@pytest.mark.parametrize("name", ["nadam", "lamb", "radam"])
def test_kernels_leave_the_callers_exception_flags(name):
    """LAMB, NAdam and float64 RAdam clear the exception flags to judge their blocks;
    on return the flags are those the caller had set together with those the step's
    operations raised, as a kernel that divides leaves them.  Every instruction set,
    float64."""
    libm = _libm()
    FE_INVALID, FE_DIVBYZERO, FE_UNDERFLOW, FE_ALL = 0x01, 0x04, 0x10, 0x3d
    from fastopt import _kernels
    algorithm = fastopt.get_algorithm(name)
    hyper = dict(algorithm.defaults)
    rng = np.random.default_rng(13)
    n = 3000
    before = _kernels.get_isa()
    try:
        for isa in _kernels.isa_available():
            _kernels.set_isa(isa)
            for tiny in (False, True):
                param = rng.uniform(-1, 1, n)
                grad = rng.standard_normal(n) * 1e-2
                if tiny:
                    grad[::7] = 1e-200      # squares that underflow, in some blocks
                state = new_state(algorithm, hyper, param)
                advanced, _ = algorithm.advance_scalars(hyper, 3, None)
                kwargs = functional_kwargs(algorithm, hyper, 3, False, advanced)
                libm.feclearexcept(FE_ALL)
                libm.feraiseexcept(FE_DIVBYZERO)
                algorithm.functional(param, grad, *state, **kwargs)
                raised = libm.fetestexcept(FE_ALL)
                assert raised & FE_DIVBYZERO, f"{isa}: the caller's flag was lost"
                assert not raised & FE_INVALID, f"{isa}: a flag was invented"
                assert bool(raised & FE_UNDERFLOW) == tiny, f"{isa}: underflow {tiny}"
    finally:
        libm.feclearexcept(FE_ALL)
        _kernels.set_isa(before)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_nadam_gives_the_divisions_nan_where_the_denominator_is_nan(dtype):
    """A NaN denominator raises no exception flag, and with it the shared reciprocal's
    quotients would be NaN with the dividend's sign where the division's NaN has the
    denominator's; NAdam's blocks also check their denominators' bits, so the
    results have the reference's bits, NaN included (a positive NaN second moment
    under negative gradient terms)."""
    n = 3000
    param, grad, exp_avg, exp_avg_sq = adam_like_start(dtype, n, np.random.default_rng(12))
    picks = np.arange(4, n, 5)
    exp_avg_sq[picks] = np.nan
    grad[picks] = np.abs(grad[picks])        # c_grad < 0: negative dividends
    exp_avg[picks] = np.abs(exp_avg[picks])
    kwargs = dict(step=3, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
                  mu_product=0.9 * 0.95)
    start = [param, grad, exp_avg, exp_avg_sq]
    ref = [a.copy() for a in start]
    fastopt.reference.nadam(*ref, **kwargs)
    assert np.all(np.isnan(ref[0][picks])) and not np.any(np.signbit(ref[0][picks]))
    assert_every_isa_gives_from(fastopt.functional.nadam, start, kwargs, ref, nan_bits=True)


@pytest.mark.parametrize("step", [3, 10], ids=["warm-up", "rectified"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_radam_divides_plainly_where_the_first_moment_is_out_of_range(dtype, step):
    """RAdam's FMA division of the new first moment by its bias correction (float64
    on AVX-512) is exact only where its operations do not underflow; a block in which
    an operation raises an exception flag is computed again with the division.  Every
    third gradient
    is a few times the smallest normal, its moment and quotient subnormal (the FMA form
    gets some of those an ulp off); with lr 1 and the parameter 0 there
    the quotient's bits reach the parameter, in the warm-up steps (parameter minus the
    quotient) and once the rectification is on (times the adaptive rate, which a
    second moment of zero and a tiny eps make large)."""
    info = np.finfo(dtype)
    n = 3000
    rng = np.random.default_rng(11)
    param, grad, exp_avg, exp_avg_sq = adam_like_start(dtype, n, rng)
    picks = np.arange(2, n, 3)
    grad[picks] = (float(info.tiny) * rng.uniform(1, 9.99, picks.size)
                   * rng.choice([-1, 1], picks.size)).astype(dtype)
    exp_avg[picks] = 0
    exp_avg_sq[picks] = 0
    param[picks] = 0
    eps = float(info.tiny) * 1e-3 * 2.0 ** info.nmant
    kwargs = dict(step=step, lr=1.0, betas=(0.9, 0.999), eps=eps, weight_decay=0.0,
                  decoupled_weight_decay=False, maximize=False)
    start = [param, grad, exp_avg, exp_avg_sq]
    ref = [a.copy() for a in start]
    fastopt.reference.radam(*ref, **kwargs)
    assert np.all(np.abs(ref[2][picks]) < info.tiny) and np.all(ref[2][picks] != 0)
    assert np.all(ref[0][picks] != 0) and np.all(np.isfinite(ref[0]))
    assert_every_isa_gives_from(fastopt.functional.radam, start, kwargs, ref)


@pytest.mark.parametrize("name", ["nadam", "radam"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_long_calls_check_their_longer_blocks(name, dtype, one_thread):
    """A call over at least 2**20 elements runs the kernels that check their blocks'
    exception flags (NAdam, RAdam, LAMB's second pass) in longer blocks
    (FO_CHECK_LONG): a block in which an operation raises a flag is computed again
    with the divisions, from the parameter it kept, and the others keep the FMA form.
    Gradients of a few times the smallest normal in some blocks only (moments and
    quotients subnormal, some an ulp off in the FMA form), with the parameter 0 and
    lr 1 there, so that the quotients' bits reach it; one call, on every instruction
    set, gives the reference's bits."""
    info = np.finfo(dtype)
    n = (1 << 20) + 4099
    rng = np.random.default_rng(13)
    param, grad, exp_avg, exp_avg_sq = adam_like_start(dtype, n, rng)
    picks = np.sort(rng.choice(n // 2, 60, replace=False))   # some blocks, not all
    grad[picks] = (float(info.tiny) * rng.uniform(1, 9.99, picks.size)
                   * rng.choice([-1, 1], picks.size)).astype(dtype)
    exp_avg[picks] = 0
    exp_avg_sq[picks] = 0
    param[picks] = 0
    eps = float(info.tiny) * 1e-3 * 2.0 ** info.nmant
    kwargs = dict(step=10, lr=1.0, betas=(0.9, 0.999), eps=eps, weight_decay=0.0,
                  decoupled_weight_decay=False, maximize=False)
    if name == "nadam":
        kwargs.update(betas=(0.9, 0.75), eps=0.0, momentum_decay=4e-3,
                      mu_product=0.9 * 0.95)
    start = [param, grad, exp_avg, exp_avg_sq]
    ref = [a.copy() for a in start]
    with np.errstate(all="ignore"):
        getattr(fastopt.reference, name)(*ref, **kwargs)
    assert np.all(np.abs(ref[2][picks]) < info.tiny) and np.all(ref[2][picks] != 0)
    assert np.all(ref[0][picks] != 0)
    assert_every_isa_gives_from(getattr(fastopt.functional, name), start, kwargs, ref)


@pytest.mark.parametrize("beta2,step", [(1.0, 1.0), (2.0, 1.0), (-1e50, 1.0), (-1e300, 3.0),
                                        (1 - 2.0**-53, 1.0)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_degenerate_bias_corrections_give_the_baselines_bits(beta2, step, dtype):
    """Adam's kernels divide by sqrt(1 - beta2**step) with fo_div_sqrt_const on
    AVX-512 (and for float64 on AVX2); a divisor of 0, NaN, infinity, a huge one or
    the smallest one (betas the API rejects, so only the raw kernel call gets there)
    gives the baseline division's bits on every instruction set."""
    from fastopt import _kernels
    rng = np.random.default_rng(22)
    start = [special_array(dtype, 300, rng) for _ in range(4)]
    hyper = (step, 1e-3, 0.9, beta2, 1e-8, 0.0, 0.0, 0.0, 0.0, 1.0)
    before = _kernels.get_isa()
    results = {}
    try:
        for isa in _kernels.isa_available():
            _kernels.set_isa(isa)
            p, g, m, v = (a.copy() for a in start)
            with np.errstate(all="ignore"):
                _kernels.run([("adam", (p, g, m, v, None), hyper)], lambda task, slot: str(slot))
            results[isa] = (p, m, v)
    finally:
        _kernels.set_isa(before)
    baseline = results.pop("baseline")
    for isa, arrays in results.items():
        for name, mine, base in zip(("param", "exp_avg", "exp_avg_sq"), arrays, baseline):
            assert_same_bits(mine, base, f"{name}, {isa}")


ND_SHAPES = [(3, 7), (2, 3, 5), (1, 1), (5, 1), (1, 6), (0, 4), (4, 0), (2, 0, 3), (40, 70),
             (3, 1, 2, 9)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_kernel_matches_reference_on_nd_parameters(algorithm, hyper, dtype):
    """Multi-dimensional parameters, where Adafactor factors its second moment (row and
    column state of their own shapes) and every other kernel sees the flat array."""
    rng = np.random.default_rng(4)
    for shape in ND_SHAPES:
        size = int(np.prod(shape))
        param, grads = random_problem(rng, size, dtype, 6)
        param = param.reshape(shape)
        ref_param = param.copy()
        state = new_state(algorithm, hyper, param)
        ref_state = [None if b is None else b.copy() for b in state]
        scalar_state = None
        for step, grad in enumerate(grads, start=1):
            grad = grad.reshape(shape)
            advanced, scalar_state = algorithm.advance_scalars(hyper, step, scalar_state)
            kwargs = functional_kwargs(algorithm, hyper, step, step == 1, advanced)
            algorithm.functional(param, grad, *state, **kwargs)
            with np.errstate(invalid="ignore", divide="ignore"):
                algorithm.reference(ref_param, grad, *ref_state, **kwargs)
            np.testing.assert_array_equal(param, ref_param, err_msg=f"{shape}, step={step}")
            for spec, mine, ref in zip(algorithm.state, state, ref_state):
                if mine is not None:
                    np.testing.assert_array_equal(mine, ref, err_msg=f"{spec.name}, {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(19, 13), (2, 9, 1100), (3, 200, 70), (1, 40000)],
                         ids=["rows-in-eights-and-rest", "runs-per-row", "row-across-a-block",
                              "one-long-row"])
def test_adafactor_factored_kernel_matches_reference_on_larger_matrices(shape, dtype):
    """The factored kernel sums eight rows at a time (and the rest one by one), computes
    the update in runs of at most FO_SUM_TILE (512) elements of a row, and adds its
    squares into lanes rotated to the run's flat index, flushing a block of 32,768
    elements inside a row; where the FMA form divides by row_mean, a run whose
    operations raise an exception flag is computed again with the division (the
    "subnormal" case: an eps[0] whose square is zero, so that nothing clamps the
    estimate, and rows and columns of small gradients against one row of large ones,
    so that some quotients of normal products by row_mean are subnormal, where the
    FMA form can be an ulp off: without the check this case fails, mutant built and
    run).  Every instruction set gives the reference's bits."""
    from fastopt import _kernels
    algorithm = fastopt.get_algorithm("adafactor")
    small, eps1 = (3e-10, 1e-30) if dtype == np.float32 else (1.2e-77, 1e-200)
    for hyper, subnormal in (({}, False), ({"weight_decay": 0.1, "maximize": True}, False),
                             ({"eps": (eps1, 1e-3)}, True)):
        hyper = {**algorithm.defaults, **hyper}
        rng = np.random.default_rng(21)
        size = int(np.prod(shape))
        param, grads = random_problem(rng, size, dtype, 3)
        if subnormal:
            for grad in grads:
                matrices = grad.reshape(-1, shape[-2], shape[-1])
                matrices[...] = rng.standard_normal(matrices.shape) * small
                half = shape[-1] // 2
                matrices[:, 0, :half] = rng.standard_normal((len(matrices), half)) * 100
        param = param.reshape(shape)
        ref_param = param.copy()
        state = new_state(algorithm, hyper, param)
        ref_state = [None if b is None else b.copy() for b in state]
        before = _kernels.get_isa()
        for step, grad in enumerate(grads, start=1):
            grad = grad.reshape(shape)
            kwargs = functional_kwargs(algorithm, hyper, step, step == 1, {})
            with np.errstate(invalid="ignore", divide="ignore"):
                algorithm.reference(ref_param, grad, *ref_state, **kwargs)
            try:
                for isa in _kernels.isa_available():
                    _kernels.set_isa(isa)
                    mine = [param.copy()] + [None if b is None else b.copy() for b in state]
                    algorithm.functional(mine[0], grad, *mine[1:], **kwargs)
                    assert_same_bits(mine[0], ref_param, f"param, {isa}, step {step}")
                    for spec, a, b in zip(algorithm.state, mine[1:], ref_state):
                        if a is not None:
                            assert_same_bits(a, b, f"{spec.name}, {isa}, step {step}")
            finally:
                _kernels.set_isa(before)
            param, state = mine[0], mine[1:]


def test_adafactor_keeps_factored_state():
    param = np.zeros((2, 30, 50), np.float32)
    opt = fastopt.Adafactor([param, np.zeros(7, np.float32)])
    opt.step([np.ones_like(param), np.ones(7, np.float32)])
    state = opt.state[0]
    assert set(state) == {"step", "row_var", "col_var"}
    assert state["row_var"].shape == (2, 30, 1) and state["col_var"].shape == (2, 1, 50)
    assert set(opt.state[1]) == {"step", "variance"}
    with pytest.raises(ValueError, match=r"must have shape \(2, 30, 1\)"):
        fastopt.functional.adafactor(param, np.ones_like(param), np.zeros((2, 30), np.float32),
                                     state["col_var"], step=1, lr=0.01, beta2_decay=-0.8,
                                     eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                                     maximize=False)


def _view_at(values, offset):
    """A copy of `values` placed `offset` elements past a 64-byte boundary."""
    itemsize = values.dtype.itemsize
    raw = np.zeros(values.nbytes + 128, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + offset * itemsize
    view = np.frombuffer(raw.data, values.dtype, count=values.size, offset=start)
    view[...] = values
    return view


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_alignment_split_changes_no_result(algorithm, dtype):
    """The runner starts the bulk of a long range where the parameter is aligned
    (fo_call): for every placement of the parameter within a cache line, with the
    gradient and state placed elsewhere, just below and above the length where it
    splits, the kernel gives the reference's bits."""
    hyper = dict(algorithm.defaults)
    line, shortest = fastopt._kernels.alignment()
    itemsize = np.dtype(dtype).itemsize
    rng = np.random.default_rng(7)
    for n in (shortest - 1, shortest + 37):
        param0, grads = random_problem(rng, n, dtype, 2)
        for offset in range(line // itemsize):
            param = _view_at(param0, offset)
            ref_param = param0.copy()
            state = [None if b is None else _view_at(b, (offset + 3 + k) % (line // itemsize))
                     for k, b in enumerate(new_state(algorithm, hyper, param0))]
            ref_state = [None if b is None else b.copy() for b in state]
            scalar_state = None
            for step, g in enumerate(grads, start=1):
                grad = _view_at(g, (offset + 1) % (line // itemsize))
                advanced, scalar_state = algorithm.advance_scalars(hyper, step, scalar_state)
                kwargs = functional_kwargs(algorithm, hyper, step, step == 1, advanced)
                algorithm.functional(param, grad, *state, **kwargs)
                algorithm.reference(ref_param, g, *ref_state, **kwargs)
                np.testing.assert_array_equal(param, ref_param,
                                              err_msg=f"n={n}, offset={offset}, step={step}")
                for spec, mine, ref in zip(algorithm.state, state, ref_state):
                    if mine is not None:
                        np.testing.assert_array_equal(
                            mine, ref, err_msg=f"{spec.name}, n={n}, offset={offset}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_per_cpu_choices_change_no_result(algorithm, dtype):
    """Software prefetch on and off (fastopt.set_prefetch) and every FMA-division mode
    (fastopt.set_fma_division) give the reference's bits, parameter and state, for
    sizes from empty to several blocks with a tail."""
    hyper = dict(algorithm.defaults)
    rng = np.random.default_rng(11)
    before = fastopt.get_prefetch(), fastopt.get_fma_division()
    try:
        for n in (0, 1, 17, 70_001):
            param0, grads = random_problem(rng, n, dtype, 2)
            results = []
            for on, mode in ((True, "all"), (False, "all"), (False, "float64"), (True, "off")):
                assert fastopt.set_prefetch(on) is on and fastopt.get_prefetch() is on
                assert fastopt.set_fma_division(mode) == mode == fastopt.get_fma_division()
                what = f"n={n}, prefetch={on}, {mode}"
                param = param0.copy()
                state = new_state(algorithm, hyper, param)
                ref_param = param0.copy()
                ref_state = [None if b is None else b.copy() for b in state]
                scalar_state = None
                for step, grad in enumerate(grads, start=1):
                    advanced, scalar_state = algorithm.advance_scalars(hyper, step, scalar_state)
                    kwargs = functional_kwargs(algorithm, hyper, step, step == 1, advanced)
                    algorithm.functional(param, grad, *state, **kwargs)
                    algorithm.reference(ref_param, grad, *ref_state, **kwargs)
                np.testing.assert_array_equal(param, ref_param, err_msg=what)
                for spec, mine, ref in zip(algorithm.state, state, ref_state):
                    if mine is not None:
                        np.testing.assert_array_equal(mine, ref, err_msg=f"{spec.name}, {what}")
                results.append(param)
            for other in results[1:]:
                assert_same_bits(other, results[0], f"n={n}: against prefetch on, every FMA form")
    finally:
        fastopt.set_prefetch(before[0])
        fastopt.set_fma_division(before[1])


@pytest.mark.parametrize("variable,value,expect", [
    ("FASTOPT_PREFETCH", "0", "False"), ("FASTOPT_PREFETCH", "1", "True"),
    ("FASTOPT_PREFETCH", "yes", "FASTOPT_PREFETCH must be 0 or 1"),
    ("FASTOPT_FMA_DIVISION", "off", "off"), ("FASTOPT_FMA_DIVISION", "all", "all"),
    ("FASTOPT_FMA_DIVISION", "float32", "FASTOPT_FMA_DIVISION must be one of"),
])
def test_per_cpu_choices_from_the_environment(variable, value, expect):
    """FASTOPT_PREFETCH and FASTOPT_FMA_DIVISION set the choices at import; a value
    that is neither fails the import with a message naming the variable."""
    import os
    import subprocess
    getter = "get_prefetch" if variable == "FASTOPT_PREFETCH" else "get_fma_division"
    result = subprocess.run([sys.executable, "-c", f"import fastopt; print(fastopt.{getter}())"],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, **{variable: value}))
    if expect.startswith("FASTOPT_"):
        assert result.returncode != 0 and expect in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expect


def test_set_fma_division_takes_a_mode_or_none():
    before = fastopt.get_fma_division()
    try:
        assert fastopt.set_fma_division(None) == fastopt._kernels.fma_division_default()
        for bad in ("float32", 1, True, "ALL"):
            with pytest.raises(ValueError, match="mode must be one of"):
                fastopt.set_fma_division(bad)
        assert fastopt.get_fma_division() == fastopt._kernels.fma_division_default()
    finally:
        fastopt.set_fma_division(before)


def test_set_prefetch_takes_a_bool_or_none():
    before = fastopt.get_prefetch()
    try:
        assert fastopt.set_prefetch(None) is fastopt._kernels.prefetch_default()
        for bad in (2, -1, "yes", 0.5):
            with pytest.raises(ValueError, match="on must be"):
                fastopt.set_prefetch(bad)
        assert fastopt.get_prefetch() is fastopt._kernels.prefetch_default()
    finally:
        fastopt.set_prefetch(before)
