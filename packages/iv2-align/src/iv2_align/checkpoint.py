"""Loading official stage-2 checkpoints (and ours) into :class:`Stage2Model`.

:func:`convert_official_state_dict` is the part specific to the stage-2 layouts (renames and known drops,
litgpt-style: nothing unknown is silently lost); :func:`load_checkpoint` reads a file, converts it, loads the
vision tower through ``iv2_encoders.load_checkpoint`` (position-embedding interpolation, LayerScale names) and
the rest through the shared checked loader ``iv2_encoders.load_state_dict_checked`` (key and both shapes on a
mismatch, unknown keys dropped and reported, missing weights refused).

Layouts accepted:

* wrappers ``module`` (DeepSpeed), ``model``, ``state_dict`` or none, and a ``module.`` key prefix (DDP);
* the ``mode="pt"`` text encoder (``text_encoder.bert.*`` + ``text_encoder.cls.*``) and the ``mode="ret"``
  ``BertModel`` form (``text_encoder.X``), which has no MLM head (reported missing, not an error);
* the stage-1 heads the official vision tower still carries (``vision_encoder.clip_decoder.*``,
  ``final_clip_decoder.*``, ``clip_pos_embed``, ``clip_img_pos_embed``, ``mae_*``) and a CLIP teacher are
  dropped and reported;
* BEATs ``pos_conv.0.weight`` of code before weight normalisation, converted to ``weight_g``/``weight_v``;
* tied tensors stored once (the MLM decoder weight/bias, the shared relative position bias).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from iv2_encoders import CheckpointError, LoadResult, load_state_dict_checked, read_state_dict
from iv2_encoders import load_checkpoint as load_vision_checkpoint

from .beats import convert_beats_state_dict
from .model import Stage2Model

_VISION = "vision_encoder."
_TEXT = "text_encoder."
_STAGE1_HEADS = ("clip_decoder.", "final_clip_decoder.", "clip_pos_embed", "clip_img_pos_embed",
                 "mae_decoder.", "mae_pos_embed")
_DROPPED_PREFIXES = ("clip_teacher.", "text_encoder.bert.pooler.")
_MLM_HEAD = "text_encoder.cls."
_POSITION_IDS = "text_encoder.bert.embeddings.position_ids"
_TIED = {  # tied copy -> its source
    "text_encoder.cls.predictions.decoder.weight": "text_encoder.bert.embeddings.word_embeddings.weight",
    "text_encoder.cls.predictions.decoder.bias": "text_encoder.cls.predictions.bias",
}


def _is_stage1_head(key: str) -> bool:
    if not key.startswith(_VISION):
        return False
    local = key[len(_VISION):]
    return any(local.startswith(p) for p in _STAGE1_HEADS)


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def is_ret_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the text encoder is stored as a bare ``BertModel`` (official ``mode="ret"``)."""
    keys = (_strip_module(k) for k in state_dict)
    return any(k.startswith(_TEXT + "embeddings.") or k.startswith(_TEXT + "encoder.") for k in keys)


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official stage-2 keys -> this package's layout. Returns ``(converted, dropped)``: ``dropped`` lists the
    official keys known to be unused (stage-1 heads, teacher, pooler); every other key is kept (renamed where
    the layouts differ) for the loader to match against the model."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        k = _strip_module(key)
        if k.startswith(_TEXT) and not (k.startswith(_TEXT + "bert.") or k.startswith(_MLM_HEAD)):
            k = _TEXT + "bert." + k[len(_TEXT):]  # mode="ret": BertModel stored without the .bert level
        if _is_stage1_head(k) or k.startswith(_DROPPED_PREFIXES):
            dropped.append(key)
            continue
        out[k] = value
    out = convert_beats_state_dict(out, prefix="audio_encoder.")
    for copy, source in _TIED.items():
        if copy not in out and source in out:
            out[copy] = out[source]
    return out, sorted(dropped)


def _materialize_token_type_ids(model: Stage2Model) -> None:
    """BERT's ``token_type_ids`` is a non-persistent buffer (zeros), so no checkpoint holds it: a model built on
    the meta device gets it here, after loading."""
    embeddings = model.text_encoder.bert.embeddings
    buffer = getattr(embeddings, "token_type_ids", None)
    if buffer is not None and buffer.is_meta:
        device = embeddings.word_embeddings.weight.device
        embeddings.register_buffer("token_type_ids", torch.zeros(buffer.shape, dtype=buffer.dtype, device=device),
                                   persistent=False)


def load_checkpoint(
    model: Stage2Model,
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    num_frames: int | None = None,
    strict: bool = True,
) -> LoadResult:
    """Load an official stage-2 checkpoint (file, folder or state dict) into ``model`` in place.

    ``num_frames``: the frame count the checkpoint's vision tower was trained with (inferred when omitted;
    see ``iv2_encoders.load_checkpoint``), so a stage-1 8-frame tower loads into a 4-frame model. Returns
    :class:`iv2_encoders.LoadResult` (``missing, dropped = load_checkpoint(...)``). A wrong-shape tensor
    raises :class:`iv2_encoders.CheckpointError` naming the key and both shapes; with ``strict`` a missing
    weight is an error too (except the MLM head of a ``mode="ret"`` checkpoint, which has none).

    The vision tower goes through ``iv2_encoders.load_checkpoint`` (position tables resampled), everything else
    through the shared checked loader ``iv2_encoders.load_state_dict_checked``.
    """
    source = "state dict" if isinstance(path, Mapping) else str(path)
    raw = dict(path) if isinstance(path, Mapping) else read_state_dict(path)
    converted, dropped = convert_official_state_dict(raw)

    vision = {k[len(_VISION):]: v for k, v in converted.items() if k.startswith(_VISION)}
    if not vision:
        raise CheckpointError(f"{source}: no vision_encoder.* keys; is this a stage-2 checkpoint? "
                              f"first keys: {sorted(raw)[:8]}")
    vision_result = load_vision_checkpoint(model.vision_encoder, vision, num_frames=num_frames, strict=strict,
                                           source=source)
    # the MLM head of a mode="ret" checkpoint does not exist; position_ids is a buffer older files lack
    allowed = [_VISION, _POSITION_IDS] + ([_MLM_HEAD] if is_ret_layout(raw) else [])
    rest = {k: v for k, v in converted.items() if not k.startswith(_VISION)}
    result = load_state_dict_checked(model, rest, source=source, strict=strict, allow_missing=allowed)
    model.text_encoder.tie_weights()  # a meta model gets tensors assigned one by one
    _materialize_token_type_ids(model)
    missing = sorted([_VISION + k for k in vision_result.missing]
                     + [k for k in result.missing if not k.startswith(_VISION) and k != _POSITION_IDS])
    dropped += [_VISION + k for k in vision_result.dropped] + result.dropped
    return LoadResult(missing=missing, dropped=sorted(dropped), prefix=_VISION, num_frames=vision_result.num_frames,
                      source=source)
