"""VTC against an independent float64 computation of the official loss, in one process and over 2 gloo processes
(negatives and same-idx positives from both ranks; each rank gets its own rows of the global gradient)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _align_vtc_worker import TEMP, global_inputs

from iv2_align import vtc_loss

WORKER = Path(__file__).with_name("_align_vtc_worker.py")


def official_vtc(media, text, idx, temp):
    """criterions.py VTC_VTM_Loss.vtc_loss written out: normalise, cos / temp, same-idx targets with rows
    normalised to sum 1, mean of the two directions' soft cross-entropies."""
    v = media / media.norm(dim=-1, keepdim=True)
    t = text / text.norm(dim=-1, keepdim=True)
    sim = v @ t.T / temp
    if idx is None:
        targets = torch.eye(len(v), dtype=sim.dtype)
    else:
        same = (idx[:, None] == idx[None, :]).to(sim.dtype)
        targets = same / same.sum(1, keepdim=True)
    v2t = -(torch.log_softmax(sim, 1) * targets).sum(1).mean()
    t2v = -(torch.log_softmax(sim.T, 1) * targets).sum(1).mean()
    return (v2t + t2v) / 2


def leaves(media, text, temp):
    return (media.double().requires_grad_(), text.double().requires_grad_(),
            torch.tensor(temp, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("with_idx", [True, False], ids=["idx", "diagonal"])
def test_vtc_matches_float64_official_loss_and_gradients(with_idx):
    media, text, idx = global_inputs()
    idx = idx if with_idx else None
    ours = (media.clone().requires_grad_(), text.clone().requires_grad_(), torch.tensor(TEMP, requires_grad=True))
    loss = vtc_loss(*ours[:2], idx, ours[2])
    loss.backward()
    ref_leaves = leaves(media, text, TEMP)
    ref = official_vtc(*ref_leaves[:2], idx, ref_leaves[2])
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-6
    for got, want in zip(ours, ref_leaves):
        torch.testing.assert_close(got.grad.double(), want.grad, atol=1e-6, rtol=1e-5)


def test_vtc_rejects_mismatched_features():
    with pytest.raises(ValueError, match="media_feat"):
        vtc_loss(torch.randn(4, 3), torch.randn(3, 3), None, 0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_vtc_over_two_gloo_processes_is_the_global_loss(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(tmp_path)], env={**env, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    for rank, proc in enumerate(procs):
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"rank {rank} failed:\n{output}"
    media, text, idx = global_inputs()
    ref_leaves = leaves(media, text, TEMP)
    ref = official_vtc(*ref_leaves[:2], idx, ref_leaves[2])
    ref.backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        rows = slice(*got["rows"])
        assert abs(got["loss"].item() - ref.item()) < 1e-6  # every rank evaluates the global loss
        # official allgather_wgrad: the rank's own rows of the global gradient, no x world_size
        torch.testing.assert_close(got["media"].double(), ref_leaves[0].grad[rows], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got["text"].double(), ref_leaves[1].grad[rows], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got["temp"].double(), ref_leaves[2].grad, atol=1e-6, rtol=1e-5)
