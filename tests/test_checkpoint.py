"""fastopt.save / fastopt.load: bit-identical resume for every algorithm, and files
that are truncated, corrupted, mismatched or interrupted mid-save."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastopt
from fastopt import checkpoint
from fastopt.checkpoint import CheckpointError

from conftest import ALGORITHMS, DTYPES, algorithm_configs

SHAPES = [(7,), (3, 4), (0,), (5,)]


def make_optimizer(algorithm, hyper, dtype, seed=0):
    """Parameters in two groups (the second at half the learning rate) and their
    optimizer."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    optimizer = algorithm.cls([{"params": params[:2]},
                               {"params": params[2:], "lr": hyper["lr"] / 2}], **hyper)
    return params, optimizer


def gradients(step, dtype):
    rng = np.random.default_rng(1000 + step)
    grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    if step % 4 == 1:
        grads[0] = None  # a skipped parameter
    return grads


def run(optimizer, first, last, dtype):
    for step in range(first, last):
        optimizer.step(gradients(step, dtype))


def snapshot(optimizer):
    """Everything load() may change, copied."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
             for i, s in optimizer.state.items()}
    return groups, state


def assert_same(before, after):
    assert before[0] == after[0]
    assert before[1].keys() == after[1].keys()
    for i in before[1]:
        assert before[1][i].keys() == after[1][i].keys()
        for key, value in before[1][i].items():
            assert_array_equal(after[1][i][key], value)


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of an Adam (amsgrad) optimizer after 3 steps: (path, optimizer)."""
    algorithm = fastopt.get_algorithm("adam")
    hyper = dict(algorithm.defaults, lr=0.01, amsgrad=True)
    _, optimizer = make_optimizer(algorithm, hyper, np.float64)
    run(optimizer, 0, 3, np.float64)
    path = tmp_path / "adam.ckpt"
    fastopt.save(optimizer, path)
    return path, optimizer


def fresh_adam(dtype=np.float64, shapes=SHAPES, groups=2):
    params = [np.zeros(s, dtype) for s in shapes]
    split = [{"params": params[:2]}, {"params": params[2:]}] if groups == 2 else params
    return fastopt.Adam(split, lr=0.5, amsgrad=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_resume_is_bit_identical(algorithm, hyper, dtype, tmp_path):
    params, uninterrupted = make_optimizer(algorithm, hyper, dtype)
    run(uninterrupted, 0, 5, dtype)
    path = tmp_path / "state.ckpt"
    fastopt.save(uninterrupted, path)
    params_at_save = [p.copy() for p in params]
    run(uninterrupted, 5, 12, dtype)

    restored, resumed = make_optimizer(algorithm, dict(algorithm.defaults), dtype, seed=99)
    for p, value in zip(restored, params_at_save):
        p[...] = value
    fastopt.load(resumed, path)
    run(resumed, 5, 12, dtype)
    for p, q in zip(restored, params):
        assert_array_equal(p, q)
    assert_same(snapshot(uninterrupted), snapshot(resumed))


def test_file_layout(saved):
    path, optimizer = saved
    data = path.read_bytes()
    assert data.startswith(checkpoint.MAGIC)
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    length = int.from_bytes(data[8:16], "little")
    header = json.loads(data[16:16 + length])
    assert header["format_version"] == checkpoint.FORMAT_VERSION
    assert header["fastopt_version"] == fastopt.__version__
    assert header["algorithm"] == "adam"
    assert header["param_groups"][1]["hyperparameters"]["lr"] == 0.005
    assert [e["step"] for e in header["state"]] == [2, 3, 3, 3]
    assert header["payload_bytes"] == len(data) - 16 - length - 32
    assert header["torch_options"] == []
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


@pytest.mark.parametrize("keep", [0, 1, 7, 8, 15, 16, 40, "header", "payload", -33, -32, -1])
def test_truncated_file_is_refused_and_optimizer_untouched(saved, keep):
    path, source = saved
    data = path.read_bytes()
    length = int.from_bytes(data[8:16], "little")
    cut = {"header": 16 + length // 2, "payload": 16 + length + 50}.get(keep, keep)
    path.write_bytes(data[:cut])
    optimizer = fresh_adam()
    optimizer.step([np.ones(s) for s in SHAPES])
    before = snapshot(optimizer)
    with pytest.raises(CheckpointError, match="truncated|corrupt|not a fastopt"):
        fastopt.load(optimizer, path)
    assert_same(before, snapshot(optimizer))


def test_every_flipped_byte_is_detected(saved):
    path, _ = saved
    data = bytearray(path.read_bytes())
    optimizer = fresh_adam()
    before = snapshot(optimizer)
    for offset in range(len(data)):
        data[offset] ^= 0x10
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError):
            fastopt.load(optimizer, path)
        data[offset] ^= 0x10
    assert_same(before, snapshot(optimizer))
    path.write_bytes(bytes(data))
    fastopt.load(optimizer, path)  # the original still loads


def rewrite_header(path, change):
    """Edit a checkpoint's header and re-sign it (a well-formed but different file)."""
    data = path.read_bytes()
    length = int.from_bytes(data[8:16], "little")
    header = json.loads(data[16:16 + length])
    change(header)
    encoded = json.dumps(header).encode()
    body = data[:8] + len(encoded).to_bytes(8, "little") + encoded + data[16 + length:-32]
    path.write_bytes(body + hashlib.sha256(body).digest())


MISMATCHES = {
    "algorithm": (lambda: fastopt.AdamW([{"params": [np.zeros(s) for s in SHAPES[:2]]},
                                         {"params": [np.zeros(s) for s in SHAPES[2:]]}]),
                  "'adam' optimizer's state, not 'adamw'"),
    "group count": (lambda: fresh_adam(groups=1), "2 parameter groups; the optimizer has 1"),
    "group size": (lambda: fresh_adam(shapes=SHAPES + [(2,)]), "group 1 has 2 parameters"),
    "shape": (lambda: fresh_adam(shapes=[(7,), (4, 3), (0,), (5,)]), r"shape \(3, 4\)"),
    "dtype": (lambda: fresh_adam(dtype=np.float32), "dtype float64 in the checkpoint"),
}


@pytest.mark.parametrize("kind", MISMATCHES)
def test_mismatched_optimizer_is_refused_and_untouched(saved, kind):
    path, _ = saved
    make, message = MISMATCHES[kind]
    optimizer = make()
    before = snapshot(optimizer)
    with pytest.raises(ValueError, match=message):
        fastopt.load(optimizer, path)
    assert_same(before, snapshot(optimizer))


@pytest.mark.parametrize("change,message", [
    (lambda h: h.update(format_version=2), "format version 2"),
    (lambda h: h.pop("state"), "lacks 'state'"),
    (lambda h: h.pop("torch_options"), "lacks 'torch_options'"),
    (lambda h: h["state"][0]["buffers"][0].update(offset=8), "do not fit"),
    (lambda h: h["state"][0].update(step=-1), "wrong type"),
    (lambda h: h.update(payload_bytes=1), "header says 1 bytes"),
    (lambda h: h["state"][0]["buffers"][0].update(name="bogus"), "unknown key 'bogus'"),
    (lambda h: h.update(algorithm="sgd"), "'sgd' optimizer's state"),
    (lambda h: h["param_groups"][0]["hyperparameters"].update(lr=-1.0), "Invalid learning rate"),
])
def test_well_signed_but_invalid_header_is_refused(saved, change, message):
    path, _ = saved
    rewrite_header(path, change)
    optimizer = fresh_adam()
    before = snapshot(optimizer)
    with pytest.raises(ValueError, match=message):
        fastopt.load(optimizer, path)
    assert_same(before, snapshot(optimizer))


def test_missing_file_and_wrong_optimizer_type(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        fastopt.load(fresh_adam(), tmp_path / "absent.ckpt")
    with pytest.raises(TypeError, match="fastopt optimizer"):
        fastopt.save(object(), tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


def test_unstorable_hyperparameter_writes_nothing(tmp_path):
    optimizer = fresh_adam()
    optimizer.param_groups[0]["note"] = object()
    with pytest.raises(TypeError, match="'note'"):
        fastopt.save(optimizer, tmp_path / "x.ckpt")
    assert list(tmp_path.iterdir()) == []


def failing(monkeypatch, target, name):
    def fail(*args, **kwargs):
        raise OSError(f"simulated failure in {name}")
    monkeypatch.setattr(target, name, fail)


@pytest.mark.parametrize("where", ["mid-write", "fsync", "replace"])
def test_failed_save_leaves_previous_checkpoint(saved, monkeypatch, where):
    path, optimizer = saved
    previous = path.read_bytes()
    optimizer.step([np.ones(s) for s in SHAPES])
    if where == "mid-write":
        real_chunks = checkpoint._chunks

        def chunks_then_fail(header, arrays):
            for number, chunk in enumerate(real_chunks(header, arrays)):
                if number == 4:
                    raise OSError("simulated failure mid-write")
                yield chunk
        monkeypatch.setattr(checkpoint, "_chunks", chunks_then_fail)
    else:
        failing(monkeypatch, checkpoint.os, where)
    with pytest.raises(OSError, match="simulated failure"):
        fastopt.save(optimizer, path)
    monkeypatch.undo()
    assert path.read_bytes() == previous
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # temporary removed
    fastopt.load(fresh_adam(), path)


CRASHING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import fastopt
    from fastopt import checkpoint

    path, kill_at = sys.argv[1], int(sys.argv[2])
    params = [np.zeros(s) for s in [(7,), (3, 4), (0,), (5,)]]
    optimizer = fastopt.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.5,
                             amsgrad=True)
    optimizer.step([np.ones(p.shape) for p in params])
    fastopt.save(optimizer, path)
    optimizer.step([np.ones(p.shape) for p in params])
    real_chunks, real_fsync = checkpoint._chunks, os.fsync

    def chunks_then_die(header, arrays):
        for number, chunk in enumerate(real_chunks(header, arrays)):
            if number == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            yield chunk

    def fsync_then_die(descriptor):
        real_fsync(descriptor)
        os.kill(os.getpid(), signal.SIGKILL)

    if kill_at >= 0:
        checkpoint._chunks = chunks_then_die
    else:
        os.fsync = fsync_then_die
    fastopt.save(optimizer, path)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("kill_at", [2, 5, -1], ids=["in-header", "in-payload", "after-fsync"])
def test_process_killed_mid_save_leaves_previous_checkpoint(tmp_path, kill_at):
    path = tmp_path / "state.ckpt"
    root = Path(fastopt.__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", CRASHING_SAVE, str(path), str(kill_at)],
                            cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    optimizer = fresh_adam()
    fastopt.load(optimizer, path)
    expected = fresh_adam()  # the state the child saved first: one step of ones
    expected.step([np.ones(s) for s in SHAPES])
    assert_same(snapshot(expected), snapshot(optimizer))


def test_torch_optimizer_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    import fastopt.torch as fotorch

    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2).double()
        return model, fotorch.Adam(model.parameters(), lr=0.01, amsgrad=True)

    inputs = torch.randn(8, 3, dtype=torch.float64)

    def train(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            model(inputs).square().sum().backward()
            optimizer.step()

    model, optimizer = make()
    train(model, optimizer, 4)
    fastopt.save(optimizer, tmp_path / "torch.ckpt")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, optimizer, 3)

    resumed_model, resumed = make()
    resumed_model.load_state_dict(weights)
    fastopt.load(resumed, tmp_path / "torch.ckpt")
    step = resumed.state[resumed_model.weight]["step"]
    assert isinstance(step, torch.Tensor) and step.item() == 4
    train(resumed_model, resumed, 3)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="shape"):
        fastopt.load(fotorch.Adam(torch.nn.Linear(2, 3).double().parameters()),
                     tmp_path / "torch.ckpt")


def test_every_algorithm_is_covered():
    covered = {case.values[0].name for case in algorithm_configs()}
    assert covered == {a.name for a in ALGORITHMS}


def richest_config(algorithm):
    """The algorithm's test configuration that keeps the most state buffers."""
    def buffers(config):
        return sum(s.needed(dict(algorithm.defaults, **config)) for s in algorithm.state)
    return dict(algorithm.defaults, **max(algorithm.configs, key=buffers))


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_numpy_and_torch_optimizers_read_each_others_checkpoints(tmp_path, algorithm):
    """The format is the same for both front ends: a NumPy run can continue in torch
    and the reverse, with the same trajectory, for every algorithm (scalar state
    such as NAdam's mu_product, Adafactor's factored state)."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as fotorch

    hyper = richest_config(algorithm)
    params, numpy_run = make_optimizer(algorithm, hyper, np.float64)
    run(numpy_run, 0, 4, np.float64)
    fastopt.save(numpy_run, tmp_path / "numpy.ckpt")
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    torch_run = getattr(fotorch, algorithm.cls_name)([{"params": tensors[:2]},
                                                      {"params": tensors[2:]}])
    fastopt.load(torch_run, tmp_path / "numpy.ckpt")
    assert torch_run.param_groups[1]["lr"] == hyper["lr"] / 2
    for step in range(4, 8):
        grads = gradients(step, np.float64)
        numpy_run.step(grads)
        for t, g in zip(tensors, grads):
            t.grad = None if g is None else torch.from_numpy(g)
        torch_run.step()
    for p, t in zip(params, tensors):
        assert_array_equal(t.detach().numpy(), p)
    fastopt.save(torch_run, tmp_path / "torch.ckpt")
    back, resumed = make_optimizer(algorithm, dict(algorithm.defaults), np.float64)
    fastopt.load(resumed, tmp_path / "torch.ckpt")
    assert_same(snapshot(numpy_run), (snapshot(resumed)[0], snapshot(resumed)[1]))


def torch_state(optimizer, tensors):
    """A copy of a fastopt.torch optimizer's state, keyed by parameter position."""
    return {i: {k: v.clone() for k, v in optimizer.state[t].items()}
            for i, t in enumerate(tensors) if t in optimizer.state}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm,hyper", algorithm_configs())
def test_torch_resume_is_bit_identical(algorithm, hyper, dtype, tmp_path):
    """fastopt.torch optimizers resume from a checkpoint exactly, state tensors (0-d
    scalar state and step included) in the same dtypes."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as fotorch

    def make(seed):
        rng = np.random.default_rng(seed)
        tensors = [torch.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True)
                   for s in SHAPES]
        return tensors, getattr(fotorch, algorithm.cls_name)(
            [{"params": tensors[:2]}, {"params": tensors[2:], "lr": hyper["lr"] / 2}],
            **hyper)

    def steps(optimizer, tensors, first, last):
        for step in range(first, last):
            for t, g in zip(tensors, gradients(step, dtype)):
                t.grad = None if g is None else torch.from_numpy(g)
            optimizer.step()

    tensors, uninterrupted = make(0)
    steps(uninterrupted, tensors, 0, 5)
    fastopt.save(uninterrupted, tmp_path / "torch.ckpt")
    at_save = [t.detach().clone() for t in tensors]
    steps(uninterrupted, tensors, 5, 12)

    restored, resumed = make(99)
    with torch.no_grad():
        for t, value in zip(restored, at_save):
            t.copy_(value)
    fastopt.load(resumed, tmp_path / "torch.ckpt")
    steps(resumed, restored, 5, 12)
    for t, u in zip(restored, tensors):
        assert torch.equal(t, u)
    expected, got = torch_state(uninterrupted, tensors), torch_state(resumed, restored)
    assert expected.keys() == got.keys()
    for i in expected:
        assert expected[i].keys() == got[i].keys()
        for key, value in expected[i].items():
            assert got[i][key].dtype == value.dtype, (i, key)
            assert torch.equal(got[i][key], value), (i, key)


def test_scalar_state_is_stored_exactly_and_checked(tmp_path):
    """NAdam's mu_product travels in the header as a hexadecimal float (exact); an
    unknown or unreadable scalar is refused and leaves the optimizer untouched."""
    algorithm = fastopt.get_algorithm("nadam")
    _, optimizer = make_optimizer(algorithm, dict(algorithm.defaults, lr=0.01), np.float32)
    run(optimizer, 0, 3, np.float32)
    path = tmp_path / "nadam.ckpt"
    fastopt.save(optimizer, path)
    data = path.read_bytes()
    length = int.from_bytes(data[8:16], "little")
    header = json.loads(data[16:16 + length])
    for entry in header["state"]:
        value = float.fromhex(entry["scalars"]["mu_product"])
        assert value == optimizer.state[entry["param"]]["mu_product"]
        assert value != 1.0  # advanced: the test would prove nothing otherwise
    for change, message in [
            (lambda h: h["state"][0]["scalars"].update(bogus="0x1p+0"), "unknown key 'bogus'"),
            (lambda h: h["state"][0]["scalars"].update(mu_product="one"), "hexadecimal"),
            (lambda h: h["state"][0].pop("scalars"), "mu_product"),
    ]:
        path.write_bytes(data)
        rewrite_header(path, change)
        _, fresh = make_optimizer(algorithm, dict(algorithm.defaults), np.float32)
        before = snapshot(fresh)
        with pytest.raises(ValueError, match=message):
            fastopt.load(fresh, path)
        assert_same(before, snapshot(fresh))
    torch = pytest.importorskip("torch")
    import fastopt.torch as fotorch
    tensors = [torch.zeros(s, dtype=torch.float32, requires_grad=True) for s in SHAPES]
    torch_optimizer = fotorch.NAdam([{"params": tensors[:2]}, {"params": tensors[2:]}])
    with pytest.raises(CheckpointError, match="lacks the scalar state"):
        fastopt.load(torch_optimizer, path)  # still the file without scalars
    assert len(torch_optimizer.state) == 0
