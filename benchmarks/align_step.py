"""Benchmark: stage-2 training step throughput of the ``tiny-synthetic`` flavor on this machine, per media source.

The flavor's own model (``iv2_align.training.stage2_config`` over the synthetic tokenizer) and objective; the
batches are random tensors of the shapes the flavor's data gives (``data.batch_size`` clips of
``(3, 4, 56, 56)``, images ``(3, 1, 56, 56)``, ``audio_seconds`` of 64-bin filter banks, captions of
``max_text_length`` tokens), so the numbers are the model's alone (decoding is read once and cached by the
flavor). One step = forward (every loss the source computes) + backward + AdamW update. The rows are measured
side by side in one run; ``ratio`` is a step's time over the masked video step's, ``share`` the step's part of
an evenly mixed epoch of the flavor's sources.

    python benchmarks/align_step.py [--flavor tiny-synthetic] [--repeats 10] [--threads 1] [--markdown]
                                    [--device cpu|cuda] [--precision fp32|bf16]

``--precision bf16`` runs the forward under ``torch.autocast`` (bfloat16), as iv2-train's ``precision: bf16``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from iv2_align import load_align_config
from iv2_align.data import build_tokenizer
from iv2_align.objective import Stage2Objective
from iv2_align.training import build_model, freeze_for_phase, stage2_config


def make_batch(source: str, batch: int, frames: int, size: int, fbank_rows: int, text_length: int, vocab: int,
               gen: torch.Generator) -> tuple[str, dict[str, torch.Tensor]]:
    ids = torch.randint(5, vocab, (batch, text_length), generator=gen)
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(ids)
    mask[:, text_length * 2 // 3:] = 0  # captions shorter than the padded length, as the corpus' are
    ids[mask == 0] = 0
    out = {"input_ids": ids, "attention_mask": mask, "idx": torch.arange(batch)}
    if source in ("image", "video", "audio_video"):
        out["video"] = torch.randn(batch, 3, 1 if source == "image" else frames, size, size, generator=gen)
    if source in ("audio", "audio_video"):
        out["audio"] = torch.randn(batch, fbank_rows, 64, generator=gen)
    return source, out


def time_steps(model: torch.nn.Module, batch: tuple[str, dict], repeats: int, device: torch.device,
               precision: str) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of one training step, after one untimed warm-up step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    wall, cpu = [], []
    for i in range(repeats + 1):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        with autocast:
            loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flavor", default="tiny-synthetic")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    cfg = load_align_config(args.flavor)
    tokenizer = build_tokenizer(cfg.model.tokenizer)
    model_cfg = stage2_config(cfg, len(tokenizer))
    frames, size = model_cfg.vision.num_frames, model_cfg.vision.img_size
    fbank_rows = int(cfg.data.audio_seconds * 100) - 2  # 25 ms windows every 10 ms (iv2-data's fbank)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for phase_name, phase in (("masked", cfg.masked), ("unmasked", cfg.unmasked)):
        torch.manual_seed(0)
        model = build_model(cfg, model_cfg, initialise=False)
        model.objective = Stage2Objective.for_tokenizer(
            tokenizer, weights=cfg.loss, video_mask_type=phase.video_mask_type,
            video_mask_ratio=phase.video_mask_ratio, image_mask_type=phase.image_mask_type,
            image_mask_ratio=phase.image_mask_ratio)
        freeze_for_phase(model, phase)
        model.train().to(device)
        for source in cfg.data.sources:
            b = cfg.data.batch_size[source]
            name, tensors = make_batch(source, b, frames, size, fbank_rows, cfg.model.max_text_length,
                                       len(tokenizer), gen)
            batch = (name, {k: v.to(device) for k, v in tensors.items()})
            wall, cpu = time_steps(model, batch, args.repeats, device, args.precision)
            rows.append((phase_name, source, b, wall, cpu))
    base = next(r[3] for r in rows if r[:2] == ("masked", "video"))
    masked_total = sum(r[3] for r in rows if r[0] == "masked")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    print(f"# iv2-align {args.flavor} training step, {where}, {args.precision}, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    header = ("phase", "source", "batch", "wall ms/step", "CPU ms/step", "samples/s", "ratio", "share")
    lines = [header] + [
        (phase, source, str(b), f"{wall * 1e3:.0f}", f"{cpu * 1e3:.0f}", f"{b / wall:.0f}", f"{wall / base:.2f}",
         f"{wall / masked_total:.0%}" if phase == "masked" else "")
        for phase, source, b, wall, cpu in rows]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines[1:]:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            print("  ".join(cell.rjust(w) for cell, w in zip(line, widths)))


if __name__ == "__main__":
    main()
