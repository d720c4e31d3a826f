"""Convergence smoke tests for the algorithms beyond torch.optim (which have no torch
parity test): each must drive an ill-conditioned quadratic and the Rosenbrock function
to their minima, in float32 and float64, with its own learning rate and, where the
algorithm needs one to settle (Lion's fixed-size sign steps), an exponential decay of
the learning rate through ``param_groups``."""
import numpy as np
import pytest

from conftest import ALGORITHMS, DTYPES

#: name -> {problem: (hyperparameters, per-step lr decay, steps)}; the completeness
#: test below makes every algorithm without torch parity appear here.
SETTINGS = {
    "lion": {"quadratic": ({"lr": 3e-2}, 0.999, 3000),
             "rosenbrock": ({"lr": 1e-2, "weight_decay": 1e-3}, 0.999, 3000)},
    "adabelief": {"quadratic": ({"lr": 0.1}, 1.0, 3000),
                  "rosenbrock": ({"lr": 0.05}, 1.0, 3000)},
    "yogi": {"quadratic": ({"lr": 0.1}, 1.0, 3000), "rosenbrock": ({"lr": 0.05}, 1.0, 3000)},
    "adan": {"quadratic": ({"lr": 0.1}, 0.999, 3000),
             "rosenbrock": ({"lr": 0.05, "weight_decay": 1e-4}, 0.999, 3000)},
    # the trust ratio scales LAMB's steps with |x|: crossing the origin on the way to
    # (1, 1) is slow (x is one 2-element "layer"), hence the longer run
    "lamb": {"quadratic": ({"lr": 0.05}, 0.999, 3000),
             "rosenbrock": ({"lr": 0.01}, 0.9997, 6000)},
    "lars": {"quadratic": ({"lr": 1.0}, 0.999, 3000),
             "rosenbrock": ({"lr": 1.0, "trust_coefficient": 0.01}, 0.999, 3000)},
}
CURVATURE = np.linspace(1.0, 10.0, 10)


def quadratic(x):
    return 0.5 * np.sum(CURVATURE * x * x), CURVATURE * x


def rosenbrock(x):
    a, b = float(x[0]), float(x[1])
    value = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    return value, np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])


PROBLEMS = {
    # start, minimizer, f tolerance, x tolerance
    "quadratic": (quadratic, np.linspace(-2.0, 3.0, 10), np.zeros(10), 1e-4, 1e-2),
    "rosenbrock": (rosenbrock, np.array([-1.2, 1.0]), np.ones(2), 1e-3, 5e-2),
}


def beyond_torch():
    return [a for a in ALGORITHMS if a.torch is None]


def test_every_algorithm_beyond_torch_has_convergence_settings():
    assert {a.name for a in beyond_torch()} <= set(SETTINGS)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("algorithm", beyond_torch(), ids=lambda a: a.name)
def test_converges(algorithm, problem, dtype):
    function, start, minimizer, f_tol, x_tol = PROBLEMS[problem]
    hyper, decay, steps = SETTINGS[algorithm.name][problem]
    x = start.astype(dtype)
    opt = algorithm.cls([x], **hyper)
    f_start = function(x)[0]
    for step in range(steps):
        opt.param_groups[0]["lr"] = hyper["lr"] * decay**step
        _, grad = function(x)
        opt.step([grad.astype(dtype)])
    f_end = function(x)[0]
    assert np.all(np.isfinite(x))
    assert f_end < f_tol < f_start
    assert np.max(np.abs(x - minimizer)) < x_tol
