from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from iv2_train import (
    MetricsLogger,
    ResumableBatches,
    atomic_checkpoint,
    export_safetensors,
    latest_checkpoint,
    list_checkpoints,
    load_safetensors,
    plot_metrics,
    read_metrics,
    read_safetensors,
    unwrap_model,
)
from iv2_train.checkpoint import remove_partial_checkpoints


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied, as in language-model heads
        self.register_buffer("scale", torch.tensor(2.0))


def test_atomic_directories_and_keep_last(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        with atomic_checkpoint(tmp_path, step, keep_last=2) as tmp:
            assert tmp.name.startswith(f".step_{step:08d}.tmp-")  # iv2_data.atomic_write's hidden name
            assert latest_checkpoint(tmp_path) != tmp  # invisible until complete
            (tmp / "trainer.pt").write_text(str(step))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert (latest_checkpoint(tmp_path) / "trainer.pt").read_text() == "4"


def test_crash_while_writing_leaves_previous_checkpoint(tmp_path: Path) -> None:
    with atomic_checkpoint(tmp_path, 5) as tmp:
        (tmp / "trainer.pt").write_text("good")
    with pytest.raises(RuntimeError), atomic_checkpoint(tmp_path, 10) as tmp:
        (tmp / "trainer.pt").write_text("half")
        raise RuntimeError("failed mid-write")
    assert latest_checkpoint(tmp_path).name == "step_00000005"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000005"]  # cleaned up
    # a killed process cannot clean up: its temporary directory stays until remove_partial_checkpoints
    leftover = tmp_path / "checkpoints" / f".step_00000010.tmp-{dead_pid()}-0123abcd"
    leftover.mkdir()
    (leftover / "trainer.pt").write_text("half")
    assert latest_checkpoint(tmp_path).name == "step_00000005"
    assert remove_partial_checkpoints(tmp_path) == [leftover]
    assert not leftover.exists()
    # Rewriting the same step replaces it whole.
    with atomic_checkpoint(tmp_path, 5) as tmp:
        (tmp / "trainer.pt").write_text("newer")
    assert (latest_checkpoint(tmp_path) / "trainer.pt").read_text() == "newer"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000005"]


def dead_pid() -> int:
    """The pid of a process that has exited (what a killed writer's temporary name carries)."""
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    return finished.pid


def test_checkpoints_and_exports_get_the_umask_permissions(tmp_path: Path) -> None:
    """safetensors writes through a 0o600 temporary file and the old writer kept it: saved checkpoints were
    -rw------- whatever the umask. They get what the umask gives any new file or folder."""
    old = os.umask(0o022)
    try:
        with atomic_checkpoint(tmp_path, 1) as tmp:
            export_safetensors(Tied(), tmp / "model.safetensors")
            torch.save({"step": 1}, tmp / "trainer.pt")
        export_safetensors(Tied(), tmp_path / "final" / "model.safetensors")
    finally:
        os.umask(old)
    ckpt = latest_checkpoint(tmp_path)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755
    for path in (ckpt / "model.safetensors", ckpt / "trainer.pt", tmp_path / "final" / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == ["model.safetensors"]  # no temporary left


def test_export_killed_midway_leaves_the_old_file_and_a_leftover_the_next_run_removes(tmp_path: Path) -> None:
    """A kill during the export's write (simulated: the writer raises KeyboardInterrupt inside save_file)
    leaves the previous export intact; the old writer's fixed ``.tmp`` name was never cleaned."""
    import safetensors.torch

    target = export_safetensors(Tied(), tmp_path / "model.safetensors")
    before = target.read_bytes()

    def killed(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise KeyboardInterrupt

    real = safetensors.torch.save_file
    safetensors.torch.save_file = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            export_safetensors(Tied(), target)
    finally:
        safetensors.torch.save_file = real
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_safetensors_round_trip_with_tied_weights_and_flat_views(tmp_path: Path) -> None:
    model = Tied()
    path = export_safetensors(model, tmp_path / "w.safetensors")
    fresh = Tied()
    assert load_safetensors(fresh, path) == ([], [])
    assert torch.equal(fresh.head.weight, model.embed.weight)
    assert fresh.head.weight is fresh.embed.weight
    # Views into one flat buffer (how DeepSpeed ZeRO holds parameters) are stored as separate tensors.
    flat = torch.arange(12.0)
    state = {"a": flat[:6].view(2, 3), "b": flat[6:].view(3, 2)}
    read = read_safetensors(export_safetensors(state, tmp_path / "flat.safetensors"))
    assert torch.equal(read["a"], state["a"]) and torch.equal(read["b"], state["b"])
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        read_safetensors(tmp_path / "missing.safetensors")


def test_unwrap_model() -> None:
    inner = nn.Linear(2, 2)
    wrapper = nn.Module()
    wrapper.module = inner
    assert unwrap_model(wrapper) is inner
    assert unwrap_model(nn.Sequential()) is not None


def test_resumable_batches_position_is_exact() -> None:
    data = list(range(20))
    full = ResumableBatches(data, batch_size=3, seed=1, rank=1, world_size=2)
    it = iter(full)
    expected = [next(it).tolist() for _ in range(7)]  # crosses an epoch boundary (3 batches per epoch)
    assert full.batches_per_epoch() == 3
    first_epoch = [x for batch in expected[:3] for x in batch]
    assert len(first_epoch) == len(set(first_epoch)) == 9  # no repeats within an epoch

    part = ResumableBatches(data, batch_size=3, seed=1, rank=1, world_size=2)
    it = iter(part)
    first = [next(it).tolist() for _ in range(4)]
    state = part.state_dict()
    resumed = ResumableBatches(data, batch_size=3, seed=1, rank=1, world_size=2)
    resumed.load_state_dict(state)
    it = iter(resumed)
    assert first + [next(it).tolist() for _ in range(3)] == expected
    other_rank = next(iter(ResumableBatches(data, batch_size=3, seed=1, rank=0, world_size=2))).tolist()
    assert not set(other_rank) & set(expected[0])
    with pytest.raises(ValueError, match="too small for batch_size 8 on 2 ranks"):
        next(iter(ResumableBatches(list(range(10)), batch_size=8, world_size=2, rank=0)))


class _RandomAugment(torch.utils.data.Dataset):
    """A sample plus a random "augmentation" drawn from the global RNGs, as video datasets do."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> torch.Tensor:
        import random

        return torch.tensor([float(index), torch.rand(()).item(), random.random()])


def test_resumable_batches_with_workers_resume_random_augmentations_exactly() -> None:
    # Worker RNGs are seeded once per worker: a resumed loader hands batch k to another worker, whose RNG
    # has drawn less, so augmentations differed after resume. Each batch now seeds the worker from its key.
    def take(data: ResumableBatches, n: int) -> list[torch.Tensor]:
        it = iter(data)
        return [next(it) for _ in range(n)]

    def make() -> ResumableBatches:
        return ResumableBatches(_RandomAugment(), batch_size=2, seed=4, rank=0, world_size=1, num_workers=2)

    expected = take(make(), 7)  # 12 batches an epoch: resume mid-epoch
    part = make()
    take(part, 3)
    resumed = make()
    resumed.load_state_dict(part.state_dict())
    got = take(resumed, 4)
    for want, have in zip(expected[3:], got):
        assert torch.equal(want, have), (want, have)
    assert len({round(float(b[0, 1]), 6) for b in expected}) == 7  # the augmentations do vary between batches


def test_metrics_logger_truncates_on_resume_and_plots(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(1, 6):
        logger.log(step, {"loss": 1.0 / step, "lr": 0.1, "note": "text"})
    logger.close()
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 6, "loss": 0.1')  # torn last line of a killed run
    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_step=3)
    resumed.log(4, {"loss": float("inf")})
    resumed.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] == "inf"
    json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    written = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "plots")
    assert sorted(p.name for p in written) == ["loss.png", "lr.png"]


def test_plot_metrics_draws_each_metric_as_if_alone(tmp_path: Path) -> None:
    """plot_metrics redraws one figure per metric: nothing of an earlier metric (its points, a log scale, its
    markers) may show in a later one's PNG."""
    from matplotlib.image import imread

    def write(path: Path, rows: list[dict]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    # "loss" spans 4 decades (log scale) and has 60 points (no markers); "zeta" is one evaluation point
    rows = [{"step": s, "loss": 10.0 ** (1 - 4 * s / 60)} for s in range(1, 61)]
    rows[-1]["zeta"] = 0.5
    both = plot_metrics(write(tmp_path / "both.jsonl", rows), tmp_path / "both")
    alone = plot_metrics(write(tmp_path / "alone.jsonl", [{"step": 60, "zeta": 0.5}]), tmp_path / "alone")
    assert [p.name for p in both] == ["loss.png", "zeta.png"] and [p.name for p in alone] == ["zeta.png"]
    assert (imread(both[1]) == imread(alone[0])).all()
    assert not (imread(both[0]).shape == imread(both[1]).shape and (imread(both[0]) == imread(both[1])).all())


def test_metrics_appends_never_glue_onto_a_torn_line(tmp_path: Path) -> None:
    """A killed run leaves a line cut short; a logger opened without resume_step (a second logger, an eval
    script) used to append its row onto it, losing both."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(2, {"eval/acc": 0.5})
    logger.close()
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "eval/acc": 0.5}]


def test_resume_rewrite_is_atomic_and_its_leftover_removed(tmp_path: Path) -> None:
    """The resume truncation rewrites the file through iv2_data.atomic_write: a rewrite killed midway leaves the
    old file whole and a temporary the next logger removes."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
    (tmp_path / f".metrics.jsonl.tmp-{dead_pid()}-0123abcd").write_text('{"step": 1')  # a killed rewrite
    MetricsLogger(tmp_path, tensorboard=False, resume_step=1).close()
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=True)
    logger.log(1, {"loss": 1.0})
    logger.close()
    has_tb = importlib.util.find_spec("tensorboard") is not None
    assert (tmp_path / "tensorboard").exists() == has_tb
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 1.0}]


def test_a_second_logger_on_the_same_folder_appends(tmp_path: Path) -> None:
    # A stage's own evaluation script opening a logger on a run folder wiped the Trainer's rows.
    trainer_log = MetricsLogger(tmp_path, tensorboard=False, resume_step=0)
    trainer_log.log(1, {"loss": 1.0})
    other = MetricsLogger(tmp_path, tensorboard=False)
    other.log(1, {"eval/acc": 0.5})
    trainer_log.log(2, {"loss": 0.5})
    for logger in (trainer_log, other):
        logger.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 1.0}, {"step": 1, "eval/acc": 0.5}, {"step": 2, "loss": 0.5}]  # fmt: skip
