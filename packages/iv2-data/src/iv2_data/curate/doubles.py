"""Deterministic stand-ins for the curation models: dry runs, tests, and a template for real adapters."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ConstantCaptioner", "FrameDifferenceBoundaryModel", "FunctionCaptioner", "HashingEmbedder"]


@dataclass
class ConstantCaptioner:
    """Returns the same text for every clip, in every role (video, audio, speech)."""

    text: str = ""

    def caption_video(self, path: str | os.PathLike[str]) -> str:
        return self.text

    def caption_audio(self, path: str | os.PathLike[str]) -> str:
        return self.text

    def transcribe(self, path: str | os.PathLike[str]) -> str:
        return self.text


@dataclass
class FunctionCaptioner:
    """Wraps a function ``path -> text`` in every captioner role."""

    function: Callable[[str], str]

    def caption_video(self, path: str | os.PathLike[str]) -> str:
        return self.function(os.fspath(path))

    def caption_audio(self, path: str | os.PathLike[str]) -> str:
        return self.function(os.fspath(path))

    def transcribe(self, path: str | os.PathLike[str]) -> str:
        return self.function(os.fspath(path))


@dataclass
class FrameDifferenceBoundaryModel:
    """A stand-in 'learned' boundary model: probability rises with the mean absolute frame difference."""

    scale: float = 30.0

    def boundary_probabilities(self, frames: np.ndarray) -> np.ndarray:
        diffs = np.zeros(len(frames))
        if len(frames) > 1:
            diffs[1:] = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        return 1.0 - np.exp(-diffs / self.scale)


@dataclass
class HashingEmbedder:
    """Texts → hashed bag of words; videos → ``video_function(path)`` text, embedded the same way. With
    ``video_function`` describing a clip, matching captions score high and unrelated ones low."""

    video_function: Callable[[str], str]
    dim: int = 256

    def _embed(self, text: str) -> torch.Tensor:
        vector = np.zeros(self.dim, dtype=np.float32)
        for word in text.lower().split():
            bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
            vector[bucket % self.dim] += 1.0
        return torch.from_numpy(vector)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.stack([self._embed(t) for t in texts]) if texts else torch.zeros(0, self.dim)

    def embed_videos(self, paths: Sequence[str | os.PathLike[str]]) -> torch.Tensor:
        return self.embed_texts([self.video_function(os.fspath(p)) for p in paths])
