"""The examples keep working: each runs, with tiny settings, and its loss falls."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt

ROOT = Path(fastopt.__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name, *args, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def load_example(name):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args", [
    ("--steps", "40", "--samples", "32", "--hidden", "8", "--dtype", "float32"),
    ("--steps", "40", "--samples", "32", "--hidden", "8", "--algorithm", "SGD", "--lr", "0.1"),
], ids=["Adam-float32", "SGD-float64"])
def test_numpy_mlp_runs_and_loss_falls(args):
    output = run_example("numpy_mlp.py", *args)
    found = re.search(r"loss (\S+) -> (\S+) after 40 steps", output)
    assert found, output
    first, last = float(found.group(1)), float(found.group(2))
    assert last < 0.5 * first, output


def test_numpy_mlp_gradients_match_finite_differences():
    example = load_example("numpy_mlp.py")
    rng = np.random.default_rng(3)
    inputs, targets = example.make_data(rng, 16, 3, "float64")
    params = example.init_params(rng, 3, 5, "float64")
    params[1][:] = rng.standard_normal(5)  # nonzero biases, so their gradient is exercised
    _, grads = example.loss_and_grads(params, inputs, targets)
    h = 1e-6
    for p, g in zip(params, grads):
        assert g.shape == p.shape and g.flags.c_contiguous
        for index in np.ndindex(p.shape):
            saved = p[index]
            p[index] = saved + h
            up = example.loss_and_grads(params, inputs, targets)[0]
            p[index] = saved - h
            down = example.loss_and_grads(params, inputs, targets)[0]
            p[index] = saved
            assert abs((up - down) / (2 * h) - g[index]) <= 1e-7 * max(1.0, abs(g[index]))


@pytest.mark.slow
@pytest.mark.torch
def test_torch_zero_resumes_bit_identically(tmp_path):
    """torchrun, two gloo ranks, DDP + ZeRO + fastopt.torch.Adam: 30 steps, a
    checkpoint (per-rank fastopt.save shards), 30 more in a new launch, end where 60
    uninterrupted steps end (the learning rate halves at 20 and 40, across the
    resume)."""
    torch = pytest.importorskip("torch")
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc-per-node=2", str(EXAMPLES / "torch_zero.py"), "--lr-step", "20"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))

    def launch_run(directory, steps):
        result = subprocess.run(launch + ["--steps", str(steps), "--checkpoint-dir",
                                          str(directory)],
                                cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    launch_run(tmp_path / "whole", 60)
    launch_run(tmp_path / "resumed", 30)
    assert "resumed at step 30" in launch_run(tmp_path / "resumed", 30)
    whole = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert whole["step"] == resumed["step"] == 60
    for key, value in whole["model"].items():
        assert torch.equal(resumed["model"][key], value), key
