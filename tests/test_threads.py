"""Threads: the kernels run without the GIL, so Python threads really step at once.

* Eight threads stepping eight optimizers at once give the bits of stepping them one
  after another.
* One optimizer stepped from two threads at once is serialized by its lock: the result
  (parameters, every state buffer, the step count) is bit for bit the result of one of
  the sequential interleavings of the two threads' steps, never a mixture.
"""
import hashlib
import itertools
import threading

import numpy as np
import pytest

from conftest import ALGORITHMS

SIZE = 100_003  # large enough that a step takes a while without the GIL


def run_threads(targets):
    """Run every callable in its own thread, released together; re-raise any error."""
    barrier = threading.Barrier(len(targets))
    errors = []

    def wrap(target):
        def run():
            try:
                barrier.wait()
                target()
            except BaseException as error:  # noqa: BLE001 -- re-raised in the main thread
                errors.append(error)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def snapshot(opt):
    """A digest of the bits of every parameter and state entry (short failure messages)."""
    digest = hashlib.sha256()
    for p in opt.params:
        digest.update(p.tobytes())
    for i, state in sorted(opt.state.items()):
        for key, value in sorted(state.items()):
            digest.update(f"{i}/{key}".encode())
            digest.update(value.tobytes() if isinstance(value, np.ndarray) else repr(value).encode())
    return digest.hexdigest()


def configs(algorithm, count):
    """`count` configurations of `algorithm`, cycling through its test configurations."""
    return [dict(algorithm.defaults, **algorithm.configs[i % len(algorithm.configs)])
            for i in range(count)]


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_eight_threads_on_eight_optimizers_match_sequential(algorithm):
    rng = np.random.default_rng(0)
    steps = 6
    problems = []
    for index, hyper in enumerate(configs(algorithm, 8)):
        dtype = np.float32 if index % 2 else np.float64
        start = [rng.standard_normal(SIZE).astype(dtype), rng.standard_normal(17).astype(dtype)]
        grads = [[rng.standard_normal(p.shape).astype(dtype) for p in start]
                 for _ in range(steps)]
        problems.append((hyper, start, grads))

    def build():
        return [algorithm.cls([p.copy() for p in start], **hyper)
                for hyper, start, _ in problems]

    sequential = build()
    for opt, (_, _, grads) in zip(sequential, problems):
        for g in grads:
            opt.step(g)
    threaded = build()

    def stepper(opt, grads):
        def run():
            for g in grads:
                opt.step(g)
        return run

    run_threads([stepper(opt, grads) for opt, (_, _, grads) in zip(threaded, problems)])
    for index, (mine, expected) in enumerate(zip(threaded, sequential)):
        assert snapshot(mine) == snapshot(expected), f"optimizer {index}"


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_one_optimizer_from_two_threads_is_serialized(algorithm):
    """Both threads take three steps each on one optimizer; the outcome must be one of
    the 20 ways to interleave them, computed sequentially."""
    hyper = max(configs(algorithm, len(algorithm.configs)),
                key=lambda h: sum(s.needed(h) for s in algorithm.state))
    rng = np.random.default_rng(1)
    per_thread = 3
    start = rng.standard_normal(SIZE)
    grads = {name: [rng.standard_normal(SIZE) for _ in range(per_thread)] for name in "ab"}

    outcomes = {}
    for positions in itertools.combinations(range(2 * per_thread), per_thread):
        order, a, b = [], iter(grads["a"]), iter(grads["b"])
        for i in range(2 * per_thread):
            order.append(next(a) if i in positions else next(b))
        opt = algorithm.cls([start.copy()], **hyper)
        for g in order:
            opt.step([g])
        outcomes[positions] = snapshot(opt)
    assert len(set(outcomes.values())) > 1, "the order must matter"

    for trial in range(4):
        opt = algorithm.cls([start.copy()], **hyper)

        def stepper(name):
            def run():
                for g in grads[name]:
                    opt.step([g])
            return run

        run_threads([stepper("a"), stepper("b")])
        result = snapshot(opt)
        assert result in outcomes.values(), \
            f"trial {trial}: the result is no sequential interleaving of the two threads"


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_load_state_dict_during_steps_is_serialized(algorithm):
    """One thread takes three steps while another loads a saved state once: the result
    must be that of loading before the first step, between two steps or after the
    last -- never a step whose update lands in the old buffers but whose step count
    lands in the loaded state."""
    hyper = max(configs(algorithm, len(algorithm.configs)),
                key=lambda h: sum(s.needed(h) for s in algorithm.state))
    rng = np.random.default_rng(2)
    start = rng.standard_normal(SIZE)
    warmup = [rng.standard_normal(SIZE) for _ in range(2)]
    grads = [rng.standard_normal(SIZE) for _ in range(3)]

    def fresh():
        opt = algorithm.cls([start.copy()], **hyper)
        for g in warmup[:1]:
            opt.step([g])
        return opt

    donor = fresh()
    for g in warmup:
        donor.step([g])
    saved = donor.state_dict()  # a different point of the same run: two steps in

    outcomes = set()
    for load_at in range(len(grads) + 1):
        opt = fresh()
        for i, g in enumerate(grads):
            if i == load_at:
                opt.load_state_dict(saved)
            opt.step([g])
        if load_at == len(grads):
            opt.load_state_dict(saved)
        outcomes.add(snapshot(opt))
    assert len(outcomes) == len(grads) + 1, "each loading point must give its own result"

    for trial in range(6):
        opt = fresh()

        def steps():
            for g in grads:
                opt.step([g])

        def load():
            # let the first step start, then load while a step is likely running
            threading.Event().wait(0.0005 * trial)
            opt.load_state_dict(saved)

        run_threads([steps, load])
        assert snapshot(opt) in outcomes, f"trial {trial}: a step and a load interleaved"
