"""Build of fastopt's compiled kernels.

Flags, and why:

* ``-O3 -fno-math-errno``: lets GCC vectorize loops that call ``sqrt`` (with errno
  semantics it keeps a scalar call per element).
* ``-ffp-contract=off``: no fused multiply-add contraction, so a kernel performs exactly
  the operations of its NumPy reference twin and its results do not depend on the
  instruction set it runs on.
* Never ``-ffast-math``/``-Ofast`` (they drop NaN/inf semantics and can enable
  flush-to-zero for the whole process) and no ``-march=native`` by default: a shipped
  build must run on any x86-64 CPU.  ``FASTOPT_NATIVE=1`` opts in for a local build.
* OpenMP (``-fopenmp``) when a test program with it compiles and links: the runner
  then splits large steps over threads.  ``FASTOPT_NO_OPENMP=1`` builds without it.
* Runtime instruction-set dispatch is in ``csrc/kernels.c`` (compiled for the baseline,
  AVX2 and AVX-512 in one object); ``FASTOPT_NO_DISPATCH=1`` builds the baseline only.
* Cython directives ``boundscheck=False, wraparound=False, initializedcheck=False,
  cdivision=True``; ``FASTOPT_DEBUG=1`` turns the checks back on and builds with
  ``-O0 -g``.
"""
import os
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


DEBUG = _flag("FASTOPT_DEBUG")
NATIVE = _flag("FASTOPT_NATIVE")

compile_args = ["-std=c11", "-fno-math-errno", "-ffp-contract=off", "-fno-strict-aliasing"]
compile_args += ["-O0", "-g"] if DEBUG else ["-O3"]
if NATIVE:
    compile_args.append("-march=native")
extra_link_args = []
define_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]


def _compiles_with(flag):
    """Whether the C compiler builds and links a small OpenMP program with `flag`: the
    compiler the build will use, $CC where it is set (as setuptools does)."""
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    source = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            result = subprocess.run(compiler + [flag, path, "-o", os.path.join(tmp, "probe")],
                                    capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
    return result.returncode == 0


OPENMP = not _flag("FASTOPT_NO_OPENMP") and _compiles_with("-fopenmp")
if OPENMP:
    compile_args.append("-fopenmp")
    extra_link_args.append("-fopenmp")
else:
    print("fastopt: building without OpenMP (steps run on one thread)", file=sys.stderr)
if _flag("FASTOPT_NO_DISPATCH"):
    define_macros.append(("FO_NO_DISPATCH", "1"))
sanitize = os.environ.get("FASTOPT_SANITIZE", "").strip()
if sanitize:
    compile_args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
    extra_link_args += [f"-fsanitize={sanitize}"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

extensions = [
    Extension(
        "fastopt._kernels",
        sources=["fastopt/_kernels.pyx", "csrc/kernels.c"],
        include_dirs=["csrc", np.get_include()],
        define_macros=define_macros,
        extra_compile_args=compile_args,
        extra_link_args=extra_link_args,
        depends=["csrc/fastopt.h", "csrc/kernels_impl.h"]
        + [os.path.join("csrc", "algos", f) for f in sorted(os.listdir("csrc/algos"))],
    )
]

extensions.append(
    Extension(
        "fastopt._ops",
        sources=["fastopt/_ops.pyx", "csrc/ops.c"],
        include_dirs=["csrc", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=extra_link_args,
        depends=["csrc/ops.h"],
    )
)

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
