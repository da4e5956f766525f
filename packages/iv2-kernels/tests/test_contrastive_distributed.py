"""The distributed contrastive loss over 2 CPU processes (gloo) equals the single-process float64 loss."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")
GLOBAL_BATCH, DIM, TEMPERATURE = 26, 12, 0.2  # as in distributed_worker.py


def float64_infonce(a, b, temperature):
    logits = a @ b.T / temperature
    return -0.5 * (torch.log_softmax(logits, 1).diagonal().mean() + torch.log_softmax(logits, 0).diagonal().mean())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_match_the_global_batch(tmp_path):
    pytest.importorskip("triton")
    world = 2
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world),
           "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(tmp_path)], env={**env, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(world)]
    for rank, proc in enumerate(procs):
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"rank {rank} failed:\n{output}"
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]

    gen = torch.Generator().manual_seed(0)  # the worker's global batch, rebuilt here in float64
    a = torch.randn(GLOBAL_BATCH, DIM, generator=gen)
    b = a + torch.randn(GLOBAL_BATCH, DIM, generator=gen)
    leaves = [a.double().requires_grad_(), b.double().requires_grad_(),
              torch.tensor(TEMPERATURE, dtype=torch.float64, requires_grad=True)]
    loss_ref = float64_infonce(*leaves)
    grad_a, grad_b, grad_t = torch.autograd.grad(loss_ref, leaves)

    for backend in ("torch", "triton"):
        per_rank = [r[backend] for r in results]
        for r in per_rank:  # every rank returns the global loss
            assert r["loss"].item() == pytest.approx(loss_ref.item(), rel=1e-5), backend
        # local rows' gradients are the global gradient's rows; temperature's shares sum to the global one
        torch.testing.assert_close(torch.cat([r["a"] for r in per_rank]).double(), grad_a, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.cat([r["b"] for r in per_rank]).double(), grad_b, rtol=1e-4, atol=1e-6)
        assert sum(r["temperature"].item() for r in per_rank) == pytest.approx(grad_t.item(), rel=1e-4)
    for r in results:
        assert "same local batch size" in r["uneven_error"]
