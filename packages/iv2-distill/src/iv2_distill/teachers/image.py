"""Image teachers run frame by frame: a timm ViT, a transformers CLIP vision model, and InternViT (InternVL)
loaded through transformers' ``AutoModel`` with ``trust_remote_code``.

Every adapter returns the tapped layers (the full residual stream after block ``idx``, class token first, no
final norm: what the official InternViT teacher taps), a pooled vector per frame and a saliency per frame:

* InternViT with its attention-pooling head (InternVL-C's ``clip_projector``, the official teacher): the
  pooled vector is the head's output and the saliency its attention over the patch tokens (softmax over all
  keys, averaged over heads, class key dropped), exactly REFERENCE c;
* a plain ViT (timm, CLIP, InternViT without the head) has no pooling attention; the stand-in saliency is
  the class token's attention over the patch tokens in the last block, averaged over heads (the same
  processing). The pooled vector is the model's own: timm ``forward_head`` (build with ``num_classes=0`` for
  the pooled feature, keep the head for a projected embedding), CLIP ``image_embeds`` with a projection or
  ``pooler_output`` without, InternViT's class token.

The attention weights are read from the models' own ``attn_drop`` modules (the softmax output passes through
them) with the fused/flash path switched off for that call only.
"""

from __future__ import annotations

import os
from contextlib import ExitStack

import torch
from torch import nn

from .base import ImageTeacher, capture_output, class_token_attention, temporarily


class TimmTeacher(ImageTeacher):
    """A timm ``VisionTransformer`` (with a class token) as the image teacher; ``options`` are those of
    :class:`ImageTeacher` (``return_layers``, ``return_interval``, ``frames_per_batch``)."""

    def __init__(self, model: nn.Module, *, saliency: bool = True, **options) -> None:
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
            raise TypeError(f"TimmTeacher needs a timm VisionTransformer, got {type(model).__name__}")
        if not getattr(model, "has_class_token", False):
            raise ValueError(
                f"TimmTeacher: {type(model).__name__} has no class token; the CLIP middle-layer targets need one"
            )
        attn = model.blocks[-1].attn
        if saliency and not (hasattr(attn, "attn_drop") and hasattr(attn, "fused_attn")):
            raise TypeError(f"TimmTeacher: cannot read attention weights from {type(attn).__name__} "
                            "(pass saliency=False and draw random/tube masks)")
        super().__init__(model, depth=len(model.blocks), patch_size=model.patch_embed.patch_size[0],
                         input_size=model.patch_embed.img_size[0], saliency=saliency, **options)

    def _encode_images(self, images):
        model = self.model
        attn = model.blocks[-1].attn
        with ExitStack() as stack:
            weights = None
            if self.saliency:  # the softmax passes through attn_drop on the unfused path of the last block
                weights = stack.enter_context(capture_output(attn.attn_drop))
                stack.enter_context(temporarily(attn, "fused_attn", False))
            final, intermediates = model.forward_intermediates(
                images, indices=self.return_index, output_fmt="NLC", return_prefix_tokens=True,
            )
        # keep the class token (first prefix token) and drop registers, as the official teacher has none
        layers = [torch.cat([prefix[:, :1], spatial], dim=1) for spatial, prefix in intermediates]
        pooled = model.forward_head(final)
        sal = class_token_attention(weights[-1], model.num_prefix_tokens) if self.saliency else None
        return layers, pooled, sal


class CLIPTeacher(ImageTeacher):
    """A transformers ``CLIPVisionModel`` or ``CLIPVisionModelWithProjection`` as the image teacher. The saliency
    needs attention weights, so the model is switched to eager attention (``saliency=False`` keeps SDPA);
    ``options`` are those of :class:`ImageTeacher`."""

    def __init__(self, model: nn.Module, *, saliency: bool = True, **options) -> None:
        cfg = model.config
        if saliency and getattr(cfg, "_attn_implementation", "eager") != "eager":
            model.set_attn_implementation("eager")
        super().__init__(model, depth=cfg.num_hidden_layers, patch_size=cfg.patch_size, input_size=cfg.image_size,
                         saliency=saliency, **options)

    def _encode_images(self, images):
        out = self.model(pixel_values=images, output_hidden_states=True, output_attentions=self.saliency)
        layers = [out.hidden_states[i + 1] for i in self.return_index]  # hidden_states[0] = embeddings
        pooled = getattr(out, "image_embeds", None)
        if pooled is None:
            pooled = out.pooler_output
        sal = class_token_attention(out.attentions[-1]) if self.saliency else None
        return layers, pooled, sal


class InternViTTeacher(ImageTeacher):
    """InternViT (InternVL's ``InternVisionModel``) as the image teacher, optionally with InternVL-C's
    attention-pooling ``clip_projector`` — the official stage-1 teacher (``internvl_c_13b_224px``).

    ``model`` is either the vision model itself or a model holding it as ``vision_model`` next to a
    ``clip_projector`` (InternVL-C: ``InternVLModel`` / ``InternVLVisionModel`` remote code). Load one with
    :meth:`from_pretrained`; ``options`` are those of :class:`ImageTeacher`.
    """

    def __init__(self, model: nn.Module, *, saliency: bool = True, **options) -> None:
        vision = getattr(model, "vision_model", model)
        cfg = getattr(vision, "config", None)
        if cfg is None or not hasattr(vision, "encoder"):
            raise TypeError(
                f"InternViTTeacher needs an InternVisionModel (or a model with .vision_model), got "
                f"{type(model).__name__}"
            )
        super().__init__(model, depth=cfg.num_hidden_layers, patch_size=cfg.patch_size, input_size=cfg.image_size,
                         saliency=saliency, **options)

    # properties, not attributes: registering the submodules again would repeat their keys in state_dict()
    @property
    def vision(self) -> nn.Module:
        return getattr(self.model, "vision_model", self.model)

    @property
    def projector(self) -> nn.Module | None:
        return getattr(self.model, "clip_projector", None)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
        **kwargs,
    ) -> InternViTTeacher:
        """Load with ``transformers.AutoModel.from_pretrained(path, trust_remote_code=True)`` (a local folder or
        a hub id: the remote code ships with the weights, e.g. ``OpenGVLab/InternViT-6B-224px`` or an InternVL-C
        folder with ``clip_projector``). ``kwargs`` go to the constructor."""
        from transformers import AutoModel

        model = AutoModel.from_pretrained(os.fspath(path), trust_remote_code=True, dtype=dtype)
        if device is not None:
            model = model.to(device)
        return cls(model, **kwargs)

    def _encode_images(self, images):
        last_attn = self.vision.encoder.layers[-1].attn
        with ExitStack() as stack:
            weights = None
            if self.saliency and self.projector is None:  # stand-in: last block's class-token attention
                weights = stack.enter_context(capture_output(last_attn.attn_drop))
                stack.enter_context(temporarily(last_attn, "use_flash_attn", False))
            out = self.vision(pixel_values=images, output_hidden_states=True, return_dict=True)
        layers = [out.hidden_states[i + 1] for i in self.return_index]  # hidden_states[0] = embeddings
        if self.projector is None:
            sal = class_token_attention(weights[-1]) if self.saliency else None
            return layers, out.pooler_output, sal
        # The official saliency: the pooling head's attention (query = mean token) over the patch tokens.
        with capture_output(self.projector.cross_attn.attn_drop) as pool_weights:
            pooled = self.projector(out.last_hidden_state)
        sal = class_token_attention(pool_weights[-1]) if self.saliency else None
        return layers, pooled, sal
