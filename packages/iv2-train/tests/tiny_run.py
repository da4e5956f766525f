"""A tiny training run for the multi-process tests: MLP with dropout on synthetic regression data, beside a
frozen input tower (kept in checkpoints) and a frozen teacher with dropout (left out of checkpoints and the
export), plus an evaluation on held-out data.

    python -m torch.distributed.run --nproc-per-node 2 tiny_run.py [--pause-at STEP] key=value ...

``--pause-at STEP`` makes every rank write its pid to ``OUTPUT/pids/`` and wait after that step, and rank 0
write ``OUTPUT/paused``, so a test can SIGKILL the workers at a known point. ``--nan-at CALL,...`` poisons
the loss at those (training) forward calls. Every step checks that the teacher stayed in eval mode (its
output on a probe never changes although it has dropout) while the student trains; the run fails otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn

from iv2_train import ResumableBatches, TrainConfig, Trainer, freeze, parse_config_args, reduce_dict_mean


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when its launcher dies, so a killed or timed-out test never
    leaves workers behind (torchrun starts each worker in its own session, out of reach of killpg)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class TinyRegressor(nn.Module):
    def __init__(self, nan_steps: set[int]) -> None:
        super().__init__()
        # A frozen tower that is part of the product: stays in checkpoints and the export.
        self.embed = freeze(nn.Linear(8, 8))
        # A teacher with dropout: must stay in eval mode; rebuilt from the seed on resume, not checkpointed.
        self.teacher = freeze(nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)), checkpoint=False)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 1))
        self.distill_head = nn.Linear(8, 8)
        self.nan_steps = nan_steps
        self.calls = 0

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        if self.training:
            self.calls += 1
        h = self.embed(x)
        with torch.no_grad():  # the teacher gives targets only
            target = self.teacher(h)
        mse = nn.functional.mse_loss(self.net(h).squeeze(-1), y)
        distill = 0.1 * nn.functional.mse_loss(self.distill_head(h), target)
        l1 = (self.net[0].weight.abs().mean()) * 1e-3
        total = mse + distill + l1
        if self.training and self.calls in self.nan_steps:
            total = total * float("nan")
        return {"loss": total, "mse": mse, "distill": distill, "l1": l1}


def held_out(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each rank's share of a fixed evaluation set."""
    g = torch.Generator().manual_seed(99)
    x = torch.randn(16, 8, generator=g)
    y = x @ torch.linspace(-1, 1, 8)
    return x[rank::2], y[rank::2]


def evaluate(trainer: Trainer) -> dict[str, float]:
    """Held-out losses, averaged over ranks; checks it runs in eval mode without gradients."""
    model = trainer.module
    if model.training or torch.is_grad_enabled():
        raise RuntimeError("evaluate ran in train mode or with gradients enabled")
    out = model(trainer.prepare_batch(held_out(trainer.env.rank)))
    return reduce_dict_mean({"loss": out["loss"], "mse": out["mse"]})


class TeacherStaysInEval:
    """Callback: the teacher's output on a probe never changes (its dropout would change it in train mode)."""

    def __init__(self) -> None:
        self.probe = torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
        self.first: torch.Tensor | None = None

    def __call__(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        model = trainer.module
        with torch.no_grad():
            out = model.teacher(self.probe.to(trainer.env.device, next(model.teacher.parameters()).dtype))
        if self.first is None:
            self.first = out
        if model.teacher.training or not model.net.training or not torch.equal(out, self.first):
            raise RuntimeError(f"step {trainer.step}: the teacher left eval mode (or the student is not training)")


def synthetic_dataset(n: int = 96) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.linspace(-1, 1, 8) + 0.1 * torch.randn(n, generator=g)
    return [(x[i], y[i]) for i in range(n)]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause-at", type=int, default=0)
    parser.add_argument("--nan-at", default="")
    args, rest = parser.parse_known_args(argv)
    die_with_parent()
    # The rest are key=value overrides (and --local_rank from the DeepSpeed launcher, ignored).
    cfg = parse_config_args(TrainConfig, rest, default="tiny-cpu")

    torch.manual_seed(0)  # identical initial weights on every rank and every run
    nan_steps = {int(s) for s in args.nan_at.split(",") if s}
    model = TinyRegressor(nan_steps)
    data = ResumableBatches(synthetic_dataset(), batch_size=4, seed=cfg.seed)

    def pause(trainer: Trainer, metrics: dict[str, float]) -> None:
        if args.pause_at and trainer.step == args.pause_at:
            pids = Path(cfg.output_dir) / "pids"
            pids.mkdir(exist_ok=True)
            (pids / f"rank{trainer.env.rank}").write_text(str(os.getpid()))
            if trainer.env.is_main:
                (Path(cfg.output_dir) / "paused").write_text(str(trainer.step))
            parent = os.getppid()
            while os.getppid() == parent:  # wait here to be killed; leave if the launcher is gone
                time.sleep(0.2)
            os._exit(1)

    trainer = Trainer(model, data, cfg, callbacks=[TeacherStaysInEval(), pause], evaluate=evaluate)
    result = trainer.fit()
    if trainer.env.is_main:
        print(f"done step={result.step} skipped={result.skipped_steps}")


if __name__ == "__main__":
    main(sys.argv[1:])
