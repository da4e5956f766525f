"""``create_model(name, pretrained=None, **overrides)`` and ``list_models()``.

Names are architectures (``internvideo2-1b``) or, timm-style, architectures with a weight tag
(``internvideo2-1b.stage2-f4``, see :mod:`iv2_encoders.pretrained`).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from typing import Any

from .checkpoint import load_checkpoint
from .config import MODEL_CONFIGS, VideoEncoderConfig
from .model import VideoEncoder
from .pretrained import (
    WEIGHTS_FILE,
    get_pretrained_cfg,
    list_pretrained,
    load_pretrained,
    read_saved_config,
    saved_folder,
    split_model_name,
)


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Registered architectures matching a shell-style ``pattern``; with ``pretrained=True`` the tagged names of
    the released weights instead (``list_models("internvideo2-1b*", pretrained=True)``)."""
    if pretrained:
        return list_pretrained(pattern)
    return sorted(n for n in MODEL_CONFIGS if fnmatch.fnmatch(n, pattern.lower()))


def unknown_model_message(name: str) -> str:
    """What to tell a user who typed an unknown model name: the closest registered names, then all of them."""
    known = [*list_models(), *list_pretrained()]
    typed = name.lower()
    started = [k for k in known if k.startswith(typed)]  # a tag cut short: internvideo2-1b.stage2
    close = list(dict.fromkeys([*started, *difflib.get_close_matches(typed, known, n=3, cutoff=0.6)]))[:3]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    what = "pretrained tag" if split_model_name(name)[0] in MODEL_CONFIGS else "model"
    return (f"unknown {what} {name!r}{hint} (architectures: {', '.join(list_models())}; released weights: "
            f"{', '.join(list_pretrained())})")


def get_config(name: str, **overrides: Any) -> VideoEncoderConfig:
    """The config of an architecture, or of a tagged name (the architecture with the tag's changes), with
    ``overrides`` on top."""
    architecture, tag = split_model_name(name)
    if architecture not in MODEL_CONFIGS or (tag is not None and f"{architecture}.{tag}" not in list_pretrained()):
        raise KeyError(unknown_model_message(name))
    tag_changes = get_pretrained_cfg(name).config
    return MODEL_CONFIGS[architecture].replace(**{**tag_changes, **overrides})


def create_model(
    name: str | None = None,
    pretrained: bool | str | os.PathLike | None = None,
    *,
    checkpoint_num_frames: int | None = None,
    strict: bool = True,
    **overrides: Any,
) -> VideoEncoder:
    """Build an encoder; ``overrides`` replace config fields (e.g. ``num_frames=4``).

    ``name``: an architecture or ``architecture.tag``. ``pretrained``:

    - ``True``: the tag's released file(s), fetched with ``huggingface_hub`` (cached);
    - a folder written by :func:`save_pretrained`: its weights, and — when ``name`` is omitted — its
      architecture config (with a ``name``, that name decides the architecture and the weights must fit it);
    - a checkpoint file in any released layout (see :func:`load_checkpoint`), or a Hub ``repo_id[:filename]``.

    Loading is checked: a parameter the file lacks is an error unless ``strict=False``; the frame count of the
    file's position table comes from ``checkpoint_num_frames``, else the tag or saved config, else is inferred.
    ``model.pretrained_cfg`` carries the preprocessing (ImageNet defaults for a plain architecture). Building
    under ``with torch.device("meta"):`` allocates nothing.
    """
    saved = saved_folder(pretrained)
    if name is None:
        if saved is None:
            raise TypeError("create_model needs a model name (see list_models()), or pretrained=DIR written by "
                            "save_pretrained")
        cfg, pcfg = read_saved_config(saved)
        cfg = cfg.replace(**overrides)
    else:
        cfg = get_config(name, **overrides)
        pcfg = read_saved_config(saved)[1] if saved is not None else get_pretrained_cfg(name)
    model = VideoEncoder(cfg)
    if pretrained is True:
        if not pcfg.hub_files:
            tags = list_pretrained(f"{split_model_name(name or '')[0]}.*")
            raise ValueError(f"{name!r} names an architecture, not released weights: pick a tag ({tags or 'none'}), "
                             "or pass pretrained=PATH")
        load_pretrained(model, pcfg, strict=strict, num_frames=checkpoint_num_frames)
    elif saved is not None:
        saved_frames = read_saved_config(saved)[0].num_frames
        load_checkpoint(model, saved / WEIGHTS_FILE, num_frames=checkpoint_num_frames or saved_frames, strict=strict)
    elif pretrained not in (None, False):
        load_checkpoint(model, resolve_pretrained(pretrained),
                        num_frames=checkpoint_num_frames or pcfg.checkpoint_num_frames, strict=strict)
    model.pretrained_cfg = pcfg.replace(num_frames=cfg.num_frames, img_size=cfg.img_size)
    return model


def resolve_pretrained(spec: str | os.PathLike) -> str:
    """A local path as is; otherwise ``org/repo[:file]`` downloaded from the Hugging Face Hub. A spelling
    that looks like a local file (``weights/model.pt``, ``./x``) and does not exist is a
    :class:`FileNotFoundError`, not a Hub request."""
    if os.path.exists(spec):
        return os.fspath(spec)
    spec = str(spec)
    looks_local = spec.startswith((".", "/", "~")) or bool(os.path.splitext(spec.partition(":")[0])[1])
    if ":" in spec or (spec.count("/") == 1 and not looks_local):
        from .pretrained import _hub_download

        repo_id, _, filename = spec.partition(":")
        return os.fspath(_hub_download(repo_id, filename or "model.safetensors"))
    raise FileNotFoundError(f"checkpoint not found: {spec}")
