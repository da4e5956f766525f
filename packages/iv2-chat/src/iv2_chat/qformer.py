"""The BLIP-2 QFormer with instruction text, built from ``transformers``' InstructBLIP QFormer, under the
official ``qformer.bert.*`` key names.

InstructBLIP's QFormer is the architecture of the official one (Ask-Anything ``models/blip2/Qformer.py``):
the query tokens and the instruction text share bidirectional self-attention; only the queries cross-attend
to the vision tokens, in layers ``0, f, 2f, ...`` (``cross_attention_freq`` f); queries and text have separate
feed-forward blocks (``intermediate_query``/``output_query`` vs ``intermediate``/``output``); the embedding
LayerNorm runs over ``[queries, text]``; text position ids are ``0 .. L-1`` over the (left-padded) text, so
padding shifts the positions of the real tokens. Three things are added here to match the official code:

* the attention padding mask is the official additive ``(1 - m) * -10000`` (in the model dtype), passed as a
  prepared mask instead of transformers' boolean / dtype-min one;
* stochastic depth (``drop_path_rate``, linear from 0 over the layers) after the dropout of every residual
  branch (self-attention, cross-attention, text and query FFN), which transformers' module lacks;
* state-dict names: transformers' ``attention.attention`` / ``crossattention.attention`` / ``embeddings.layernorm``
  are the official ``attention.self`` / ``crossattention.self`` / ``embeddings.LayerNorm``, and the official
  (persistent) ``embeddings.position_ids`` buffer is written too. :func:`qformer_key_to_official` and
  :func:`qformer_key_from_official` are the adapter; the module's ``state_dict()`` / ``load_state_dict()`` use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from iv2_encoders import DropPath

# (transformers name, official name) of a key component, given the component before it.
_PARENT_RENAMES = {
    ("attention", "attention"): "self",
    ("crossattention", "attention"): "self",
    ("embeddings", "layernorm"): "LayerNorm",
}
_PARENT_RENAMES_BACK = {(parent, official): ours for (parent, ours), official in _PARENT_RENAMES.items()}
POSITION_IDS_KEY = "embeddings.position_ids"


def _rename_components(key: str, table: Mapping[tuple[str, str], str]) -> str:
    parts = key.split(".")
    for i in range(1, len(parts)):
        parts[i] = table.get((parts[i - 1], parts[i]), parts[i])
    return ".".join(parts)


def qformer_key_to_official(key: str) -> str:
    """transformers InstructBLIP QFormer key → official BLIP-2 key (any prefix is kept)."""
    return _rename_components(key, _PARENT_RENAMES)


def qformer_key_from_official(key: str) -> str:
    """Official BLIP-2 QFormer key → transformers InstructBLIP QFormer key (any prefix is kept)."""
    return _rename_components(key, _PARENT_RENAMES_BACK)


def _official_names_hook(module: QFormer, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    inner = prefix + "bert."
    for key in [k for k in state_dict if k.startswith(inner)]:
        new = inner + qformer_key_to_official(key[len(inner):])
        if new != key:
            state_dict[new] = state_dict.pop(key)
    state_dict[inner + POSITION_IDS_KEY] = module.bert.embeddings.position_ids


def _transformers_names_hook(module: QFormer, state_dict: dict, prefix: str, *args: object) -> None:
    inner = prefix + "bert."
    state_dict.pop(inner + POSITION_IDS_KEY, None)  # a fixed arange; ours is rebuilt, not loaded
    for key in [k for k in state_dict if k.startswith(inner)]:
        new = inner + qformer_key_from_official(key[len(inner):])
        if new != key:
            state_dict[new] = state_dict.pop(key)


class QFormer(nn.Module):
    """``qformer`` of the chat model: ``self.bert`` is a ``transformers.InstructBlipQFormerModel``."""

    def __init__(self, config, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        from transformers import InstructBlipQFormerModel

        self.config = config
        self.bert = InstructBlipQFormerModel(config)
        self.drop_path_rate = drop_path_rate
        if drop_path_rate > 0:
            self._add_drop_path(drop_path_rate)
        self.register_state_dict_post_hook(_official_names_hook)
        self.register_load_state_dict_pre_hook(_transformers_names_hook)

    def _add_drop_path(self, rate: float) -> None:
        layers = self.bert.encoder.layer
        rates = [rate * i / max(len(layers) - 1, 1) for i in range(len(layers))]  # linspace(0, rate, n)
        for layer, p in zip(layers, rates):
            if p <= 0:
                continue
            outputs = [layer.attention.output, layer.output, layer.output_query]
            if layer.has_cross_attention:
                outputs.append(layer.crossattention.output)
            for out in outputs:  # official order: dense -> dropout -> drop_path -> LayerNorm(x + input)
                out.dropout = nn.Sequential(out.dropout, DropPath(p))

    @property
    def dtype(self) -> torch.dtype:
        return self.bert.embeddings.layernorm.weight.dtype

    def forward(
        self,
        query_embeds: torch.Tensor,
        vision_tokens: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, Q, H)`` queries attending to ``(B, N, encoder_width)`` vision tokens, with optional text
        ``(B, L)`` ids and 0/1 mask; returns the last hidden state ``(B, Q [+ L], H)``."""
        dtype = self.dtype
        query_embeds, vision_tokens = query_embeds.to(dtype), vision_tokens.to(dtype)
        additive = None
        if input_ids is not None:
            b = input_ids.shape[0]
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            keep = torch.cat([attention_mask.new_ones(b, query_embeds.shape[1]), attention_mask], dim=1)
            additive = (1.0 - keep[:, None, None, :].to(dtype)) * -10000.0
        # The vision tokens are never padded (the official image_atts are all ones): no cross-attention mask.
        out = self.bert(input_ids=input_ids, attention_mask=additive, query_embeds=query_embeds,
                        encoder_hidden_states=vision_tokens)
        return out.last_hidden_state
