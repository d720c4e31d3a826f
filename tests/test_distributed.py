"""fastopt.torch under torch.distributed: two gloo processes on 127.0.0.1 train with
DistributedDataParallel and ZeroRedundancyOptimizer(optimizer_class=fastopt.torch.X),
and end where one process with torch.optim.X on the whole batch ends."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastopt

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available",
                allow_module_level=True)

import distributed_worker as worker  # noqa: E402

pytestmark = pytest.mark.torch

WORLD_SIZE = 2
TIMEOUT = 120  # seconds, for both processes together
# DDP averages the two half-batch gradients, (g0 + g1) / 2, where the reference takes
# the mean over the whole batch: the same numbers summed in another order, so the
# runs differ by rounding (about 1e-16 relative per step) and no more.
RTOL = 1e-11


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    output = tmp_path_factory.mktemp("distributed") / "rank0.npz"
    root = Path(fastopt.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        OMP_NUM_THREADS="1")
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on the loopback device
    port = free_port()
    # Each rank writes to its own file, never to a pipe that nobody reads while the
    # other rank is waited for; PYTHONFAULTHANDLER makes a rank killed with SIGABRT
    # print where it hung.
    env["PYTHONFAULTHANDLER"] = "1"
    paths = [output.parent / f"rank{rank}.log" for rank in range(WORLD_SIZE)]
    processes = []
    for rank, path in enumerate(paths):
        with open(path, "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, worker.__file__, str(rank), str(WORLD_SIZE), str(port),
                 str(output)], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    hung = [p for p in processes if p.poll() is None]
    for process in hung:
        process.send_signal(signal.SIGABRT)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    logs = [f"rank {rank}:\n{path.read_text()}" for rank, path in enumerate(paths)]
    if hung:
        pytest.fail(f"the two ranks did not finish within {TIMEOUT} s\n" + "\n".join(logs))
    codes = [p.returncode for p in processes]
    if worker.INIT_FAILED in codes:
        pytest.skip("cannot set up a gloo process group here:\n" + "\n".join(logs))
    assert codes == [0] * WORLD_SIZE, "\n".join(logs)
    with np.load(output, allow_pickle=False) as data:
        return dict(data)


@pytest.mark.parametrize("algorithm", worker.shared_algorithms(), ids=lambda a: a.name)
def test_zero_with_fastopt_matches_single_process_torch(distributed_results, algorithm):
    expected = worker.reference(algorithm)
    for i, value in enumerate(expected):
        got = distributed_results[f"{algorithm.name}/param{i}"]
        np.testing.assert_allclose(got, value, rtol=RTOL, atol=0, err_msg=f"param{i}")
    # ZeRO consolidated every rank's shard of the state, in torch's layout
    states = {k for k in distributed_results if k.startswith(f"{algorithm.name}/state")}
    holders = {k.split("/")[1] for k in states}
    assert holders == {f"state{i}" for i in range(len(expected))}


@pytest.mark.parametrize("run", ["zero-bucket-adam", "ddp-adam"])
def test_bucket_views_and_plain_ddp_match_single_process_torch(distributed_results, run):
    """ZeRO with parameters_as_bucket_view=True (parameters are views into a flat
    buffer) and plain DDP with gradient_as_bucket_view=True, with fastopt.torch.Adam."""
    expected = worker.reference(fastopt.get_algorithm("adam"))
    for i, value in enumerate(expected):
        np.testing.assert_allclose(distributed_results[f"{run}/param{i}"], value,
                                   rtol=RTOL, atol=0, err_msg=f"param{i}")
