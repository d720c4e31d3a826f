"""The atheris harness of fuzz/fuzz_kernels.py over seeded random inputs, so that its
assertions (legal input matches the reference, illegal input is rejected with nothing
written) run in every test run, not only in fuzzing sessions."""
import importlib.util
import pathlib

import numpy as np
import pytest

pytest.importorskip("atheris")

HARNESS = pathlib.Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_kernels.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("fuzz_kernels", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_harness_on_random_inputs(harness):
    rng = np.random.default_rng(0)
    for _ in range(3000):
        harness.test_one_input(rng.bytes(int(rng.integers(0, 600))))
    outcomes = harness.OUTCOMES
    # the inputs reach both sides: rejections and kernels on non-empty buffers
    assert outcomes["matched the reference, size > 0"] > 100, dict(outcomes)
    assert outcomes["TypeError"] + outcomes["ValueError"] > 100, dict(outcomes)
