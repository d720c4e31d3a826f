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
    }


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="fastopt info", description=__doc__)
    parser.parse_args(argv)
    info = describe()
    print(f"fastopt {info['fastopt']} (numpy {info['numpy']}, Python {info['python']}, "
          f"{info['machine']})")
    print("algorithms:")
    for algorithm in ALGORITHMS.values():
        print(f"  {algorithm.name:<10} {algorithm.cls_name:<10} {algorithm.summary}")
    return 0
