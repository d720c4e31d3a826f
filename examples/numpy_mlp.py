"""Train a small MLP in plain NumPy, with a fastopt optimizer doing the updates.

The forward pass, the backward pass and the step are written out by hand: the model is
``tanh(x @ W1 + b1) @ W2 + b2``, the loss the mean squared error against a smooth
target.  fastopt updates the four parameter arrays in place, in one compiled call per
step, so the arrays the forward pass reads are the ones it updates.

Run ``python examples/numpy_mlp.py --help`` for the options, for example::

    python examples/numpy_mlp.py --algorithm AdamW --lr 0.01 --steps 500
"""
import argparse

import numpy as np

import fastopt


def make_data(rng, samples, features, dtype):
    """Inputs, and targets from a fixed smooth function of them."""
    inputs = rng.standard_normal((samples, features)).astype(dtype)
    direction = rng.standard_normal(features).astype(dtype)
    targets = np.sin(inputs @ direction)[:, None] + 0.1 * inputs[:, :1] ** 2
    return inputs, targets.astype(dtype)


def init_params(rng, features, hidden, dtype):
    """W1, b1, W2, b2 with the usual 1/sqrt(fan-in) scale (C-contiguous, as fastopt
    needs: it updates them in place)."""
    return [
        (rng.standard_normal((features, hidden)) / np.sqrt(features)).astype(dtype),
        np.zeros(hidden, dtype),
        (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(dtype),
        np.zeros(1, dtype),
    ]


def loss_and_grads(params, inputs, targets):
    """The loss and its gradient with respect to each parameter."""
    w1, b1, w2, b2 = params
    # forward
    hidden = np.tanh(inputs @ w1 + b1)
    outputs = hidden @ w2 + b2
    error = outputs - targets
    loss = float(np.mean(error ** 2))
    # backward, layer by layer
    d_outputs = 2.0 * error / error.size
    d_w2 = hidden.T @ d_outputs
    d_b2 = d_outputs.sum(axis=0)
    d_hidden = (d_outputs @ w2.T) * (1.0 - hidden ** 2)
    d_w1 = inputs.T @ d_hidden
    d_b1 = d_hidden.sum(axis=0)
    grads = [d_w1, d_b1, d_w2, d_b2]
    # fastopt reads gradients of the parameter's dtype, C-contiguous (d_w1 is a
    # product of transposes, so make sure)
    return loss, [np.ascontiguousarray(g, dtype=p.dtype) for g, p in zip(grads, params)]


def train(algorithm="Adam", lr=None, steps=300, samples=256, features=4, hidden=32,
          dtype="float64", seed=0, log_every=0):
    """Train and return the loss of every step."""
    rng = np.random.default_rng(seed)
    inputs, targets = make_data(rng, samples, features, dtype)
    params = init_params(rng, features, hidden, dtype)
    options = {} if lr is None else {"lr": lr}
    optimizer = getattr(fastopt, algorithm)(params, **options)
    losses = []
    for step in range(steps):
        loss, grads = loss_and_grads(params, inputs, targets)
        optimizer.step(grads)  # updates every array in `params` in place
        losses.append(loss)
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss:.6f}")
    return losses


def main(argv=None):
    names = [a.cls_name for a in fastopt.ALGORITHMS.values()]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="Adam", choices=names)
    parser.add_argument("--lr", type=float, default=0.01,
                        help="learning rate (default 0.01)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)
    losses = train(args.algorithm, args.lr, args.steps, args.samples, hidden=args.hidden,
                   dtype=args.dtype, seed=args.seed, log_every=args.log_every)
    print(f"loss {losses[0]:.6f} -> {losses[-1]:.6f} after {len(losses)} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
