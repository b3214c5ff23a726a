"""Label smoothing with a tensor-parallel output layer (DTensor), the way torchtitan shards a language model.

Spawns its own processes (gloo on 127.0.0.1, CPU), puts them on a 1-D
``DeviceMesh`` and shards a tiny language model: the token embedding with
``RowwiseParallel`` and the output projection with
``ColwiseParallel(output_layouts=Shard(-1), use_local_output=False)``, so the
logits stay a DTensor split over the vocabulary. ``ls.cross_entropy`` takes
the smoothed loss of those logits without gathering them (PyTorch's
``loss_parallel()`` has no ``label_smoothing``). Each step prints the loss
beside that of an unsharded copy trained with
``F.cross_entropy(label_smoothing=...)``; at the end, the largest difference
between their parameters::

    python examples/tensor_parallel_label_smoothing.py --world-size 2 --steps 3
"""

from __future__ import annotations

import argparse
import copy
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import labelsmooth as ls

ALPHA = 0.1
VOCAB, DIM = 48, 16


class TinyLM(nn.Module):
    """Embedding, one hidden layer, output projection: ``(B, T)`` token ids to ``(B, T, V)`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(VOCAB, DIM)
        self.hidden = nn.Linear(DIM, DIM)
        self.output = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.output(torch.tanh(self.hidden(self.tok_embeddings(tokens))))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and next-token targets (the last position and some padding ignored), equal on every rank."""
    gen = torch.Generator().manual_seed(step)
    tokens = torch.randint(0, VOCAB, (4, 9), generator=gen)
    targets = torch.nn.functional.pad(tokens[:, 1:], (0, 1), value=-100)
    targets[0, 5:] = -100
    return tokens, targets


def worker(rank: int, world_size: int, port: int, steps: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=60))
    try:
        mesh = init_device_mesh("cpu", (world_size,))
        torch.manual_seed(0)
        model = TinyLM()
        reference = copy.deepcopy(model)  # unsharded, trained with PyTorch's own smoothed loss
        parallelize_module(model, mesh, {
            "tok_embeddings": RowwiseParallel(input_layouts=Replicate()),
            "output": ColwiseParallel(output_layouts=Shard(-1), use_local_output=False),
        })
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
        for step in range(steps):
            tokens, targets = batch(step)
            logits = model(tokens)  # a DTensor, Shard(-1): each rank holds VOCAB / world_size classes
            loss = ls.cross_entropy(logits, targets, alpha=ALPHA, dim=-1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            reference_loss = F.cross_entropy(reference(tokens).movedim(-1, 1), targets, label_smoothing=ALPHA)
            reference_loss.backward()
            reference_optimizer.step()
            reference_optimizer.zero_grad()
            if rank == 0:
                print(f"step {step}: tensor-parallel {loss.to_local().item():.8f} "
                      f"single-process {reference_loss.item():.8f}", flush=True)
        gap = max(
            ((p.full_tensor() if isinstance(p, DTensor) else p) - q).abs().max().item()
            for p, q in zip(model.parameters(), reference.parameters(), strict=True)
        )
        if rank == 0:
            print(f"max |parameter difference| after {steps} steps: {gap:.2e}", flush=True)
        dist.barrier()  # every rank is past its last collective before gloo is torn down
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    mp.spawn(worker, args=(args.world_size, free_port(), args.steps), nprocs=args.world_size, join=True)


if __name__ == "__main__":
    main()
