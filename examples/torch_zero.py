"""Data-parallel CPU training with fastopt: DDP plus ZeroRedundancyOptimizer.

Every rank holds the whole model and trains on its own batches; DDP averages the
gradients; ZeroRedundancyOptimizer gives each rank the optimizer state of its share
of the parameters only, and a fastopt.torch optimizer updates that share in one
compiled call.  Launch one process per rank with torchrun, on one machine::

    torchrun --standalone --nproc-per-node=2 examples/torch_zero.py --steps 100

or across machines (see docs/distributed.md).  With ``--checkpoint-dir`` the run
saves there at the end (the model from rank 0, each rank's optimizer shard with
``fastopt.save``) and resumes from there when it starts, if a checkpoint exists; a
resumed run needs the same number of ranks.
"""
import argparse
import os

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import fastopt
import fastopt.torch


def batch(seed, step, rank, size=64, features=8):
    """This rank's batch for this step (different on every rank and every step)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + rank)
    inputs = torch.randn(size, features, generator=gen)
    return inputs, torch.sin(inputs.sum(dim=1, keepdim=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--lr-step", type=int, default=50,
                        help="halve the learning rate every this many steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", default=None)
    args = parser.parse_args()

    # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; gloo is the CPU backend
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(args.seed)  # DDP broadcasts rank 0's weights anyway
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    ddp = DistributedDataParallel(model)
    optimizer = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=fastopt.torch.Adam,
                                        lr=args.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step,
                                                gamma=0.5)

    start = 0
    model_file = shard_file = None
    if args.checkpoint_dir:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
        model_file = os.path.join(args.checkpoint_dir, "model.pt")
        shard_file = os.path.join(args.checkpoint_dir,
                                  f"optimizer-rank{rank}-of-{world_size}.ckpt")
        if os.path.exists(model_file):
            saved = torch.load(model_file, weights_only=True)
            model.load_state_dict(saved["model"])
            scheduler.load_state_dict(saved["scheduler"])
            fastopt.load(optimizer.optim, shard_file)  # this rank's shard of the state
            # ZeRO copies its own param_groups' hyperparameters onto the shard at each
            # step: give it the loaded ones (the scheduled learning rate included)
            for group, loaded in zip(optimizer.param_groups, optimizer.optim.param_groups):
                group.update((k, v) for k, v in loaded.items() if k != "params")
            start = saved["step"]
            if rank == 0:
                print(f"resumed at step {start}")

    for step in range(start, start + args.steps):
        inputs, targets = batch(args.seed, step, rank)
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(inputs), targets)
        loss.backward()  # DDP averages the gradients over the ranks here
        optimizer.step()  # each rank updates its shard, then ZeRO broadcasts the shards
        scheduler.step()
        if rank == 0 and (step % 20 == 0 or step == start + args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.6f}", flush=True)

    if args.checkpoint_dir:
        fastopt.save(optimizer.optim, shard_file)  # atomic, per rank
        if rank == 0:
            temporary = model_file + ".tmp"
            torch.save({"model": model.state_dict(), "scheduler": scheduler.state_dict(),
                        "step": start + args.steps}, temporary)
            os.replace(temporary, model_file)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
