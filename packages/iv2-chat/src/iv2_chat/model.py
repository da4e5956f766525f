"""``VideoChatModel``: InternVideo2-Chat (VideoChat2 with an InternVideo2 tower) in the official key layout.

    video (B, 3, T, H, W) ─► vision_encoder (iv2_encoders.VideoEncoder, every token) ─► vision_layernorm
        ─► qformer(query_tokens ⊕ extra_query_tokens, [instruction text]) ─► first Q outputs ─► project_up
        ─► LLM input embeddings at the visual slots ─► lm (HF causal LM, frozen, + peft LoRA)

State-dict keys are those of the InternVideo2-Chat release: ``vision_encoder.*`` (bare ``blocks.N.ls1``),
``vision_layernorm.*``, ``qformer.bert.*``, ``query_tokens``, ``extra_query_tokens``, ``project_up.*``,
``project_down.*`` (unused, kept for the layout) and ``lm.*`` (``lm.base_model.model.*`` with LoRA).

Eval semantics are plain: ``model.eval()`` turns every dropout off, LoRA dropout included. (The official
InternVideo2-Chat code replaces ``lm.train`` before peft injects LoRA, so its LoRA dropout stays active at
inference and its outputs are stochastic; that is not reproduced.)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from iv2_encoders import VideoEncoder

from .config import ChatConfig
from .hd import hd_sub_videos
from .qformer import QFormer


@dataclass
class VisualOutput:
    """``vision_tokens`` (B, 1 + N, D): the tower's tokens after ``vision_layernorm``; ``query_output``
    (B, Q, H): the QFormer's outputs at the ``Q = num_query_tokens + extra_num_query_tokens`` queries;
    ``embeds`` (B, Q, llm_width) = ``project_up(query_output)``, what fills the LLM's visual slots."""

    vision_tokens: torch.Tensor
    query_output: torch.Tensor
    embeds: torch.Tensor


def build_llm(cfg: ChatConfig) -> nn.Module:
    """The causal LM of ``cfg.llm`` (pretrained from a path / hub id, else random from the config), frozen,
    wrapped by ``peft`` LoRA (``TaskType.CAUSAL_LM``) when ``cfg.lora`` is set."""
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.llm_dtype) if cfg.llm_dtype else None
    if isinstance(cfg.llm, str):
        lm = AutoModelForCausalLM.from_pretrained(cfg.llm, dtype=dtype, local_files_only=cfg.local_files_only)
    else:
        lm = AutoModelForCausalLM.from_config(cfg.llm_hf_config(), dtype=dtype)
    lm.requires_grad_(False)
    if cfg.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        with warnings.catch_warnings():
            # peft (0.21) reads transformers' deprecated `is_gradient_checkpointing` in every get_peft_model: a
            # FutureWarning that users of iv2-chat cannot act on, printed once per model built
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            lm = get_peft_model(lm, LoraConfig(task_type=TaskType.CAUSAL_LM, inference_mode=False, **cfg.lora))
    return lm


class VideoChatModel(nn.Module):
    """InternVideo2-Chat; see the module docstring. Building under ``torch.device("meta")`` allocates
    nothing (a pretrained LLM path is read, so build those on a real device)."""

    def __init__(self, cfg: ChatConfig) -> None:
        super().__init__()
        self.cfg = cfg
        q = cfg.qformer_dict()
        hidden = q["hidden_size"]
        self.vision_encoder = VideoEncoder(cfg.vision)
        self.vision_layernorm = nn.LayerNorm(cfg.vision.embed_dim, eps=1e-12)
        self.qformer = QFormer(cfg.qformer_hf_config(), drop_path_rate=q["drop_path_rate"])
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.num_query_tokens, hidden))
        nn.init.normal_(self.query_tokens, std=q.get("initializer_range", 0.02))
        if cfg.extra_num_query_tokens > 0:  # zeros, appended after the learnt queries (official)
            self.extra_query_tokens = nn.Parameter(torch.zeros(1, cfg.extra_num_query_tokens, hidden))
        else:
            self.register_parameter("extra_query_tokens", None)
        self.lm = build_llm(cfg)
        llm_width = self.lm.config.hidden_size
        self.project_up = nn.Linear(hidden, llm_width)
        if cfg.project_down:
            self.project_down = nn.Linear(llm_width, hidden).requires_grad_(False)

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def num_visual_tokens(self) -> int:
        return self.cfg.num_visual_tokens

    @property
    def base_lm(self) -> nn.Module:
        """The HF causal LM under the peft wrapper (itself without LoRA)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    @property
    def llm_dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def queries(self) -> torch.Tensor:
        """``(1, Q, H)``: the learnt queries followed by the extra ones."""
        if self.extra_query_tokens is None:
            return self.query_tokens
        return torch.cat([self.query_tokens, self.extra_query_tokens], dim=1)

    # ----------------------------------------------------------------------------------------- vision
    def encode_video(
        self,
        video: torch.Tensor,
        instruction_ids: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
    ) -> VisualOutput:
        """Encode ``(B, 3, T, H, W)`` normalised frames (``T == 1``: an image) into the LLM's visual slots.

        ``instruction_ids`` / ``instruction_mask`` ``(B, L)``: the QFormer tokenizer's ids of the instruction
        (left-padded, as the official tokenizer), which shares self-attention with the queries.
        """
        if video.ndim != 5:
            raise ValueError(f"video must be (B, 3, T, H, W), got shape {tuple(video.shape)}")
        b = video.shape[0]
        if instruction_ids is not None and (instruction_ids.ndim != 2 or instruction_ids.shape[0] != b):
            raise ValueError(f"instruction_ids must be (B, L) with B = {b}, got {tuple(instruction_ids.shape)}")
        ids_shape = None if instruction_ids is None else tuple(instruction_ids.shape)
        if instruction_mask is not None and tuple(instruction_mask.shape) != ids_shape:
            raise ValueError(f"instruction_mask must have the shape of instruction_ids {ids_shape}, "
                             f"got {tuple(instruction_mask.shape)}")
        tokens = self.vision_encoder(video).tokens  # (B, 1 + T·HW, D), class token first
        vision_tokens = self.vision_layernorm(tokens)
        queries = self.queries().expand(b, -1, -1)
        hidden = self.qformer(queries, vision_tokens, instruction_ids, instruction_mask)
        query_output = hidden[:, : queries.shape[1]]
        embeds = self.project_up(query_output.to(self.project_up.weight.dtype))
        return VisualOutput(vision_tokens=vision_tokens, query_output=query_output, embeds=embeds)

    def encode_hd_video(
        self,
        videos: Sequence[torch.Tensor],
        size: int | None = None,
        instruction_ids: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """HD: each of ``videos`` is one ``(3, T, rows·size, cols·size)`` normalised clip from
        :func:`iv2_chat.hd_transform`; its sub-videos (tiles row-major, then the global view) each go through
        the tower and the QFormer with the sample's instruction. Returns per sample ``(S·Q, llm_width)``
        embeddings, ``S = rows·cols + 1``, in sub-video order."""
        size = size or self.cfg.vision.img_size
        subs = [hd_sub_videos(v, size) for v in videos]
        counts = [s.shape[0] for s in subs]
        ids = mask = None
        if instruction_ids is not None:
            if instruction_ids.shape[0] != len(videos):
                raise ValueError(f"instruction_ids has {instruction_ids.shape[0]} rows for {len(videos)} videos")
            repeat = torch.tensor(counts, device=instruction_ids.device)
            ids = instruction_ids.repeat_interleave(repeat, dim=0)
            if instruction_mask is not None:
                mask = instruction_mask.repeat_interleave(repeat, dim=0)
        embeds = self.encode_video(torch.cat(subs), ids, mask).embeds  # (ΣS, Q, llm_width)
        return [e.reshape(-1, e.shape[-1]) for e in embeds.split(counts)]

    # -------------------------------------------------------------------------------------------- LLM
    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        visual_mask: torch.Tensor,
        visual_embeds: torch.Tensor | Sequence[torch.Tensor],
        bos_scalar_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """LLM input embeddings of ``input_ids`` (B, L) with the ``visual_mask`` (B, L) slots replaced, in
        order, by ``visual_embeds`` ((B, n, D), or one (n_b, D) tensor per sample). ``bos_scalar_mask``
        marks slots filled with the scalar BOS id in every channel (the Ask-Anything training quirk)."""
        if isinstance(visual_embeds, torch.Tensor) and visual_embeds.ndim == 3:
            per_sample = list(visual_embeds.unbind(0))
        else:
            per_sample = list(visual_embeds)
        slots = visual_mask.sum(dim=1).tolist()
        given = [int(e.shape[0]) for e in per_sample]
        if slots != given:
            raise ValueError(f"visual slots per sample {slots} do not match the visual embeddings {given}")
        embeds = self.lm.get_input_embeddings()(input_ids)
        if per_sample:
            visual = torch.cat(per_sample).to(embeds.dtype)
            embeds = embeds.masked_scatter(visual_mask[..., None].to(embeds.device), visual)
        if bos_scalar_mask is not None:
            bos = float(self.lm.config.bos_token_id)
            embeds = torch.where(bos_scalar_mask[..., None], torch.full_like(embeds, bos), embeds)
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visual_mask: torch.Tensor,
        *,
        video: torch.Tensor | None = None,
        visual_embeds: torch.Tensor | Sequence[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        instruction_ids: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
        bos_scalar_mask: torch.Tensor | None = None,
        **lm_kwargs,
    ):
        """LLM outputs (``.logits``, ``.loss`` when ``labels`` are given: the mean over every supervised
        token of the batch) for a batch from :mod:`iv2_chat.conversation`. The visual slots are filled from
        ``visual_embeds`` or, when ``video`` is given, from :meth:`encode_video`."""
        if visual_embeds is None:
            if video is None:
                raise ValueError("pass video= (encoded here) or visual_embeds= (already encoded)")
            visual_embeds = self.encode_video(video, instruction_ids, instruction_mask).embeds
        embeds = self.embed_inputs(input_ids, visual_mask, visual_embeds, bos_scalar_mask)
        return self.lm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **lm_kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visual_mask: torch.Tensor,
        visual_embeds: torch.Tensor | Sequence[torch.Tensor],
        **generation_kwargs,
    ) -> torch.Tensor:
        """New token ids ``(B, n_new)`` continuing left-padded prompts (``transformers`` ``generate``)."""
        embeds = self.embed_inputs(input_ids, visual_mask, visual_embeds)
        return self.lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generation_kwargs)
