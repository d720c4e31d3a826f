"""``python -m fastopt info``: what this build of fastopt is and can do."""
import argparse
import platform

import numpy as np

from . import _kernels
from ._registry import ALGORITHMS
from ._version import __version__


def describe() -> dict:
    """Version, platform and the compiled kernels, as a dict."""
    return {
        "fastopt": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "kernels": {name: {"buffers": list(b), "scalars": list(h)}
                    for name, (b, h) in _kernels.KERNELS.items()},
        "algorithms": {a.name: a.cls_name for a in ALGORITHMS.values()},
        "isa": _kernels.get_isa(),
        "isa_available": list(_kernels.isa_available()),
        "isa_compiled": list(_kernels._isa_variants()),
        "openmp": _kernels.openmp(),
        "threads": _kernels.get_num_threads(),
        "parallel_min_elements": _kernels.get_parallel_min(),
        "chunk_elements": _kernels.chunk_elements(),
        "load_aware_threads": _kernels.get_load_aware_threads(),
        "flush_denormal": _kernels.get_flush_denormal(),
        "prefetch": _kernels.get_prefetch(),
        "prefetch_default": _kernels.prefetch_default(),
        "fma_division": _kernels.get_fma_division(),
        "fma_division_default": _kernels.fma_division_default(),
        "fpflags_checked": _kernels.fpflags_checked(),
    }


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="fastopt info", description=__doc__)
    parser.parse_args(argv)
    info = describe()
    print(f"fastopt {info['fastopt']} (numpy {info['numpy']}, Python {info['python']}, "
          f"{info['machine']})")
    print(f"instruction set: {info['isa']} (this CPU can run: "
          f"{', '.join(info['isa_available'])}; compiled: {', '.join(info['isa_compiled'])})")
    if info["openmp"]:
        print(f"threads: OpenMP, {info['threads']} for steps of at least "
              f"{info['parallel_min_elements']:,} elements, in chunks of "
              f"{info['chunk_elements']:,} (fastopt.set_num_threads, OMP_NUM_THREADS)"
              + ("; by default only CPUs the load average shows idle"
                 if info["load_aware_threads"] else ""))
    else:
        print("threads: built without OpenMP, every step runs on the calling thread")
    print(f"flush subnormals to zero: {'on' if info['flush_denormal'] else 'off'}")
    print(f"software prefetch: {'on' if info['prefetch'] else 'off'} (this CPU's default: "
          f"{'on' if info['prefetch_default'] else 'off'}; fastopt.set_prefetch, "
          "FASTOPT_PREFETCH)")
    print(f"FMA form of fixed divisions: {info['fma_division']} (this CPU's default: "
          f"{info['fma_division_default']}; fastopt.set_fma_division, FASTOPT_FMA_DIVISION)")
    print("FMA division checks: " + ("exception flags read after each block"
                                     if info["fpflags_checked"] else
                                     "exception flags not raised here, every block divides"))
    print("algorithms:")
    for algorithm in ALGORITHMS.values():
        print(f"  {algorithm.name:<10} {algorithm.cls_name:<10} {algorithm.summary}")
    return 0
