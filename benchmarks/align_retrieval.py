"""Benchmark: retrieval evaluation with ITM re-ranking at N videos x N texts, ours vs a naive full-matrix one.

Both run the same tiny stage-2 model (``internvideo2-stage2-tiny``: 64-d vision, 32-d text; images of 56 px by
default so that 10k clips encode in seconds on a CPU; the point is how time and memory scale with N) on the
same inputs, streamed batch by batch, with one caption per video and each row's top ``k_test`` re-ranked:

- **ours**: ``iv2_align.evaluate_retrieval(..., keep_scores=False)``: features and fusion tokens kept, the
  distinct re-ranking pairs scored once, every metric computed ``chunk_rows`` score rows at a time — no
  ``N x N`` matrix;
- **naive**: the official evaluation's shape (``retrieval_utils.evaluation`` + ``itm_eval``): the whole ITC
  matrix, the two ``-100``-filled ITM score matrices, then the ``sim`` / ``dsl`` / ``match`` variants
  softmaxed as whole matrices and ranked (our own full-matrix functions, ``keep_scores=True``'s path, with
  the pairs of each direction scored separately as the official loops do).

Peak memory is the process's peak resident set above what it held before the call (Linux ``VmHWM``; the script
re-executes itself with glibc's mmap threshold pinned so freed tensors leave the resident set, see
``kernels_contrastive.py``). Both give the same metrics (checked). With ``--device cuda`` the model (encoding and
ITM fusion) runs on the GPU; features, tokens and score matrices stay in host memory in both, as
``evaluate_retrieval`` keeps them, so the peak is still the host's.

    python benchmarks/align_retrieval.py [--sizes 1000 10000] [--k-test 4] [--frames 1] [--threads 1] [--markdown]
                                         [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Iterator

import torch
from kernels_contrastive import PeakMemory, ensure_pinned_mmap_threshold, fmt_bytes

from iv2_align import create_stage2_model, evaluate_retrieval, retrieval_metrics
from iv2_align.retrieval import encode_media, encode_texts, variant_scores


def video_batches(n: int, frames: int, size: int, batch: int, seed: int = 0) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch):
        yield torch.randn(min(batch, n - start), 3, frames, size, size, generator=gen)


def captions(n: int, length: int, vocab: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=gen)
    ids[:, 0] = 2
    return ids, torch.ones_like(ids)


@torch.no_grad()
def naive_retrieval(model: torch.nn.Module, videos: Iterator[torch.Tensor], ids: torch.Tensor, mask: torch.Tensor,
                    text_to_video: list[int], k_test: int, itm_batch_size: int) -> dict[str, dict[str, float]]:
    model.eval()
    device = next(model.parameters()).device
    text_feat, text_tokens = encode_texts(model, ids, mask)
    media_feat, token_batches = encode_media(model, videos, batch_size=64)
    media_tokens = torch.cat(token_batches)
    itc = media_feat @ text_feat.T
    head = model.match_head("itm")

    def itm_matrix(scores: torch.Tensor, row_is_video: bool) -> torch.Tensor:
        top = scores.topk(min(scores.shape[1], k_test), dim=1).indices
        out = torch.full_like(scores, -100.0)
        rows = torch.arange(scores.shape[0])[:, None].expand_as(top).flatten()
        cols = top.flatten()
        for start in range(0, rows.numel(), itm_batch_size):
            r, c = rows[start:start + itm_batch_size], cols[start:start + itm_batch_size]
            v, t = (r, c) if row_is_video else (c, r)
            fused = model.fuse(media_tokens[v].to(device), text_tokens[t].to(device), mask[t].to(device))
            out[r, c] = head(fused[:, 0])[:, 1].float().cpu()
        return out

    itm_v2t, itm_t2v = itm_matrix(itc, True), itm_matrix(itc.T, False)
    variants = variant_scores(itc, itm_v2t, itm_t2v, softmax=True)
    return {name: retrieval_metrics(v2t, t2v, text_to_video) for name, (v2t, t2v) in variants.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--k-test", type=int, default=4)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--text-length", type=int, default=8)
    parser.add_argument("--itm-batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--device", default="cpu", help="where the model runs (scores stay in host memory)")
    args = parser.parse_args()
    ensure_pinned_mmap_threshold()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_stage2_model("internvideo2-stage2-tiny").eval().to(args.device)
    size = model.cfg.vision.img_size
    vocab = model.text_encoder.config.vocab_size
    rows = []
    for n in args.sizes:
        ids, mask = captions(n, args.text_length, vocab)
        text_to_video = list(range(n))
        measured = {}
        for name in ("naive", "ours"):
            batches = video_batches(n, args.frames, size, 64)
            with PeakMemory(torch.device("cpu")) as mem:
                start, start_cpu = time.perf_counter(), time.process_time()
                if name == "ours":
                    metrics = evaluate_retrieval(model, batches, ids, mask, text_to_video=text_to_video,
                                                 k_test=args.k_test, batch_size=64, keep_scores=False,
                                                 itm_batch_size=args.itm_batch_size).metrics
                else:
                    metrics = naive_retrieval(model, batches, ids, mask, text_to_video, args.k_test,
                                              args.itm_batch_size)
                wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            measured[name] = (wall, cpu, mem.peak, metrics)
        same = measured["ours"][3] == measured["naive"][3]
        (nw, nc, nm, _), (ow, oc, om, _) = measured["naive"], measured["ours"]
        rows.append((f"{n:,} x {n:,}", f"{nw:.1f}", f"{ow:.1f}", f"{nw / ow:.2f}x", f"{nc:.1f}", f"{oc:.1f}",
                     fmt_bytes(nm), fmt_bytes(om), f"{nm / om:.1f}x" if nm and om else "n/a", "yes" if same else "NO"))
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "the CPU"
    print(f"# iv2-align retrieval evaluation, model on {where}, {platform.processor() or platform.machine()} host, "
          f"{args.threads} thread(s), torch {torch.__version__}; k_test {args.k_test}, {args.frames} frame(s) of "
          f"{size} px; peak = host memory")
    header = ("videos x texts", "naive s", "ours s", "speed-up", "naive CPU s", "ours CPU s", "naive peak",
              "ours peak", "memory saved", "same metrics")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
