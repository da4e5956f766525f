"""A trained stage-2 model as a folder: ``save_stage2`` / ``load_stage2`` (HF-style, what ``iv2-align eval`` and
``embed`` take with ``--model DIR``).

Layout::

    config.json          {"format", "stage2_config": Stage2Config.to_dict(), "preprocessing": {...}}
    model.safetensors    the official stage-2 key layout (tied tensors stored once; the loader refills them)
    tokenizer/           the tokenizer's own files (save_pretrained)

``preprocessing`` says how inputs were made: frames, image size, text length, filter-bank seconds, the read
rule (the official evaluation's middle frames and squash resize).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint
from .config import Stage2Config
from .model import Stage2Model

FORMAT = "iv2-align-stage2/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class Preprocessing:
    """How a stage-2 model's inputs are made (saved next to its weights)."""

    num_frames: int
    img_size: int
    max_text_length: int = 32
    audio_seconds: float = 10.0
    sampling: str = "middle"
    resize: str = "squash"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"num_frames": self.num_frames, "img_size": self.img_size, "max_text_length": self.max_text_length,
                "audio_seconds": self.audio_seconds, "sampling": self.sampling, "resize": self.resize, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        known = {"num_frames", "img_size", "max_text_length", "audio_seconds", "sampling", "resize"}
        return cls(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known})


def save_stage2(model: Stage2Model, tokenizer: Any, directory: str | os.PathLike, preprocessing: Preprocessing,
                weights: str | os.PathLike | None = None) -> Path:
    """Write ``directory`` (see the module docstring). ``weights``: an already written safetensors file of the
    model's state to copy instead of the model's own tensors (e.g. a training run's final export)."""
    import shutil

    from iv2_data import atomic_write
    from iv2_train import export_safetensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        with atomic_write(directory / WEIGHTS_FILE) as partial:
            shutil.copyfile(weights, partial)
    else:
        with atomic_write(directory / WEIGHTS_FILE) as partial:
            export_safetensors(model.state_dict(), partial)
    tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    document = {"format": FORMAT, "stage2_config": model.cfg.to_dict(), "preprocessing": preprocessing.to_dict()}
    with atomic_write(directory / CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
        f.write("\n")
    return directory


@dataclass
class Stage2Bundle:
    """What :func:`load_stage2` gives: the model (eval mode), its tokenizer and preprocessing."""

    model: Stage2Model
    tokenizer: Any
    preprocessing: Preprocessing
    directory: Path


def read_stage2_config(directory: str | os.PathLike) -> tuple[Stage2Config, Preprocessing]:
    path = Path(directory) / CONFIG_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != FORMAT:
            raise ValueError(f"'format' is {document.get('format')!r}, not {FORMAT!r}")
        return Stage2Config.from_dict(document["stage2_config"]), Preprocessing.from_dict(document["preprocessing"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a stage-2 model folder written by iv2-align ({err})") from err


def load_stage2(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Stage2Bundle:
    """Rebuild the model saved by :func:`save_stage2` (or ``iv2-align train``'s ``export/stage2``)."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"stage-2 model folder not found: {directory}")
    cfg, preprocessing = read_stage2_config(directory)
    with torch.device("meta"):
        model = Stage2Model(cfg)
    load_checkpoint(model, directory / WEIGHTS_FILE, num_frames=cfg.vision.num_frames)
    tokenizer = AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
    return Stage2Bundle(model.to(device).eval(), tokenizer, preprocessing, directory)
