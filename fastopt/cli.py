"""``python -m fastopt`` / ``fastopt``: the command line.

Subcommands:

``compare``
    train a small network with every optimizer on built-in data and compare them;
``bench``
    time the kernels against NumPy, torch and the machine's memory bandwidth;
``info``
    show the version, the compiled kernels and how they were built.
"""
import argparse
import importlib
import sys

SUBCOMMANDS = {
    "compare": ("fastopt.compare", "compare optimizers by training a small network"),
    "bench": ("fastopt.bench", "benchmark the kernels against NumPy, torch and bandwidth"),
    "info": ("fastopt.info", "show the version, kernels and build"),
}


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="fastopt", description="Fused in-place optimizer kernels for NumPy.",
        epilog="Run 'fastopt COMMAND --help' for a command's options.")
    parser.add_argument("command", choices=sorted(SUBCOMMANDS),
                        help="; ".join(f"{k}: {v[1]}" for k, v in SUBCOMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
