"""fastopt's optimizer classes against torch.optim (foreach=False), for every algorithm
torch has, in every test configuration: parameters and every state buffer over 30
steps, with two parameter groups and a skipped gradient."""
import numpy as np
import pytest

from conftest import DTYPES, algorithm_configs

torch = pytest.importorskip("torch")

STEPS = 30
TOL = {np.float32: 2e-4, np.float64: 1e-9}


def torch_kwargs(algorithm, hyper):
    kwargs = dict(hyper)
    if algorithm.torch in ("SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax",
                           "NAdam", "RAdam", "ASGD", "Rprop", "Adafactor"):
        kwargs["foreach"] = False
    return kwargs


def torch_cases():
    return [case for case in algorithm_configs() if case.values[0].torch is not None]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", torch_cases())
def test_matches_torch(algorithm, hyper, dtype):
    rng = np.random.default_rng(7)
    # (2, 3, 4): a batch of matrices for Adafactor's factored state
    shapes = [(31,), (4, 9), (0,), (1,), (2, 3, 4)]
    if not algorithm.torch_accepts_empty:
        shapes.remove((0,))  # torch raises on it (see the registry row)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    start = [p.copy() for p in params]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    ours = algorithm.cls([{"params": params[:2]}, {"params": params[2:], "lr": hyper["lr"] / 2}],
                         **hyper)
    theirs = getattr(torch.optim, algorithm.torch)(
        [{"params": tparams[:2]}, {"params": tparams[2:], "lr": hyper["lr"] / 2}],
        **torch_kwargs(algorithm, hyper))
    for step in range(STEPS):
        grads = [(rng.standard_normal(p.shape) * np.exp(rng.uniform(-3, 1))).astype(dtype)
                 for p in params]
        if step % 7 == 3:
            grads[0] = None  # a skipped parameter keeps its state and step count
        for tp, g in zip(tparams, grads):
            tp.grad = None if g is None else torch.from_numpy(g.copy())
        ours.step(grads)
        theirs.step()
    tol = TOL[dtype]
    for i, (p, tp, p0) in enumerate(zip(params, tparams, start)):
        expected = tp.detach().numpy()
        moved = np.max(np.abs(expected - p0), initial=0.0)
        assert np.max(np.abs(p - expected), initial=0.0) <= tol * max(moved, 1e-30), f"params[{i}]"
        tstate = theirs.state[tp]
        mine = ours.state.get(i, {})
        for key, value in tstate.items():
            if key == "step":
                assert mine["step"] == int(value.item()), key
                continue
            if value is None:
                continue
            value = value.numpy()
            scale = np.max(np.abs(value), initial=0.0)
            assert np.max(np.abs(mine[key] - value), initial=0.0) <= tol * max(scale, 1e-30), \
                f"state[{i}][{key!r}]"


def fused_cases():
    """torch.optim classes whose fused CPU kernels take a grad_scale (as GradScaler
    sets it), in every test configuration."""
    import inspect
    return [case for case in torch_cases()
            if "fused" in inspect.signature(getattr(torch.optim, case.values[0].torch)).parameters]


@pytest.mark.torch
@pytest.mark.parametrize("grad_scale", [3.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", fused_cases())
def test_grad_scale_matches_torch_fused(algorithm, hyper, dtype, grad_scale):
    """step(grads, grad_scale=s) against torch's fused kernels with grad_scale = s (the
    gradients divided inside the pass, then the same update); 10 steps, as torch's fused
    CPU steps are slow on this machine (30 steps took twice as long) and the scale acts
    on every step alike."""
    rng = np.random.default_rng(8)
    params = [rng.standard_normal(s).astype(dtype) for s in [(31,), (4, 9)]]
    start = [p.copy() for p in params]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    ours = algorithm.cls(params, **hyper)
    theirs = getattr(torch.optim, algorithm.torch)(tparams, fused=True, **hyper)
    theirs.grad_scale = torch.tensor(grad_scale, dtype=torch.float32)
    theirs.found_inf = torch.tensor(0.0, dtype=torch.float32)
    for _ in range(10):
        grads = [(rng.standard_normal(p.shape) * grad_scale).astype(dtype) for p in params]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        ours.step(grads, grad_scale=grad_scale)
        theirs.step()
    tol = TOL[dtype]
    for i, (p, tp, p0) in enumerate(zip(params, tparams, start)):
        expected = tp.detach().numpy()
        moved = np.max(np.abs(expected - p0))
        assert moved > 0
        assert np.max(np.abs(p - expected)) <= tol * moved, f"params[{i}]"
