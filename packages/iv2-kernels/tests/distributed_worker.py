"""One rank of the distributed contrastive-loss test (started twice by test_contrastive_distributed.py).

Builds the same global batch on every rank, keeps its own rows, runs ``contrastive_loss(..., group=WORLD)``
with each backend and saves the loss and the gradients of its local inputs for the test to compare.
Environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; argv[1] is the output folder.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: CPU tensors through the interpreter

import torch
import torch.distributed as dist

from iv2_kernels import contrastive_loss

GLOBAL_BATCH, DIM, TEMPERATURE = 26, 12, 0.2


def global_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(GLOBAL_BATCH, DIM, generator=gen)
    return a, a + torch.randn(GLOBAL_BATCH, DIM, generator=gen)


def main() -> None:
    torch.set_num_threads(1)
    out_dir = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = GLOBAL_BATCH // world
    a, b = global_inputs()
    results = {}
    for backend, block in (("torch", 4), ("triton", 16)):
        a_local = a[rank * local:(rank + 1) * local].clone().requires_grad_()
        b_local = b[rank * local:(rank + 1) * local].clone().requires_grad_()
        temperature = torch.tensor(TEMPERATURE, requires_grad=True)
        loss = contrastive_loss(a_local, b_local, temperature, backend=backend, group=dist.group.WORLD,
                                block_size=block)
        loss.backward()
        results[backend] = {"loss": loss.detach(), "a": a_local.grad, "b": b_local.grad,
                            "temperature": temperature.grad}
    try:  # unequal local batches are refused on every rank
        contrastive_loss(torch.randn(3 + rank, DIM), torch.randn(3 + rank, DIM), 0.1, group=dist.group.WORLD)
        results["uneven_error"] = ""
    except ValueError as error:
        results["uneven_error"] = str(error)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
