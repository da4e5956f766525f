"""The stage-2 text side: a BERT split at ``fusion_layer`` (text layers, then fusion layers with
cross-attention to the media tokens) and its MLM head, built from ``transformers`` BERT modules; and the
official caption tokenisation.

Official: InternVideo2/multi_modality/models/backbones/bert/{builder,xbert}.py. The official model is a
``BertForMaskedLM`` (keys ``bert.*``, ``cls.*``) whose ``BertModel`` runs ``mode="text"`` (layers
``0 .. fusion_layer - 1`` from the embeddings) or ``mode="fusion"`` (the remaining layers on those hidden
states, no embedding layer). A fusion layer is post-LN self-attention (additive ``(1 - m) * -10000`` padding
mask), then cross-attention to every media token (keys/values ``Linear(encoder_width -> hidden)``), then the
FFN. ``transformers.BertLayer`` computes exactly this order (self-attention -> cross-attention -> FFN, each
``LayerNorm(x + sublayer)``); we build the layers from it and only widen the cross-attention key/value inputs,
which transformers sizes to ``hidden_size``. No pooler anywhere. The MLM head's decoder is tied to the word
embeddings (and its bias to ``cls.predictions.bias``) as the official model ties them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.utils.checkpoint
from torch import nn

from iv2_data import pre_text


def _bert_modules():
    from transformers.models.bert import modeling_bert

    return modeling_bert


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, L)`` 1/0 padding mask -> additive ``(B, 1, 1, L)`` mask ``(1 - m) * -10000`` (official BERT)."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, L), got {tuple(attention_mask.shape)}")
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * -10000.0


class _BertLayers(nn.Module):
    """Holds ``layer.N`` (the official ``bert.encoder.layer.N`` keys)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class _BertBody(nn.Module):
    """The official ``BertModel`` without pooler: ``embeddings`` and ``encoder.layer.N``."""

    def __init__(self, config, fusion_layer: int, encoder_width: int) -> None:
        super().__init__()
        mb = _bert_modules()
        self.embeddings = mb.BertEmbeddings(config)
        # the official (older transformers) BertEmbeddings saves position_ids in the state dict
        self.embeddings.register_buffer("position_ids", self.embeddings.position_ids, persistent=True)
        fusion_config = config.__class__.from_dict({**config.to_dict(), "is_decoder": True,
                                                    "add_cross_attention": True})
        fusion_config._attn_implementation = config._attn_implementation
        layers = []
        for i in range(config.num_hidden_layers):
            if i < fusion_layer:
                layers.append(mb.BertLayer(config, layer_idx=i))
                continue
            layer = mb.BertLayer(fusion_config, layer_idx=i)
            # bidirectional self-attention: transformers marks decoder layers causal
            layer.attention.self.is_causal = False
            cross = layer.crossattention.self
            cross.key = nn.Linear(encoder_width, cross.all_head_size)
            cross.value = nn.Linear(encoder_width, cross.all_head_size)
            layers.append(layer)
        self.encoder = _BertLayers(layers)


class BertFusionEncoder(nn.Module):
    """The official text encoder (``BertForMaskedLM`` used in two modes): ``bert.*`` and the MLM head
    ``cls.*``. :meth:`encode` runs the text layers, :meth:`fuse` the fusion layers, :meth:`mlm_head` the head."""

    def __init__(self, config, fusion_layer: int, encoder_width: int) -> None:
        super().__init__()
        mb = _bert_modules()
        config = config.__class__.from_dict(config.to_dict())
        if config._attn_implementation is None:
            config._attn_implementation = "sdpa"
        self.config = config
        self.fusion_layer = fusion_layer
        self.encoder_width = encoder_width
        self.bert = _BertBody(config, fusion_layer, encoder_width)
        self.cls = mb.BertOnlyMLMHead(config)
        self.init_weights()
        self.tie_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """BERT initialisation (N(0, initializer_range) Linear/Embedding weights, zero biases, unit LayerNorms),
        what the official code gets for weights missing from the pretrained BERT (the cross-attention)."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        nn.init.zeros_(self.cls.predictions.bias)

    def tie_weights(self) -> None:
        """Share the MLM decoder weight with the word embeddings and its bias with ``cls.predictions.bias``
        (both names stay in the state dict, as in the official checkpoints)."""
        head = self.cls.predictions
        head.decoder.weight = self.bert.embeddings.word_embeddings.weight
        head.decoder.bias = head.bias

    def load_pretrained_bert(self, name_or_path: str) -> tuple[list[str], list[str]]:
        """Initialise from a pretrained HF BERT (local path or hub id, e.g. ``bert-large-uncased``) as the official
        ``BertForMaskedLM.from_pretrained``: every BERT and MLM-head weight is copied, the cross-attention of the
        fusion layers keeps its fresh initialisation. Returns ``(missing, unexpected)`` key lists."""
        from transformers import BertForMaskedLM

        pretrained = BertForMaskedLM.from_pretrained(name_or_path).state_dict()
        own = self.state_dict()
        for k, v in pretrained.items():
            if k in own and own[k].shape != v.shape:
                raise ValueError(f"{name_or_path}: key {k!r} has shape {tuple(v.shape)}, this text encoder expects "
                                 f"{tuple(own[k].shape)}; build it with the pretrained model's config")
        usable = {k: v for k, v in pretrained.items() if k in own}
        self.load_state_dict(usable, strict=False)
        self.tie_weights()
        missing = sorted(k for k in own if k not in usable and not k.endswith("position_ids"))
        return missing, sorted(k for k in pretrained if k not in own)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each BERT layer in the backward pass (official ``gradient_checkpointing`` for text)."""
        fn = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
        for layer in self.bert.encoder.layer:
            layer.gradient_checkpointing = enable
            layer._gradient_checkpointing_func = fn

    @property
    def text_layers(self) -> Sequence[nn.Module]:
        return self.bert.encoder.layer[: self.fusion_layer]

    @property
    def fusion_layers(self) -> Sequence[nn.Module]:
        return self.bert.encoder.layer[self.fusion_layer:]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``mode="text"``: embeddings then layers ``0 .. fusion_layer - 1``; returns ``(B, L, hidden)``."""
        if input_ids.shape != attention_mask.shape:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask "
                             f"{tuple(attention_mask.shape)} must have the same (B, L) shape")
        max_len = self.config.max_position_embeddings
        if input_ids.shape[1] > max_len:
            raise ValueError(f"text of {input_ids.shape[1]} tokens is longer than the {max_len} position "
                             f"embeddings; tokenize with max_length <= {max_len}")
        x = self.bert.embeddings(input_ids=input_ids)
        mask = extended_attention_mask(attention_mask, x.dtype)
        for layer in self.text_layers:
            x = layer(x, mask)
        return x

    def fuse(self, text_hidden: torch.Tensor, attention_mask: torch.Tensor, media_tokens: torch.Tensor) -> torch.Tensor:
        """``mode="fusion"``: layers ``fusion_layer ..`` on the text hidden states, cross-attending to every
        media token (the official media attention mask is all ones); returns ``(B, L, hidden)``."""
        if media_tokens.dim() != 3 or media_tokens.shape[0] != text_hidden.shape[0]:
            raise ValueError(f"media_tokens must be (B, N, {self.encoder_width}) with B = {text_hidden.shape[0]}, "
                             f"got {tuple(media_tokens.shape)}")
        if media_tokens.shape[-1] != self.encoder_width:
            raise ValueError(f"media_tokens have width {media_tokens.shape[-1]}, the fusion layers expect "
                             f"{self.encoder_width} (encoder_width)")
        x = text_hidden
        mask = extended_attention_mask(attention_mask, x.dtype)
        media = media_tokens.to(x.dtype)
        for layer in self.fusion_layers:
            x = layer(x, mask, media)
        return x

    def mlm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.cls(hidden)


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official caption encoding with any HF BERT tokenizer: ``pre_text`` (iv2-data), then ``[CLS]`` +
    word pieces with **no** ``[SEP]`` (the repo's own tokenization_bert.py), truncated to ``max_length - 1``
    pieces and right-padded with ``[PAD]`` to ``max_length``. Returns ``(input_ids, attention_mask)``, both
    ``(len(texts), max_length)`` int64. An empty caption (after cleaning) is an error naming it."""
    if isinstance(texts, str):
        raise TypeError("tokenize expects a sequence of captions, got a single string; wrap it in a list")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 ([CLS] and one piece), got {max_length}")
    if tokenizer.cls_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("tokenize needs a BERT tokenizer with [CLS] and [PAD] tokens")
    cleaned = []
    for i, text in enumerate(texts):
        clean = pre_text(text)
        if not clean:
            raise ValueError(f"caption {i} ({text!r}) is empty after cleaning; every caption needs text")
        cleaned.append(clean)
    pieces = tokenizer(cleaned, add_special_tokens=False, truncation=True, max_length=max_length - 1,
                       padding=False, return_attention_mask=False)["input_ids"]
    input_ids = torch.full((len(cleaned), max_length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(cleaned), max_length), dtype=torch.long)
    for i, ids in enumerate(pieces):
        row = [tokenizer.cls_token_id, *ids]
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask
