"""No leaks: 10,000 steps of every algorithm, through every API path and every error
path, leave reference counts, the number of live Python objects and the resident
memory where they were after warm-up.

Reference counts catch a buffer the compiled layer keeps a reference to (or drops one
too many); the count of gc-tracked objects catches Python containers that pile up; the
resident set (Linux ``/proc/self/statm``) catches C memory that is never freed -- the
task table, the scalars and the overlap spans of a step are malloc'ed, and a step that
raises must free them too.  A leak of a single 64-byte block per step would show as
160 pages here.
"""
import gc
import os
import sys

import numpy as np
import pytest

from conftest import ALGORITHMS, functional_kwargs, new_state

WARMUP = 2500
STEPS = 10_000
# Resident-set slack in pages: allocator bookkeeping may move by a page or two, but
# 10,000 leaked steps of even 8 bytes each would be 20 pages.
RSS_SLACK_PAGES = 2

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="resident memory is read from /proc/self/statm")


def under_address_sanitizer():
    """AddressSanitizer holds freed memory in quarantine (hundreds of MB), so the
    resident set grows by design under tools/sanitize.sh; reference counts still count."""
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def resident_pages():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])


def richest_config(algorithm):
    configs = [dict(algorithm.defaults, **c) for c in algorithm.configs]
    return max(configs, key=lambda h: sum(s.needed(h) for s in algorithm.state))


def class_paths(algorithm):
    """Step callables (and the arrays whose reference counts they must not change)
    through the optimizer class: good steps, and steps that raise at each stage."""
    rng = np.random.default_rng(0)
    hyper = dict(richest_config(algorithm), lr=1e-6)
    params = [rng.standard_normal(64), rng.standard_normal(7), np.zeros(0)]
    grads = [rng.standard_normal(p.shape) * 1e-3 for p in params]
    opt = algorithm.cls([{"params": params[:2]}, {"params": params[2:]}], **hyper)
    opt.step(grads)
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray)]
    watched = params + grads + state

    def good():
        opt.step(grads)

    wrong_dtype = [grads[0], grads[1].astype(np.float32), grads[2]]
    aliased = [grads[0], params[1], grads[2]]  # caught by the overlap sweep, after malloc
    wrong_length = grads[:2]

    def raises():
        for bad in (wrong_dtype, aliased, wrong_length):
            try:
                opt.step(bad)
            except (TypeError, ValueError):
                pass
            else:
                raise AssertionError("a bad step did not raise")
        opt.param_groups[1]["lr"] = -1.0
        try:
            opt.step(grads)
        except ValueError:
            pass
        opt.param_groups[1]["lr"] = hyper["lr"]

    saved = opt.state_dict()
    saved = {"state": {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                           for k, v in s.items()} for i, s in saved["state"].items()},
             "param_groups": [dict(g) for g in saved["param_groups"]]}
    broken = {"state": saved["state"], "param_groups": saved["param_groups"][:1]}

    def state_dicts():
        opt.state_dict()
        opt.load_state_dict(saved)
        try:
            opt.load_state_dict(broken)
        except ValueError:
            pass

    return {"class-step": good, "class-error": raises, "state-dict": state_dicts}, \
        watched + [v for s in saved["state"].values() for v in s.values()
                   if isinstance(v, np.ndarray)]


def functional_paths(algorithm):
    rng = np.random.default_rng(1)
    hyper = dict(richest_config(algorithm), lr=1e-6)
    param = rng.standard_normal(33)
    grad = rng.standard_normal(33) * 1e-3
    state = [None if b is None else np.full_like(param, 0.1)
             for b in new_state(algorithm, hyper, param)]
    kwargs = functional_kwargs(algorithm, hyper, 5, False)
    args = [param, grad] + state
    watched = [a for a in args if a is not None]

    def good():
        algorithm.functional(*args, **kwargs)

    live = [i for i, a in enumerate(args) if a is not None]
    aliased = list(args)
    aliased[live[-1]] = param  # the last buffer is the parameter: overlap error
    wrong = list(args)
    wrong[1] = grad.astype(np.float32)
    bad_kwargs = dict(kwargs, lr=float("nan"))

    def raises():
        for call_args, call_kwargs in ((aliased, kwargs), (wrong, kwargs), (args, bad_kwargs)):
            try:
                algorithm.functional(*call_args, **call_kwargs)
            except (TypeError, ValueError):
                pass
            else:
                raise AssertionError("a bad call did not raise")

    return {"functional": good, "functional-error": raises}, watched


PATHS = ["class-step", "class-error", "state-dict", "functional", "functional-error"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_no_growth_over_10000_steps(algorithm, path):
    paths, watched = (functional_paths if path.startswith("functional") else class_paths)(
        algorithm)
    step = paths[path]
    for _ in range(WARMUP):
        step()
    gc.collect()
    refs = [sys.getrefcount(a) for a in watched]
    objects = len(gc.get_objects())
    # A collection frees memory that the C allocator may hand back to the system and
    # take again on the next steps: let that settle before the resident baseline.
    for _ in range(WARMUP):
        step()
    pages = resident_pages()
    for _ in range(STEPS):
        step()
    grown = resident_pages() - pages
    gc.collect()
    assert [sys.getrefcount(a) for a in watched] == refs, "reference counts changed"
    # A leak shows as growth; objects left by earlier tests in the same process (jax's
    # gc callback once optax was imported, finished threads) may be freed meanwhile.
    assert len(gc.get_objects()) <= objects, "live Python objects piled up"
    if not under_address_sanitizer():
        assert grown <= RSS_SLACK_PAGES, f"resident memory grew by {grown} pages"
