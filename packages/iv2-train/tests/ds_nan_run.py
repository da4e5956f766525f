"""DeepSpeed (one CPU process): a non-finite loss must skip the update for real. Exits non-zero on failure.

    DS_ACCELERATOR=cpu python ds_nan_run.py OUTPUT_DIR

For ZeRO 1, 2 and 3 (bf16 for ZeRO-2), with 2 micro-batches a step and a NaN loss in the first micro-batch of
step 3: the weights and the AdamW state after step 3 must equal those after step 2 (a zero gradient still
moves AdamW's weights through momentum and weight decay), and step 4 must train again. Then a ZeRO-3 run
resumes exactly from a middle checkpoint (partitioned weights, the kept frozen tower gathered into
``frozen.safetensors`` and scattered back, the teacher left out) and exports gathered weights.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from tiny_run import TinyRegressor, die_with_parent, synthetic_dataset

from iv2_train import (
    ResumableBatches,
    TrainConfig,
    Trainer,
    checkpoint_dir,
    load_config,
    read_safetensors,
    shutdown_distributed,
)


def tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"w.{k}": v.detach().float().clone() for k, v in trainer.module.state_dict().items()}
    for i, state in enumerate(trainer.strategy.base_optimizer.state.values()):
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"adam.{i}.{key}"] = value.detach().float().clone()
    return out


def run(output_dir: str, stage: int, precision: str) -> list[str]:
    cfg = load_config(
        TrainConfig,
        "tiny-cpu",
        [
            f"output_dir={output_dir}/zero{stage}",
            "max_steps=4",
            "grad_accum_steps=2",
            "schedule.warmup_steps=0",
            "checkpoint.every_steps=100",
            "checkpoint.export_final=false",
            "logging.progress=none",
            "logging.plots=false",
            "logging.tensorboard=false",
            "distributed.strategy=deepspeed",
            f"distributed.zero_stage={stage}",
            f"distributed.precision={precision}",
        ],
    )
    snapshots: list[dict[str, torch.Tensor]] = []
    skipped: list[float] = []

    def snap(trainer: Trainer, metrics: dict[str, float]) -> None:
        snapshots.append(tensors(trainer))
        skipped.append(metrics["skipped"])

    torch.manual_seed(0)
    model = TinyRegressor({5})  # call 5 = first micro-batch of step 3
    Trainer(model, ResumableBatches(synthetic_dataset(), batch_size=4), cfg, callbacks=[snap]).fit()
    name = f"ZeRO-{stage} {precision}"
    failures = []
    if skipped != [0, 0, 1, 0]:
        failures.append(f"{name}: skipped pattern {skipped}, expected [0, 0, 1, 0]")
    changed = [k for k in snapshots[1] if not torch.equal(snapshots[1][k], snapshots[2][k])]
    if changed:
        failures.append(f"{name}: the skipped step changed {changed}")
    if all(torch.equal(snapshots[2][k], snapshots[3][k]) for k in snapshots[2] if k.startswith("w.")):
        failures.append(f"{name}: the step after the skipped one did not train")
    return failures


def zero3_resume(output_dir: str) -> list[str]:
    def trainer() -> Trainer:
        cfg = load_config(TrainConfig, "tiny-cpu", [
            f"output_dir={output_dir}/zero3-resume", "max_steps=4", "checkpoint.every_steps=2",
            "checkpoint.keep_last=0", "logging.progress=none", "logging.plots=false", "logging.tensorboard=false",
            "distributed.strategy=deepspeed", "distributed.zero_stage=3"])  # fmt: skip
        torch.manual_seed(0)
        return Trainer(TinyRegressor(set()), ResumableBatches(synthetic_dataset(), batch_size=4), cfg)

    final = Path(output_dir) / "zero3-resume" / "final" / "model.safetensors"
    first = trainer().fit()
    weights_first = read_safetensors(final)
    shutil.rmtree(checkpoint_dir(f"{output_dir}/zero3-resume", 4))
    resumed = trainer()
    resumed.resume_from = checkpoint_dir(f"{output_dir}/zero3-resume", 2)
    second = resumed.fit()
    weights_second = read_safetensors(final)
    failures = []
    want, got = [r["loss"] for r in first.history[2:]], [r["loss"] for r in second.history]
    if len(got) != 2 or any(abs(a - b) > 1e-6 for a, b in zip(want, got)):
        failures.append(f"ZeRO-3 resume: losses {got}, expected {want}")
    kept = read_safetensors(checkpoint_dir(f"{output_dir}/zero3-resume", 2) / "frozen.safetensors")
    if sorted(kept) != ["embed.bias", "embed.weight"] or kept["embed.weight"].shape != (8, 8):
        failures.append(f"ZeRO-3 frozen.safetensors holds {[(k, tuple(v.shape)) for k, v in kept.items()]}")
    if any(k.startswith("teacher.") for k in weights_second) or weights_second["net.0.weight"].shape != (16, 8):
        failures.append(f"ZeRO-3 export: {[(k, tuple(v.shape)) for k, v in weights_second.items()]}")
    for name, tensor in weights_first.items():
        if not torch.allclose(tensor, weights_second[name], atol=1e-6):
            failures.append(f"ZeRO-3 resume: final weight {name} differs")
    return failures


def main(output_dir: str) -> None:
    die_with_parent()
    failures: list[str] = []
    for stage, precision in ((1, "fp32"), (2, "bf16"), (3, "fp32")):
        failures += run(output_dir, stage, precision)
    failures += zero3_resume(output_dir)
    shutdown_distributed()
    if failures:
        print("; ".join(failures), file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
