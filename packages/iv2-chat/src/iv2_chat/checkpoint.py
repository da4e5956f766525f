"""Loading and exporting chat checkpoints in every released layout.

Layouts read by :func:`load_checkpoint` (files via ``iv2_encoders.read_state_dict``: safetensors or torch,
bare or wrapped in ``module`` / ``model`` / ``state_dict``; ``module.`` key prefixes are stripped):

* InternVideo2-Chat (this model's own names): ``vision_encoder.*``, ``vision_layernorm.*``, ``qformer.bert.*``,
  ``query_tokens``, ``extra_query_tokens``, ``project_up.*``, ``project_down.*``, ``lm.*``;
* VideoChat2 / Ask-Anything: ``mistral_model.`` → ``lm.``, ``mistral_proj.`` → ``project_up.`` (no
  ``project_down``; with ``qformer_text_input=False`` no QFormer text embeddings/FFNs: reported missing).
  Its UMT-L tower (``vision_encoder.encoder.*``) is another architecture and is refused with a clear error;
* LoRA names of any peft version: ``X.base_layer.weight`` (peft >= 0.7) or ``X.weight`` (older) for the
  wrapped layers, adapter weights with or without the ``default`` adapter name; a checkpoint without LoRA
  (e.g. stage 2) loads into a LoRA model's base layers. LoRA weights into a model without LoRA are an error;
* stage-2 LayerScale names ``blocks.N.ls1.gamma`` (the official chat loader strips ``.gamma``);
* a peft adapter file (``lm.save_pretrained(dir)``: ``base_model.model.*`` keys) loads into ``lm``;
* checkpoints holding only the trainable weights (Ask-Anything saves no frozen LLM weight): the base LLM is
  the one built from ``cfg.llm``; its keys are reported in ``from_llm``, not as missing.

The vision tower is loaded through ``iv2_encoders.load_checkpoint``, which resamples position tables of other
frame counts / sizes (official ``origin_num_frames``: the 4-frame stage-2 table into the 8-frame chat tower).
:func:`checkpoint_key_map` is the key mapping alone (checkpoint key → model key or None), for reuse.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from iv2_encoders import CheckpointError, LoadResult, load_state_dict_checked, read_state_dict
from iv2_encoders import load_checkpoint as load_encoder_checkpoint

VIDEOCHAT2_RENAMES = (("mistral_model.", "lm."), ("mistral_proj.", "project_up."))
_PEFT_PREFIX = "lm.base_model.model."
_LORA = re.compile(r"\.(lora_[AB]|lora_embedding_[AB]|lora_magnitude_vector)(\.[^.]+)?\.weight$")
_GAMMA = re.compile(r"^(vision_encoder\.blocks\.\d+\.ls[12])\.gamma$")


@dataclass
class ChatLoadResult(LoadResult):
    """``missing`` / ``dropped`` as ``iv2_encoders.LoadResult`` (iterable as ``missing, dropped``), plus
    ``from_llm``: frozen base-LLM weights the checkpoint did not hold (a trainable-only checkpoint or an
    adapter file), kept as built from ``cfg.llm``; they are not counted as missing."""

    from_llm: list[str] = field(default_factory=list)


def _lm_key(inner: str, model_keys: set[str], peft_model: bool) -> str:
    """Map an LLM key relative to the HF model (``model.layers...``, ``lm_head...``) to the model's name."""
    match = re.search(r"\.(lora_[AB]|lora_embedding_[AB])\.weight$", inner)
    if match:  # peft's own save format drops the adapter name: lora_A.weight -> lora_A.default.weight
        inner = inner[: match.start()] + f".{match.group(1)}.default.weight"
    base = inner.replace(".base_layer.", ".")
    if not peft_model:
        return "lm." + base
    head, _, leaf = base.rpartition(".")
    with_base_layer = f"{_PEFT_PREFIX}{head}.base_layer.{leaf}" if head else ""
    if with_base_layer in model_keys:
        return with_base_layer
    return _PEFT_PREFIX + base


def checkpoint_key_map(checkpoint_keys: Iterable[str], model_keys: Iterable[str]) -> dict[str, str | None]:
    """``{checkpoint key: model key}`` for a :class:`~iv2_chat.VideoChatModel` whose ``state_dict()`` keys are
    ``model_keys``; ``None`` for keys the model has no place for (dropped). See the module docstring."""
    model_keys = set(model_keys)
    peft_model = any(k.startswith(_PEFT_PREFIX) for k in model_keys)
    out: dict[str, str | None] = {}
    for key in checkpoint_keys:
        name = key.removeprefix("module.")
        if name.startswith("base_model.model."):  # a peft adapter file (PeftModel.save_pretrained)
            name = "lm." + name
        for old, new in VIDEOCHAT2_RENAMES:
            if name.startswith(old):
                name = new + name[len(old):]
        name = _GAMMA.sub(r"\1", name)
        if name.startswith("lm."):
            inner = name[len("lm."):]
            inner = inner.removeprefix("base_model.model.")
            name = _lm_key(inner, model_keys, peft_model)
        out[key] = name if name in model_keys else None
    return out


def _is_lora(key: str) -> bool:
    return bool(_LORA.search(key))


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    num_frames: int | None = None,
    strict: bool = True,
) -> ChatLoadResult:
    """Load a chat checkpoint (file, folder or state dict) into ``model`` in place; see the module docstring.

    ``num_frames``: the frame count the checkpoint's vision tower was trained with (inferred when omitted).
    Keys go through :func:`checkpoint_key_map` into ``iv2_encoders.load_state_dict_checked`` (the tower through
    ``iv2_encoders.load_checkpoint``, which resamples its position tables). ``strict`` (default): a parameter
    the checkpoint lacks is a :class:`iv2_encoders.CheckpointError` naming the keys and the file, except what
    may come from elsewhere: the frozen base LLM (built from ``cfg.llm``; listed in ``from_llm``), LoRA adapters
    when the checkpoint holds none (a checkpoint of a model without LoRA: they start as built, B = 0) and the
    unused ``project_down`` (not in VideoChat2 checkpoints); those are listed in ``missing``. A key whose shape
    differs raises :class:`iv2_encoders.CheckpointError` naming the key and both shapes.
    """
    source = "state dict" if isinstance(path, Mapping) else str(path)
    sd = dict(path) if isinstance(path, Mapping) else read_state_dict(path)
    if any(k.removeprefix("module.").startswith("vision_encoder.encoder.") for k in sd):
        raise CheckpointError(f"{source}: holds a UMT vision tower (vision_encoder.encoder.*, the Ask-Anything "
                              f"VideoChat2 tower); this model's tower is an InternVideo2 encoder")
    own = model.state_dict()
    mapping = checkpoint_key_map(sd, own)
    lora_model = any(_is_lora(k) for k in own)
    stray_lora = [k for k, v in mapping.items() if v is None and _is_lora(k)]
    if stray_lora and not lora_model:
        raise CheckpointError(f"{source}: holds LoRA weights ({stray_lora[0]!r}, ...) but the model has no LoRA; "
                              f"build it with lora=... (iv2_chat.OFFICIAL_LORA) to load them")

    def is_vision(key: str) -> bool:
        return key.removeprefix("module.").startswith("vision_encoder.")

    vision = {k.removeprefix("module.")[len("vision_encoder."):]: v for k, v in sd.items() if is_vision(k)}
    rest = {k: v for k, v in sd.items() if not is_vision(k)}
    base_llm = sorted(k for k in own if k.startswith("lm.") and not _is_lora(k))
    fresh_lora = [] if any(_is_lora(v or "") for k, v in mapping.items() if k in rest) else \
        [k for k in own if _is_lora(k)]
    may_miss = ("vision_encoder.", "project_down.", *base_llm, *fresh_lora)
    loaded = load_state_dict_checked(model, rest, source=source, strict=strict, rename=mapping.get,
                                     allow_missing=may_miss)
    missing = [k for k in loaded.missing if not k.startswith("vision_encoder.")]
    dropped = list(loaded.dropped)
    vision_missing: list[str] = [k for k in own if k.startswith("vision_encoder.")]
    if vision:
        tower = load_encoder_checkpoint(model.vision_encoder, vision, num_frames=num_frames, strict=strict,
                                        source=source)
        vision_missing = ["vision_encoder." + k for k in tower.missing]
        dropped += ["vision_encoder." + k for k in tower.dropped]
        num_frames = tower.num_frames
    elif strict:
        raise CheckpointError(f"{source}: holds no vision tower (vision_encoder.*); pass strict=False to keep "
                              f"the model's")
    # Base-LLM weights a (trainable-only / adapter) checkpoint does not hold stay as built from cfg.llm.
    from_llm = [k for k in missing if k in set(base_llm)]
    missing = sorted(vision_missing + [k for k in missing if k not in set(base_llm)])
    return ChatLoadResult(missing=missing, dropped=sorted(dropped), num_frames=num_frames, from_llm=from_llm,
                          source=source)


def export_state_dict(
    model: nn.Module,
    *,
    layout: str = "internvideo2-chat",
    trainable_only: bool = False,
    peft_base_layer: bool = True,
) -> dict[str, torch.Tensor]:
    """The model's weights in a released layout: ``"internvideo2-chat"`` (its own names) or ``"videochat2"``
    (Ask-Anything: ``mistral_model.`` / ``mistral_proj.``, no ``project_down``). ``trainable_only`` keeps the
    trainable parameters and every buffer (what Ask-Anything saves); ``peft_base_layer=False`` writes
    peft < 0.7 LoRA names."""
    if layout not in ("internvideo2-chat", "videochat2"):
        raise ValueError(f"layout must be 'internvideo2-chat' or 'videochat2', got {layout!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if trainable_only and isinstance(value, nn.Parameter) and not value.requires_grad:
            continue
        name = key if peft_base_layer else key.replace(".base_layer.", ".")
        if layout == "videochat2":
            if name.startswith("project_down."):
                continue
            for new, old in ((n, o) for o, n in VIDEOCHAT2_RENAMES):
                if name.startswith(new):
                    name = old + name[len(new):]
        out[name] = value.detach()
    return out


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **export: object) -> None:
    """Write :func:`export_state_dict` as safetensors, atomically (temporary name, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in export_state_dict(model, **export).items()}
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
