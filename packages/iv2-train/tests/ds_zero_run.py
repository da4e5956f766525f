"""DeepSpeed ZeRO on CPU with 2 processes: train, then resume from a middle checkpoint in the same processes
and check the resumed losses equal the first run's; the frozen teacher stays in eval and out of the engine's
checkpoint and the export, the frozen tower that is kept goes to ``frozen.safetensors``. Exits non-zero on
failure.

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 ds_zero_run.py OUTPUT_DIR STAGE
    DS_ACCELERATOR=cpu python -m torch.distributed.run --nproc-per-node 2 ds_zero_run.py OUTPUT_DIR STAGE
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from tiny_run import TeacherStaysInEval, TinyRegressor, die_with_parent, evaluate, synthetic_dataset

from iv2_train import ResumableBatches, TrainConfig, Trainer, barrier, checkpoint_dir, load_config, read_safetensors


def make_trainer(output_dir: str, stage: int) -> Trainer:
    cfg = load_config(
        TrainConfig,
        "tiny-cpu",
        [
            f"output_dir={output_dir}",
            "max_steps=4",
            "grad_accum_steps=2",
            "optimizer.grad_clip=1.0",
            "checkpoint.every_steps=2",
            "checkpoint.keep_last=0",
            "evaluation.every_steps=2",
            "logging.progress=none",
            "logging.plots=false",
            "distributed.strategy=deepspeed",
            f"distributed.zero_stage={stage}",
        ],
    )
    torch.manual_seed(0)
    data = ResumableBatches(synthetic_dataset(), batch_size=4, seed=cfg.seed)
    return Trainer(TinyRegressor(set()), data, cfg, callbacks=[TeacherStaysInEval()], evaluate=evaluate)


def main(output_dir: str, stage: int) -> None:
    die_with_parent()
    first = make_trainer(output_dir, stage).fit()
    first_losses = [r["loss"] for r in first.history]
    weights_first = read_safetensors(Path(output_dir) / "final" / "model.safetensors")

    trainer = make_trainer(output_dir, stage)  # resume="auto" would find step 4: point it at step 2
    if trainer.env.is_main:
        shutil.rmtree(checkpoint_dir(output_dir, 4))
    barrier()
    trainer.resume_from = checkpoint_dir(output_dir, 2)
    second = trainer.fit()
    second_losses = [r["loss"] for r in second.history]
    weights_second = read_safetensors(Path(output_dir) / "final" / "model.safetensors")

    failures = []
    evals_first, evals_second = first.evaluations[1:], second.evaluations
    if [r["step"] for r in evals_second] != [4] or any(
        abs(a[k] - b[k]) > 1e-6 for a, b in zip(evals_first, evals_second) for k in a
    ):
        failures.append(f"evaluations differ after resume: {first.evaluations} vs {second.evaluations}")
    engine_file = checkpoint_dir(output_dir, 2) / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    saved = torch.load(engine_file, map_location="cpu", weights_only=False)
    frozen_kept = read_safetensors(checkpoint_dir(output_dir, 2) / "frozen.safetensors")
    if any(k.startswith(("teacher.", "embed.")) for k in saved["module"]) or saved.get("frozen_param_fragments"):
        failures.append(f"frozen weights inside the engine checkpoint: {sorted(saved['module'])}")
    if sorted(frozen_kept) != ["embed.bias", "embed.weight"]:
        failures.append(f"frozen.safetensors holds {sorted(frozen_kept)}, expected the embed tower only")
    if any(k.startswith("teacher.") for k in weights_second) or "embed.weight" not in weights_second:
        failures.append(f"final export holds {sorted(weights_second)}")
    if [r["step"] for r in second.history] != [3, 4]:
        failures.append(f"resumed run logged steps {[r['step'] for r in second.history]}, expected [3, 4]")
    if not all(abs(a - b) <= 1e-6 for a, b in zip(first_losses[2:], second_losses)):
        failures.append(f"losses differ after resume: {first_losses[2:]} vs {second_losses}")
    for name, tensor in weights_first.items():
        if not torch.allclose(tensor, weights_second[name], atol=1e-6):
            failures.append(f"final weight {name} differs after resume")
    if failures:
        print("; ".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"ok losses={first_losses}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # added by the deepspeed launcher
    main(args[0], int(args[1]))
