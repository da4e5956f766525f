"""One rank of the distributed contrastive-loss test (started twice by test_contrastive_distributed.py).

Builds the same global batch (and idx) on every rank, keeps its own rows, runs ``contrastive_loss(...,
group=WORLD)`` with each backend, with and without idx, and saves the loss and the gradients of its local
inputs and of the temperature for the test to compare. Then a tiny DDP model trained through the loss, to
record what DDP's gradient averaging makes of those gradients. Environment: RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT; argv[1] is the output folder.
"""

from __future__ import annotations

import gc
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: CPU tensors through the interpreter

import torch
import torch.distributed as dist
import torch.distributed.nn  # before the group exists: DDP imports it; imported later it pins group.WORLD

from iv2_kernels import contrastive_loss

GLOBAL_BATCH, DIM, TEMPERATURE, EMBED = 26, 12, 0.2, 6


def global_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(GLOBAL_BATCH, DIM, generator=gen)
    b = a + torch.randn(GLOBAL_BATCH, DIM, generator=gen)
    idx = torch.randint(0, 9, (GLOBAL_BATCH,), generator=gen)  # repeats within and across the ranks' halves
    return a, b, idx


class TinyContrastive(torch.nn.Module):
    """A shared linear encoder for both sides and a learnable temperature; forward returns the global loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.encoder = torch.nn.Linear(DIM, EMBED)
        self.temperature = torch.nn.Parameter(torch.tensor(TEMPERATURE))

    def forward(self, a, b, idx):
        return contrastive_loss(self.encoder(a), self.encoder(b), self.temperature, idx=idx, backend="torch",
                                group=dist.group.WORLD)


def main() -> None:
    torch.set_num_threads(1)
    out_dir = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = GLOBAL_BATCH // world
    rows = slice(rank * local, (rank + 1) * local)
    a, b, idx = global_inputs()
    results = {}
    for backend, block in (("torch", 4), ("triton", 16)):
        for with_idx in (False, True):
            a_local = a[rows].clone().requires_grad_()
            b_local = b[rows].clone().requires_grad_()
            temperature = torch.tensor(TEMPERATURE, requires_grad=True)
            loss = contrastive_loss(a_local, b_local, temperature, idx=idx[rows] if with_idx else None,
                                    backend=backend, group=dist.group.WORLD, block_size=block)
            loss.backward()
            results[backend, with_idx] = {"loss": loss.detach(), "a": a_local.grad, "b": b_local.grad,
                                          "temperature": temperature.grad}

    # DDP averages parameter gradients over the ranks: see what that gives for a shared encoder and temperature
    model = torch.nn.parallel.DistributedDataParallel(TinyContrastive())
    model(a[rows], b[rows], idx[rows]).backward()
    results["ddp"] = {name: p.grad for name, p in model.module.named_parameters()}

    for name, kwargs in (("uneven_error", {"a": torch.randn(3 + rank, DIM)}),
                         ("idx_on_one_rank_error", {"idx": torch.arange(4) if rank == 0 else None})):
        a_bad = kwargs.get("a", torch.randn(4, DIM))
        try:
            contrastive_loss(a_bad, a_bad.clone(), 0.1, idx=kwargs.get("idx"), group=dist.group.WORLD)
            results[name] = ""
        except ValueError as error:
            results[name] = str(error)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    # DDP's reducer must go before the process group: destroyed afterwards (at interpreter exit) it aborts the
    # process with "terminate called without an active exception" about one run in two.
    del model
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
