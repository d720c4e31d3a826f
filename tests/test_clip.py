"""Gradient clipping by global norm and by value: compiled code against its NumPy
twin (bit for bit), against torch.nn.utils, and bad input rejected before any write."""
import math

import numpy as np
import pytest

import fastopt
from fastopt import reference

SIZES = [0, 1, 7, 8, 9, 1023, 1024, 1025, 3 * 1024 + 5, 2**16 + 3]
NORM_TYPES = [1.0, 2.0, 3.5, math.inf]


def grads_for(rng, sizes, dtypes, scale=1.0):
    out = []
    for i, n in enumerate(sizes):
        g = rng.standard_normal(n) * np.exp(rng.uniform(-4, 2, n)) * scale
        out.append(g.astype(dtypes[i % len(dtypes)]))
    return out


def copies(grads):
    return [None if g is None else g.copy() for g in grads]


@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("dtypes", [[np.float32], [np.float64], [np.float32, np.float64]],
                         ids=["f32", "f64", "mixed"])
@pytest.mark.parametrize("max_norm", [1e-3, 1e9], ids=["clips", "no-clip"])
def test_clip_grad_norm_matches_reference_bit_for_bit(norm_type, dtypes, max_norm):
    rng = np.random.default_rng(1)
    sizes = SIZES if norm_type != 3.5 else SIZES[:-1]  # the pow twin is a Python loop
    grads = grads_for(rng, sizes, dtypes)
    grads.insert(3, None)
    twins = copies(grads)
    before = copies(grads)
    total = fastopt.clip_grad_norm_(grads, max_norm, norm_type)
    expected = reference.clip_grad_norm_(twins, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == expected
    for g, t, b in zip(grads, twins, before):
        if g is None:
            continue
        np.testing.assert_array_equal(g, t)
        if max_norm > 1e8:
            assert g.tobytes() == b.tobytes()  # coefficient clamped to 1: untouched
    if max_norm < 1:
        assert any(g is not None and g.size and not np.array_equal(g, b)
                   for g, b in zip(grads, before))


@pytest.mark.parametrize("n", SIZES)
def test_norm_of_one_buffer_is_its_true_norm(n):
    """The fixed-order sum is still the norm: agree with a float128-free check in
    float64 (math.fsum is exactly rounded) to a few ulps."""
    rng = np.random.default_rng(n)
    g = rng.standard_normal(n)
    total = fastopt.clip_grad_norm_(g.copy(), math.inf)
    assert total == pytest.approx(math.sqrt(math.fsum((g * g).tolist())), rel=1e-14, abs=0)
    assert fastopt.clip_grad_norm_(g.copy(), math.inf, 1.0) == pytest.approx(
        math.fsum(np.abs(g).tolist()), rel=1e-14, abs=0)
    assert fastopt.clip_grad_norm_(g.copy(), math.inf, math.inf) == (
        float(np.max(np.abs(g))) if n else 0.0)


def test_reduction_order_is_the_documented_tree():
    """Three blocks whose 1-norm terms are 1, 2**-53, 2**-53: a left-to-right sum
    rounds each tiny term away (1.0), the tree splits the blocks [0] | [1, 2] and adds
    the two tiny ones first (exactly 1 + 2**-52).  Reversed, the tree adds 1 to a tiny
    term first and gets 1.0: the order is the documented one, not any other."""
    tiny = 2.0**-53
    g = np.zeros(3 * 1024)
    g[0], g[1024], g[2048] = 1.0, tiny, tiny
    assert (1.0 + tiny) + tiny == 1.0
    assert fastopt.clip_grad_norm_(g.copy(), math.inf, 1.0) == 1.0 + 2.0**-52
    g_reversed = g[::-1].copy()
    assert fastopt.clip_grad_norm_(g_reversed, math.inf, 1.0) == 1.0
    # within a block, element k goes to lane k % 8 and the lanes meet in a fixed tree
    h = np.zeros(16)
    h[0], h[1], h[2] = 1.0, tiny, tiny  # lanes 0, 1, 2: (1 + tiny) + (tiny + 0) -> 1.0
    assert fastopt.clip_grad_norm_(h.copy(), math.inf, 1.0) == 1.0
    h[:] = 0.0
    h[0], h[2], h[3] = 1.0, tiny, tiny  # lanes 0, 2, 3: (1 + 0) + (tiny + tiny)
    assert fastopt.clip_grad_norm_(h.copy(), math.inf, 1.0) == 1.0 + 2.0**-52
    for x in (g, g_reversed, h):
        assert fastopt.clip_grad_norm_(x.copy(), math.inf, 1.0) == \
            reference.clip_grad_norm_(x.copy(), math.inf, 1.0)


def test_scaling_is_max_norm_over_norm_plus_eps():
    g = np.array([3.0, 4.0])
    total = fastopt.clip_grad_norm_(g, 1.0)
    assert total == 5.0
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_array_equal(g, np.array([3.0, 4.0]) * coef)


def test_single_array_empty_list_and_all_none():
    g = np.array([6.0, 8.0])
    assert fastopt.clip_grad_norm_(g, 5.0) == 10.0
    assert fastopt.clip_grad_norm_([], 1.0) == 0.0
    assert fastopt.clip_grad_norm_([None, None], 1.0) == 0.0
    h = np.array([-3.0, 0.5, 9.0])
    fastopt.clip_grad_value_(h, 1.0)
    np.testing.assert_array_equal(h, [-1.0, 0.5, 1.0])


def test_nonfinite_norm_scales_like_torch_or_raises_before_writing():
    g = np.array([1.0, np.inf, 2.0])
    h = np.array([np.nan, 1.0])
    before = [g.copy(), h.copy()]
    with pytest.raises(RuntimeError, match="non-finite"):
        fastopt.clip_grad_norm_([g, h], 1.0, error_if_nonfinite=True)
    assert g.tobytes() == before[0].tobytes() and h.tobytes() == before[1].tobytes()
    # inf norm: coefficient 0, so finite entries become 0 and inf * 0 = NaN
    total = fastopt.clip_grad_norm_(g, 1.0)
    assert total == math.inf
    np.testing.assert_array_equal(g, [0.0, np.nan, 0.0])
    # NaN norm: the NaN coefficient reaches every element, as torch's clamp lets it
    assert math.isnan(fastopt.clip_grad_norm_(h, 1.0))
    assert np.isnan(h).all()


@pytest.mark.parametrize("bad,error,match", [
    (lambda: [np.ones(3), np.ones(3, dtype=np.int64)], TypeError, r"grads\[1\].*dtype"),
    (lambda: [np.ones(3), "x"], TypeError, r"grads\[1\].*ndarray"),
    (lambda: [np.ones(3), np.ones((3, 4))[:, 1]], ValueError, r"grads\[1\].*C-contiguous"),
    (lambda: [np.ones(3), np.ones(3).view(np.dtype(">f8"))], ValueError, "byte-swapped"),
    (lambda: [np.ones(3), _readonly(np.ones(3))], ValueError, r"grads\[1\].*read-only"),
    (lambda: _aliased(), ValueError, "overlap"),
    (lambda: 3.0, TypeError, "grads"),
])
@pytest.mark.parametrize("clip", ["norm", "value"])
def test_bad_grads_rejected_before_any_write(bad, error, match, clip):
    grads = bad()
    first = grads[0].copy() * 100 if isinstance(grads, list) else None
    if first is not None:
        grads[0][...] = first
    with pytest.raises(error, match=match):
        if clip == "norm":
            fastopt.clip_grad_norm_(grads, 1e-3)
        else:
            fastopt.clip_grad_value_(grads, 1e-3)
    if first is not None:
        np.testing.assert_array_equal(grads[0], first)


def _readonly(a):
    a.setflags(write=False)
    return a


def _aliased():
    base = np.ones(10)
    return [base[:6], base[4:]]


@pytest.mark.parametrize("kwargs,error", [
    ({"max_norm": -1.0}, ValueError), ({"max_norm": math.nan}, ValueError),
    ({"max_norm": "1"}, TypeError), ({"max_norm": True}, TypeError),
    ({"max_norm": 1.0, "norm_type": 0.0}, ValueError),
    ({"max_norm": 1.0, "norm_type": -2.0}, ValueError),
    ({"max_norm": 1.0, "norm_type": math.nan}, ValueError),
])
def test_bad_scalars(kwargs, error):
    g = np.full(4, 10.0)
    with pytest.raises(error):
        fastopt.clip_grad_norm_([g], **kwargs)
    np.testing.assert_array_equal(g, 10.0)
    for bad, err in [(-1.0, ValueError), (math.nan, ValueError), (None, TypeError)]:
        with pytest.raises(err):
            fastopt.clip_grad_value_([g], bad)
    np.testing.assert_array_equal(g, 10.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_value_matches_reference(dtype):
    rng = np.random.default_rng(3)
    grads = grads_for(rng, SIZES, [dtype])
    grads[2][3] = np.nan
    twins = copies(grads)
    fastopt.clip_grad_value_(grads, 0.3)
    reference.clip_grad_value_(twins, 0.3)
    for g, t in zip(grads, twins):
        np.testing.assert_array_equal(g, t)
    assert np.isnan(grads[2][3])


# -- against torch ----------------------------------------------------------------------

torch = pytest.importorskip("torch")


def torch_clip_norm(grads, max_norm, norm_type, foreach):
    params = []
    for g in grads:
        p = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, foreach=foreach)
    return float(total), [p.grad.numpy() for p in params]


@pytest.mark.torch
@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clip_grad_norm_matches_torch(norm_type, dtype, max_norm):
    rng = np.random.default_rng(7)
    sizes = [5, 0, 1025, 40000, 3] if norm_type != math.inf else [5, 1025, 40000, 3]
    grads = grads_for(rng, sizes, [dtype])  # torch has no inf norm of an empty tensor
    expected_total, expected = torch_clip_norm(grads, max_norm, norm_type, foreach=False)
    exact = exact_norm(grads, norm_type)
    total = fastopt.clip_grad_norm_(grads, max_norm, norm_type)
    # torch sums float64 in another order (a few ulps apart), and sums float32 in
    # float32 (its cascade sum): up to ~1e-6 relative off the exact norm for these
    # sizes, which then reaches the coefficient and the clipped gradients.  Ours is
    # double throughout; check that it is the closer one, then torch within its error.
    assert abs(total - exact) <= abs(expected_total - exact)
    assert abs(total - exact) <= 1e-14 * exact
    rtol = 1e-13 if dtype == np.float64 else 1e-5
    assert total == pytest.approx(expected_total, rel=rtol, abs=0)
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g, e, rtol=2 * rtol if max_norm < 1e8 else 0, atol=0)


def exact_norm(grads, norm_type):
    """The norm with an exactly rounded sum (math.fsum) of double-precision terms."""
    x = np.abs(np.concatenate([g.astype(np.float64).ravel() for g in grads]))
    if norm_type == math.inf:
        return float(x.max())
    return math.pow(math.fsum([math.pow(v, norm_type) for v in x.tolist()]), 1 / norm_type)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_nonfinite_matches_torch(dtype):
    for bad in (np.inf, -np.inf, np.nan):
        grads = [np.array([1.0, bad, 2.0], dtype=dtype), np.array([3.0], dtype=dtype)]
        expected_total, expected = torch_clip_norm(grads, 1.0, 2.0, foreach=False)
        total = fastopt.clip_grad_norm_(grads, 1.0)
        assert (math.isnan(total) and math.isnan(expected_total)) or total == expected_total
        for g, e in zip(grads, expected):
            np.testing.assert_array_equal(g, e)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_value_matches_torch_bit_for_bit(dtype):
    rng = np.random.default_rng(11)
    grads = grads_for(rng, [0, 9, 1000], [dtype])
    grads[2][5] = np.nan
    params = []
    for g in grads:
        p = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    torch.nn.utils.clip_grad_value_(params, 0.1, foreach=False)
    fastopt.clip_grad_value_(grads, 0.1)
    for g, p in zip(grads, params):
        np.testing.assert_array_equal(g, p.grad.numpy())
