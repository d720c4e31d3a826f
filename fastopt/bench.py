"""``python -m fastopt bench``: the roofline benchmark.

For every algorithm of the registry, dtype and size, four implementations of one
optimizer step are timed side by side, interleaved round by round in one run:

``fastopt``
    the optimizer class's ``step`` (the public API, all checks included);
``numpy``
    the NumPy reference twin of :mod:`fastopt.reference` (NumPy with temporaries);
``torch``
    torch.optim's class with ``fused=True`` where torch has a fused CPU kernel for it,
    else its default path (skipped when torch is not installed);
``ceiling``
    a streaming kernel compiled into fastopt, run through the same runner, with the
    algorithm's memory shape: it reads the parameter, the gradient and every state
    buffer the options use and writes the parameter and those state buffers, once
    each, with one addition per element.  It streams the optimizer's own buffers,
    adding ``grad * 0`` (which changes no value), so that it finds them where the
    step does, in memory and in the caches.  For an algorithm that needs sums over the
    whole parameter before it can write it (LAMB, LARS, Adafactor:
    ``Algorithm.reads_first``), a first pass reads those buffers once more.

The ceiling is timed twice in every round, as two implementations that run the same
call ("ceiling_again_us" in the JSON holds the second).  The two differ only by the
machine's noise, so across one size's rows their ratios measure how far apart this
run reads two identical kernels at that size: its *resolution* (twice the root mean
square of the logarithms of those ratios, about a 95% band for the difference of two
timings).  The thread table times its ceiling with the most threads twice in the
same way, for the resolution of its target.  A miss whose measurement lies within
the resolution of what the best kernel could reach is one this run cannot tell from
that best (see ``_verdict``).

For an algorithm with divisions or square roots, a fifth kernel times the **divider
floor**: the divisions and square roots per element that an exact update runs on the
divide unit (``Algorithm.divider_ops``) and nothing else, in cache (FLOOR_ELEMENTS
elements, scaled to the case's size), on the same instruction set.  No kernel that
does those operations can beat it, so ``ceiling / max(ceiling, floor)`` is the best
fraction of the ceiling such a kernel can reach, and ``torch / floor`` the best
speedup over torch ("best_fraction_of_ceiling", "best_speedup_vs_torch" in the JSON).
An algorithm with a first pass is bounded pass by pass, because its writing pass
cannot start before the first pass's sums are complete: the ceiling's first pass
and the first pass's share of the floor (``Algorithm.divider_ops_first``) are timed
alone too ("ceiling_first_us", "floor_first_us"), and the best time is
``max(ceiling_first, floor_first) + max(ceiling - ceiling_first, floor -
floor_first)``.

Byte model: one step moves ``itemsize * (reads + writes)`` bytes per element, where
reads = 2 + S (parameter, gradient, state) + F and writes = 1 + S, S being the number
of state buffers the algorithm's options use and F the number of buffers it reads in
a first pass (Adam: S = 2, F = 0, 7 streams; LAMB: S = 2, F = 4, 11 streams).  GB/s is
that figure divided by the best time; "of ceiling" is the ceiling's time over
fastopt's.

The optimizers' step counters are set so that the first timed step is step 10
(``TIMED_STEP``, the step the NumPy twin is given), for fastopt and torch alike: an
update can change with the step (RAdam's rectification is off for its first five),
and a large case runs too few steps to leave them behind otherwise.

The memory shape comes from the registry row (its state buffers and their ``needed``
rules for the options benchmarked), so algorithms added later are benchmarked with no
change here.  Times are the best of the rounds, each round timing a batch of calls
long enough to read the clock reliably; only ratios within one run mean anything on a
shared machine.

Besides the roofline table, ``--extra`` measures: a step over 200 parameters of 1,000
float32 elements against one step over a single 200,000-element buffer (and torch
fused); the functional kernel on 16 elements; 2**24 elements against 16,000,000; one
thread against two at 1,048,576, with the ceiling at each thread count (fastopt's
one-thread time over the two-thread ceiling's is the most two threads can gain); state
full of subnormal numbers against normal ones
(each dtype);
and each instruction set at 65,536 elements.

Every run's Markdown opens with the targets of the benchmark, each checked against
its measurement, a miss classed by what bounds it (``evaluate_targets``); ``--targets
bench.json`` prints that table for a report written before, measuring nothing.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import os
import platform
import sys
import time

import numpy as np

from . import _kernels
from ._registry import ALGORITHMS

DEFAULT_SIZES = (4096, 65536, 1048576, 16000000)
DEFAULT_DTYPES = ("float32", "float64")
IMPLEMENTATIONS = ("fastopt", "numpy", "torch", "ceiling")
#: Shortest time one timed batch of calls should take, in seconds.
MIN_BATCH_SECONDS = 2e-3


# -- problems ----------------------------------------------------------------------

def bench_hyper(algorithm):
    """The hyperparameters an algorithm is benchmarked with: its defaults."""
    return dict(algorithm.defaults)


def _used_buffers(algorithm, hyper, shape=(1024,)):
    """Names of the buffers a step of `algorithm` with `hyper` uses, in kernel order."""
    return ("param", "grad") + tuple(
        spec.name for spec in algorithm.state
        if spec.needed(hyper) and spec.shape_for(shape) is not None)


def reads_first(algorithm, hyper, shape=(1024,)):
    """Indices, among the buffers used (:func:`_used_buffers`), of those the algorithm
    reads in a first pass before the pass that writes (``Algorithm.reads_first``)."""
    used = _used_buffers(algorithm, hyper, shape)
    return tuple(used.index(name) for name in algorithm.reads_first if name in used)


def memory_shape(algorithm, hyper, shape=(1024,)):
    """``(reads, writes)`` streams per element for `algorithm` with options `hyper`,
    for a parameter of `shape` (the benchmark's parameters are 1-D): every buffer used
    is read and the parameter and state written once, and the buffers of
    ``Algorithm.reads_first`` read once more (LAMB, LARS, Adafactor need sums over the
    whole parameter before they can write it)."""
    used = _used_buffers(algorithm, hyper, shape)
    return len(used) + len(reads_first(algorithm, hyper, shape)), len(used) - 1


def bytes_per_element(algorithm, hyper, dtype):
    reads, writes = memory_shape(algorithm, hyper)
    return np.dtype(dtype).itemsize * (reads + writes)


def _functional_kwargs(algorithm, hyper, step):
    kwargs = {h.name: hyper[h.name] for h in algorithm.hyper if h.kernel_names != ()}
    if "step" in algorithm.per_param:
        kwargs["step"] = step
    if "first_step" in algorithm.per_param:
        kwargs["first_step"] = False
    if algorithm.advanced:  # scalars derived from scalar state (NAdam's mu_product, ...)
        advanced, _ = algorithm.advance_scalars(hyper, step, None)
        kwargs.update({name: advanced[name] for name in algorithm.advanced})
    return kwargs


def _torch_optimizer(algorithm, hyper, param, grad):
    """torch's optimizer over tensors sharing `param`/`grad`, and "fused"/"default"."""
    try:
        import torch
    except ImportError:
        return None, None
    cls = getattr(torch.optim, algorithm.torch or "", None)
    if cls is None:
        return None, None
    tensor = torch.from_numpy(param)
    tensor.grad = torch.from_numpy(grad)
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in hyper.items() if k in accepted}
    if "fused" in accepted:
        try:
            return cls([tensor], fused=True, **kwargs), "fused"
        except (RuntimeError, ValueError, TypeError):
            pass
    if "foreach" in accepted:
        kwargs["foreach"] = False
    return cls([tensor], **kwargs), "default"


#: Elements of the divider floor's buffers (in cache on any current core).
FLOOR_ELEMENTS = 32768

#: The step every timed update takes first (the NumPy twin takes this one every
#: time).  An update can depend on the step: RAdam's rectification is off for its
#: first five steps (with the default betas), which then skip the square root and the
#: division.  A large case runs only a dozen steps in all, so started from step 1 its
#: best time would be one of those, not the steady update.
TIMED_STEP = 10


def _set_step(optimizer, step):
    """Make the next step of `optimizer` (fastopt's or torch's, state already created)
    step number `step`."""
    for state in optimizer.state.values():
        count = state.get("step")
        if count is None:
            continue
        if hasattr(count, "fill_"):  # torch keeps a tensor
            count.fill_(step - 1)
        else:
            state["step"] = step - 1


class Case:
    """One algorithm, dtype and size, with every implementation ready to call."""

    def __init__(self, algorithm, dtype, size, threads, use_torch=True, seed=0):
        self.algorithm, self.dtype, self.size = algorithm, np.dtype(dtype), size
        self.hyper = bench_hyper(algorithm)
        rng = np.random.default_rng(seed)
        self.param = rng.standard_normal(size, dtype=np.float64).astype(self.dtype)
        self.grad = (rng.standard_normal(size, dtype=np.float64) * 1e-2).astype(self.dtype)
        self.optimizer = algorithm.cls([self.param], **self.hyper)
        self.optimizer.num_threads = threads
        self.optimizer.step([self.grad])  # creates the state
        _set_step(self.optimizer, TIMED_STEP)
        state = self.optimizer.state[0]
        self.state = [state.get(spec.name) if spec.needed(self.hyper) else None
                      for spec in algorithm.state]
        # The ceiling streams the optimizer's own parameter, gradient and state,
        # adding grad * 0 (which changes no value): so it finds them where fastopt's
        # step does, in memory and in the caches, and the state stays the optimizer's.
        self.ceiling_state = [b for b in self.state
                              if b is not None and b.shape == self.param.shape]
        self.threads = threads
        self.reads_first = reads_first(algorithm, self.hyper, self.param.shape)
        self.torch_path = None
        self.calls = {
            "fastopt": self._fastopt,
            "numpy": self._numpy,
            "ceiling": self._ceiling,
            # the same call again, for the run's resolution (see the module docstring)
            "ceiling_again": self._ceiling,
        }
        if use_torch:
            self.torch_optimizer, self.torch_path = _torch_optimizer(
                algorithm, self.hyper, self.param, self.grad)
            if self.torch_optimizer is not None:
                self.torch_optimizer.step()
                _set_step(self.torch_optimizer, TIMED_STEP)
                self.calls["torch"] = self.torch_optimizer.step
        self.bytes_per_element = bytes_per_element(algorithm, self.hyper, self.dtype)
        self.divider_ops = algorithm.divider_ops
        if any(self.divider_ops):
            n = min(size, FLOOR_ELEMENTS)
            self.floor_x = np.zeros(n, dtype=self.dtype)
            self.floor_y = (1 + rng.random(n)).astype(self.dtype)
            self.calls["floor"] = self._floor
        self.divider_ops_first = algorithm.divider_ops_first
        if self.reads_first:
            self.calls["ceiling_first"] = self._ceiling_first
            if any(self.divider_ops_first):
                self.calls["floor_first"] = self._floor_first

    def _fastopt(self):
        self.optimizer.step([self.grad])

    def _numpy(self):
        self.algorithm.reference(self.param, self.grad, *self.state,
                                 **_functional_kwargs(self.algorithm, self.hyper, TIMED_STEP))

    def _floor(self):
        _kernels._divsqrt(self.floor_x, self.floor_y, *self.divider_ops)

    def _ceiling(self):
        _kernels._stream(self.param, self.grad, self.ceiling_state, self.threads or 0,
                         self.reads_first, keep=True)

    def _floor_first(self):
        _kernels._divsqrt(self.floor_x, self.floor_y, *self.divider_ops_first)

    def _ceiling_first(self):
        _kernels._stream(self.param, self.grad, self.ceiling_state, self.threads or 0,
                         self.reads_first, update=False)


# -- timing ------------------------------------------------------------------------

def _batch(call, target=MIN_BATCH_SECONDS):
    """How many calls make one timed batch of at least `target` seconds."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= target or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * target / max(elapsed, 1e-9)) + 1)


def time_interleaved(calls, rounds, min_batch=MIN_BATCH_SECONDS):
    """Best and median seconds per call of each of `calls`, timed round-robin.

    Every round times one batch of each call, in an order that rotates from round to
    round, so slow phases of a shared machine hit every implementation alike.
    """
    numbers = {name: _batch(call, min_batch) for name, call in calls.items()}
    timed = time_prepared({name: (_nothing, functools.partial(_repeat, call, numbers[name]))
                           for name, call in calls.items()}, rounds)
    return {name: (best / numbers[name], median / numbers[name])
            for name, (best, median) in timed.items()}


def _nothing():
    pass


def _repeat(call, number):
    for _ in range(number):
        call()


def time_prepared(calls, rounds):
    """Best and median seconds of one call of each of `calls`, a dict of ``(prepare,
    call)``, timed round-robin as in :func:`time_interleaved`; `prepare` runs, untimed,
    before every timed call.

    For a call that changes its own inputs where their values are what is measured
    (state full of subnormal numbers decays to zero, or grows out of the subnormals,
    step by step), each timed call starts from the prepared values.
    """
    names = list(calls)
    samples = {name: [] for name in names}
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            prepare, call = calls[name]
            prepare()
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return {name: (min(s), float(np.median(s))) for name, s in samples.items()}


def _rounds_for(size, rounds):
    return rounds if rounds else (5 if size >= 4_000_000 else 15)


def _progress(message, quiet):
    if not quiet:
        sys.stderr.write("\r\x1b[K" + message)
        sys.stderr.flush()


def run_case(case, rounds, min_batch=MIN_BATCH_SECONDS):
    """Time every implementation of `case`; a result dict (see module docstring)."""
    timed = time_interleaved(case.calls, rounds, min_batch)
    floor = timed.pop("floor", None)
    floor_first = timed.pop("floor_first", None)
    ceiling_first = timed.pop("ceiling_first", None)
    ceiling_again = timed.pop("ceiling_again", None)
    nbytes = case.bytes_per_element * case.size
    impls = {}
    for name, (best, median) in timed.items():
        impls[name] = {"us": best * 1e6, "us_median": median * 1e6,
                       "gbps": nbytes / best / 1e9 if best > 0 else None}
    fast = impls["fastopt"]["us"]
    reads, writes = memory_shape(case.algorithm, case.hyper)
    result = {
        "algorithm": case.algorithm.name, "dtype": str(case.dtype), "size": case.size,
        "threads": case.threads or _kernels.get_num_threads(),
        "reads": reads, "writes": writes, "bytes_per_element": case.bytes_per_element,
        "torch_path": case.torch_path, "impls": impls,
        "fraction_of_ceiling": impls["ceiling"]["us"] / fast,
        "speedup_vs_numpy": impls["numpy"]["us"] / fast,
        "speedup_vs_torch": impls["torch"]["us"] / fast if "torch" in impls else None,
        "divider_ops": list(case.divider_ops),
        "floor_us": None, "best_fraction_of_ceiling": None, "best_speedup_vs_torch": None,
        "ceiling_first_us": ceiling_first[0] * 1e6 if ceiling_first else None,
        "floor_first_us": None,
        "ceiling_again_us": ceiling_again[0] * 1e6 if ceiling_again else None,
    }
    if floor is not None:
        # the divider floor, timed in cache on FLOOR_ELEMENTS elements, for this size
        scale = 1e6 * case.size / case.floor_x.size
        floor_us = floor[0] * scale
        ceiling = impls["ceiling"]["us"]
        result["floor_us"] = floor_us
        # pass by pass, the writing pass waiting for the first pass's sums; with no
        # first pass (both zero) this is max(ceiling, floor)
        first = ceiling_first[0] * 1e6 if ceiling_first else 0.0
        floor_first_us = floor_first[0] * scale if floor_first else 0.0
        if floor_first:
            result["floor_first_us"] = floor_first_us
        best = (max(first, floor_first_us)
                + max(ceiling - first, floor_us - floor_first_us, 0.0))
        result["best_fraction_of_ceiling"] = ceiling / max(ceiling, best)
        if "torch" in impls:
            result["best_speedup_vs_torch"] = impls["torch"]["us"] / floor_us
    return result


def roofline(algorithms, dtypes, sizes, threads=1, rounds=0, use_torch=True, quiet=False,
             min_batch=MIN_BATCH_SECONDS):
    """The roofline table: a list of result dicts, one per algorithm, dtype and size."""
    results = []
    cases = [(a, d, s) for s in sizes for d in dtypes for a in algorithms]
    for index, (algorithm, dtype, size) in enumerate(cases, start=1):
        _progress(f"[{index}/{len(cases)}] {algorithm.name} {dtype} {size:,} ...", quiet)
        case = Case(algorithm, dtype, size, threads, use_torch)
        results.append(run_case(case, _rounds_for(size, rounds), min_batch))
        del case
    _progress("", quiet)
    return results


# -- the other targets ---------------------------------------------------------------

def many_small(threads=1, rounds=15, use_torch=True, count=200, size=1000,
               min_batch=MIN_BATCH_SECONDS):
    """Adam, float32: one step over `count` parameters of `size` elements, against
    one step over a single buffer of ``count * size`` elements, and torch fused."""
    algorithm = ALGORITHMS["adam"]
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    grads = [(rng.standard_normal(size) * 1e-2).astype(np.float32) for _ in range(count)]
    flat = np.concatenate(params)
    flat_grad = np.concatenate(grads)
    many = algorithm.cls(params)
    one = algorithm.cls([flat])
    many.num_threads = one.num_threads = threads
    many.step(grads)
    one.step([flat_grad])
    calls = {"fastopt_many": lambda: many.step(grads), "fastopt_one": lambda: one.step([flat_grad])}
    if use_torch:
        try:
            import torch
            tensors = [torch.from_numpy(p.copy()) for p in params]
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g)
            torch_opt = torch.optim.Adam(tensors, fused=True)
            torch_opt.step()
            calls["torch_many"] = torch_opt.step
        except ImportError:
            pass
    timed = time_interleaved(calls, rounds, min_batch)
    out = {name: {"us": best * 1e6, "us_median": median * 1e6}
           for name, (best, median) in timed.items()}
    result = {"count": count, "size": size, "impls": out,
              "many_over_one": out["fastopt_many"]["us"] / out["fastopt_one"]["us"]}
    if "torch_many" in out:
        result["speedup_vs_torch"] = out["torch_many"]["us"] / out["fastopt_many"]["us"]
    return result


def _literal_call(fn, args, kwargs):
    """A no-argument function that calls ``fn(*args, **kwargs)`` written out with
    positional and keyword arguments, as a training loop writes the call (unpacking
    ``**kwargs`` would add the cost of building a dict to every call)."""
    names = {f"a{i}": a for i, a in enumerate(args)}
    names.update({f"k_{k}": v for k, v in kwargs.items()})
    names["fn"] = fn
    call = ", ".join([f"a{i}" for i in range(len(args))]
                     + [f"{k}=k_{k}" for k in kwargs])
    namespace = dict(names)
    exec(f"def call():\n    fn({call})\n", namespace)
    return namespace["call"]


def _same_signature_no_op(fn):
    """A Python function with `fn`'s signature that does nothing (the cost of the call
    itself, which no implementation of `fn` can avoid)."""
    namespace = {}
    exec(f"def no_op{inspect.signature(fn)}:\n    pass\n", namespace)
    return namespace["no_op"]


def functional_small(size=16, rounds=15, min_batch=MIN_BATCH_SECONDS):
    """Microseconds per call of each algorithm's functional kernel on `size` floats,
    beside an empty Python function of the same signature called the same way."""
    results = {}
    for algorithm in ALGORITHMS.values():
        hyper = bench_hyper(algorithm)
        param = np.ones(size, dtype=np.float32)
        grad = np.full(size, 1e-3, dtype=np.float32)
        state = [np.zeros(size, dtype=np.float32) if spec.needed(hyper) else None
                 for spec in algorithm.state]
        kwargs = _functional_kwargs(algorithm, hyper, 1)
        fn = algorithm.functional
        args = (param, grad, *state)
        timed = time_interleaved({"f": _literal_call(fn, args, kwargs),
                                  "no_op": _literal_call(_same_signature_no_op(fn), args,
                                                         kwargs)}, rounds, min_batch)
        results[algorithm.name] = {"us": timed["f"][0] * 1e6, "us_median": timed["f"][1] * 1e6,
                                   "no_op_us": timed["no_op"][0] * 1e6}
    return results


def power_of_two(dtypes, threads=1, rounds=5, min_batch=MIN_BATCH_SECONDS, quiet=False,
                 algorithms=None):
    """Per-element rate of fastopt at 2**24 elements over its rate at 16,000,000."""
    results = []
    for dtype in dtypes:
        for algorithm in algorithms or ALGORITHMS.values():
            _progress(f"2**24: {algorithm.name} {dtype} ...", quiet)
            cases = {size: Case(algorithm, dtype, size, threads, use_torch=False)
                     for size in (16_000_000, 1 << 24)}
            timed = time_interleaved({size: c.calls["fastopt"] for size, c in cases.items()},
                                     rounds, min_batch)
            rates = {size: size / timed[size][0] for size in cases}
            del cases
            results.append({"algorithm": algorithm.name, "dtype": dtype,
                            "rate_ratio": rates[1 << 24] / rates[16_000_000]})
    _progress("", quiet)
    return results


def thread_scaling(size=1 << 20, dtype="float32", thread_counts=(1, 2), rounds=15,
                   min_batch=MIN_BATCH_SECONDS, quiet=False, openmp_threads=None, passes=3):
    """fastopt's time per step with each thread count, and with the default (no count
    set: OpenMP's, capped by the idle CPUs), and the ceiling's with each thread count,
    interleaved, per algorithm.

    The whole table is timed `passes` times, one pass after the other, and each time
    is the best over the passes, as for :func:`subnormal`: a step with two threads needs
    both CPUs of a shared machine at once, and in one run timed in a single pass Lion
    read 1.45x (104 us with two threads, against the ceiling's 63 us in the same
    rounds), where it read 1.53x to 2.05x in five other runs.  Each row keeps every
    pass's speedups ("speedup_passes").

    `openmp_threads`: OpenMP's thread count before the benchmark set torch's (torch
    and fastopt share the OpenMP runtime, so ``torch.set_num_threads`` is also the
    default fastopt follows); it is put back for this table, so that "default" is
    what a program that sets nothing gets."""
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    per_pass = {algorithm.name: [] for algorithm in ALGORITHMS.values()}
    torch = sys.modules.get("torch") if openmp_threads else None
    torch_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(openmp_threads)
    try:
        for _ in range(passes):
            for algorithm in ALGORITHMS.values():
                per_pass[algorithm.name].append(_thread_scaling_one(
                    algorithm, size, dtype, thread_counts, rounds, min_batch, quiet))
    finally:
        if torch is not None:
            torch.set_num_threads(torch_threads)
    _progress("", quiet)
    return [_thread_row(rows, thread_counts) for rows in per_pass.values()]


def _thread_row(rows, thread_counts):
    """One row of :func:`thread_scaling` from its passes' rows: each time the best over
    the passes, the speedups from those, and every pass's speedups."""
    base = f"threads={thread_counts[0]}"
    us = {k: min(r["us"][k] for r in rows) for k in rows[0]["us"]}
    ceiling = {k: min(r["ceiling_us"][k] for r in rows) for k in rows[0]["ceiling_us"]}
    again = {k: min(r["ceiling_again_us"][k] for r in rows)
             for k in rows[0].get("ceiling_again_us", {})}
    return {"algorithm": rows[0]["algorithm"], "dtype": rows[0]["dtype"],
            "size": rows[0]["size"], "us": us,
            "speedup": {k: us[base] / v for k, v in us.items()},
            "ceiling_us": ceiling,
            "ceiling_speedup": {k: ceiling[base] / v for k, v in ceiling.items()},
            "ceiling_again_us": again,
            "speedup_passes": [r["speedup"] for r in rows]}


def _thread_scaling_one(algorithm, size, dtype, thread_counts, rounds, min_batch, quiet):
    """One row of :func:`thread_scaling`."""
    _progress(f"threads: {algorithm.name} ...", quiet)
    case = Case(algorithm, dtype, size, 1, use_torch=False)
    calls = {}
    for n in thread_counts:
        def call(n=n):
            case.optimizer.num_threads = n
            case.optimizer.step([case.grad])
        calls[f"threads={n}"] = call

    def default():
        case.optimizer.num_threads = None
        setting = _kernels.get_num_threads_setting()
        _kernels.set_num_threads(None)   # the command line's --threads aside
        try:
            case.optimizer.step([case.grad])
        finally:
            _kernels.set_num_threads(setting or None)
    calls["default"] = default
    # The ceiling (the streaming kernel with the algorithm's memory shape, through the
    # same runner) with each thread count: no step with n threads can take less than
    # it, so fastopt's one-thread time over the ceiling's with n threads is the most
    # n threads can gain (``evaluate_targets``).  The one with the most threads is
    # timed twice, for the table's resolution (see the module docstring).
    for n in thread_counts:
        calls[f"ceiling threads={n}"] = functools.partial(
            _kernels._stream, case.param, case.grad, case.ceiling_state, n, case.reads_first,
            keep=True)
    most = f"threads={thread_counts[-1]}"
    calls[f"again {most}"] = calls[f"ceiling {most}"]
    timed = time_interleaved(calls, rounds, min_batch)
    us = {k: v[0] * 1e6 for k, v in timed.items()}
    again = {k[len("again "):]: us.pop(k) for k in list(us) if k.startswith("again ")}
    ceiling = {k[len("ceiling "):]: us.pop(k) for k in list(us) if k.startswith("ceiling ")}
    base = us[f"threads={thread_counts[0]}"]
    return {"algorithm": algorithm.name, "dtype": dtype, "size": size, "us": us,
            "speedup": {k: base / v for k, v in us.items()}, "ceiling_us": ceiling,
            "ceiling_again_us": again}


def subnormal(size=1 << 20, dtype="float32", rounds=15, passes=3):
    """Time per step over state and gradients full of subnormal numbers over normal ones,
    with and without flush-to-zero, per algorithm.

    A step changes the values it is timed on (subnormal state decays to zero, a step
    size grows out of the subnormals), so every timed step starts from the prepared
    parameter, gradient and state (:func:`time_prepared`: one step over `size`
    elements is long enough to time alone).

    The whole table is timed `passes` times, one pass after the other, and each time is
    the best over the passes, as every time of this module is a best: the speed at which
    a core handles subnormal operands can change from one moment to the next with no
    change in the code or the data (``bench/subnormal_probe.c`` runs one loop of
    fixed instructions over fixed data and prints its slowdown over time), and a pass
    over all algorithms takes long enough for that to change between passes.  Each row
    keeps the slowdown of every pass (``slowdown_passes``, ``slowdown_ftz_passes``)."""
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    tiny = np.finfo(dtype).smallest_normal
    flush_before = _kernels.get_flush_denormal()
    labels = ("normal", "subnormal", "normal_ftz", "subnormal_ftz")
    per_pass = {algorithm.name: [] for algorithm in ALGORITHMS.values()}
    try:
        for _ in range(passes):
            for algorithm in ALGORITHMS.values():
                per_pass[algorithm.name].append(
                    _subnormal_pass(algorithm, size, dtype, rounds, float(tiny)))
    finally:
        _kernels.set_flush_denormal(flush_before)
    results = []
    for algorithm in ALGORITHMS.values():
        timings = per_pass[algorithm.name]
        best = {label: min(t[label] for t in timings) for label in labels}
        results.append({"algorithm": algorithm.name, "dtype": dtype, "size": size,
                        "us": best,
                        "slowdown": best["subnormal"] / best["normal"],
                        "slowdown_ftz": best["subnormal_ftz"] / best["normal_ftz"],
                        "slowdown_passes": [t["subnormal"] / t["normal"] for t in timings],
                        "slowdown_ftz_passes": [t["subnormal_ftz"] / t["normal_ftz"]
                                                for t in timings]})
    return results


def _subnormal_pass(algorithm, size, dtype, rounds, tiny):
    """One algorithm's microseconds per step of one pass of :func:`subnormal`."""
    hyper = bench_hyper(algorithm)
    kwargs = _functional_kwargs(algorithm, hyper, 10)
    calls = {}
    for label, scale in (("normal", 1.0), ("subnormal", tiny / 8)):
        param = np.full(size, 0.5 * scale if scale < 1 else 0.5, dtype=dtype)
        grad = np.full(size, scale, dtype=dtype)
        state = [np.full(size, scale, dtype=dtype) if spec.needed(hyper) else None
                 for spec in algorithm.state]
        buffers = [param, grad] + [b for b in state if b is not None]
        start = [b.copy() for b in buffers]
        calls[label] = (functools.partial(_restore, buffers, start),
                        functools.partial(algorithm.functional, param, grad, *state,
                                          **kwargs))
    timings = {}
    for flush in (False, True):
        # normal and subnormal state interleaved: the ratio of one run
        _kernels.set_flush_denormal(flush)
        try:
            best = time_prepared(calls, rounds)
        finally:
            _kernels.set_flush_denormal(False)
        for label, (seconds, *_) in best.items():
            timings[f"{label}{'_ftz' if flush else ''}"] = seconds * 1e6
    return timings


def _restore(buffers, start):
    for buffer, values in zip(buffers, start):
        np.copyto(buffer, values)


def isa_comparison(size=65536, dtype="float32", rounds=15, min_batch=MIN_BATCH_SECONDS):
    """fastopt's time per step at `size` elements with each available instruction set."""
    before = _kernels.get_isa()
    results = []
    try:
        for algorithm in ALGORITHMS.values():
            case = Case(algorithm, dtype, size, 1, use_torch=False)
            calls = {}
            for isa in _kernels.isa_available():
                def call(isa=isa):
                    _kernels.set_isa(isa)
                    case.optimizer.step([case.grad])
                calls[isa] = call
            timed = time_interleaved(calls, rounds, min_batch)
            results.append({"algorithm": algorithm.name, "dtype": dtype, "size": size,
                            "us": {k: v[0] * 1e6 for k, v in timed.items()}})
    finally:
        _kernels.set_isa(before)
    return results


# -- the targets of issue 3 ------------------------------------------------------------

#: A miss counts as ruled out when the best any kernel can reach (by the ceiling and
#: the divider floor, themselves measurements as noisy as the rest) is under the
#: target by more than this factor.
MARGIN = 1.1


def _best_us(result):
    """The least time any kernel with the case's memory shape and divider work can
    take: the ceiling's, or the divider floor's pass by pass where that is longer."""
    ceiling = result["impls"]["ceiling"]["us"]
    fraction = result.get("best_fraction_of_ceiling") or 1.0
    return ceiling / fraction


def _verdict(target, value, bound, at_least=True, resolution=None):
    """One measurement against its target.  `bound`: the best any implementation can
    reach, or None where nothing bounds it; `resolution`: the run's resolution at the
    case's size (``_resolution``), or None.  Returns "met", "ruled out" (the bound
    misses the target by more than MARGIN), "bounded" (the bound misses it, within
    the margin), "at the ceiling" (the bound allows the target, but the measurement
    lies within the run's resolution of the bound: this run cannot tell fastopt from
    the best kernel there, so no better kernel can be shown to meet the target in it)
    or "open" (the bound allows the target and fastopt is measurably short of it)."""
    ok = value >= target if at_least else value <= target
    if ok:
        return "met"
    if bound is not None and bound < target:
        return "ruled out" if bound < target / MARGIN else "bounded"
    if (bound is not None and resolution is not None and at_least
            and value >= bound * math.exp(-resolution)):
        return "at the ceiling"
    return "open"


def _resolution(pairs):
    """How far apart the run reads two identical kernels: twice the root mean square
    of ``log(first / second)`` over `pairs`, each a kernel's two timings, interleaved
    as two implementations (the ceiling and the ceiling again), about a 95% band for
    the ratio of two timings (their logarithms' difference).  None without pairs (JSON
    of earlier versions has no second timing)."""
    logs = [math.log(a / b) for a, b in pairs]
    if not logs:
        return None
    return 2.0 * math.sqrt(sum(x * x for x in logs) / len(logs))


def _roofline_pairs(rows):
    return [(r["impls"]["ceiling"]["us"], r["ceiling_again_us"])
            for r in rows if r.get("ceiling_again_us")]


def _thread_pairs(rows, key):
    return [(r["ceiling_us"][key], r["ceiling_again_us"][key])
            for r in rows if key in (r.get("ceiling_again_us") or {})]


def _thread_bound(row, key):
    """The most the thread count `key` can gain over fastopt's one-thread step: that
    step's time over the ceiling's with `key` threads (no step with that many threads
    takes less than the ceiling with as many), or None for a row without the ceiling."""
    ceiling = row.get("ceiling_us") or {}
    if key not in ceiling or "threads=1" not in row["us"]:
        return None
    return row["us"]["threads=1"] / ceiling[key]


def _label(r):
    return f"{r['algorithm']} {r['dtype'][-2:]}"


def evaluate_targets(report, size=16_000_000, small_size=65_536):
    """Every target of the benchmark that `report` (``fastopt bench --extra``'s JSON)
    measured: a list of dicts with "target", "status" (met, partly met, not met) and
    per-case "cases" [(label, value, bound, verdict)].  Bounds: the best fraction of
    the ceiling the divider floor leaves, and the most any kernel can gain over torch
    or NumPy (their time over the least time the ceiling and the floor leave)."""
    out = []
    roof = report.get("roofline") or []
    big = [r for r in roof if r["size"] == size and r["threads"] == 1]
    small = [r for r in roof if r["size"] == small_size and r["threads"] == 1]

    def add(target, text, cases, resolution=None):
        verdicts = [c[3] for c in cases]
        status = ("met" if all(v == "met" for v in verdicts) else
                  "not met" if not any(v == "met" for v in verdicts) else "partly met")
        out.append({"target": target, "text": text, "status": status, "cases": cases,
                    "resolution": resolution})

    def cases_of(rows, target, value, bound, resolution):
        return [(_label(r), value(r), bound(r),
                 _verdict(target, value(r), bound(r), resolution=resolution))
                for r in rows]

    big_resolution = _resolution(_roofline_pairs(big))
    small_resolution = _resolution(_roofline_pairs(small))
    if big:
        add("ceiling", f"{size:,} elements, one thread: >= 0.90 of the ceiling",
            cases_of(big, 0.90, lambda r: r["fraction_of_ceiling"],
                     lambda r: r.get("best_fraction_of_ceiling"), big_resolution),
            big_resolution)
        fused = [r for r in big if r.get("speedup_vs_torch") is not None]
        add("torch", f"{size:,} elements: >= 1.1x torch (fused where it exists)",
            cases_of(fused, 1.1, lambda r: r["speedup_vs_torch"],
                     lambda r: r["impls"]["torch"]["us"] / _best_us(r), big_resolution),
            big_resolution)
        add("numpy", f"{size:,} elements: >= 10x naive NumPy",
            cases_of(big, 10.0, lambda r: r["speedup_vs_numpy"],
                     lambda r: r["impls"]["numpy"]["us"] / _best_us(r), big_resolution),
            big_resolution)
    fused_small = [r for r in small if r.get("torch_path") == "fused"]
    if fused_small:
        add("torch_small", f"{small_size:,} elements: >= 3x torch fused",
            cases_of(fused_small, 3.0, lambda r: r["speedup_vs_torch"],
                     lambda r: r["impls"]["torch"]["us"] / _best_us(r), small_resolution),
            small_resolution)
    p2 = report.get("power_of_two")
    if p2:
        add("power_of_two", "2**24 elements: >= 0.85 of the per-element rate at 16,000,000",
            [(f"{r['algorithm']} {r['dtype'][-2:]}", r["rate_ratio"], None,
              _verdict(0.85, r["rate_ratio"], None)) for r in p2])
    many = report.get("many_small")
    if many:
        add("many_small", f"{many['count']} float32 parameters of {many['size']:,} elements: "
            f"<= 1.5x one {many['count'] * many['size']:,}-element step",
            [("many / one", many["many_over_one"], None,
              _verdict(1.5, many["many_over_one"], None, at_least=False))])
        if many.get("speedup_vs_torch") is not None:
            add("many_small_torch", "... and >= 4x faster than torch fused",
                [("x torch", many["speedup_vs_torch"], None,
                  _verdict(4.0, many["speedup_vs_torch"], None))])
    f16 = report.get("functional_16")
    if f16:
        add("functional_16", "functional kernel on 16 elements: <= 1 us per call",
            [(name, v["us"], None, _verdict(1.0, v["us"], None, at_least=False))
             for name, v in f16.items()])
    threads = report.get("threads_scaling")
    if threads:
        key = "threads=2"
        rows = [r for r in threads if key in r["speedup"]]
        if rows:
            resolution = _resolution(_thread_pairs(rows, key))
            add("threads", f"two threads: >= 1.5x at {rows[0]['size']:,} elements",
                [(r["algorithm"], r["speedup"][key], _thread_bound(r, key),
                  _verdict(1.5, r["speedup"][key], _thread_bound(r, key),
                           resolution=resolution)) for r in rows], resolution)
    sub = report.get("subnormal")
    if sub:
        add("subnormal", "subnormal state: <= 2x slower than normal",
            [(_label(r), r["slowdown"], None,
              _verdict(2.0, r["slowdown"], None, at_least=False)) for r in sub])
        add("subnormal_ftz", "... with fastopt.set_flush_denormal(True)",
            [(_label(r), r["slowdown_ftz"], None,
              _verdict(2.0, r["slowdown_ftz"], None, at_least=False)) for r in sub])
    return out


def format_targets(report):
    """The targets as a Markdown table: each target, how many cases meet it, which do
    not and whether the ceiling or the floor rules them out, and every value."""
    lines = [f"A miss is *ruled out* where the best any kernel can reach (the ceiling, "
             f"and the divider floor pass by pass) misses the target by more than "
             f"{MARGIN:g}x (the bounds are measurements too); *bounded* where that best "
             f"misses it by less; *at the ceiling* where that best allows the target "
             f"but the measurement lies within the run's resolution of it (how far "
             f"apart the run reads the ceiling and the same ceiling timed again, as "
             f"given with the target); *open* where the bounds allow the target and "
             f"fastopt is measurably short of it.", "",
             "| target | result | misses | measured (bound) |", "|---|---|---|---|"]
    for t in evaluate_targets(report):
        cases = t["cases"]
        met = sum(c[3] == "met" for c in cases)
        misses = [c for c in cases if c[3] != "met"]
        miss_text = "; ".join(
            f"{kind}: " + ", ".join(c[0] for c in misses if c[3] == kind)
            for kind in ("ruled out", "bounded", "at the ceiling", "open")
            if any(c[3] == kind for c in misses)) or "-"
        measured = ", ".join(
            f"{c[0]} {c[1]:.2f}" + (f" ({c[2]:.2f})" if c[2] is not None and c[3] != "met"
                                    else "") for c in cases)
        text = t["text"]
        if t.get("resolution") is not None:
            text += f" (resolution {100 * math.expm1(t['resolution']):.1f}%)"
        lines.append(f"| {text} | **{t['status']}** ({met} of {len(cases)}) "
                     f"| {miss_text} | {measured} |")
    return "\n".join(lines)


# -- output --------------------------------------------------------------------------

def environment(use_torch=True):
    from .info import describe
    info = describe()
    info["torch"] = None
    if use_torch:
        try:
            import torch
            info["torch"] = torch.__version__
            info["torch_threads"] = torch.get_num_threads()
        except ImportError:
            pass
    info["cpu"] = _cpu_name()
    info["cpus"] = os.cpu_count()
    return info


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def format_roofline(results):
    """The roofline results as a Markdown table."""
    lines = ["| algorithm | dtype | size | B/elem | fastopt us | GB/s | ceiling us | of ceiling "
             "| floor us | numpy us | x numpy | torch us | torch path | x torch |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        i = r["impls"]
        torch_us = i["torch"]["us"] if "torch" in i else None
        lines.append(
            f"| {r['algorithm']} | {r['dtype']} | {r['size']:,} | {r['bytes_per_element']} "
            f"| {i['fastopt']['us']:.1f} | {i['fastopt']['gbps']:.1f} "
            f"| {i['ceiling']['us']:.1f} | {r['fraction_of_ceiling']:.2f} "
            f"| {_fmt(r.get('floor_us'), '.1f')} "
            f"| {i['numpy']['us']:.1f} | {r['speedup_vs_numpy']:.1f} "
            f"| {_fmt(torch_us, '.1f')} | {r['torch_path'] or '-'} "
            f"| {_fmt(r['speedup_vs_torch'], '.2f')} |")
    return "\n".join(lines)


def format_markdown(report):
    """The whole report as Markdown: environment, command, roofline, --extra."""
    env = report["environment"]
    lines = [f"Command: `python -m {report['command'].strip()}`",
             "",
             f"Machine: {env['cpu']}, {env['cpus']} CPUs; fastopt {env['fastopt']}, NumPy "
             f"{env['numpy']}, torch {env.get('torch')}, Python {env['python']}; instruction "
             f"set {env['isa']}; OpenMP {env['openmp']}; software prefetch "
             f"{'on' if env.get('prefetch', True) else 'off'}; FMA division "
             f"{env.get('fma_division', 'all')}; {report['threads']} thread(s).",
             "", f"Byte model: {report['byte_model']}.", "",
             "### Targets", "", format_targets(report), "",
             "### Roofline", "", format_roofline(report["roofline"]), ""]
    extra = format_extra(report)
    if extra:
        lines += [extra]
    return "\n".join(lines) + "\n"


def _passes(ratios):
    """A row's slowdown in each pass of :func:`subnormal`, for the tables."""
    return " ".join(f"{r:.2f}" for r in ratios) if ratios else "-"


def format_extra(report):
    """The --extra results as Markdown sections."""
    out = []
    many = report.get("many_small")
    if many:
        i = many["impls"]
        out += ["### Many small parameters (Adam, float32)", "",
                f"| {many['count']} x {many['size']:,} (us) | 1 x {many['count'] * many['size']:,} "
                "(us) | many / one | torch fused, many (us) | x torch |",
                "|---:|---:|---:|---:|---:|",
                f"| {i['fastopt_many']['us']:.1f} | {i['fastopt_one']['us']:.1f} "
                f"| {many['many_over_one']:.2f} | {_fmt(i.get('torch_many', {}).get('us'), '.1f')} "
                f"| {_fmt(many.get('speedup_vs_torch'), '.1f')} |", ""]
    small = report.get("functional_16")
    if small:
        out += ["### Functional call on 16 float32 elements", "",
                "Best microseconds per call, and an empty Python function with the same "
                "signature called the same way.", "",
                "| | " + " | ".join(small) + " |", "|---|" + "---:|" * len(small),
                "| fastopt | " + " | ".join(f"{v['us']:.2f}" for v in small.values()) + " |",
                "| empty function | " + " | ".join(f"{v['no_op_us']:.2f}"
                                                   for v in small.values()) + " |", ""]
    p2 = report.get("power_of_two")
    if p2:
        out += ["### 2**24 elements: per-element rate over the rate at 16,000,000", "",
                "| algorithm | dtype | rate ratio |", "|---|---|---:|"]
        out += [f"| {r['algorithm']} | {r['dtype']} | {r['rate_ratio']:.2f} |" for r in p2]
        out.append("")
    threads = report.get("threads_scaling")
    if threads:
        keys = list(threads[0]["us"])
        # The ceiling's columns where the rows have them (JSON of earlier versions not).
        ckeys = list(threads[0].get("ceiling_us") or {})
        pkeys = [k for k in keys[1:] if threads[0].get("speedup_passes")]
        head = ([f"{k} us" for k in keys] + [f"speedup {k}" for k in keys[1:]]
                + [f"ceiling {k} us" for k in ckeys]
                + [f"ceiling speedup {k}" for k in ckeys[1:]]
                + [f"most {k} can gain" for k in ckeys[1:]]
                + [f"speedup {k}, each pass" for k in pkeys])
        out += [f"### Threads, {threads[0]['size']:,} elements, {threads[0]['dtype']}", "",
                "| algorithm | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
        for r in threads:
            ceiling = r.get("ceiling_us") or {}
            cells = ([f"{r['us'][k]:.1f}" for k in keys]
                     + [f"{r['speedup'][k]:.2f}" for k in keys[1:]]
                     + [f"{ceiling[k]:.1f}" if k in ceiling else "-" for k in ckeys]
                     + [f"{r['ceiling_speedup'][k]:.2f}" if k in ceiling else "-"
                        for k in ckeys[1:]]
                     + [f"{_thread_bound(r, k):.2f}" if k in ceiling else "-"
                        for k in ckeys[1:]]
                     + [", ".join(f"{p[k]:.2f}" for p in r.get("speedup_passes", []))
                        or "-" for k in pkeys])
            out.append(f"| {r['algorithm']} | " + " | ".join(cells) + " |")
        out.append("")
    sub = report.get("subnormal")
    if sub:
        out += [f"### Subnormal state, {sub[0]['size']:,} elements", "",
                "| algorithm | dtype | normal us | subnormal us | slowdown | each pass "
                "| with flush-to-zero: normal us | subnormal us | slowdown | each pass |",
                "|---|---|---:|---:|---:|---|---:|---:|---:|---|"]
        out += [f"| {r['algorithm']} | {r['dtype']} | {r['us']['normal']:.1f} "
                f"| {r['us']['subnormal']:.1f} "
                f"| {r['slowdown']:.2f} | {_passes(r.get('slowdown_passes'))} "
                f"| {r['us']['normal_ftz']:.1f} | {r['us']['subnormal_ftz']:.1f} "
                f"| {r['slowdown_ftz']:.2f} | {_passes(r.get('slowdown_ftz_passes'))} |"
                for r in sub]
        out.append("")
    isa = report.get("isa")
    if isa:
        keys = list(isa[0]["us"])
        out += [f"### Instruction sets, {isa[0]['size']:,} elements, {isa[0]['dtype']} (us)", "",
                "| algorithm | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        out += [f"| {r['algorithm']} | " + " | ".join(f"{r['us'][k]:.1f}" for k in keys) + " |"
                for r in isa]
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastopt bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=None,
                        help="registry names (default: every algorithm)")
    parser.add_argument("--dtypes", nargs="+", default=list(DEFAULT_DTYPES),
                        choices=list(DEFAULT_DTYPES))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES))
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for fastopt and torch (default 1)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="timed rounds per case (default: 15, or 5 at >= 4M elements)")
    parser.add_argument("--min-batch", type=float, default=MIN_BATCH_SECONDS,
                        help="shortest timed batch in seconds (default %(default)s)")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out")
    parser.add_argument("--extra", action="store_true",
                        help="also measure the other targets (many small parameters, "
                             "16-element functional calls, 2**24 elements, threads, "
                             "subnormals, instruction sets)")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON here")
    parser.add_argument("--markdown", metavar="PATH",
                        help="write the tables as Markdown here (for BENCHMARKS.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument("--targets", metavar="JSON",
                        help="measure nothing: print the targets met and missed in a "
                             "JSON report written before (by --json)")
    args = parser.parse_args(argv)
    if args.targets:
        try:
            with open(args.targets) as f:
                report = json.load(f)
        except (OSError, ValueError) as exc:
            parser.error(f"--targets: cannot read a report from {args.targets}: {exc}")
        if not isinstance(report, dict) or "roofline" not in report:
            parser.error(f"--targets: {args.targets} is not a report of fastopt bench --json")
        print(format_targets(report))
        return 0
    algorithms = ([ALGORITHMS[a] for a in args.algorithms] if args.algorithms
                  else list(ALGORITHMS.values()))
    use_torch = not args.no_torch
    openmp_threads = None
    if use_torch:
        try:
            import torch
            openmp_threads = torch.get_num_threads()
            torch.set_num_threads(args.threads)
        except ImportError:
            use_torch = False
    threads_before = _kernels.get_num_threads_setting()
    _kernels.set_num_threads(args.threads)   # the functional calls of --extra too
    try:
        return _main(args, argv, use_torch, openmp_threads)
    finally:
        _kernels.set_num_threads(threads_before or None)


def _main(args, argv, use_torch, openmp_threads=None):
    algorithms = ([ALGORITHMS[a] for a in args.algorithms] if args.algorithms
                  else list(ALGORITHMS.values()))
    report = {"environment": environment(use_torch), "command": "fastopt bench " + " ".join(argv or []),
              "byte_model": "itemsize * ((2 + S) reads + (1 + S) writes) per element, S = "
                            "state buffers used", "threads": args.threads}
    report["roofline"] = roofline(algorithms, args.dtypes, args.sizes, args.threads,
                                  args.rounds, use_torch, args.quiet, args.min_batch)
    env = report["environment"]
    print(f"fastopt {env['fastopt']} on {env['cpu']}, isa={env['isa']}, "
          f"threads={args.threads}, torch {env.get('torch')}")
    print(format_roofline(report["roofline"]))
    if args.extra:
        kw = {"min_batch": args.min_batch}
        _progress("many small parameters ...", args.quiet)
        report["many_small"] = many_small(args.threads, use_torch=use_torch, **kw)
        _progress("functional, 16 elements ...", args.quiet)
        report["functional_16"] = functional_small(**kw)
        report["power_of_two"] = power_of_two(args.dtypes, args.threads, quiet=args.quiet,
                                              algorithms=algorithms, **kw)
        report["threads_scaling"] = thread_scaling(quiet=args.quiet,
                                                   openmp_threads=openmp_threads, **kw)
        _progress("subnormals ...", args.quiet)
        report["subnormal"] = [row for dtype in args.dtypes for row in subnormal(dtype=dtype)]
        _progress("instruction sets ...", args.quiet)
        report["isa"] = isa_comparison(**kw)
        _progress("", args.quiet)
        print(format_extra(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(format_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
