"""``create_model(name, pretrained=None, **overrides)`` and ``list_models()``."""

from __future__ import annotations

import fnmatch
import os
from typing import Any

from .checkpoint import load_checkpoint
from .config import MODEL_CONFIGS, VideoEncoderConfig
from .model import VideoEncoder


def list_models(pattern: str = "*") -> list[str]:
    """Registered encoder names matching a shell-style ``pattern``."""
    return sorted(n for n in MODEL_CONFIGS if fnmatch.fnmatch(n, pattern))


def get_config(name: str, **overrides: Any) -> VideoEncoderConfig:
    key = name.lower()
    if key not in MODEL_CONFIGS:
        raise KeyError(f"unknown model {name!r}; registered: {list_models()}")
    return MODEL_CONFIGS[key].replace(**overrides)


def create_model(
    name: str,
    pretrained: str | os.PathLike | None = None,
    *,
    checkpoint_num_frames: int | None = None,
    **overrides: Any,
) -> VideoEncoder:
    """Build a registered encoder; ``overrides`` replace config fields (e.g. ``num_frames=4``).

    ``pretrained``: a checkpoint file (any released layout, see :func:`load_checkpoint`) or a Hugging Face
    Hub ``repo_id`` / ``repo_id:filename`` (fetched with ``huggingface_hub`` when installed). Building under
    ``with torch.device("meta"):`` allocates nothing.
    """
    model = VideoEncoder(get_config(name, **overrides))
    if pretrained is not None:
        load_checkpoint(model, resolve_pretrained(pretrained), num_frames=checkpoint_num_frames)
    return model


def resolve_pretrained(spec: str | os.PathLike) -> str:
    """A local path as is; otherwise ``org/repo[:file]`` downloaded from the Hugging Face Hub."""
    if os.path.exists(spec):
        return os.fspath(spec)
    spec = str(spec)
    if spec.count("/") == 1 or ":" in spec:
        repo_id, _, filename = spec.partition(":")
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as err:
            raise FileNotFoundError(
                f"{spec!r} is not a file, and loading from the Hub needs `pip install huggingface_hub`"
            ) from err
        return hf_hub_download(repo_id, filename or "model.safetensors")
    raise FileNotFoundError(f"checkpoint not found: {spec}")
