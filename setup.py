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
* Cython directives ``boundscheck=False, wraparound=False, initializedcheck=False,
  cdivision=True``; ``FASTOPT_DEBUG=1`` turns the checks back on and builds with
  ``-O0 -g``.
"""
import os

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
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
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
