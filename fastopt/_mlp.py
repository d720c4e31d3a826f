"""A small multilayer perceptron in plain NumPy, for ``python -m fastopt compare``.

The network is ``Linear -> tanh -> ... -> Linear`` with a softmax cross-entropy
loss. The forward and backward passes are written out so that the command
needs nothing but NumPy, and the gradients land in preallocated buffers of the
parameters' dtype and shape, in parameter order, ready for ``optimizer.step``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MLP"]


class MLP:
    """Fully connected classifier with tanh hidden layers and softmax output.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_features, hidden_1, ..., hidden_k, n_classes]``; at least two
        entries (no hidden layer makes it a softmax regression).
    rng : numpy.random.Generator
        Source of the initial weights.
    dtype : numpy dtype, optional
        ``float32`` or ``float64``, for the parameters and gradients.

    Attributes
    ----------
    params : list of numpy.ndarray
        ``[W1, b1, W2, b2, ...]``, C-contiguous; ``W`` has shape
        ``(fan_in, fan_out)``. Optimizers update these in place.
    grads : list of numpy.ndarray
        Buffers of the same shapes, overwritten by :meth:`loss_and_grads`.

    Notes
    -----
    Weights start from Glorot's uniform initialization,
    ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``, biases at zero.
    The loss is the mean over the batch of ``logsumexp(z) - z[label]``.
    """

    def __init__(self, layer_sizes, rng: np.random.Generator, dtype=np.float32):
        sizes = [int(size) for size in layer_sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"layer sizes must be at least two positive integers, got {sizes}")
        self.layer_sizes = sizes
        self.dtype = np.dtype(dtype)
        self.params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            self.params.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(self.dtype))
            self.params.append(np.zeros(fan_out, dtype=self.dtype))
        self.grads = [np.zeros_like(param) for param in self.params]

    @property
    def n_layers(self) -> int:
        """Number of linear layers."""
        return len(self.params) // 2

    def forward(self, features: np.ndarray) -> np.ndarray:
        """Class scores (logits) for a batch.

        Parameters
        ----------
        features : numpy.ndarray
            Shape ``(batch, n_features)``.

        Returns
        -------
        numpy.ndarray
            Shape ``(batch, n_classes)``.
        """
        return self._forward(features)[-1]

    def _forward(self, features):
        """Activations of every layer: input, each tanh output, then the logits."""
        activations = [np.asarray(features, dtype=self.dtype)]
        for layer in range(self.n_layers):
            weight, bias = self.params[2 * layer], self.params[2 * layer + 1]
            pre_activation = activations[-1] @ weight
            pre_activation += bias
            if layer < self.n_layers - 1:
                np.tanh(pre_activation, out=pre_activation)
            activations.append(pre_activation)
        return activations

    def loss_and_grads(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Mean cross-entropy of a batch; its gradient goes into :attr:`grads`.

        Parameters
        ----------
        features : numpy.ndarray
            Shape ``(batch, n_features)``.
        labels : numpy.ndarray
            Shape ``(batch,)``, integer class indices.

        Returns
        -------
        float
            The loss before the update.
        """
        activations = self._forward(features)
        logits = activations[-1]
        batch = logits.shape[0]
        rows = np.arange(batch)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        normalizer = probabilities.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(normalizer[:, 0]) - logits[rows, labels]))
        # d loss / d logits = (softmax - one_hot) / batch, built in place
        probabilities /= normalizer
        probabilities[rows, labels] -= 1.0
        probabilities /= batch
        delta = probabilities
        for layer in range(self.n_layers - 1, -1, -1):
            np.matmul(activations[layer].T, delta, out=self.grads[2 * layer])
            np.sum(delta, axis=0, out=self.grads[2 * layer + 1])
            if layer > 0:
                hidden = activations[layer]
                delta = delta @ self.params[2 * layer].T
                delta *= 1.0 - hidden * hidden  # tanh' = 1 - tanh^2
        return loss

    def evaluate(self, features: np.ndarray, labels: np.ndarray):
        """Mean cross-entropy and accuracy, without touching :attr:`grads`.

        Parameters
        ----------
        features : numpy.ndarray
            Shape ``(n_samples, n_features)``.
        labels : numpy.ndarray
            Shape ``(n_samples,)``, integer class indices.

        Returns
        -------
        loss : float
            Mean cross-entropy; ``inf`` or ``nan`` once the weights diverged.
        accuracy : float
            Share of samples whose highest score is their label.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            logits = self.forward(features).astype(np.float64)
            predictions = logits.argmax(axis=1)
            logits -= logits.max(axis=1, keepdims=True)
            log_normalizer = np.log(np.exp(logits).sum(axis=1))
            loss = float(np.mean(log_normalizer - logits[np.arange(len(labels)), labels]))
        return loss, float(np.mean(predictions == labels))
