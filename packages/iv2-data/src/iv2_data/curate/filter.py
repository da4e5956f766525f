"""Stage 3 of curation: keep clips whose caption matches the video, and drop near-duplicates.

The similarity comes from any :class:`ClipEmbedder` — in practice an iv2-encoders/iv2-align model wrapped by
the caller, since iv2-data must not import the model packages. Embeddings are L2-normalised here, so the
score is a cosine similarity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

__all__ = ["ClipEmbedder", "caption_similarity", "deduplicate"]


@runtime_checkable
class ClipEmbedder(Protocol):
    """Embeds video files and texts into one space: ``(N, D)`` float tensors, row ``i`` for input ``i``."""

    def embed_videos(self, paths: Sequence[str | os.PathLike[str]]) -> torch.Tensor: ...

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


def _unit(x: torch.Tensor, what: str, n: int) -> torch.Tensor:
    if x.dim() != 2 or x.shape[0] != n:
        raise ValueError(f"embedder returned {what} of shape {tuple(x.shape)}, expected ({n}, D)")
    return torch.nn.functional.normalize(x.float(), dim=-1)


def caption_similarity(
    embedder: ClipEmbedder, videos: Sequence[str | os.PathLike[str]], captions: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of each video with its caption, and the unit video embeddings (for dedup)."""
    if len(videos) != len(captions):
        raise ValueError(f"{len(videos)} videos but {len(captions)} captions")
    v = _unit(embedder.embed_videos(videos), "video embeddings", len(videos))
    t = _unit(embedder.embed_texts(captions), "text embeddings", len(captions))
    if v.shape[1] != t.shape[1]:
        raise ValueError(f"video ({v.shape[1]}) and text ({t.shape[1]}) embeddings differ in width")
    return (v * t).sum(-1), v


def deduplicate(embeddings: torch.Tensor, threshold: float = 0.95, order: Sequence[int] | None = None) -> list[int]:
    """Indices to keep: greedily, in ``order`` (e.g. best caption score first; default index order), keep an
    item unless its cosine similarity to an already kept one is at least ``threshold``."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    order = list(range(len(unit))) if order is None else list(order)
    kept: list[int] = []
    for i in order:
        if kept and float((unit[kept] @ unit[i]).max()) >= threshold:
            continue
        kept.append(i)
    return sorted(kept)
