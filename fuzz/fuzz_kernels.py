"""atheris harness over fastopt's functional kernels.

Each input picks an algorithm and, for every buffer, a dtype, a size, a byte offset
into shared backing memory (so buffers may be misaligned, alias each other exactly or
overlap in part), a stride, a direction, a 2-D transposition and writeability; then
the hyperparameters (in range, out of range, NaN, infinity, wrong types), the step and
the first-step flag, and the values (any float, NaN and infinity included).

The harness judges the call independently of fastopt's own checks, and asserts:

* if the inputs are legal, the call succeeds, the gradient is untouched, and parameter
  and state equal the NumPy reference's bits (NaN in the same places);
* if they are not, a TypeError or ValueError naming an argument is raised and not one
  byte of any backing memory changed.

Run with ``python fuzz/fuzz_kernels.py [libFuzzer options] [corpus dirs]``; see
fuzz/README.md.
"""
import collections
import math
import numbers
import os
import sys
import warnings

import atheris

with atheris.instrument_imports(include=["fastopt"]):
    import fastopt

import numpy as np

# Algorithms whose functional also takes scalars derived from scalar state
# (``Algorithm.advanced``, where the registry has it) are not fuzzed yet.
ALGORITHMS = [a for a in fastopt.ALGORITHMS.values() if not getattr(a, "advanced", ())]
DTYPES = [np.float32, np.float64, np.float32, np.float64, np.float16, np.int32, np.int64,
          np.bool_, np.complex64, np.complex128, np.longdouble, object, ">f4", ">f8"]
MAX_SIZE = 40
BACKING_BYTES = MAX_SIZE * 3 * 16 + 64
# FASTOPT_FUZZ_STATS=1 prints how often each outcome happened, to see that the inputs
# reach both the rejections and the kernels.
# (libFuzzer exits without running atexit handlers, so they are printed as it goes.)
OUTCOMES = collections.Counter()
STATS = bool(os.environ.get("FASTOPT_FUZZ_STATS"))
SPECIAL = [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 5e-324, 1.4e-45, 1e-30,
           1e30, 3.4e38, 1.7e308, 0.5, 0.9, 0.999, 1.0 - 1e-16]


def pick(fdp, options):
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def some_float(fdp):
    return pick(fdp, SPECIAL) if fdp.ConsumeBool() else fdp.ConsumeFloat()


def bad_or(fdp, good, hostile):
    """`good`, or in a hostile input sometimes a value of the wrong type."""
    if not hostile or fdp.ConsumeIntInRange(0, 15):
        return good
    return pick(fdp, ["0.1", None, True, [0.1], 1 + 0j, np.array([0.5]), object()])


def in_range_float(fdp, kind):
    """A legal value for a check kind, anywhere in its range."""
    value = abs(some_float(fdp))
    if not math.isfinite(value):
        value = pick(fdp, [0.0, 1e300])
    if kind == "unit":
        value = value if value <= 1 else 1 / value
    return value


def hyper_value(fdp, hyper, algorithm, hostile):
    kind = hyper.check
    if kind == "bool":
        return bad_or(fdp, fdp.ConsumeBool(), hostile)
    if kind not in ("nonneg", "finite", "unit", "betas"):
        # other kinds: configured values and the default, or (hostile) anything
        values = [c[hyper.name] for c in algorithm.configs if hyper.name in c]
        if not hostile or fdp.ConsumeIntInRange(0, 1):
            return pick(fdp, values + [hyper.default])
        return bad_or(fdp, pick(fdp, [some_float(fdp), (some_float(fdp), some_float(fdp)),
                                      (some_float(fdp),) * 3]), hostile)
    if kind == "betas":
        if not hostile or fdp.ConsumeIntInRange(0, 3):
            pair = tuple(pick(fdp, [0.0, 0.3, 0.9, 0.99, 0.999, 1 - 2**-52,
                                    in_range_float(fdp, "unit") % 1.0]) for _ in range(2))
        else:
            pair = (some_float(fdp), some_float(fdp))
        return bad_or(fdp, pair if not hostile or fdp.ConsumeIntInRange(0, 7) else pair[:1],
                      hostile)
    if fdp.ConsumeIntInRange(0, 2):  # a value from a test configuration, or the default
        values = [c[hyper.name] for c in algorithm.configs if hyper.name in c]
        return pick(fdp, values + [hyper.default])
    if not hostile:
        return -in_range_float(fdp, kind) if kind == "finite" and fdp.ConsumeBool() \
            else in_range_float(fdp, kind)
    return bad_or(fdp, some_float(fdp), hostile)


# -- an independent judgement of legality ---------------------------------------------

def _as_float(v):
    """`v` as a float (an int beyond the double range as a signed infinity), or None if
    it is no real number (bools are not)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return None
    try:
        return float(v)
    except OverflowError:
        return math.copysign(math.inf, v)


def _real_ok(v, low, high, high_open):
    v = _as_float(v)
    return v is not None and low <= v and (v < high if high_open else v <= high)


def _reals(value, count):
    return (isinstance(value, (tuple, list)) and len(value) == count
            and all(_as_float(v) is not None for v in value))


def hyper_legal(hyper, value):
    kind = hyper.check
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if kind == "real":
        return _real_ok(value, -math.inf, math.inf, False)  # NaN fails the comparison
    if kind == "nonpos":
        return _real_ok(value, -math.inf, 0.0, False) and _as_float(value) != -math.inf
    if kind == "at_least_one":
        return _real_ok(value, 1.0, math.inf, True)
    if kind == "pair":
        return _reals(value, 2) and not any(math.isnan(_as_float(v)) for v in value)
    if kind == "etas":
        return _reals(value, 2) and 0.0 < _as_float(value[0]) < 1.0 < _as_float(value[1])
    if kind == "betas3":
        return _reals(value, 3) and all(0.0 <= _as_float(v) < 1.0 for v in value)
    if kind == "adafactor_eps":
        return (isinstance(value, (tuple, list)) and len(value) == 2
                and (value[0] is None or _real_ok(value[0], 0.0, math.inf, True))
                and _real_ok(value[1], 0.0, math.inf, True))
    if kind == "nonneg":
        return _real_ok(value, 0.0, math.inf, True)
    if kind == "finite":
        return _real_ok(value, -math.inf, math.inf, True) and _as_float(value) != -math.inf
    if kind == "unit":
        return _real_ok(value, 0.0, 1.0, False)
    if kind == "betas":
        return (isinstance(value, (tuple, list)) and len(value) == 2
                and all(_real_ok(b, 0.0, 1.0, True) for b in value))
    raise AssertionError(f"the harness does not know the check {kind!r}")


def buffers_legal(buffers, written, shapes):
    arrays = [b for b in buffers if b is not None]
    if len(arrays) != len(buffers) or not all(type(b) is np.ndarray for b in arrays):
        return False
    param = arrays[0]
    if param.dtype not in (np.float32, np.float64) or not param.dtype.isnative:
        return False
    for b, w, shape in zip(arrays, written, shapes):
        if (b.dtype != param.dtype or not b.flags.c_contiguous or not b.flags.aligned
                or b.shape != shape or (w and not b.flags.writeable)):
            return False
    for i, (a, wa) in enumerate(zip(arrays, written)):
        for b, wb in zip(arrays[i + 1:], written[i + 1:]):
            if (wa or wb) and np.shares_memory(a, b):
                return False
    return True


# -- building buffers ---------------------------------------------------------------------

class Memory:
    """Backing bytearrays that buffers are carved from, so that they can alias."""

    def __init__(self):
        self.backings = []
        self.objects = []

    def snapshot(self):
        return [bytes(b) for b in self.backings], [repr(o.tolist()) for o in self.objects]


def make_buffer(fdp, memory, dtype, shape, values, hostile, read_only_ok):
    if hostile and fdp.ConsumeIntInRange(0, 31) == 0:
        return pick(fdp, [None, values.tolist(), 1.0, memoryview(values.astype(np.float64))])
    dtype = np.dtype(dtype)
    if dtype == object:
        array = np.array(values.tolist(), dtype=object).reshape(shape)
        memory.objects.append(array)
        return array
    if hostile and memory.backings and fdp.ConsumeIntInRange(0, 3) == 0:
        backing = pick(fdp, memory.backings)  # share memory with an earlier buffer
    else:
        backing = bytearray(BACKING_BYTES)
        memory.backings.append(backing)
    if hostile:
        offset = pick(fdp, [0, 0, 0, 8, 16, 1, 2, 4, fdp.ConsumeIntInRange(0, 63)])
        stride = pick(fdp, [1, 1, 1, 1, 2, 3])
    else:
        offset, stride = pick(fdp, [0, 16, 32, 48]), 1
    transpose = hostile and len(shape) == 2 and fdp.ConsumeIntInRange(0, 7) == 0
    full = shape[::-1] if transpose else shape
    strides = []
    step = dtype.itemsize * stride
    for extent in reversed(full):
        strides.insert(0, step)
        step *= max(extent, 1)
    view = np.ndarray(full, dtype=dtype, buffer=backing, offset=offset, strides=tuple(strides))
    if transpose:
        view = view.T
    if hostile and view.ndim and fdp.ConsumeIntInRange(0, 15) == 0:
        view = view[::-1]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view[...] = values.astype(dtype)
    if (hostile or read_only_ok) and fdp.ConsumeIntInRange(0, 7) == 0:
        view.flags.writeable = False
    return view


def test_one_input(data):
    if STATS and sum(OUTCOMES.values()) % 10_000 == 0:
        print("outcomes:", dict(OUTCOMES), file=sys.stderr)
    fdp = atheris.FuzzedDataProvider(data)
    # A third of the inputs are hostile (any choice may be illegal); the rest are legal
    # in every choice but the values, so that the kernels themselves are fuzzed too.
    hostile = fdp.ConsumeIntInRange(0, 2) == 0
    algorithm = pick(fdp, ALGORITHMS)
    hyper = {h.name: hyper_value(fdp, h, algorithm, hostile) for h in algorithm.hyper
             if h.kernel_names != ()}
    if hostile:
        step = pick(fdp, [1, 2, 1000, fdp.ConsumeIntInRange(-3, 2**54), 2.0, "1", None])
    else:
        step = pick(fdp, [1, 2, 3, 10, 1000, fdp.ConsumeIntInRange(1, 2**53)])
    first_step = bad_or(fdp, fdp.ConsumeBool(), hostile)
    size = MAX_SIZE - fdp.ConsumeIntInRange(0, MAX_SIZE)  # short inputs: large sizes
    shape = pick(fdp, [(size,), (size,), (), (1, size), (size, 1), (2, size // 2)])
    count = int(np.prod(shape))
    main_dtype = pick(fdp, DTYPES if hostile else [np.float32, np.float64])
    # a factored state (State.shape_for, where a registry row has it) has its own
    # shape, and none (unused) for some parameter shapes
    slot_shapes = [shape, shape] + [
        shape if getattr(spec, "shape_for", None) is None else spec.shape_for(shape)
        for spec in algorithm.state]
    try:
        state_needed = [s.needed(hyper) and slot_shapes[2 + i] is not None
                        for i, s in enumerate(algorithm.state)]
    except Exception:  # noqa: BLE001 -- needed() over values of the wrong type
        state_needed = [True] * len(algorithm.state)
    memory = Memory()
    buffers = []
    for slot in range(len(algorithm.buffer_names)):
        good_shape = slot_shapes[slot] if slot_shapes[slot] is not None else shape
        values = np.array([some_float(fdp) for _ in range(count)]).reshape(shape)
        if slot >= 2:
            values = np.abs(values)  # state such as a running square starts non-negative
        dtype = main_dtype if not hostile or fdp.ConsumeIntInRange(0, 15) else pick(fdp, DTYPES)
        buffer_shape = good_shape if not hostile or fdp.ConsumeIntInRange(0, 15) else pick(
            fdp, [(count,), (count + 1,), shape[::-1], (1,) + shape])
        if slot >= 2 and (hostile or not state_needed[slot - 2]) and fdp.ConsumeBool():
            buffers.append(None)
            continue
        values = np.resize(values, buffer_shape)
        buffers.append(make_buffer(fdp, memory, dtype, buffer_shape, values, hostile,
                                   read_only_ok=slot == 1))
    kwargs = dict(hyper)
    if "step" in algorithm.per_param:  # the functional takes a step
        kwargs["step"] = step
    if "first_step" in algorithm.per_param:
        kwargs["first_step"] = first_step

    # -- the independent judgement
    legal_hyper = all(hyper_legal(h, hyper[h.name]) for h in algorithm.hyper
                      if h.kernel_names != ())
    if "step" in algorithm.per_param:  # the functional takes a step
        legal_hyper &= (isinstance(step, numbers.Integral) and not isinstance(step, bool)
                        and 1 <= step <= 2**53)
    if "first_step" in algorithm.per_param:
        legal_hyper &= isinstance(first_step, (bool, np.bool_))
    needed = [True, True]
    if legal_hyper:
        try:
            needed += [s.needed(hyper) and slot_shapes[2 + i] is not None
                       for i, s in enumerate(algorithm.state)]
        except Exception:  # noqa: BLE001 -- a needed() over odd values; judged below
            legal_hyper = False
    used = [b for b, n in zip(buffers, needed) if n] if legal_hyper else []
    written = [slot != 1 for slot, n in enumerate(needed) if n]
    shapes = [slot_shapes[slot] for slot, n in enumerate(needed) if n]
    legal = legal_hyper and buffers_legal(used, written, shapes)
    if legal and algorithm.cross_check is not None:
        try:
            algorithm.cross_check(hyper)
        except ValueError:
            legal = False

    before = memory.snapshot()
    reference_inputs = None
    if legal:
        reference_inputs = [None if b is None or not n else np.array(b, copy=True)
                            for b, n in zip(buffers, needed)]
        reference_inputs += [None] * (len(buffers) - len(reference_inputs))
    try:
        with np.errstate(all="ignore"):
            algorithm.functional(*buffers, **kwargs)
    except (TypeError, ValueError) as error:
        if memory.snapshot() != before:
            raise AssertionError(f"rejected ({error}) after writing to memory") from error
        if legal:
            raise AssertionError(f"legal input rejected: {error}") from error
        message = str(error)
        names = list(algorithm.buffer_names) + ["step", "first_step", "Invalid",
                                                "Nesterov", "argument"]
        names += [h.name for h in algorithm.hyper]
        if not any(name in message for name in names):
            raise AssertionError(f"the message names no argument: {message!r}") from error
        OUTCOMES[type(error).__name__] += 1
        return
    if not legal:
        raise AssertionError("an illegal input was accepted")
    grad_before = reference_inputs[1].tobytes()
    assert buffers[1].tobytes() == grad_before, "the gradient was written"
    with np.errstate(all="ignore"):
        algorithm.reference(*reference_inputs, **kwargs)
    for slot, (mine, ref) in enumerate(zip(buffers, reference_inputs)):
        if ref is None or slot == 1:
            continue
        nan = np.isnan(ref)
        if not np.array_equal(np.isnan(mine), nan) or mine[~nan].tobytes() != ref[~nan].tobytes():
            raise AssertionError(f"{algorithm.buffer_names[slot]} differs from the reference: "
                                 f"{mine!r} != {ref!r} ({algorithm.name}, {kwargs})")
    OUTCOMES["matched the reference, size > 0" if buffers[0].size else "accepted, size 0"] += 1


def main():
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
