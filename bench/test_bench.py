"""pytest-benchmark suite: every algorithm of the registry, both dtypes, four sizes.

Each group (algorithm, dtype, size) holds fastopt's step, the NumPy reference twin,
torch.optim (fused where torch has it) and the streaming ceiling, so the table shows
the ratios.  Run from the repository root::

    python -m pytest bench --benchmark-group-by=group --benchmark-columns=min,median,rounds

Large sizes get few rounds (the machine has two shared cores); FASTOPT_BENCH_SIZES
(comma-separated) picks other sizes.
"""
import os

import numpy as np
import pytest

import fastopt
from fastopt.bench import Case

pytest.importorskip("pytest_benchmark")

SIZES = [int(s) for s in os.environ.get("FASTOPT_BENCH_SIZES",
                                        "4096,65536,1048576,16000000").split(",")]
DTYPES = ["float32", "float64"]
IMPLEMENTATIONS = ["fastopt", "numpy", "torch", "ceiling"]

_CASES = {}


def _case(algorithm, dtype, size):
    """One Case per group, shared by its implementations (built once, kept small)."""
    key = (algorithm.name, dtype, size)
    if key not in _CASES:
        _CASES.clear()  # one group's buffers alive at a time
        _CASES[key] = Case(algorithm, dtype, size, threads=1)
    return _CASES[key]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"n={n}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", list(fastopt.ALGORITHMS.values()), ids=lambda a: a.name)
def test_step(benchmark, algorithm, dtype, size, implementation):
    case = _case(algorithm, dtype, size)
    if implementation not in case.calls:
        pytest.skip(f"{implementation} is not available")
    benchmark.group = f"{algorithm.name} {dtype} n={size}"
    benchmark.extra_info["bytes_per_element"] = case.bytes_per_element
    if implementation == "torch":
        benchmark.extra_info["torch_path"] = case.torch_path
    rounds = 3 if size >= 4_000_000 else (10 if size >= 500_000 else 50)
    iterations = max(1, 20_000 // size)
    benchmark.pedantic(case.calls[implementation], rounds=rounds, iterations=iterations,
                       warmup_rounds=1)
