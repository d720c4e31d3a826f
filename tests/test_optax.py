"""fastopt against optax, the second public implementation of the algorithms beyond
torch.optim, where the two follow the same convention (each functional's docstring says
where optax differs: Yogi and Adan do, and LARS with weight decay).
Optional: skipped without optax."""
import numpy as np
import pytest

from conftest import config_id

optax = pytest.importorskip("optax")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

import fastopt  # noqa: E402

STEPS = 30
TOL = 1e-9  # of the displacement, float64 (XLA may fuse multiply-adds; we never do)


def lion(hyper):
    beta1, beta2 = hyper["betas"]
    return optax.lion(hyper["lr"], b1=beta1, b2=beta2, weight_decay=hyper["weight_decay"])


def adabelief(hyper):
    # optax has no weight decay here; its eps_root is the eps added inside the state
    assert hyper["weight_decay"] == 0
    beta1, beta2 = hyper["betas"]
    return optax.adabelief(hyper["lr"], b1=beta1, b2=beta2, eps=hyper["eps"],
                           eps_root=hyper["eps"])


def lamb(hyper):
    beta1, beta2 = hyper["betas"]
    return optax.lamb(hyper["lr"], b1=beta1, b2=beta2, eps=hyper["eps"],
                      weight_decay=hyper["weight_decay"])


def lars(hyper):
    # optax's trust ratio divides by |g + wd p| where the paper (and fastopt) divide by
    # |g| + wd |p|: compared without weight decay only
    assert hyper["weight_decay"] == 0
    return optax.lars(hyper["lr"], trust_coefficient=hyper["trust_coefficient"],
                      momentum=hyper["momentum"], nesterov=hyper["nesterov"])


#: fastopt name -> (optax constructor from the hyperparameters, configurations)
CASES = {
    "lion": (lion, [{"lr": 1e-3}, {"lr": 1e-3, "weight_decay": 0.5},
                    {"lr": 1e-3, "betas": (0.5, 0.9), "weight_decay": 0.1}]),
    "adabelief": (adabelief, [{"lr": 1e-2}, {"lr": 1e-2, "betas": (0.5, 0.9), "eps": 1e-6}]),
    "lamb": (lamb, [{"lr": 1e-2}, {"lr": 1e-2, "weight_decay": 0.1},
                    {"lr": 1e-2, "betas": (0.5, 0.9), "eps": 1e-3}]),
    "lars": (lars, [{"lr": 1.0}, {"lr": 0.5, "momentum": 0.0, "trust_coefficient": 0.02},
                    {"lr": 0.5, "momentum": 0.8, "nesterov": True}]),
}


def cases():
    return [pytest.param(name, config, id=f"{name}[{config_id(config)}]")
            for name, (_, configs) in CASES.items() for config in configs]


@pytest.mark.parametrize("name,config", cases())
def test_matches_optax(name, config):
    algorithm = fastopt.get_algorithm(name)
    hyper = dict(algorithm.defaults, **config)
    rng = np.random.default_rng(3)
    shapes = [(31,), (4, 9)]
    params = [rng.standard_normal(s) for s in shapes]
    start = [p.copy() for p in params]
    ours = algorithm.cls(params, **hyper)
    transform = CASES[name][0](hyper)
    theirs = [jnp.asarray(p) for p in start]
    state = transform.init(theirs)
    for _ in range(STEPS):
        grads = [rng.standard_normal(p.shape) * np.exp(rng.uniform(-3, 1)) for p in params]
        ours.step(grads)
        updates, state = transform.update([jnp.asarray(g) for g in grads], state, theirs)
        theirs = optax.apply_updates(theirs, updates)
    for i, (p, q, p0) in enumerate(zip(params, theirs, start)):
        expected = np.asarray(q)
        moved = np.max(np.abs(expected - p0))
        assert moved > 0
        assert np.max(np.abs(p - expected)) <= TOL * moved, f"params[{i}]"
