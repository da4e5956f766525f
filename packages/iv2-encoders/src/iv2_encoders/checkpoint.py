"""Loading every released InternVideo2 checkpoint layout into :class:`VideoEncoder` (and saving ours).

One place turns foreign checkpoints into this model's layout (timm's ``checkpoint_filter_fn`` habit):

* files: safetensors, or torch pickles loaded with ``weights_only=True``;
* wrappers: ``{"module": sd}`` (DeepSpeed), ``{"model": sd}``, ``{"state_dict": sd}`` or a bare state dict;
* prefixes: the vision tower is found by its ``patch_embed.proj.weight`` key, whatever precedes it
  (``module.``, ``vision_encoder.``, ``module.vision_encoder.``, a chat model's tower prefix ...); keys under
  any other prefix (text/audio encoders, QFormer, LLM, projections) are dropped and reported;
* distillation heads (``clip_decoder``, ``final_clip_decoder``, ``mae_decoder``, ``clip_pos_embed``,
  ``mae_pos_embed``, ...) and classifier heads are dropped and reported, not errors;
* position embeddings are resampled to the model's frame count (linear in time) and size (bicubic in space)
  like the official ``interpolate_pos_embed_internvideo2``; a checkpoint ``img_pos_embed`` is resampled in
  space and gives the model a separate image position embedding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .model import VideoEncoder
from .pos_embed import interpolate_pos_embed

_ANCHOR = "patch_embed.proj.weight"
_WRAPPERS = ("module", "model", "state_dict")


@dataclass
class LoadResult:
    """What :func:`load_checkpoint` did: model keys the checkpoint lacked, checkpoint keys not used."""

    missing: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    prefix: str = ""
    num_frames: int | None = None

    def __iter__(self):  # ``missing, dropped = load_checkpoint(...)``
        return iter((self.missing, self.dropped))


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the message names the file and key."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict, unwrapping the released wrappers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{path}: cannot be read as a torch checkpoint with weights_only=True "
                                  f"({type(err).__name__}: {err})") from err
    for _ in range(3):  # e.g. {"module": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise CheckpointError(f"{path}: no state dict found (top-level keys: {_head(obj)})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_state_dict(obj: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def _head(obj: object) -> str:
    return str(sorted(obj)[:10]) if isinstance(obj, Mapping) else type(obj).__name__


def split_vision_prefix(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"):
    """Return ``(prefix, tower, other)``: the vision tower's keys without their prefix, and the rest."""
    anchors = [k[: -len(_ANCHOR)] for k in state_dict if k.endswith(_ANCHOR)]
    if not anchors:
        raise CheckpointError(f"{source}: no vision encoder found (no key ending in {_ANCHOR!r}); "
                              f"first keys: {sorted(state_dict)[:8]}")
    prefix = min(anchors, key=len)  # the outermost tower if several (e.g. a student and its teacher)
    tower, other = {}, []
    for k, v in state_dict.items():
        if k.startswith(prefix):
            tower[k[len(prefix):]] = v
        else:
            other.append(k)
    return prefix, tower, other


def infer_num_frames(rows: int, model: VideoEncoder, source: str = "checkpoint") -> int:
    """Frame count a ``pos_embed`` of ``rows`` patch rows was trained with (see DESIGN.md)."""
    t_model, h, w = model.cfg.grid_size
    candidates = set()
    if rows % (h * w) == 0:  # the model's spatial grid
        candidates.add(rows // (h * w) * model.cfg.tubelet_size)
    if rows % t_model == 0 and math.isqrt(rows // t_model) ** 2 == rows // t_model:  # the model's frames
        candidates.add(model.cfg.num_frames)
    if len(candidates) != 1:
        why = "fits no" if not candidates else f"fits several ({sorted(candidates)})"
        raise CheckpointError(
            f"{source}: pos_embed with {rows} patch rows {why} frame count for a model of grid "
            f"{t_model}x{h}x{w}; pass num_frames= (the frame count the checkpoint was trained with)"
        )
    return candidates.pop()


def _resample(name: str, table: torch.Tensor, model: VideoEncoder, num_frames: int, source: str) -> torch.Tensor:
    t_model, h, w = model.cfg.grid_size
    rows = table.shape[-2] - 1
    t_src = num_frames // model.cfg.tubelet_size
    if rows % t_src or math.isqrt(rows // t_src) ** 2 != rows // t_src:
        raise CheckpointError(f"{source}: {name} has {rows} patch rows, not {t_src} frames of a square grid")
    side = math.isqrt(rows // t_src)
    dst_t = 1 if name == "img_pos_embed" else t_model
    return interpolate_pos_embed(table.reshape(1, rows + 1, -1), (t_src, side, side), (dst_t, h, w))


def load_checkpoint(
    model: VideoEncoder,
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    num_frames: int | None = None,
) -> LoadResult:
    """Load a released InternVideo2 checkpoint (file or state dict) into ``model`` in place.

    ``num_frames`` is the frame count the checkpoint was trained with (official ``origin_num_frames``);
    when omitted it is inferred from the ``pos_embed`` rows, and an ambiguous table is an error asking for
    it. Returns :class:`LoadResult` (iterable as ``missing, dropped``). A wrong-shape tensor raises
    :class:`CheckpointError` naming the key, both shapes and the likely cause.
    """
    source = str(path) if not isinstance(path, Mapping) else "state dict"
    sd = read_state_dict(path) if not isinstance(path, Mapping) else dict(path)
    prefix, tower, other = split_vision_prefix(sd, source)
    dropped = list(other)
    if "pos_embed" in tower:
        if num_frames is None:
            num_frames = infer_num_frames(tower["pos_embed"].shape[-2] - 1, model, source)
        tower["pos_embed"] = _resample("pos_embed", tower["pos_embed"], model, num_frames, source)
    if "img_pos_embed" in tower:
        tower["img_pos_embed"] = _resample("img_pos_embed", tower["img_pos_embed"], model, 1, source)
        model.add_image_pos_embed()

    own = model.state_dict()
    to_load = {}
    for k, v in tower.items():
        if k not in own:
            dropped.append(prefix + k)
            continue
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"{source}: key {prefix + k!r} has shape {tuple(v.shape)} but the model expects "
                f"{tuple(own[k].shape)}; the checkpoint is probably of another model size than "
                f"width {model.cfg.embed_dim} / depth {model.cfg.depth} (pick the matching create_model name)"
            )
        to_load[k] = v
    missing = sorted(k for k in own if k not in to_load)
    model.load_state_dict(to_load, strict=False, assign=_is_meta(model))
    return LoadResult(missing=missing, dropped=sorted(dropped), prefix=prefix, num_frames=num_frames)


def _is_meta(model: torch.nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def save_checkpoint(model: VideoEncoder, path: str | os.PathLike) -> None:
    """Write the encoder's weights as safetensors (:func:`iv2_data.atomic_write`: complete or absent, with the
    umask's permissions)."""
    from safetensors.torch import save_file

    from iv2_data import atomic_write

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_write(path) as partial:
        save_file(tensors, str(partial), metadata={"format": "pt", "iv2_config": repr(model.cfg.to_dict())})
