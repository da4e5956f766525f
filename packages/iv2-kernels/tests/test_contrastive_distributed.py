"""The distributed contrastive loss over 2 CPU processes (gloo) equals the single-process float64 loss of the
global batch, with and without idx, in value and in the gradients of a, b and the temperature."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("distributed_worker.py")
sys.path.insert(0, str(Path(__file__).parent))
from distributed_worker import TEMPERATURE, TinyContrastive, global_inputs  # noqa: E402


def float64_loss(a, b, temperature, idx=None):
    """Symmetric InfoNCE (idx None) or the official VTC with same-idx targets, rows normalised to 1."""
    logits = a @ b.T / temperature
    if idx is None:
        targets = torch.eye(a.shape[0], dtype=torch.float64)
    else:
        same = (idx.view(-1, 1) == idx.view(1, -1)).double()
        targets = same / same.sum(1, keepdim=True)
    return -0.5 * ((torch.log_softmax(logits, 1) * targets).sum(1).mean()
                   + (torch.log_softmax(logits.T, 1) * targets).sum(1).mean())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    pytest.importorskip("triton")
    out = tmp_path_factory.mktemp("ranks")
    world = 2
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world),
           "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(out)], env={**env, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(world)]
    for rank, proc in enumerate(procs):
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"rank {rank} failed:\n{output}"
    return [torch.load(out / f"rank{rank}.pt") for rank in range(world)]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("with_idx", [False, True], ids=["no-idx", "idx"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_two_ranks_match_the_global_batch(rank_results, backend, with_idx):
    a, b, idx = global_inputs()  # the worker's global batch, rebuilt here in float64
    leaves = [a.double().requires_grad_(), b.double().requires_grad_(),
              torch.tensor(TEMPERATURE, dtype=torch.float64, requires_grad=True)]
    loss_ref = float64_loss(*leaves, idx if with_idx else None)
    grad_a, grad_b, grad_t = torch.autograd.grad(loss_ref, leaves)

    per_rank = [r[backend, with_idx] for r in rank_results]
    for r in per_rank:  # every rank returns the global loss and the whole temperature gradient
        assert r["loss"].item() == pytest.approx(loss_ref.item(), rel=1e-5)
        assert r["temperature"].item() == pytest.approx(grad_t.item(), rel=1e-4)
    # each rank's a/b gradients are exactly its rows of the global gradient
    torch.testing.assert_close(torch.cat([r["a"] for r in per_rank]).double(), grad_a, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["b"] for r in per_rank]).double(), grad_b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_averaging_gives_official_gradient_scale(rank_results):
    """Under DDP (which averages over ranks) the shared encoder gets 1/W of the global-loss gradient and the
    temperature the whole of it — the official InternVideo2 all-gather's behaviour (README)."""
    a, b, idx = global_inputs()
    model = TinyContrastive().double()
    feats_a, feats_b = model.encoder(a.double()), model.encoder(b.double())
    float64_loss(feats_a, feats_b, model.temperature, idx).backward()
    world = len(rank_results)
    for r in rank_results:
        grads = r["ddp"]
        torch.testing.assert_close(grads["encoder.weight"].double(), model.encoder.weight.grad / world,
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(grads["encoder.bias"].double(), model.encoder.bias.grad / world,
                                   rtol=1e-4, atol=1e-6)
        assert grads["temperature"].item() == pytest.approx(model.temperature.grad.item(), rel=1e-4)


@pytest.mark.slow
@pytest.mark.distributed
def test_inconsistent_ranks_are_refused(rank_results):
    for r in rank_results:
        assert "same local batch size" in r["uneven_error"]
        assert "idx must be given on every rank or on none" in r["idx_on_one_rank_error"]
