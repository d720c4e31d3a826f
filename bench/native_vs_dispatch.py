"""The portable build with runtime dispatch against an ``-march=native`` build.

Builds a copy of the committed tree with ``FASTOPT_NATIVE=1`` in a temporary folder,
imports it under another package name next to the in-place build, and times both
side by side, interleaved, at 65,536 elements (cache-resident, where vector width
matters), for every algorithm and dtype, together with each instruction set the
dispatcher can pick.  Where binutils' objdump is installed it also says, per
algorithm and dtype, whether the dispatched AVX-512 kernel has the same instructions
as the native build's (addresses aside): where it does, a ratio off 1 is the
timing's spread or where the code landed, not what the compiler made.  Run from the
repository root, after building in place::

    python bench/native_vs_dispatch.py [--size 65536] [--rounds 21] [--passes 3]
        [--algorithms adam,lars] [--dtypes float32]
"""
import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fastopt  # noqa: E402
from fastopt import _kernels  # noqa: E402
from fastopt.bench import time_interleaved  # noqa: E402


def build_native(workdir):
    """Build the committed tree with -march=native; return the folder holding the
    package, renamed ``fastopt_native``."""
    src = os.path.join(workdir, "src")
    os.makedirs(src)
    archive = subprocess.run(["git", "-C", ROOT, "archive", "HEAD"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    env = dict(os.environ, FASTOPT_NATIVE="1")
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=src, env=env,
                   check=True, capture_output=True)
    pkg = os.path.join(workdir, "pkg")
    shutil.copytree(os.path.join(src, "fastopt"), os.path.join(pkg, "fastopt_native"))
    return pkg


def disassembly(library):
    """``{function: instructions}`` of a shared library, addresses and relocated
    operands blanked so that the same code at another address compares equal; None
    without objdump (binutils)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return None
    listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", library], check=True,
                             capture_output=True, text=True).stdout
    functions, name = {}, None
    for line in listing.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if head:
            name = head.group(1)
            functions[name] = []
        elif name is not None and "\t" in line:
            text = line.split("\t", 1)[1]
            text = re.sub(r"\b[0-9a-f]+ <[^>]*>", "ADDR", text)
            text = re.sub(r"0x[0-9a-f]+\(%rip\)", "RIP", text)
            functions[name].append(text)
    return functions


def same_code(portable, native, kernel, dtype):
    """Whether every function of `kernel` for `dtype` in the native build (its passes
    and helpers: ``adafactor_vector_sums_f32``...) has the same instructions as the
    portable build's AVX-512 instantiation of it: "same", "differs", or "-" when
    there is no disassembly to compare."""
    if portable is None or native is None:
        return "-"
    suffix = "_f32" if dtype == "float32" else "_f64"
    pattern = re.compile(rf"^{re.escape(kernel)}(_[a-z]+)*{suffix}$")
    names = [n for n in native if pattern.match(n)]
    if not names:
        return "-"
    return "same" if all(portable.get(n + "_avx512") == native[n] for n in names) \
        else "differs"


def library(package_dir):
    return next(os.path.join(package_dir, f) for f in sorted(os.listdir(package_dir))
                if f.startswith("_kernels.") and f.endswith((".so", ".pyd")))


def _calls(algorithm, dtype, size, native, isas):
    """The calls to time for one algorithm and dtype: a step of the native build's
    optimizer ("native") and of this build's under each instruction set."""
    rng = np.random.default_rng(0)
    p = rng.standard_normal(size).astype(dtype)
    g = (rng.standard_normal(size) * 1e-2).astype(dtype)
    # Every optimizer steps the same parameter array, so that its state buffers,
    # placed relative to the parameter's page offset, sit alike for every build (with
    # copies, 4K aliasing between differently placed buffers moved short steps by up
    # to 20%: Lion float32 1.21, then 1.08).  One optimizer per instruction set: a
    # prepared step is tied to the instruction set it was prepared under, and a shared
    # optimizer would take the full path after every switch.
    theirs = getattr(native, algorithm.cls_name)([p])
    theirs.step([g])
    native_set_isa, native_isa = native._kernels.set_isa, native._kernels.get_isa()

    def call_native():
        native_set_isa(native_isa)  # the same calls as the others make
        theirs.step([g])
    calls = {"native": call_native}
    for isa in isas:
        _kernels.set_isa(isa)
        mine = algorithm.cls([p])
        mine.step([g])

        def call(isa=isa, mine=mine):
            _kernels.set_isa(isa)
            mine.step([g])
        calls[isa] = call
    _kernels.set_isa(None)
    return calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--passes", type=int, default=3,
                        help="passes over the whole table; each time is the best over them")
    parser.add_argument("--algorithms", type=lambda text: text.split(","),
                        default=list(fastopt.ALGORITHMS),
                        help="comma-separated algorithm names (default: all)")
    parser.add_argument("--dtypes", type=lambda text: text.split(","),
                        default=["float32", "float64"])
    args = parser.parse_args(argv)
    unknown = [a for a in args.algorithms if a not in fastopt.ALGORITHMS]
    if unknown:
        parser.error(f"--algorithms: unknown {', '.join(unknown)}; "
                     f"known: {', '.join(fastopt.ALGORITHMS)}")
    if args.passes < 1:
        parser.error(f"--passes: at least 1, got {args.passes}")
    bad = [d for d in args.dtypes if d not in ("float32", "float64")]
    if bad:
        parser.error(f"--dtypes: {', '.join(bad)} (float32 and float64 only)")
    with tempfile.TemporaryDirectory() as workdir:
        sys.path.insert(0, build_native(workdir))
        native = importlib.import_module("fastopt_native")
        # Which kernels compile to the same instructions in both builds: a ratio off
        # 1 for those is the timing's spread (or where the code landed), not the
        # compiler's output.
        code = (disassembly(library(os.path.dirname(_kernels.__file__))),
                disassembly(library(os.path.dirname(native.__file__))))
        fastopt.set_num_threads(1)
        native.set_num_threads(1)
        isas = _kernels.isa_available()
        print(f"size {args.size:,}, best of {args.rounds} interleaved rounds in each of "
              f"{args.passes} passes over the table, best over the passes; time of each "
              f"build over the native build's (lower is faster)")
        print("| algorithm | dtype | native us | " + " | ".join(f"{i} / native" for i in isas)
              + f" | {isas[-1]} / native, medians | {isas[-1]} / native, each pass "
              f"| {isas[-1]} code against native |")
        print("|---|---|---:|" + "---:|" * len(isas) + "---:|---|---|")
        cases = [(algorithm, dtype) for dtype in args.dtypes
                 for algorithm in (fastopt.ALGORITHMS[a] for a in args.algorithms)]
        # The whole table is timed pass after pass, and each time is the best over the
        # passes (each pass's own best of interleaved rounds): a core's speed over one
        # case can change for seconds at a time (other tenants of its caches), and the
        # passes give every build of every case more than one stretch of time.  Each
        # pass makes its parameter and optimizers anew, so their buffers lie elsewhere
        # in memory each time: float32 Adamax read 1.06, 1.07 and 1.05 in one run's
        # three passes over the same buffers, and 1.01 to 1.04 in three other runs.
        timed = [[] for _ in cases]
        for _ in range(args.passes):
            for k, (algorithm, dtype) in enumerate(cases):
                calls = _calls(algorithm, dtype, args.size, native, isas)
                timed[k].append(time_interleaved(calls, args.rounds))
                _kernels.set_isa(None)
                del calls
        worst = {}
        for (algorithm, dtype), passes in zip(cases, timed):
            names = list(passes[0])
            best = {name: min(t[name][0] for t in passes) for name in names}
            median = {name: min(t[name][1] for t in passes) for name in names}
            ratios = [best[i] / best["native"] for i in isas]
            each = [t[isas[-1]][0] / t["native"][0] for t in passes]
            same = same_code(*code, algorithm.kernel, dtype)
            worst[same] = max(worst.get(same, 0.0), ratios[-1])
            print(f"| {algorithm.name} | {dtype} | {best['native'] * 1e6:.1f} | "
                  + " | ".join(f"{r:.2f}" for r in ratios)
                  + f" | {median[isas[-1]] / median['native']:.2f} | "
                  + ", ".join(f"{r:.2f}" for r in each) + f" | {same} |")
        for same, ratio in sorted(worst.items()):
            print(f"worst ratio of the dispatched default ({isas[-1]}) to native, "
                  f"code {same}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
