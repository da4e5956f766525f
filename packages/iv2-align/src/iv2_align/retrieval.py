"""Video-text retrieval evaluation, as the official ``evaluation`` + ``itm_eval``
(InternVideo2/multi_modality/tasks/retrieval_utils.py).

1. ITC: cosine between ``vision_proj(pooled)`` (``av_fusion`` for audio-video) and ``text_proj([CLS])``.
   Media are encoded batch by batch (a tensor is split, an iterable streams); only the pooled features and
   the fusion tokens are kept, the tokens in CPU memory (the official ``eval_offload``).
2. ITM re-ranking: each row's top ``k = min(N, k_test)`` by ITC gets the raw match logit ``[:, 1]`` of
   ``itm_head`` (``avtm_head`` for audio-video); every other entry is -100; the ITM score replaces ITC. The
   fusion runs once per distinct (video, text) pair needed by either direction, in batches of
   ``itm_batch_size`` pairs ordered by video, so no ``N x N x tokens`` tensor is ever built.
3. Metrics for the official variants ``sim`` (ITC), ``dsl`` (ITC times its softmax over the opposite axis)
   and ``match`` (ITM), each row-softmaxed in float32 before ranking; ties rank in descending index order
   (the official ``np.argsort(score)[::-1]``); the best rank over several ground truths counts; R@k in %
   rounded to 2 decimals. A model without fusion layers (the CLIP variant) gets ``sim`` and ``dsl`` on the
   raw scores, as the official ``evaluation_clip``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._progress import progress_bar

MEDIA_KINDS = ("video", "audio", "audio_video")


@dataclass
class RetrievalResult:
    """``itc`` (videos x texts cosine), ``itm_v2t`` (videos x texts) / ``itm_t2v`` (texts x videos): raw match
    logits at each row's top ``k_test``, -100 elsewhere (None for a model without fusion layers);
    ``metrics`` ``{"sim": {...}, "dsl": {...}, "match": {...}}`` with the official keys, in %."""

    itc: torch.Tensor | None  # None with keep_scores=False
    itm_v2t: torch.Tensor | None
    itm_t2v: torch.Tensor | None
    metrics: dict[str, dict[str, float]]


# ----------------------------------------------------------------------------------------------- metrics
def ground_truth_lists(text_to_video: Sequence, num_videos: int) -> tuple[list[list[int]], list[list[int]]]:
    """``(video_to_texts, text_to_videos)`` from ``text_to_video`` (one video index or a list per text)."""
    if isinstance(text_to_video, torch.Tensor):
        text_to_video = text_to_video.tolist()
    t2v: list[list[int]] = []
    v2t: list[list[int]] = [[] for _ in range(num_videos)]
    for t, gt in enumerate(text_to_video):
        videos = [int(gt)] if hasattr(gt, "__index__") else [int(v) for v in gt]
        if not videos:
            raise ValueError(f"text {t} has no ground-truth video in text_to_video")
        for v in videos:
            if not 0 <= v < num_videos:
                raise ValueError(f"text_to_video[{t}] = {v} is not a video index (there are {num_videos} videos)")
            v2t[v].append(t)
        t2v.append(videos)
    lonely = [v for v, texts in enumerate(v2t) if not texts]
    if lonely:
        raise ValueError(f"videos {lonely[:10]} have no caption in text_to_video; every video needs one")
    return v2t, t2v


def ground_truth_ranks(scores: torch.Tensor, ground_truth: Sequence[Sequence[int]], chunk: int = 1024) -> torch.Tensor:
    """Best 0-based rank per row of ``scores`` over its ground-truth columns, ranking by descending score
    with ties in descending column order (``np.argsort(row)[::-1]``). Rows are processed in chunks."""
    rows = torch.tensor([r for r, gts in enumerate(ground_truth) for _ in gts], dtype=torch.long)
    cols = torch.tensor([g for gts in ground_truth for g in gts], dtype=torch.long)
    if len(ground_truth) != scores.shape[0]:
        raise ValueError(f"{len(ground_truth)} ground-truth lists for {scores.shape[0]} score rows")
    column = torch.arange(scores.shape[1])
    best = torch.full((scores.shape[0],), scores.shape[1], dtype=torch.long)
    for start in range(0, rows.numel(), chunk):
        r, c = rows[start:start + chunk], cols[start:start + chunk]
        row_scores = scores[r]
        own = row_scores.gather(1, c[:, None])
        rank = (row_scores > own).sum(1) + ((row_scores == own) & (column[None, :] > c[:, None])).sum(1)
        best.scatter_reduce_(0, r, rank, reduce="amin")
    return best


def retrieval_metrics(
    scores_v2t: torch.Tensor, scores_t2v: torch.Tensor, text_to_video: Sequence,
) -> dict[str, float]:
    """The official ``itm_eval``: R@1/5/10 and their means for both directions, in %, rounded to 2 decimals.
    ``scores_v2t`` is ``(videos, texts)``, ``scores_t2v`` ``(texts, videos)``."""
    v2t_gt, t2v_gt = ground_truth_lists(text_to_video, scores_v2t.shape[0])
    return recall_metrics(ground_truth_ranks(scores_v2t.detach().float().cpu(), v2t_gt),
                          ground_truth_ranks(scores_t2v.detach().float().cpu(), t2v_gt))


def recall_metrics(v2t_ranks: torch.Tensor, t2v_ranks: torch.Tensor) -> dict[str, float]:
    """``itm_eval``'s numbers from the best 0-based ground-truth rank of every video and every text."""
    out: dict[str, float] = {}
    for name, ranks in (("v2t", v2t_ranks), ("t2v", t2v_ranks)):
        n = ranks.numel()
        recalls = [100.0 * int((ranks < k).sum()) / n for k in (1, 5, 10)]
        out.update({f"{name}_r1": recalls[0], f"{name}_r5": recalls[1], f"{name}_r10": recalls[2],
                    f"{name}_r_mean": sum(recalls) / 3})
    out["r_mean"] = (out["v2t_r_mean"] + out["t2v_r_mean"]) / 2
    order = ("v2t_r1", "v2t_r5", "v2t_r10", "v2t_r_mean", "t2v_r1", "t2v_r5", "t2v_r10", "t2v_r_mean", "r_mean")
    return {k: round(out[k], 2) for k in order}


def variant_scores(itc: torch.Tensor, itm_v2t: torch.Tensor | None, itm_t2v: torch.Tensor | None,
                   softmax: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{variant: (v2t, t2v)}`` score matrices of the official variants (row-softmaxed when ``softmax``)."""
    itc = itc.float()
    dsl_v2t = itc * itc.softmax(dim=0)
    dsl_t2v = itc.T * itc.T.softmax(dim=0)
    out = {"sim": (itc, itc.T), "dsl": (dsl_v2t, dsl_t2v)}
    if itm_v2t is not None and itm_t2v is not None:
        out["match"] = (itm_v2t.float(), itm_t2v.float())
    if softmax:
        out = {k: (a.softmax(dim=1), b.softmax(dim=1)) for k, (a, b) in out.items()}
    return out


# ----------------------------------------------------------------------------------------------- encoding
def _batches(
    data: torch.Tensor | Iterable[torch.Tensor], batch_size: int, ndim: int, what: str
) -> Iterator[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        if data.dim() != ndim:
            raise ValueError(f"{what} must be a {ndim}-D tensor or an iterable of such batches, "
                             f"got shape {tuple(data.shape)}")
        yield from data.split(batch_size)
        return
    for i, batch in enumerate(data):
        if not isinstance(batch, torch.Tensor) or batch.dim() != ndim:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"{what} batch {i} must be a {ndim}-D tensor, got {shape}")
        yield batch


def _is_fusion_model(model: nn.Module) -> bool:
    return hasattr(model, "fuse") and hasattr(model, "match_head")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_texts(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                 batch_size: int = 256, keep_tokens: bool = True, progress: bool = False,
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(features, tokens)``: L2-normalised text embeddings ``(N, D)`` and (fusion models, when
    ``keep_tokens``) the text-layer hidden states ``(N, L, H)`` kept on the CPU."""
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                         f"must both be (num_texts, max_length)")
    device = _device(model)
    feats, tokens = [], []
    fusion = _is_fusion_model(model)
    for start in progress_bar(range(0, input_ids.shape[0], batch_size), progress, "texts"):
        ids = input_ids[start:start + batch_size].to(device)
        mask = attention_mask[start:start + batch_size].to(device)
        if fusion:
            hidden, cls = model.encode_text(ids, mask)
            feats.append(F.normalize(model.text_features(cls).float(), dim=-1).cpu())
            if keep_tokens:
                tokens.append(hidden.cpu())
        else:
            feats.append(model.embed_text(ids, mask).float().cpu())
    return torch.cat(feats), (torch.cat(tokens) if tokens else None)


@torch.no_grad()
def encode_media(model: nn.Module, videos: torch.Tensor | Iterable[torch.Tensor], *,
                 fbank: torch.Tensor | Iterable[torch.Tensor] | None = None, media: str = "video",
                 batch_size: int = 32, keep_tokens: bool = True, progress: bool = False,
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(features, token_batches)``: L2-normalised media embeddings ``(N, D)`` and, for fusion models when
    ``keep_tokens``, the fusion tokens of each batch (CPU; ``[audio, vision]`` for ``media="audio_video"``).
    ``media="audio"``: ``videos`` holds the filter banks ``(N, frames, 64)``; features are ``audio_proj`` of the
    pooled BEATs tokens, no tokens are kept (no released layout has an audio-text matching head)."""
    if media not in MEDIA_KINDS:
        raise ValueError(f"media must be one of {MEDIA_KINDS}, got {media!r}")
    if media == "audio":
        if fbank is not None:
            raise ValueError("media='audio' takes the filter banks as its first argument, not fbank=")
        if not hasattr(model, "encode_audio"):
            raise ValueError("media='audio' needs a model with an audio encoder")
        device = _device(model)
        feats = [model.embed_audio(batch.to(device)).float().cpu()
                 for batch in progress_bar(_batches(videos, batch_size, 3, "fbank"), progress, "audio")]
        if not feats:
            raise ValueError("the audio input is empty")
        return torch.cat(feats), []
    if (media == "audio_video") != (fbank is not None):
        raise ValueError("media='audio_video' needs fbank (and fbank is only used with media='audio_video')")
    device = _device(model)
    fusion = _is_fusion_model(model)
    video_batches = _batches(videos, batch_size, 5, "videos")
    audio_batches = _batches(fbank, batch_size, 3, "fbank") if fbank is not None else None
    feats, tokens = [], []
    for i, video in enumerate(progress_bar(video_batches, progress, "media")):
        video = video.to(device)
        audio = None
        if audio_batches is not None:
            audio = next(audio_batches, None)
            if audio is None or audio.shape[0] != video.shape[0]:
                got = "none" if audio is None else audio.shape[0]
                raise ValueError(f"fbank batch {i} has {got} clips, videos batch {i} has {video.shape[0]}")
            audio = audio.to(device)
        if not fusion:
            if audio is not None:
                raise ValueError("media='audio_video' needs a model with an audio encoder and fusion layers")
            feats.append(model.embed_video(video).float().cpu())
            continue
        video_tokens, pooled = model.encode_video(video)
        if audio is None:
            feat, batch_tokens = model.video_features(pooled), video_tokens
        else:
            audio_tokens, audio_pooled = model.encode_audio(audio)
            feat = model.audio_video_features(audio_pooled, pooled)
            batch_tokens = torch.cat([audio_tokens, video_tokens], dim=1)
        feats.append(F.normalize(feat.float(), dim=-1).cpu())
        if keep_tokens:
            tokens.append(batch_tokens.cpu())
    if audio_batches is not None and next(audio_batches, None) is not None:
        raise ValueError("fbank has more batches than videos")
    if not feats:
        raise ValueError("videos is empty")
    return torch.cat(feats), tokens


class _TokenStore:
    """Per-batch token tensors addressed by global row index, without concatenating them."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches
        sizes = torch.tensor([b.shape[0] for b in batches])
        self.batch_of = torch.repeat_interleave(torch.arange(len(batches)), sizes)
        self.row_of = torch.cat([torch.arange(int(n)) for n in sizes])

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(rows, return_inverse=True)
        picked = torch.stack([self.batches[int(self.batch_of[r])][int(self.row_of[r])] for r in unique])
        return picked[inverse]


@torch.no_grad()
def _score_pairs(model: nn.Module, top_texts: torch.Tensor, top_videos: torch.Tensor, media_tokens: _TokenStore,
                 text_tokens: torch.Tensor, attention_mask: torch.Tensor, head: str, itm_batch_size: int,
                 progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pairs, scores)``: the distinct (video, text) pairs of every video's ``top_texts`` and every text's
    ``top_videos`` as sorted codes ``video * num_texts + text``, and their raw match logits."""
    num_videos, num_texts = top_texts.shape[0], top_videos.shape[0]
    v2t_codes = torch.arange(num_videos)[:, None] * num_texts + top_texts
    t2v_codes = top_videos * num_texts + torch.arange(num_texts)[:, None]
    pairs = torch.unique(torch.cat([v2t_codes.flatten(), t2v_codes.flatten()]))  # sorted by video, then text
    scores = torch.empty(pairs.numel(), dtype=torch.float32)
    device = _device(model)
    match_head = model.match_head(head)
    for start in progress_bar(range(0, pairs.numel(), itm_batch_size), progress, "re-rank"):
        codes = pairs[start:start + itm_batch_size]
        v, t = codes // num_texts, codes % num_texts
        media = media_tokens.gather(v).to(device)
        fused = model.fuse(media, text_tokens[t].to(device), attention_mask[t].to(device))
        scores[start:start + codes.numel()] = match_head(fused[:, 0])[:, 1].float().cpu()
    return pairs, scores


def _lookup(pairs: torch.Tensor, scores: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    return scores[torch.searchsorted(pairs, codes.flatten())].reshape(codes.shape)


def _itm_rows(pairs: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor, top: torch.Tensor, num_cols: int,
              codes_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The official ITM score rows: -100 everywhere but each row's ``top`` columns."""
    picked = _lookup(pairs, scores, codes_of(rows[:, None], top))
    return torch.full((rows.numel(), num_cols), -100.0).scatter_(1, top, picked)


def _top_columns(a: torch.Tensor, b: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Each row's top ``k`` columns of ``a @ b.T``, computed ``chunk`` rows at a time."""
    return torch.cat([(a[i:i + chunk] @ b.T).topk(k, dim=1).indices for i in range(0, a.shape[0], chunk)])


def _column_logsumexp(a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    """``logsumexp(a @ b.T, dim=0)`` without the whole matrix (the column softmax of the ``dsl`` variant)."""
    out = torch.full((b.shape[0],), float("-inf"))
    for i in range(0, a.shape[0], chunk):
        out = torch.logaddexp(out, torch.logsumexp(a[i:i + chunk] @ b.T, dim=0))
    return out


def _streamed_metrics(media_feat: torch.Tensor, text_feat: torch.Tensor, text_to_video: Sequence,
                      itm: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None, softmax: bool,
                      chunk: int) -> dict[str, dict[str, float]]:
    """The metrics of :func:`variant_scores` + :func:`retrieval_metrics`, ``chunk`` score rows at a time: every
    variant is a row-wise softmax and a row-wise rank, so only the ``dsl`` column softmax needs a first pass
    (its log-normaliser per column). ``itm``: ``(pairs, scores, top_texts, top_videos)`` of the re-ranking."""
    num_videos, num_texts = media_feat.shape[0], text_feat.shape[0]
    v2t_gt, t2v_gt = ground_truth_lists(text_to_video, num_videos)
    names = ["sim", "dsl"] + (["match"] if itm is not None else [])
    ranks: dict[str, dict[str, list[torch.Tensor]]] = {n: {"v2t": [], "t2v": []} for n in names}
    directions = (
        ("v2t", media_feat, text_feat, v2t_gt, lambda r, c: r * num_texts + c, 2),
        ("t2v", text_feat, media_feat, t2v_gt, lambda r, c: c * num_texts + r, 3),
    )
    for direction, rows_feat, cols_feat, gt, codes_of, top_slot in directions:
        column_lse = _column_logsumexp(rows_feat, cols_feat, chunk)
        for start in range(0, rows_feat.shape[0], chunk):
            rows = torch.arange(start, min(start + chunk, rows_feat.shape[0]))
            sim = rows_feat[rows] @ cols_feat.T
            variants = {"sim": sim, "dsl": sim * (sim - column_lse[None]).exp()}
            if itm is not None:
                pairs, scores = itm[0], itm[1]
                variants["match"] = _itm_rows(pairs, scores, rows, itm[top_slot][rows], cols_feat.shape[0], codes_of)
            for name, block in variants.items():
                block = block.softmax(dim=1) if softmax else block
                ranks[name][direction].append(ground_truth_ranks(block, gt[start:start + rows.numel()]))
    return {n: recall_metrics(torch.cat(r["v2t"]), torch.cat(r["t2v"])) for n, r in ranks.items()}


@torch.no_grad()
def evaluate_retrieval(
    model: nn.Module,
    videos: torch.Tensor | Iterable[torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    text_to_video: Sequence,
    k_test: int = 128,
    fbank: torch.Tensor | Iterable[torch.Tensor] | None = None,
    media: str = "video",
    batch_size: int = 32,
    text_batch_size: int = 256,
    itm_batch_size: int = 32,
    keep_scores: bool = True,
    chunk_rows: int = 512,
    progress: bool = False,
) -> RetrievalResult:
    """Retrieval between ``videos`` (``(N, 3, T, H, W)`` or an iterable of such batches) and the tokenised
    texts (:func:`iv2_align.tokenize`), with ITM re-ranking of each row's top ``k_test`` (see the module
    docstring). ``text_to_video[t]`` is the video index (or list of indices) of text ``t``; a video may have
    several captions. ``media="audio_video"`` takes ``fbank`` (tensor or batches aligned with ``videos``),
    ranks with ``av_fusion`` and re-ranks with ``avtm_head``. The model runs in eval mode, on its device.

    ``keep_scores=False`` computes the same metrics without any ``videos x texts`` matrix (``chunk_rows`` score
    rows at a time; the result's ``itc`` / ``itm_*`` are None): memory grows with N, not N², for large sets
    (``benchmarks/align_retrieval.py``). The ``dsl`` column softmax is then normalised by a streamed
    log-sum-exp, equal to the whole-matrix one to float rounding."""
    was_training = model.training
    model.eval()
    try:
        fusion = _is_fusion_model(model)
        rerank = fusion and k_test > 0 and media != "audio"
        text_feat, text_tokens = encode_texts(model, input_ids, attention_mask, batch_size=text_batch_size,
                                              keep_tokens=rerank, progress=progress)
        media_feat, media_tokens = encode_media(model, videos, fbank=fbank, media=media, batch_size=batch_size,
                                                keep_tokens=rerank, progress=progress)
        ground_truth_lists(text_to_video, media_feat.shape[0])  # validate before the expensive part
        if len(text_to_video) != text_feat.shape[0]:
            raise ValueError(f"text_to_video has {len(text_to_video)} entries for {text_feat.shape[0]} texts")
        head = "avtm" if media == "audio_video" else "itm"
        if not keep_scores:
            itm = None
            if rerank:
                k_texts, k_videos = min(text_feat.shape[0], k_test), min(media_feat.shape[0], k_test)
                top_texts = _top_columns(media_feat, text_feat, k_texts, chunk_rows)
                top_videos = _top_columns(text_feat, media_feat, k_videos, chunk_rows)
                pairs, scores = _score_pairs(model, top_texts, top_videos, _TokenStore(media_tokens), text_tokens,
                                             attention_mask.cpu(), head, itm_batch_size, progress)
                itm = (pairs, scores, top_texts, top_videos)
            metrics = _streamed_metrics(media_feat, text_feat, text_to_video, itm, softmax=fusion, chunk=chunk_rows)
            return RetrievalResult(itc=None, itm_v2t=None, itm_t2v=None, metrics=metrics)
        itc = media_feat @ text_feat.T
        itm_v2t = itm_t2v = None
        if rerank:
            top_texts = itc.topk(min(itc.shape[1], k_test), dim=1).indices  # (Nv, k)
            top_videos = itc.T.topk(min(itc.shape[0], k_test), dim=1).indices  # (Nt, k)
            pairs, scores = _score_pairs(model, top_texts, top_videos, _TokenStore(media_tokens), text_tokens,
                                         attention_mask.cpu(), head, itm_batch_size, progress)
            num_texts = itc.shape[1]
            itm_v2t = _itm_rows(pairs, scores, torch.arange(itc.shape[0]), top_texts, num_texts,
                                lambda r, c: r * num_texts + c)
            itm_t2v = _itm_rows(pairs, scores, torch.arange(num_texts), top_videos, itc.shape[0],
                                lambda r, c: c * num_texts + r)
        variants = variant_scores(itc, itm_v2t, itm_t2v, softmax=fusion)
        metrics = {name: retrieval_metrics(v2t, t2v, text_to_video) for name, (v2t, t2v) in variants.items()}
        return RetrievalResult(itc=itc, itm_v2t=itm_v2t, itm_t2v=itm_t2v, metrics=metrics)
    finally:
        model.train(was_training)
