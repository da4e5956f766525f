"""One rank of the 2-process VTC check (started by test_vtc.py with RANK / WORLD_SIZE / MASTER_* set): computes
``vtc_loss`` on its half of a fixed global batch over gloo and saves the loss and its local gradients."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

GLOBAL_BATCH, WIDTH, TEMP = 8, 6, 0.11


def global_inputs():
    g = torch.Generator().manual_seed(0)
    media = torch.randn(GLOBAL_BATCH, WIDTH, generator=g) * 3  # unnormalised: vtc_loss normalises
    text = torch.randn(GLOBAL_BATCH, WIDTH, generator=g)
    idx = torch.tensor([0, 1, 2, 1, 3, 0, 4, 5])  # positives within and across the two ranks' halves
    return media, text, idx


if __name__ == "__main__":
    from iv2_align import vtc_loss

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    media, text, idx = global_inputs()
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    local_media = media[rows].clone().requires_grad_()
    local_text = text[rows].clone().requires_grad_()
    temp = torch.tensor(TEMP, requires_grad=True)
    loss = vtc_loss(local_media, local_text, idx[rows], temp)  # group="auto": the default group
    loss.backward()
    torch.save({"loss": loss.detach(), "media": local_media.grad, "text": local_text.grad, "temp": temp.grad,
                "rows": (rows.start, rows.stop)}, Path(sys.argv[1]) / f"rank{rank}.pt")
    dist.barrier()  # neither rank tears gloo down while the other still talks to it (an abort otherwise)
    dist.destroy_process_group()
