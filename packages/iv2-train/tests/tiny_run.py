"""A tiny training run for the multi-process tests: MLP with dropout on synthetic regression data.

    python -m torch.distributed.run --nproc-per-node 2 tiny_run.py [--pause-at STEP] key=value ...

``--pause-at STEP`` makes every rank write its pid to ``OUTPUT/pids/`` and wait after that step, and rank 0
write ``OUTPUT/paused``, so a test can SIGKILL the workers at a known point. ``--nan-at CALL,...`` poisons
the loss at those forward calls.
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

from iv2_train import ResumableBatches, TrainConfig, Trainer, parse_config_args


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when its launcher dies, so a killed or timed-out test never
    leaves workers behind (torchrun starts each worker in its own session, out of reach of killpg)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class TinyRegressor(nn.Module):
    def __init__(self, nan_steps: set[int]) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 1))
        self.nan_steps = nan_steps
        self.calls = 0

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        self.calls += 1
        mse = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        l1 = (self.net[0].weight.abs().mean()) * 1e-3
        total = mse + l1
        if self.calls in self.nan_steps:
            total = total * float("nan")
        return {"loss": total, "mse": mse, "l1": l1}


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

    trainer = Trainer(model, data, cfg, callbacks=[pause])
    result = trainer.fit()
    if trainer.env.is_main:
        print(f"done step={result.step} skipped={result.skipped_steps}")


if __name__ == "__main__":
    main(sys.argv[1:])
