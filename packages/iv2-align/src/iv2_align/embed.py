"""Embedding videos, images, audio and texts into a trained stage-2 model's shared space.

:class:`Stage2Embedder` is the Python API (and iv2-data's curation ``ClipEmbedder``: ``embed_videos``,
``embed_texts``), :func:`embed_files` the resumable batch job behind ``iv2-align embed``. Media are read as the
model's evaluation read them (``Preprocessing``: frames, size, the squash resize, filter-bank length);
embeddings are L2-normalised ``(N, embed_dim)`` float32: video/image ``vision_proj`` of the pooled feature,
text ``text_proj`` of the text-layer ``[CLS]``, audio ``audio_proj`` of the pooled BEATs tokens (audio-visual
models), so cosine similarity is a dot product.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .pretrained import Preprocessing, load_stage2
from .text import tokenize

MEDIA_KINDS = ("video", "image", "audio")
ENV_MODEL = "IV2_ALIGN_MODEL"


class Stage2Embedder:
    """Embeds media files (or ready tensors) and texts with a stage-2 model.

    >>> embedder = Stage2Embedder.from_pretrained("runs/align-tiny-synthetic/export/stage2")
    >>> v = embedder.embed_videos(["a.mp4", "b.mp4"])          # (2, D), unit rows
    >>> t = embedder.embed_texts(["a red circle moves left"])   # (1, D)
    >>> (v @ t.T).squeeze(1)                                      # cosine similarities
    """

    def __init__(self, model: Any, tokenizer: Any, preprocessing: Preprocessing, *, batch_size: int = 16,
                 device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                        batch_size: int = 16) -> Stage2Embedder:
        """From a folder written by :func:`iv2_align.save_stage2` (``iv2-align train``'s ``export/stage2``)."""
        bundle = load_stage2(directory, device=device)
        return cls(bundle.model, bundle.tokenizer, bundle.preprocessing, batch_size=batch_size, device=device)

    # ------------------------------------------------------------------------------------------- reading
    def read(self, path: str | os.PathLike, kind: str) -> torch.Tensor:
        """One file as the model's input: ``(3, T, S, S)`` video, ``(3, 1, S, S)`` image, ``(frames, 64)`` fbank.
        Raises ``OSError`` (``iv2_data.MediaReadError``) naming the file when it cannot be read."""
        from iv2_data import AudioReadError, ResizeTransform, VideoReadConfig, read_audio_fbank

        pre = self.preprocessing
        if kind == "audio":
            fbank = read_audio_fbank(path, max_seconds=pre.audio_seconds)
            if fbank is None:
                raise AudioReadError(str(path), "the file has no audio stream")
            return fbank
        if kind not in ("video", "image"):
            raise ValueError(f"kind must be one of {MEDIA_KINDS}, got {kind!r}")
        config = VideoReadConfig(num_frames=pre.num_frames, size=pre.img_size, sampling=pre.sampling,
                                 transform=ResizeTransform(pre.img_size) if pre.resize == "squash" else None)
        return config.read(path, num_frames=1 if kind == "image" else None)

    # ------------------------------------------------------------------------------------------ embedding
    @torch.no_grad()
    def embed_tensors(self, inputs: torch.Tensor, kind: str) -> torch.Tensor:
        """Embeddings of ready inputs (a batch as :meth:`read` gives them, stacked)."""
        out = []
        for batch in inputs.split(self.batch_size):
            batch = batch.to(self.device)
            if kind == "audio":
                out.append(self.model.embed_audio(batch).float().cpu())
            else:
                out.append(self.model.embed_video(batch).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.model.cfg.embed_dim)

    def _embed_files(self, paths: Sequence[str | os.PathLike] | torch.Tensor, kind: str) -> torch.Tensor:
        if isinstance(paths, torch.Tensor):
            return self.embed_tensors(paths, kind)
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError(f"give a list of {kind} paths, not a single path")
        if not paths:
            return torch.empty(0, self.model.cfg.embed_dim)
        return self.embed_tensors(torch.stack([self.read(p, kind) for p in paths]), kind)

    def embed_videos(self, videos: Sequence[str | os.PathLike] | torch.Tensor) -> torch.Tensor:
        """Video files (or a ``(N, 3, T, H, W)`` tensor) -> ``(N, D)`` unit embeddings."""
        return self._embed_files(videos, "video")

    def embed_images(self, images: Sequence[str | os.PathLike] | torch.Tensor) -> torch.Tensor:
        """Image files (or ``(N, 3, 1, H, W)``) -> ``(N, D)``: the image rule of the encoder (T = 1)."""
        return self._embed_files(images, "image")

    def embed_audio(self, audio: Sequence[str | os.PathLike] | torch.Tensor) -> torch.Tensor:
        """Audio files or videos with sound (or ``(N, frames, 64)`` filter banks) -> ``(N, D)``; needs an
        audio-visual model."""
        if not self.model.cfg.is_audio_visual:
            raise ValueError("this stage-2 model has no audio encoder (a video-text model): cannot embed audio")
        return self._embed_files(audio, "audio")

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> ``(N, D)`` unit embeddings (the official caption encoding; an empty text is an error)."""
        if isinstance(texts, str):
            raise TypeError("give a list of texts, not a single string")
        out = []
        for start in range(0, len(texts), max(self.batch_size, 64)):
            ids, mask = tokenize(self.tokenizer, texts[start:start + max(self.batch_size, 64)],
                                 self.preprocessing.max_text_length)
            out.append(self.model.embed_text(ids.to(self.device), mask.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.model.cfg.embed_dim)

    def similarity(self, videos: Sequence[str | os.PathLike], texts: Sequence[str]) -> torch.Tensor:
        """``(len(videos), len(texts))`` cosine similarities."""
        return self.embed_videos(videos) @ self.embed_texts(texts).T


def curation_embedder() -> Stage2Embedder:
    """The factory ``iv2-data curate --embedder iv2_align:curation_embedder`` calls: the stage-2 model folder
    named by the environment variable ``IV2_ALIGN_MODEL`` (device ``IV2_ALIGN_DEVICE``, default cpu)."""
    directory = os.environ.get(ENV_MODEL)
    if not directory:
        raise ValueError(f"set {ENV_MODEL} to a stage-2 model folder (iv2-align train's export/stage2) to filter "
                         "curated clips with it")
    return Stage2Embedder.from_pretrained(directory, device=os.environ.get("IV2_ALIGN_DEVICE", "cpu"))


# ------------------------------------------------------------------------------------------ batch job
@dataclass
class EmbedSummary:
    """What :func:`embed_files` did: files embedded now, found done from an earlier run, failed (recorded in the
    manifest, the run went on), and texts embedded."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    texts: int = 0
    interrupted: bool = False


def kind_of(path: Path) -> str | None:
    from iv2_data import MEDIA_SUFFIXES

    suffix = path.suffix.lower()
    return next((kind for kind, suffixes in MEDIA_SUFFIXES.items() if suffix in suffixes), None)


def embed_files(embedder: Stage2Embedder, inputs: Iterable[str | os.PathLike], output: str | os.PathLike, *,
                kinds: Sequence[str] = ("video", "image", "audio"), texts: Sequence[str] = (),
                progress: bool = True) -> EmbedSummary:
    """Embed every media file under ``inputs`` (files or folders) into ``output``: one
    ``<name>.safetensors`` per file (``embedding`` ``(D,)`` float32) whose path mirrors the input's, ``texts``
    into ``texts.safetensors`` (``embeddings`` ``(N, D)`` + the texts in the metadata), and a
    ``manifest.jsonl`` row per input ``{"input", "kind", "status": "ok"|"error", "output", "error"}``.

    A broken input is recorded and the run goes on; a rerun skips inputs whose output exists; every file is
    written atomically, so a killed run never leaves half a file."""
    import json

    from safetensors.torch import save_file

    from iv2_data import JsonlManifest, atomic_write, find_media

    from ._progress import progress_bar

    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = JsonlManifest(out_dir / "manifest.jsonl", key="input")
    summary = EmbedSummary()
    found = find_media(inputs, kinds)
    roots = [Path(p) for p in inputs]
    try:
        for path in progress_bar(found.files, progress, "embed"):
            kind = kind_of(path) or "video"
            target = out_dir / (_relative(path, roots).with_suffix("").as_posix() + f".{kind}.safetensors")
            row = manifest.get(str(path))
            if row is not None and row.get("status") == "ok" and target.is_file():
                summary.skipped += 1
                continue
            try:
                embedding = embedder._embed_files([path], kind)[0]
            except (OSError, ValueError) as error:
                manifest.append({"input": str(path), "kind": kind, "status": "error", "output": None,
                                 "error": f"{type(error).__name__}: {error}"})
                summary.failed += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target) as partial:
                save_file({"embedding": embedding.contiguous()}, str(partial), metadata={"input": str(path),
                                                                                         "kind": kind})
            manifest.append({"input": str(path), "kind": kind, "status": "ok", "output": str(target), "error": None})
            summary.done += 1
        if texts:
            vectors = embedder.embed_texts(list(texts))
            with atomic_write(out_dir / "texts.safetensors") as partial:
                save_file({"embeddings": vectors.contiguous()}, str(partial),
                          metadata={"texts": json.dumps(list(texts))})
            summary.texts = len(texts)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        manifest.close()
    return summary


def _relative(path: Path, roots: Sequence[Path]) -> Path:
    """``path`` relative to the input folder it was found in (its name alone for a file given directly)."""
    for root in roots:
        if root.is_dir():
            try:
                return path.resolve().relative_to(root.resolve())
            except ValueError:
                continue
    return Path(path.name)

