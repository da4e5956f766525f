"""Benchmark: batch inference videos/s of the chat model at batch 1 vs batch B (left-padded batched generation).

Both columns answer the same questions about the same clips with the same model in one run: encode the clips
(tower + QFormer + projection), then greedy generation of exactly ``--new-tokens`` tokens per answer
(``min_new_tokens`` = ``max_new_tokens``, so that both columns do the same work whatever a random model says).
Decoding is left out (clips are made in memory, already normalised): this measures the model side that
``iv2-chat batch`` batches. Default model: the ``tiny-synthetic`` flavor's (random weights, offline tokenizers).

    python benchmarks/chat_batch.py [--videos 32] [--batch 8] [--new-tokens 16] [--threads 1] [--repeats 3]
                                    [--config tiny-synthetic] [--device cpu] [--json results.jsonl]
                                    [--llm-hidden 4096 --llm-layers 4 --llm-dtype bfloat16]

``--llm-hidden H`` swaps the tiny LLM for a random Mistral-7B-shaped one of width ``H`` (intermediate 3.5 H,
heads of 128, ``H / 512`` key-value heads, as Mistral-7B-v0.3 at 4096) and ``--llm-layers`` blocks: the
realistic width of the released chat model on a GPU, not its depth (32 blocks), with the tiny tokenizer's
vocabulary; the tower and QFormer stay the flavor's.

Goal (issue 15): batching >= 3x the throughput of one-by-one on CPU with the tiny flavor.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from iv2_chat import VideoChat, VideoChatModel, chat_config
from iv2_chat.config import MISTRAL_7B_V03
from iv2_chat.tiny import tiny_llm_tokenizer, tiny_qformer_tokenizer

QUESTIONS = ("What moves in the video?", "Where does it move?", "What colour is the moving object?",
             "Describe the video briefly.")


def videos_per_second(chat: VideoChat, clips: list[torch.Tensor], batch: int, new_tokens: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(clips), batch):
        chunk = clips[start:start + batch]
        questions = [QUESTIONS[(start + i) % len(QUESTIONS)] for i in range(len(chunk))]
        with torch.inference_mode():
            visual = chat.encode(chunk)
            chat.answer_batch(chunk, questions, visual=visual, do_sample=False, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens)
    return len(clips) / (time.perf_counter() - started)


def wide_llm(llm: dict, hidden: int, layers: int) -> dict:
    """The tiny flavor's LLM config at Mistral-7B-v0.3's shape ratios, ``hidden`` wide and ``layers`` deep."""
    head_dim = MISTRAL_7B_V03["head_dim"]
    if hidden % (4 * head_dim):
        raise SystemExit(f"--llm-hidden must be a multiple of {4 * head_dim} (heads of {head_dim}), got {hidden}")
    return {**llm, "hidden_size": hidden, "num_hidden_layers": layers, "head_dim": head_dim,
            "intermediate_size": hidden * MISTRAL_7B_V03["intermediate_size"] // MISTRAL_7B_V03["hidden_size"],
            "num_attention_heads": hidden // head_dim, "num_key_value_heads": hidden // (4 * head_dim)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="tiny-synthetic", help="iv2_chat.chat_config name (tiny ones)")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many timed passes per column")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="append the results as one JSON line")
    parser.add_argument("--llm-hidden", type=int, default=None,
                        help="a random Mistral-shaped LLM this wide instead of the flavor's (e.g. 4096)")
    parser.add_argument("--llm-layers", type=int, default=4, help="its blocks (with --llm-hidden)")
    parser.add_argument("--llm-dtype", default=None, help="LLM weight dtype, e.g. bfloat16 (default: the flavor's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    cfg = chat_config(args.config)
    if args.llm_hidden:
        cfg = cfg.replace(llm=wide_llm(cfg.llm, args.llm_hidden, args.llm_layers))
    if args.llm_dtype:
        cfg = cfg.replace(llm_dtype=args.llm_dtype)
    model = VideoChatModel(cfg).eval().to(args.device)
    llm_cfg = model.cfg.llm_hf_config()
    llm_desc = (f"LLM {llm_cfg.hidden_size} wide x {llm_cfg.num_hidden_layers} blocks, {model.llm_dtype}, "
                f"{sum(p.numel() for p in model.lm.parameters()) / 1e6:.0f} M parameters")
    chat = VideoChat(model, tiny_llm_tokenizer(), tiny_qformer_tokenizer())
    v = model.cfg.vision
    gen = torch.Generator().manual_seed(0)
    clips = [torch.randn(3, v.num_frames, v.img_size, v.img_size, generator=gen).to(args.device)
             for _ in range(args.videos)]
    videos_per_second(chat, clips[: args.batch], args.batch, 2)  # warm-up (allocations, lazy imports)

    columns = {}
    for batch in (1, args.batch):
        columns[batch] = statistics.median(videos_per_second(chat, clips, batch, args.new_tokens)
                                           for _ in range(args.repeats))
    ratio = columns[args.batch] / columns[1]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), {args.device}"
    print(f"chat batch inference, {args.config}, {llm_desc}, {args.videos} videos, {args.new_tokens} new tokens "
          f"each ({machine})")
    print(f"{'batch':>6} {'videos/s':>10} {'vs batch 1':>11}")
    for batch, rate in columns.items():
        print(f"{batch:>6} {rate:>10.2f} {rate / columns[1]:>10.2f}x")
    print(f"goal: batch {args.batch} >= 3x batch 1 -> {'met' if ratio >= 3 else 'NOT met'} ({ratio:.2f}x)")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps({"benchmark": "chat_batch", "config": args.config, "llm": llm_desc, "videos": args.videos,
                                "new_tokens": args.new_tokens, "machine": machine,
                                "videos_per_s": {str(k): r for k, r in columns.items()}, "ratio": ratio}) + "\n")


if __name__ == "__main__":
    main()
