"""The stage-2 training objective: what :meth:`Stage2Model.forward` computes for one batch of one media type.

Official: ``InternVideo2_Stage2_audiovisual.forward`` and its ``forward_image_video`` / ``forward_audio`` /
``forward_audio_video`` (InternVideo2/multi_modality/models/internvideo2_stage2_{audiovisual,visual}.py):

- ``image`` / ``video`` batches: VTC + VTM + MLM on the (masked) vision features;
- ``audio`` batches: ATC + AMLM (the official ATM needs an ``atm_head``, which no released layout has);
- ``audio_video`` batches: VTC, VTM, MLM on the video, plus ATC, AVC, AVTC (``av_fusion([audio_proj,
  vision_proj])`` against the text), AVTM and AVMLM on the tokens ``[audio, vision]``.

Each term is multiplied by its weight (the official ``criterion.loss_weight`` names); only terms with a
non-zero weight are computed. The temperature is clamped to ``[0.001, 0.5]`` in place first, as the official
``clip_contrastive_temperature``. Video masks (random, ``int(ratio · N)`` patches per sample, class token
kept) are drawn for every training forward: ``video_mask_ratio`` for clips, ``image_mask_ratio`` for images
(T = 1); mask type ``"none"`` is the unmasked post-pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch

from iv2_encoders import random_mask, tube_mask

from .losses import mlm_loss, vtc_loss, vtm_loss

MEDIA_TYPES = ("image", "video", "audio", "audio_video")
MaskType = Literal["random", "tube", "none"]


@dataclass
class LossWeights:
    """Weights of the stage-2 losses, named as the official ``criterion.loss_weight`` (defaults: the 6B config;
    the 1B config has the audio terms at 0). ``mlm_masking_prob`` is the official MLM masking probability."""

    vtc: float = 1.0
    vtm: float = 1.0
    mlm: float = 1.0
    atc: float = 0.0
    avc: float = 0.0
    amlm: float = 0.0
    avtc: float = 1.0
    avtm: float = 1.0
    avmlm: float = 1.0
    mlm_masking_prob: float = 0.5
    # official criterion.vtm_hard_neg: VTM negatives drawn by similarity (True) or uniformly (False)
    vtm_hard_neg: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "vtm_hard_neg" and not value >= 0:
                raise ValueError(f"loss weight {f.name} must be >= 0, got {value}")
        if not 0 < self.mlm_masking_prob < 1:
            raise ValueError(f"mlm_masking_prob must be in (0, 1), got {self.mlm_masking_prob}")

    def terms_for(self, media_type: str) -> list[str]:
        """The loss terms a batch of ``media_type`` computes (those with a non-zero weight)."""
        names = {"image": ("vtc", "vtm", "mlm"), "video": ("vtc", "vtm", "mlm"), "audio": ("atc", "amlm"),
                 "audio_video": ("vtc", "vtm", "mlm", "atc", "avc", "avtc", "avtm", "avmlm", "amlm")}[media_type]
        return [n for n in names if getattr(self, n) > 0]


@dataclass
class Stage2Objective:
    """What a training forward computes: loss ``weights``, the video masks, and the tokenizer's special ids for
    MLM (:meth:`for_tokenizer`)."""

    weights: LossWeights = field(default_factory=LossWeights)
    video_mask_type: MaskType = "random"
    video_mask_ratio: float = 0.8
    image_mask_type: MaskType = "random"
    image_mask_ratio: float = 0.5
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    cls_token_id: int | None = None

    def __post_init__(self) -> None:
        for kind in ("video", "image"):
            mask_type, ratio = getattr(self, f"{kind}_mask_type"), getattr(self, f"{kind}_mask_ratio")
            if mask_type not in ("random", "tube", "none"):
                raise ValueError(f"{kind}_mask_type must be 'random', 'tube' or 'none', got {mask_type!r}")
            if not 0 <= ratio < 1:
                raise ValueError(f"{kind}_mask_ratio must be in [0, 1), got {ratio}")

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, **options: Any) -> Stage2Objective:
        return cls(mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id,
                   cls_token_id=tokenizer.cls_token_id, **options)

    def draw_mask(self, video: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor | None:
        """The training mask for ``video`` ``(B, 3, T, H, W)`` (None when unmasked), on its device."""
        b, _, t, h, w = video.shape
        image = t == 1
        mask_type = self.image_mask_type if image else self.video_mask_type
        ratio = self.image_mask_ratio if image else self.video_mask_ratio
        if mask_type == "none" or ratio == 0:
            return None
        grid = (max(t // tubelet_size, 1), h // patch_size, w // patch_size)
        draw = random_mask if mask_type == "random" else tube_mask
        return draw(b, grid, ratio, device=video.device)


def split_batch(batch: Any) -> tuple[str, dict[str, Any]]:
    """``(media_type, inputs)`` from what the MetaLoader yields (``(name, batch)``) or a dict with ``media_type``."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], str):
        media_type, inputs = batch
    elif isinstance(batch, dict) and "media_type" in batch:
        media_type, inputs = batch["media_type"], batch
    else:
        raise TypeError("Stage2Model.forward takes (media_type, batch) as the MetaLoader yields it, or a dict with "
                        f"'media_type'; got {type(batch).__name__}")
    if media_type not in MEDIA_TYPES:
        raise ValueError(f"unknown media type {media_type!r}; expected one of {MEDIA_TYPES}")
    return media_type, inputs


def _require(inputs: dict[str, Any], keys: tuple[str, ...], media_type: str) -> None:
    missing = [k for k in keys if k not in inputs]
    if missing:
        raise KeyError(f"a {media_type!r} batch needs {list(keys)}; missing {missing} (has {sorted(inputs)})")


def stage2_losses(model: Any, media_type: str, inputs: dict[str, Any], objective: Stage2Objective
                  ) -> dict[str, torch.Tensor]:
    """The weighted stage-2 losses of one batch (see the module docstring): ``{"loss": total, "loss_vtc": ...}``.

    ``inputs``: ``input_ids`` / ``attention_mask`` (:func:`iv2_align.tokenize`), ``idx`` (samples sharing an
    idx are positives of each other; None: only the diagonal), ``video`` ``(B, 3, T, H, W)`` for image/video
    batches, ``audio`` (the ``(B, frames, 64)`` fbank) for audio batches, both for audio_video."""
    weights = objective.weights
    terms = weights.terms_for(media_type)
    if not terms:
        raise ValueError(f"every loss weight of a {media_type!r} batch is 0 ({weights}); drop the source or "
                         "give one of its losses a weight")
    needs_video = media_type in ("image", "video", "audio_video")
    needs_audio = media_type in ("audio", "audio_video")
    _require(inputs, ("input_ids", "attention_mask") + (("video",) if needs_video else ())
             + (("audio",) if needs_audio else ()), media_type)
    if any(t.endswith("mlm") for t in terms) and objective.mask_token_id is None:
        raise ValueError("MLM needs the tokenizer's [MASK]/[PAD]/[CLS] ids: Stage2Objective.for_tokenizer(tokenizer)")
    model.clamp_temperature()
    temp = model.temp
    ids, attention, idx = inputs["input_ids"], inputs["attention_mask"], inputs.get("idx")
    text_tokens, text_cls = model.encode_text(ids, attention)
    text_feat = model.text_features(text_cls)

    losses: dict[str, torch.Tensor] = {}
    if needs_video:
        video = inputs["video"]
        vision_cfg = model.cfg.vision
        mask = objective.draw_mask(video, vision_cfg.patch_size, vision_cfg.tubelet_size)
        vision_tokens, vision_pooled = model.encode_video(video, mask)
        vision_feat = model.video_features(vision_pooled)
        if "vtc" in terms:
            losses["vtc"] = vtc_loss(vision_feat, text_feat, idx, temp)
    if needs_audio:
        audio_tokens, audio_pooled = model.encode_audio(inputs["audio"])
        audio_feat = model.audio_proj(audio_pooled)
        if "atc" in terms:
            losses["atc"] = vtc_loss(audio_feat, text_feat, idx, temp)
    if media_type == "audio_video":
        audio_video_feat = model.av_fusion(torch.cat([audio_feat, vision_feat], dim=-1))
        if "avc" in terms:
            losses["avc"] = vtc_loss(audio_feat, vision_feat, idx, temp)
        if "avtc" in terms:
            losses["avtc"] = vtc_loss(audio_video_feat, text_feat, idx, temp)
    if "vtm" in terms:
        losses["vtm"] = vtm_loss(model, vision_tokens, text_tokens, attention, vision_feat, text_feat, idx, temp,
                                 hard_negatives=weights.vtm_hard_neg)
    if media_type == "audio_video" and "avtm" in terms:
        audio_video_tokens = torch.cat([audio_tokens, vision_tokens], dim=1)
        losses["avtm"] = vtm_loss(model, audio_video_tokens, text_tokens, attention, audio_video_feat, text_feat,
                                  idx, temp, head="avtm", hard_negatives=weights.vtm_hard_neg)
    mlm_media = {"mlm": lambda: vision_tokens, "amlm": lambda: audio_tokens,
                 "avmlm": lambda: torch.cat([audio_tokens, vision_tokens], dim=1)}
    for name in ("mlm", "amlm", "avmlm"):
        if name in terms:
            losses[name] = mlm_loss(model, ids, attention, mlm_media[name](), objective,
                                    mask_prob=weights.mlm_masking_prob)
    weighted = {f"loss_{name}": getattr(weights, name) * value for name, value in losses.items()}
    return {"loss": sum(weighted.values()), **weighted}
