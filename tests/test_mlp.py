"""Tests of fastopt._mlp: the NumPy multilayer perceptron of the compare command."""

import numpy as np
import pytest

from fastopt._mlp import MLP


@pytest.mark.parametrize("layer_sizes", [[3, 4], [3, 5, 4], [2, 6, 5, 3]])
def test_gradients_match_central_differences(layer_sizes):
    rng = np.random.default_rng(0)
    model = MLP(layer_sizes, rng, np.float64)
    for param in model.params[1::2]:  # nonzero biases exercise their gradient too
        param[:] = rng.normal(size=param.shape)
    features = rng.normal(size=(7, layer_sizes[0]))
    labels = rng.integers(0, layer_sizes[-1], 7)
    loss = model.loss_and_grads(features, labels)
    assert loss == pytest.approx(model.evaluate(features, labels)[0], rel=1e-12)
    step = 1e-6
    for param, grad in zip(model.params, model.grads):
        flat = param.reshape(-1)
        numeric = np.empty(flat.size)
        for index in range(flat.size):
            original = flat[index]
            flat[index] = original + step
            above = model.evaluate(features, labels)[0]
            flat[index] = original - step
            below = model.evaluate(features, labels)[0]
            flat[index] = original
            numeric[index] = (above - below) / (2 * step)
        np.testing.assert_allclose(grad.reshape(-1), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_buffers_match_params_for_optimizers(dtype):
    model = MLP([2, 8, 3], np.random.default_rng(0), dtype)
    model.loss_and_grads(np.ones((4, 2)), np.array([0, 1, 2, 0]))
    for param, grad in zip(model.params, model.grads):
        assert param.dtype == grad.dtype == dtype
        assert param.shape == grad.shape
        assert param.flags.c_contiguous and grad.flags.c_contiguous


def test_gradient_step_lowers_the_loss():
    rng = np.random.default_rng(1)
    model = MLP([2, 16, 3], rng, np.float64)
    features, labels = rng.normal(size=(50, 2)), rng.integers(0, 3, 50)
    before = model.loss_and_grads(features, labels)
    for param, grad in zip(model.params, model.grads):
        param -= 0.1 * grad
    assert model.evaluate(features, labels)[0] < before


def test_same_seed_same_weights_and_bad_sizes():
    first = MLP([2, 4, 3], np.random.default_rng(5))
    second = MLP([2, 4, 3], np.random.default_rng(5))
    for a, b in zip(first.params, second.params):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="layer sizes"):
        MLP([2], np.random.default_rng(0))
    with pytest.raises(ValueError, match="layer sizes"):
        MLP([2, 0, 3], np.random.default_rng(0))
