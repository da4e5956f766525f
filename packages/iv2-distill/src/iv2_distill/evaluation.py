"""What a stage-1 encoder learned: k-NN and linear-probe top-1 on frozen features of a labelled annotation file.

The clips are read as the official evaluation reads them (``iv2_data.VideoReadConfig``: middle frame of each
segment, centre crop, ImageNet normalisation) at the encoder's frame count and size. The last ``holdout_last``
records are the queries (the probe's test set), the others the k-NN bank (the probe's training set). Every
``label_keys`` field of the records is a task of its own (the synthetic corpus' ``video_label.json`` has
``label`` = object × direction, ``object``, ``direction``, ``colour``).

- k-NN: cosine similarity of L2-normalised features, the ``k`` nearest bank clips vote with weight
  ``exp(sim / temperature)`` (DINO's weighted k-NN, k 10 … 20, temperature 0.07).
- Linear probe: multinomial logistic regression on standardised features (bank statistics), L-BFGS in float64,
  L2 penalty ``weight_decay``: deterministic, no learning-rate search.

Numbers are percentages; ``chance_<key>`` is 100 / the number of classes of that field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iv2_data import AnnotationDataset, VideoReadConfig, collate
from iv2_encoders import VideoEncoder

from .data import ClipBuilder, read_records

FEATURES = ("pooled", "cls", "mean")


def encoder_features(encoder: VideoEncoder, video: torch.Tensor, feature: str = "pooled") -> torch.Tensor:
    """``(B, D)`` features of a clip batch: ``pooled`` (the attention-pooling head's output), ``cls`` (the final
    class token) or ``mean`` (the mean of the final patch tokens). A :class:`~iv2_distill.DistillStudent` is run
    as the plain encoder (heads unused)."""
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    out = VideoEncoder.forward(encoder, video.to(encoder.pos_embed.dtype))
    if feature == "pooled":
        if out.pooled is None:
            raise ValueError("feature='pooled' needs the attention-pooling head; this encoder has none")
        return out.pooled
    return out.tokens[:, 0] if feature == "cls" else out.tokens[:, 1:].mean(dim=1)


def _first_occurrence(index: torch.Tensor) -> torch.Tensor:
    seen: set[int] = set()
    keep = []
    for row, value in enumerate(index.tolist()):
        if value not in seen:
            seen.add(value)
            keep.append(row)
    return torch.tensor(keep, dtype=torch.long)


def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor, *,
             k: int = 10, temperature: float = 0.07) -> float:
    """Top-1 (%) of DINO's weighted k-NN: cosine similarity, the ``k`` nearest bank rows vote with weight
    ``exp(sim / temperature)``."""
    bank, queries = F.normalize(bank.double(), dim=1), F.normalize(queries.double(), dim=1)
    sims, nearest = (queries @ bank.T).topk(min(k, bank.shape[0]), dim=1)
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    votes = torch.zeros(queries.shape[0], num_classes, dtype=torch.float64)
    votes.scatter_add_(1, bank_labels[nearest], (sims / temperature).exp())
    return 100.0 * (votes.argmax(dim=1) == query_labels).double().mean().item()


def linear_probe_top1(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                      *, weight_decay: float = 1e-3, max_iter: int = 200) -> float:
    """Top-1 (%) of a multinomial logistic regression fitted on ``train`` (standardised with its statistics) by
    L-BFGS in float64 with an L2 penalty ``weight_decay`` on the weights."""
    mean, std = train.double().mean(dim=0), train.double().std(dim=0).clamp_min(1e-6)
    x, x_test = (train.double() - mean) / std, (test.double() - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    linear = nn.Linear(x.shape[1], num_classes, dtype=torch.float64)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), train_labels) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return 100.0 * (linear(x_test).argmax(dim=1) == test_labels).double().mean().item()


@dataclass
class LabelledClips:
    """The clips of a labelled annotation file, read once at an encoder's frame count and size (float32
    ``(N, 3, T, S, S)`` in memory: meant for k-NN-sized sets), so that several encoders — a trained one and its
    random baseline — are evaluated on the very same pixels. ``index[i]`` is the record of row ``i`` (a record
    that could not be read is missing); the last ``holdout_last`` records are the queries."""

    videos: torch.Tensor
    index: torch.Tensor
    records: list[dict[str, Any]]
    holdout_last: int
    source: str

    @property
    def is_query(self) -> torch.Tensor:
        return self.index >= len(self.records) - self.holdout_last


def read_labelled_clips(annotations: str | os.PathLike, *, num_frames: int, size: int, holdout_last: int,
                        media_root: str | os.PathLike | None = None, label_keys: Sequence[str] = (),
                        batch_size: int = 32, num_workers: int = 0) -> LabelledClips:
    """Read the clips of ``annotations`` as the evaluation does (middle frames, centre crop) into memory."""
    records = read_records(annotations, media_root, holdout_last=0, part="all")
    if not 0 < holdout_last < len(records):
        raise ValueError(f"{annotations}: holdout_last={holdout_last} must be in (0, {len(records)}) to leave a bank "
                         "and queries")
    for key in label_keys:
        missing = [i for i, r in enumerate(records.records) if key not in r]
        if missing:
            raise ValueError(f"{annotations}: record {missing[0]} has no label field {key!r} (eval.label_keys)")
    dataset = AnnotationDataset(records.records, records.media_root, builder=ClipBuilder(),
                                video=VideoReadConfig(num_frames=num_frames, size=size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    videos, index = [], []
    for batch in loader:
        videos.append(batch["video"])
        index.append(torch.as_tensor(batch["index"]))
    all_videos, all_index = torch.cat(videos), torch.cat(index)
    keep = _first_occurrence(all_index)
    return LabelledClips(all_videos[keep], all_index[keep], records.records, holdout_last, str(annotations))


def evaluate_encoder(
    encoder: VideoEncoder,
    annotations: str | os.PathLike | LabelledClips,
    *,
    media_root: str | os.PathLike | None = None,
    holdout_last: int = 0,
    label_keys: Sequence[str] = ("label",),
    feature: str = "pooled",
    k: int = 10,
    temperature: float = 0.07,
    linear_probe: bool = True,
    batch_size: int = 32,
    num_workers: int = 0,
) -> dict[str, float]:
    """k-NN (and linear-probe) top-1 of ``encoder``'s frozen features on the labelled ``annotations`` (a file, or
    :class:`LabelledClips` read before): the last ``holdout_last`` records are the queries, the others the bank.
    Returns ``{"knn_top1_<key>", "linear_top1_<key>", "chance_<key>" for each key, "queries", "bank"}``
    (percentages)."""
    clips = annotations
    if not isinstance(clips, LabelledClips):
        clips = read_labelled_clips(annotations, num_frames=encoder.cfg.num_frames, size=encoder.cfg.img_size,
                                    holdout_last=holdout_last, media_root=media_root, label_keys=label_keys,
                                    batch_size=batch_size, num_workers=num_workers)
    features = _features_of(encoder, clips.videos, feature, batch_size)
    is_query = clips.is_query
    metrics: dict[str, float] = {"queries": float(is_query.sum()), "bank": float((~is_query).sum())}
    for key in label_keys:
        labels, num_classes = _label_indices([clips.records[i][key] for i in clips.index.tolist()],
                                             [r[key] for r in clips.records])
        bank, queries = features[~is_query], features[is_query]
        metrics[f"knn_top1_{key}"] = knn_top1(bank, labels[~is_query], queries, labels[is_query], k=k,
                                              temperature=temperature)
        if linear_probe:
            metrics[f"linear_top1_{key}"] = linear_probe_top1(bank, labels[~is_query], queries, labels[is_query])
        metrics[f"chance_{key}"] = 100.0 / num_classes
    return metrics


@torch.no_grad()
def _features_of(encoder: VideoEncoder, videos: torch.Tensor, feature: str, batch_size: int) -> torch.Tensor:
    device = encoder.pos_embed.device
    was_training = encoder.training
    encoder.eval()
    try:
        return torch.cat([encoder_features(encoder, chunk.to(device), feature).float().cpu()
                          for chunk in videos.split(batch_size)])
    finally:
        encoder.train(was_training)


def _label_indices(values: list[Any], every: list[Any]) -> tuple[torch.Tensor, int]:
    classes = sorted(set(every), key=lambda v: (isinstance(v, str), v))
    position = {value: i for i, value in enumerate(classes)}
    return torch.tensor([position[v] for v in values], dtype=torch.long), len(classes)
