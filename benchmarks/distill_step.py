"""Stage-1 step time with live teachers vs cached targets, and the memory plan of the 1B / 6B runs.

1. Step time. The paper's widths and depths scaled down together so that a step fits a CPU: the student
   1B (1408-d x 40) -> 96-d x 5, the image teacher InternViT-6B (3200-d x 48, per frame) -> 208-d x 6, the video
   teacher VideoMAEv2-g (1408-d x 40, 16 frames, tubelet 2) -> 96-d x 5 (widths / ~15, depths / 8, keeping the
   teacher/student width ratio 3200 : 1408 : 1408). 8 frames of 112 px in patches of 14 (8 x 8 tokens a
   frame, 512 in all; the video teacher sees 16 frames), attention masking 0.8 per frame as the official recipe.
   Both modes run the same DistillationModel and AdamW step side by side in one process, on the same clips:
   "live" runs the frozen teachers every step, "cached" reads their targets (float16, as a target cache stores
   them, cast to float32) and runs no teacher. Printed: median ms per step over rounds, and the ratio.
2. Memory plan: iv2_train.estimate_memory per ZeRO stage for the official runs (1B: 128 GPUs x 32 clips; 6B: 256 x
   8), student trainable, teachers frozen (weights only; in cached mode they are not loaded at all), activations of
   the student's 417 visible tokens with checkpointing on every block; and the cache's bytes per clip.

    uv run python benchmarks/distill_step.py [--rounds 5] [--batch 4] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(batch: int):
    from transformers import VideoMAEConfig, VideoMAEModel

    from iv2_distill import (
        DistillationModel,
        DistillTeachers,
        EncoderImageTeacher,
        MaskConfig,
        VideoMAETeacher,
        create_student,
    )
    from iv2_encoders import create_model

    torch.manual_seed(0)
    student = create_student("internvideo2-tiny", img_size=112, num_frames=8, embed_dim=96, depth=5, num_heads=4,
                             mlp_ratio=48 / 11, attn_pool_num_heads=4, clip_embed_dim=48,
                             clip_teacher_embed_dim=208, clip_teacher_final_dim=48, clip_return_layer=3,
                             mae_teacher_embed_dim=96, mae_return_layer=2)
    image = create_model("internvideo2-tiny", img_size=112, num_frames=1, embed_dim=208, depth=6, num_heads=8,
                         mlp_ratio=4.0, attn_pool_num_heads=8, clip_embed_dim=48, init_values=0.1)
    video = VideoMAEModel(VideoMAEConfig(image_size=112, patch_size=14, num_frames=16, tubelet_size=2, hidden_size=96,
                                         num_hidden_layers=5, num_attention_heads=4, intermediate_size=384,
                                         use_mean_pooling=False))
    teachers = DistillTeachers(image=EncoderImageTeacher(image, return_layers=3),
                               video=VideoMAETeacher(video, return_layers=2))
    teachers.check_student(student.cfg)
    clip = torch.randn(batch, 3, 16, 112, 112)
    with torch.no_grad():
        targets = teachers(clip)
    from iv2_distill.cache import item_major

    cached = {f"targets.{k}": (v.float() if k == "saliency" else v.half()) for k, v in item_major(targets).items()}
    live_model = DistillationModel(student, teachers, mask=MaskConfig(ratio=0.8))
    cached_student = create_student("internvideo2-tiny", **{k: getattr(student.cfg, k) for k in (
        "img_size", "num_frames", "embed_dim", "depth", "num_heads", "mlp_ratio", "attn_pool_num_heads",
        "clip_embed_dim")}, clip_teacher_embed_dim=208, clip_teacher_final_dim=48, clip_return_layer=3,
        mae_teacher_embed_dim=96, mae_return_layer=2)
    cached_student.load_state_dict(student.state_dict())
    cached_model = DistillationModel(cached_student, None, mask=MaskConfig(ratio=0.8))
    index = torch.arange(batch)
    batches = {"live": {"video": clip, "index": index},
               "cached": {"video": teachers.student_frames(clip), "index": index, **cached}}
    params = {"student": sum(p.numel() for p in student.parameters()),
              "teachers": sum(p.numel() for p in teachers.parameters())}
    return {"live": live_model, "cached": cached_model}, batches, params


def step_time(model, batch, optimizer) -> float:
    sync = torch.cuda.synchronize if batch["video"].is_cuda else (lambda: None)
    sync()
    started = time.perf_counter()
    loss = model(batch)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    sync()
    return time.perf_counter() - started


def memory_plan() -> list[tuple]:
    from transformers import VideoMAEConfig, VideoMAEModel

    from iv2_distill import create_student
    from iv2_distill.recipe import VIDEOMAE_V2_G
    from iv2_encoders import create_model
    from iv2_train import estimate_memory, freeze

    rows = []
    for name, gpus, micro, heads in (("1b", 128, 32, 16), ("6b", 256, 8, 25)):
        with torch.device("meta"):
            student = create_student(f"internvideo2-{name}")
            # stand-ins with the teachers' parameter counts: InternViT-6B ~ the 6B encoder's size, VideoMAEv2-g
            image_teacher = freeze(create_model("internvideo2-6b", num_frames=1, pool_head=True), checkpoint=False)
            video_teacher = freeze(VideoMAEModel(VideoMAEConfig(**VIDEOMAE_V2_G)), checkpoint=False)
            model = torch.nn.ModuleDict({"student": student, "image": image_teacher, "video": video_teacher})
        cfg = student.cfg
        visible = 1 + cfg.num_frames * (cfg.grid_size[1] * cfg.grid_size[2] - int(0.8 * cfg.grid_size[1] ** 2))
        for zero in (0, 1, 2, 3):
            for mode, module in (("live", model), ("cached", student)):
                est = estimate_memory(module, zero_stage=zero, world_size=gpus, precision="bf16", num_layers=cfg.depth,
                                      hidden_size=cfg.embed_dim, seq_len=visible, micro_batch_size=micro,
                                      num_heads=heads, mlp_ratio=cfg.mlp_ratio, activation_checkpointing=True)
                rows.append((name, gpus, micro, zero, mode, est))
    return rows


def cache_bytes_per_clip(k_clip, n, c_clip, k_mae, c_mae, c_final, t, hw, bytes_per=2) -> int:
    return (k_clip * (1 + n) * c_clip + k_mae * n * c_mae + c_final) * bytes_per + t * hw * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, batches, params = build(args.batch)
    models = {k: m.to(args.device) for k, m in models.items()}
    batches = {k: {name: v.to(args.device) for name, v in b.items()} for k, b in batches.items()}
    optimizers = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for k, m in models.items()}
    for mode in models:  # warm-up
        step_time(models[mode], batches[mode], optimizers[mode])
    times: dict[str, list[float]] = {"live": [], "cached": []}
    for _ in range(args.rounds):  # side by side: alternate the modes every round
        for mode in ("live", "cached"):
            times[mode].append(step_time(models[mode], batches[mode], optimizers[mode]))
    live, cached = statistics.median(times["live"]), statistics.median(times["cached"])
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {where}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.rounds} rounds")
    print(f"parameters: student {params['student'] / 1e6:.2f} M, teachers {params['teachers'] / 1e6:.2f} M "
          f"({params['teachers'] / params['student']:.1f}x)")
    print("\n| mode | ms / step (median) | range | speed-up |\n|---|---|---|---|")
    for mode, value in (("live teachers", live), ("cached targets", cached)):
        samples = times["live" if mode.startswith("live") else "cached"]
        print(f"| {mode} | {1000 * value:.1f} | {1000 * min(samples):.1f}-{1000 * max(samples):.1f} | "
              f"{live / value:.2f}x |")

    print("\nmemory plan per GPU (iv2_train.estimate_memory, bf16, activation checkpointing on every block):")
    print("| student | GPUs x clips | ZeRO | mode | weights GiB | grads GiB | optimizer GiB | activations GiB | total GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    gib = 2**30
    for name, gpus, micro, zero, mode, est in memory_plan():
        print(f"| {name} | {gpus} x {micro} | {zero} | {mode} | {est.params_bytes / gib:.2f} | {est.grads_bytes / gib:.2f} "
              f"| {est.optimizer_bytes / gib:.2f} | {est.activations_bytes / gib:.2f} | {est.total_bytes / gib:.2f} |")
    paper = cache_bytes_per_clip(6, 2048, 3200, 4, 1408, 768, 8, 256)
    bench = cache_bytes_per_clip(3, 512, 208, 2, 96, 48, 8, 64)
    tiny = cache_bytes_per_clip(2, 64, 48, 2, 64, 32, 4, 16)
    print(f"\ntarget cache per clip view (fp16 targets, fp32 saliency): paper scale {paper / 1e6:.1f} MB, this "
          f"benchmark {bench / 1e6:.2f} MB, tiny-synthetic {tiny / 1e3:.1f} kB")


if __name__ == "__main__":
    main()
