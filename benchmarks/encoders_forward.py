"""Encoder forward throughput and peak memory: iv2-encoders vs a plain eager implementation of the same
maths with the same weights (explicit softmax attention, unfused float32 RMSNorm, LayerScale in float32 —
the way the official code runs without flash-attn and its fused kernels).

    uv run python benchmarks/encoders_forward.py [--models internvideo2-tiny internvideo2-b14] [--device cpu]
        [--batch 1] [--iters 3] [--dtype float32|bfloat16] [--compile]

Each (model, implementation) runs in its own subprocess so that peak memory (max RSS on CPU, max allocated
on CUDA) is measured alone; outputs of both are compared for equality on the same input.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- the eager baseline
def _rms(x, w, eps=1e-6):
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dtype)


def eager_forward(sd: dict, cfg, video: torch.Tensor) -> torch.Tensor:
    """Plain eager maths of the official encoder (x_vis + attention pooling), reading weights by name."""
    d, heads, depth = cfg.embed_dim, cfg.num_heads, cfg.depth
    w = sd["patch_embed.proj.weight"]
    x = F.conv3d(video.to(w.dtype), w, sd["patch_embed.proj.bias"], stride=w.shape[2:])
    x = x.flatten(3).permute(0, 2, 3, 1)
    b, t, hw, c = x.shape
    x = x.reshape(b, t * hw, c)
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], dim=1) + sd["pos_embed"]
    hd = d // heads
    for i in range(depth):
        p = f"blocks.{i}."
        h = _rms(x, sd[p + "norm1.weight"])
        n = h.shape[1]
        qkv = F.linear(h, sd[p + "attn.qkv.weight"]).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = _rms(q.transpose(1, 2).flatten(-2, -1), sd[p + "attn.q_norm.weight"]).view(b, n, heads, hd).transpose(1, 2)
        k = _rms(k.transpose(1, 2).flatten(-2, -1), sd[p + "attn.k_norm.weight"]).view(b, n, heads, hd).transpose(1, 2)
        attn = ((q * hd**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        a = F.linear((attn @ v).transpose(1, 2).reshape(b, n, d), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        x = x + (a.float() * sd[p + "ls1.gamma"].float()).to(x.dtype)
        h = _rms(x, sd[p + "norm2.weight"])
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        x = x + (h.float() * sd[p + "ls2.gamma"].float()).to(x.dtype)
    pp = "clip_projector."
    ph = cfg.attn_pool_num_heads
    qn = F.layer_norm(x.mean(1, keepdim=True), (d,), sd[pp + "norm1_q.weight"], sd[pp + "norm1_q.bias"], 1e-5)
    kn = F.layer_norm(x, (d,), sd[pp + "norm1_k.weight"], sd[pp + "norm1_k.bias"], 1e-5)
    vn = F.layer_norm(x, (d,), sd[pp + "norm1_v.weight"], sd[pp + "norm1_v.bias"], 1e-5)
    q = F.linear(qn, sd[pp + "cross_attn.q.weight"], sd[pp + "cross_attn.q_bias"]).reshape(b, 1, ph, -1).transpose(1, 2)
    k = F.linear(kn, sd[pp + "cross_attn.k.weight"], sd[pp + "cross_attn.k_bias"]).reshape(b, -1, ph, d // ph).transpose(1, 2)
    v = F.linear(vn, sd[pp + "cross_attn.v.weight"], sd[pp + "cross_attn.v_bias"]).reshape(b, -1, ph, d // ph).transpose(1, 2)
    attn = ((q * (d // ph) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(b, 1, d)
    return F.linear(out, sd[pp + "cross_attn.proj.weight"], sd[pp + "cross_attn.proj.bias"]).squeeze(1)


# --------------------------------------------------------------------------- one measurement
def measure(name: str, impl: str, device: str, batch: int, iters: int, dtype: str, compile_: bool,
            frames: int, size: int) -> dict:
    from iv2_encoders import create_model

    torch.manual_seed(0)
    model = create_model(name, num_frames=frames, img_size=size).eval().to(device)
    cfg = model.cfg
    tdtype = getattr(torch, dtype)
    video = torch.randn(batch, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(1)).to(device)
    if impl == "iv2":
        fn = (lambda v: model(v).pooled)
        if compile_:
            fn = torch.compile(fn)
    else:
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        fn = (lambda v: eager_forward(sd, cfg, v))
    autocast = torch.autocast(torch.device(device).type, dtype=tdtype, enabled=tdtype != torch.float32)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode(), autocast:
        out = fn(video)  # warm-up (and compilation)
        sync()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(iters):
            out = fn(video)
        sync()
        elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"clips_per_s": batch * iters / elapsed, "peak_bytes": peak, "pooled": out.float().cpu().tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["internvideo2-tiny", "internvideo2-b14"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the iv2 encoder")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (all models)")
    parser.add_argument("--size", type=int, default=224, help="frame size (all models)")
    parser.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:
        print(json.dumps(measure(*args._one, args.device, args.batch, args.iters, args.dtype, args.compile,
                                 args.frames, args.size)))
        return

    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {dev}; dtype {args.dtype}; batch {args.batch}; {args.iters} timed iterations; "
          f"torch {torch.__version__}; threads {torch.get_num_threads()}")
    print("| model | frames x size | eager clips/s | iv2 clips/s | speed-up | eager peak MiB | iv2 peak MiB | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        results = {}
        for impl in ("eager", "iv2"):
            cmd = [sys.executable, __file__, "--_one", name, impl, "--device", args.device, "--batch", str(args.batch),
                   "--iters", str(args.iters), "--dtype", args.dtype, "--frames", str(args.frames), "--size", str(args.size)]
            cmd += ["--compile"] if args.compile else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:  # the measuring process' own error, not only its exit status
                raise SystemExit(f"{name} ({impl}) failed with exit status {proc.returncode}:\n"
                                 f"{proc.stderr[-6000:]}")
            results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
        e, o = results["eager"], results["iv2"]
        diff = max(abs(a - b) for ra, rb in zip(e["pooled"], o["pooled"]) for a, b in zip(ra, rb))
        print(f"| {name} | {args.frames}x{args.size} | {e['clips_per_s']:.2f} | {o['clips_per_s']:.2f} | "
              f"{o['clips_per_s'] / e['clips_per_s']:.2f}x | {e['peak_bytes'] / 2**20:.0f} | {o['peak_bytes'] / 2**20:.0f} | "
              f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
