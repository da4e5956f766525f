"""Checks the collective helpers under ``torchrun --nproc-per-node 2`` (gloo); exits non-zero on failure.

Every rank rebuilds all ranks' inputs from fixed seeds, so the distributed results can be compared with
a single-process computation on the concatenated inputs.
"""

from __future__ import annotations

import sys

import torch

from iv2_train import (
    DistributedConfig,
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_mean,
    any_rank_true,
    barrier,
    broadcast_object,
    init_distributed,
    reduce_dict_mean,
    seed_everything,
    shutdown_distributed,
)


def rank_input(rank: int) -> torch.Tensor:
    rows = 3 if rank == 0 else 2  # unequal first dimensions on purpose
    return torch.randn(rows, 4, generator=torch.Generator().manual_seed(100 + rank), dtype=torch.float64)


def local_loss(local: torch.Tensor, gathered: torch.Tensor) -> torch.Tensor:
    # A contrastive-style loss: every local row against every gathered row.
    return torch.logsumexp(local @ gathered.T, dim=1).sum()


def nonfinite_on_one_rank(rank: int) -> list[str]:
    """A NaN loss on rank 1 only must make *both* ranks skip the same step (else DDP diverges or hangs)."""
    import shutil
    import tempfile

    from tiny_run import TinyRegressor, synthetic_dataset

    from iv2_train import ResumableBatches, TrainConfig, Trainer, broadcast_object, load_config

    out = broadcast_object(tempfile.mkdtemp(prefix="iv2-nan-") if rank == 0 else None)
    cfg = load_config(
        TrainConfig,
        "tiny-cpu",
        [
            f"output_dir={out}",
            "max_steps=4",
            "logging.progress=none",
            "logging.plots=false",
            "checkpoint.every_steps=4",
        ],
    )
    torch.manual_seed(0)
    model = TinyRegressor({2} if rank == 1 else set())
    result = Trainer(model, ResumableBatches(synthetic_dataset(), batch_size=4), cfg).fit()
    skipped = [int(r["skipped"]) for r in result.history]
    barrier()
    if rank == 0:
        shutil.rmtree(out, ignore_errors=True)
    if skipped != [0, 1, 0, 0] or result.skipped_steps != 1:
        return [f"rank {rank}: skipped pattern {skipped}, expected [0, 1, 0, 0] on every rank"]
    return []


def checkpoint_failure_on_one_rank(rank: int) -> list[str]:
    """A checkpoint write that fails on rank 1 must fail on both ranks (not leave rank 0 at a barrier)."""
    import shutil
    import tempfile
    from pathlib import Path

    from iv2_train import CheckpointWriteError, atomic_checkpoint, list_checkpoints

    out = Path(broadcast_object(tempfile.mkdtemp(prefix="iv2-ckfail-") if rank == 0 else None))
    with atomic_checkpoint(out, 1) as tmp:
        (tmp / f"rank{rank}.txt").write_text("ok")
    raised: BaseException | None = None
    try:
        with atomic_checkpoint(out, 2) as tmp:
            if rank == 1:
                raise OSError("disk full (simulated)")
            (tmp / "rank0.txt").write_text("ok")
    except (OSError, CheckpointWriteError) as err:
        raised = err
    steps = [s for s, _ in list_checkpoints(out)]
    leftovers = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name != "step_00000001")
    barrier()
    if rank == 0:
        shutil.rmtree(out, ignore_errors=True)
    want = OSError if rank == 1 else CheckpointWriteError
    if not isinstance(raised, want):
        return [f"rank {rank}: a failed checkpoint write raised {raised!r}, expected {want.__name__}"]
    if steps != [1] or leftovers:
        return [f"rank {rank}: after a failed write, checkpoints {steps} and leftovers {leftovers}"]
    return []


def meta_loader_uses_rank_0s_order(rank: int) -> list[str]:
    """Every rank draws the same source at every step: rank 0's shuffle is broadcast. Rank 1 is given other
    lengths and another seed on purpose: without the broadcast its order would differ."""
    import torch.distributed as dist

    from iv2_train import MetaLoader, ResumableBatches

    sources = {
        name: ResumableBatches(list(range(40)), batch_size=2, seed=rank, rank=rank, world_size=2)
        for name in ("video", "image")
    }
    lengths = {"video": 3, "image": 5} if rank == 0 else {"video": 6, "image": 1}
    it = iter(MetaLoader(sources, seed=11 + rank, lengths=lengths))
    names = [next(it)[0] for _ in range(16)]
    every = [None, None]
    dist.all_gather_object(every, names)
    if every[0] != every[1]:
        return [f"rank {rank}: MetaLoader orders differ between ranks: {every}"]
    if names[:8].count("video") != 3 or names[8:].count("video") != 3:
        return [f"rank {rank}: MetaLoader order {names} does not follow rank 0's lengths (3 video + 5 image)"]
    return []


def group_released(rank: int) -> list[str]:
    """After shutdown_distributed() gloo's threads are gone. A group something still holds outlives it and is
    torn down at interpreter exit, where a rank aborted now and then ("terminate called without an active
    exception"); the Trainer's DDP run above pinned it through torch.distributed.nn's default arguments."""
    import os
    from pathlib import Path

    if not sys.platform.startswith("linux"):
        return []
    names = [p.read_text().strip() for p in Path(f"/proc/{os.getpid()}/task").glob("*/comm")]
    left = [n for n in names if n.startswith("pt_gloo")]
    return [f"rank {rank}: gloo threads {left} still run after shutdown_distributed()"] if left else []


def main() -> None:
    from tiny_run import die_with_parent

    die_with_parent()
    env = init_distributed(DistributedConfig())
    rank, world = env.rank, env.world_size
    assert world == 2, f"expected 2 processes, got {world}"
    failures: list[str] = []
    if env.backend != "gloo" or env.device.type != "cpu":
        failures.append(f"expected gloo on cpu, got {env.backend} on {env.device}")

    # Per-rank seeding: seed + rank, so ranks draw different dropout masks / augmentations.
    seed_everything(5, rank)
    draw = torch.rand(3)
    if not torch.equal(draw, torch.rand(3, generator=torch.Generator().manual_seed(5 + rank))):
        failures.append("seed_everything did not seed torch with seed + rank")
    if torch.equal(all_gather_no_grad(draw[None])[0], all_gather_no_grad(draw[None])[1]):
        failures.append("ranks drew the same random numbers")

    inputs = [rank_input(r) for r in range(world)]
    everything = torch.cat(inputs)
    for sum_grads in (True, False):
        x = inputs[rank].clone().requires_grad_(True)
        gathered = all_gather_with_grad(x, sum_grads=sum_grads)
        if not torch.equal(gathered.detach(), everything):
            failures.append(f"all_gather_with_grad(sum_grads={sum_grads}) forward differs")
        local_loss(x, gathered).backward()

        # Reference: one process holding all ranks' inputs as leaves.
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        full = torch.cat(leaves)
        if sum_grads:
            total = sum(local_loss(leaves[r], full) for r in range(world))
        else:
            # Only this rank's own loss, and only through its own slice of the gathered matrix.
            others = [t if r == rank else t.detach() for r, t in enumerate(leaves)]
            total = local_loss(leaves[rank], torch.cat(others))
        total.backward()
        if not torch.allclose(x.grad, leaves[rank].grad, atol=1e-12):
            failures.append(f"all_gather_with_grad(sum_grads={sum_grads}) gradient differs")

    same = torch.full((2, 3), float(rank))
    if not torch.equal(all_gather_no_grad(same), torch.cat([torch.zeros(2, 3), torch.ones(2, 3)])):
        failures.append("all_gather_no_grad differs")
    if not torch.allclose(all_reduce_mean(torch.tensor([rank * 2.0])), torch.tensor([1.0])):
        failures.append("all_reduce_mean differs")
    if reduce_dict_mean({"a": float(rank), "b": torch.tensor(4.0)}) != {"a": 0.5, "b": 4.0}:
        failures.append("reduce_dict_mean differs")
    if not any_rank_true(rank == 1) or any_rank_true(False):
        failures.append("any_rank_true differs")
    if broadcast_object({"from": rank}) != {"from": 0}:
        failures.append("broadcast_object differs")

    failures += nonfinite_on_one_rank(env.rank)
    failures += checkpoint_failure_on_one_rank(env.rank)
    failures += meta_loader_uses_rank_0s_order(env.rank)
    shutdown_distributed()
    failures += group_released(rank)
    if failures:
        print(f"rank {rank}: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"rank {rank}: ok")


if __name__ == "__main__":
    main()
