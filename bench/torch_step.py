"""fastopt.torch against torch.optim: the optimizer step, and a whole training step.

For each algorithm fastopt and torch share, times ``optimizer.step()`` alone and a
whole training step (zero_grad, forward, backward, step) of an MLP, with
``fastopt.torch.X`` and with ``torch.optim.X`` in each implementation torch has on the
CPU (``foreach=False``, ``foreach=True``, ``fused=True`` where supported).  The
candidates are interleaved, round after round, and the median of each is reported
with its ratio to fastopt (``> 1`` means fastopt is faster), always, also below 1::

    python bench/torch_step.py                     # all shared algorithms
    python bench/torch_step.py --algorithms adam --width 2048 --rounds 30
"""
import argparse
import copy
import statistics
import time

import torch

import fastopt
import fastopt.torch as fotorch


def make_model(width, depth, dtype):
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(dtype)


def candidates(algorithm, model):
    """(label, model copy, optimizer) for fastopt and each torch implementation."""
    torch_cls = getattr(torch.optim, algorithm.torch)
    out = [("fastopt.torch", model, getattr(fotorch, algorithm.cls_name)(model.parameters()))]
    for label, options in [("foreach=False", {"foreach": False}),
                           ("foreach=True", {"foreach": True}), ("fused=True", {"fused": True})]:
        twin = copy.deepcopy(model)
        try:
            optimizer = torch_cls(twin.parameters(), **options)
            twin(torch.zeros(1, model[0].in_features, dtype=model[0].weight.dtype)).sum().backward()
            optimizer.step()  # some implementations refuse only on their first step
        except (RuntimeError, TypeError, ValueError):
            continue
        out.append((f"torch {label}", twin, optimizer))
    return out


def bench_algorithm(algorithm, args, dtype):
    model = make_model(args.width, args.depth, dtype)
    inputs = torch.randn(args.batch, args.width, dtype=dtype)
    targets = torch.randn(args.batch, 1, dtype=dtype)
    runs = candidates(algorithm, model)

    def training_step(net, optimizer):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(inputs), targets).backward()
        optimizer.step()

    for net, optimizer in ((n, o) for _, n, o in runs):
        for _ in range(3):  # warm up: state allocated, caches touched
            training_step(net, optimizer)
    times = {label: {"step": [], "train": []} for label, _, _ in runs}
    for _ in range(args.rounds):
        for label, net, optimizer in runs:
            start = time.perf_counter()
            for _ in range(args.repeat):
                optimizer.step()  # the gradients of the last training step
            times[label]["step"].append((time.perf_counter() - start) / args.repeat)
            start = time.perf_counter()
            training_step(net, optimizer)
            times[label]["train"].append(time.perf_counter() - start)
    base = {kind: statistics.median(times["fastopt.torch"][kind]) for kind in ("step", "train")}
    nparams = sum(p.numel() for p in model.parameters())
    print(f"\n{algorithm.cls_name}  ({nparams:,} {str(dtype).split('.')[-1]} parameters, "
          f"batch {args.batch}, {args.rounds} rounds, medians)")
    print(f"  {'':18s} {'step':>12s} {'ratio':>7s}   {'training step':>14s} {'ratio':>7s}")
    for label, _, _ in runs:
        step = statistics.median(times[label]["step"])
        train = statistics.median(times[label]["train"])
        print(f"  {label:18s} {step * 1e3:10.3f}ms {step / base['step']:7.2f}   "
              f"{train * 1e3:12.3f}ms {train / base['train']:7.2f}")


def main(argv=None):
    shared = [a.name for a in fastopt.ALGORITHMS.values() if a.torch is not None]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=shared, choices=shared)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=5, help="optimizer steps per sample")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, fastopt {fastopt.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    for name in args.algorithms:
        bench_algorithm(fastopt.get_algorithm(name), args, getattr(torch, args.dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
