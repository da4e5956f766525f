"""Released weights by name, timm-style: ``architecture.tag`` → :class:`PretrainedCfg`; fetching them from the
Hugging Face Hub; ``save_pretrained`` folders (``config.json`` + ``model.safetensors``).

The tags record what each official file needs (REFERENCE.md a, e, i, j, n, o): its Hub repo and file name, the
frame count its position table was trained with, the architecture changes it implies (the 1B stage-2 and chat
towers' separate image position table; the chat tower's ``depth − 1`` blocks without pooling head, bare
LayerScale names and run-time interpolation) and the preprocessing of the official evaluation.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from pathlib import Path
from typing import Any

import torch

from iv2_data import atomic_write

from .checkpoint import (
    CheckpointError,
    LoadResult,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    split_vision_prefix,
)
from .config import HubFile, PretrainedCfg, VideoEncoderConfig
from .model import VideoEncoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_FORMAT = "iv2-encoders"


def _tag(architecture: str, tag: str, files: tuple[HubFile, ...], checkpoint_num_frames: int,
         config: dict[str, Any] | None = None, **preprocess: Any) -> tuple[str, PretrainedCfg]:
    cfg = PretrainedCfg(architecture=architecture, tag=tag, hub_files=files,
                        checkpoint_num_frames=checkpoint_num_frames, config=config or {}, **preprocess)
    return cfg.name, cfg


_STAGE2_1B = HubFile("OpenGVLab/InternVideo2-Stage2_1B-224p-f4", "InternVideo2-stage2_1b-224p-f4.pt")
_DISTILL_REPO = "OpenGVLab/InternVideo2_distillation_models"

PRETRAINED: dict[str, PretrainedCfg] = dict([
    _tag("internvideo2-1b", "stage1", (HubFile("OpenGVLab/InternVideo2-Stage1-1B-224p-f8", "pretrain.pth"),), 8,
         description="stage 1 (unmasked-token distillation, K-Mash 1.1M, 300 epochs); distillation heads dropped"),
    _tag("internvideo2-1b", "stage2-f4", (_STAGE2_1B,), 4, {"num_frames": 4, "sep_image_video_pos_embed": True},
         resize="squash", description="stage 2 vision tower (video-audio-speech-text, 4 frames), learnable image "
                                      "position table; text/audio towers dropped"),
    _tag("internvideo2-6b", "stage2-f4",
         (HubFile("OpenGVLab/InternVideo2-Stage2_6B-224p-f4", "internvideo2-s2_6b-224p-f4.pt"),), 4,
         {"num_frames": 4}, resize="squash",
         description="stage 2 vision tower of the 6B audio-visual model (4 frames); images use the time-averaged "
                     "video table"),
    _tag("internvideo2-1b", "clip",
         (_STAGE2_1B, HubFile("OpenGVLab/InternVideo2-CLIP-1B-224p-f8", "1B_clip.pth", prefix="vision_encoder.")),
         4, {"num_frames": 8}, resize="squash",
         description="CLIP post-pretraining: the stage-2 tower (interpolated 4 -> 8 frames, image table dropped) "
                     "with the CLIP-trained pooling head from 1B_clip.pth"),
    *(_tag(f"internvideo2-{size}", "distill",
           (HubFile(_DISTILL_REPO, f"stage1/{size.upper()}/{size.upper()}_dist_1B_stage2/pytorch_model.bin"),), 8,
           description=f"{size.upper()} distilled from the 1B stage-2 model (K-Mash 1.1M, 100 epochs); "
                       "distillation heads dropped")
      for size in ("s14", "b14", "l14")),
    _tag("internvideo2-1b", "chat-8b",
         (HubFile("OpenGVLab/InternVideo2-Chat-8B", "model.safetensors.index.json", prefix="vision_encoder."),), 8,
         {"num_frames": 8, "depth": 39, "pool_head": False, "sep_image_video_pos_embed": True,
          "layerscale_keys": "bare", "layerscale_force_fp32": False, "interpolate_pos_embed_at_runtime": True},
         sampling="get_index",
         description="the InternVideo2-Chat-8B vision tower: 39 of 40 blocks, every token, no pooling head (the "
                     "chat model's vision_layernorm/QFormer/LLM are iv2-chat's); other frame counts and sizes "
                     "interpolate the position table at run time"),
])


def split_model_name(name: str) -> tuple[str, str | None]:
    """``"internvideo2-1b.stage2-f4"`` → ``("internvideo2-1b", "stage2-f4")``; no tag → ``(name, None)``."""
    architecture, _, tag = name.lower().partition(".")
    return architecture, tag or None


def list_pretrained(pattern: str = "*") -> list[str]:
    """Tagged names (``architecture.tag``) of the released weights matching a shell-style ``pattern``."""
    return sorted(n for n in PRETRAINED if fnmatch.fnmatch(n, pattern.lower()))


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The :class:`PretrainedCfg` of a tagged name; a bare architecture gets the defaults (no file, ImageNet)."""
    architecture, tag = split_model_name(name)
    if tag is None:
        return PretrainedCfg(architecture=architecture)
    key = f"{architecture}.{tag}"
    if key not in PRETRAINED:
        raise KeyError(f"unknown pretrained tag {name!r}; released: {list_pretrained()}")
    return PRETRAINED[key]


# ------------------------------------------------------------------------------------------------ the Hub
def _hub_download(repo_id: str, filename: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise ImportError(f"fetching {repo_id}/{filename} needs huggingface_hub: pip install huggingface_hub "
                          "(or download the file yourself and pass pretrained=PATH)") from err
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as err:
        raise OSError(f"could not fetch {filename!r} from the Hugging Face Hub repo {repo_id!r} "
                      f"({type(err).__name__}: {err}). The OpenGVLab repos are gated: accept their terms on the "
                      "Hub and log in (`hf auth login` or HF_TOKEN), or download the file yourself and pass "
                      "pretrained=PATH") from err


def download_file(file: HubFile) -> Path:
    """Fetch one released file through ``huggingface_hub`` (its cache); for a sharded checkpoint's index, also
    the shards holding keys under ``file.prefix``. Returns the local path of ``file.filename``."""
    path = _hub_download(file.repo_id, file.filename)
    if file.filename.endswith(".index.json"):
        weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map", {})
        folder = posixpath.dirname(file.filename)
        for shard in sorted({s for k, s in weight_map.items() if file.prefix is None or k.startswith(file.prefix)}):
            _hub_download(file.repo_id, posixpath.join(folder, shard))
    return path


def load_pretrained(model: VideoEncoder, cfg: PretrainedCfg, *, strict: bool = True,
                    num_frames: int | None = None) -> LoadResult:
    """Fetch ``cfg.hub_files`` and load them into ``model``: the first file is the base, later ones overlay
    their tower keys (under their ``prefix``) on it; then the checked :func:`load_checkpoint`, with the tag's
    ``checkpoint_num_frames`` (``num_frames`` overrides it)."""
    if not cfg.hub_files:
        raise ValueError(f"{cfg.name or 'this model'} has no released weights to load; pick a tag "
                         f"(list_models(pretrained=True)) or pass a file")
    merged: dict[str, torch.Tensor] = {}
    base_prefix, sources = None, []
    for file in cfg.hub_files:
        path = download_file(file)
        sources.append(str(path))
        state = read_state_dict(path, prefix=file.prefix)
        prefix = file.prefix if file.prefix is not None else split_vision_prefix(state, str(path))[0]
        if base_prefix is None:
            base_prefix = prefix
        for key, value in state.items():  # re-home the tower under the base file's prefix
            merged[base_prefix + key[len(prefix):] if key.startswith(prefix) else key] = value
    frames = num_frames if num_frames is not None else cfg.checkpoint_num_frames
    return load_checkpoint(model, merged, num_frames=frames, strict=strict, source=" + ".join(sources))


# ------------------------------------------------------------------------------------------- saved folders
def save_pretrained(model: VideoEncoder, directory: str | os.PathLike) -> Path:
    """Write ``directory/config.json`` (the architecture config and ``pretrained_cfg``) and
    ``directory/model.safetensors``, HF-style, each atomically; ``create_model(pretrained=directory)`` reads
    them back. Returns the folder."""
    directory = Path(directory)
    save_checkpoint(model, directory / WEIGHTS_FILE)
    pcfg = model.pretrained_cfg.replace(num_frames=model.cfg.num_frames, img_size=model.cfg.img_size,
                                        checkpoint_num_frames=model.cfg.num_frames)
    from importlib.metadata import version

    document = {"format": _FORMAT, "iv2_encoders_version": version("iv2-encoders"),
                "architecture": pcfg.architecture, "config": model.cfg.to_dict(), "pretrained_cfg": pcfg.to_dict()}
    text = json.dumps(document, indent=2) + "\n"
    with atomic_write(directory / CONFIG_FILE, "w") as f:
        f.write(text)
    return directory


def saved_folder(spec: object) -> Path | None:
    """``spec`` as a folder written by :func:`save_pretrained` (one with ``config.json``), else None."""
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir() and (Path(spec) / CONFIG_FILE).is_file():
        return Path(spec)
    return None


def read_saved_config(directory: str | os.PathLike) -> tuple[VideoEncoderConfig, PretrainedCfg]:
    """The architecture config and :class:`PretrainedCfg` stored by :func:`save_pretrained` in ``directory``."""
    path = Path(directory) / CONFIG_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != _FORMAT:
            raise ValueError(f"'format' is {document.get('format')!r}, not {_FORMAT!r}")
        cfg = VideoEncoderConfig(**document["config"])
        pcfg = PretrainedCfg.from_dict(document.get("pretrained_cfg", {}))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not an iv2-encoders config written by save_pretrained ({err})") from err
    return cfg, pcfg
