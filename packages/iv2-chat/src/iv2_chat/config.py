"""The chat model's configuration and its named sizes.

``ChatConfig`` holds the three parts of InternVideo2-Chat (VideoChat2 with an InternVideo2 tower):

* ``vision``: the vision tower **as built**. The official chat model builds ``depth + return_index + 1``
  blocks with ``return_index = -2`` (39 of the 1B's 40), keeps every token (no attention pooling), uses a
  separate learnable image position table and names LayerScale ``blocks.N.ls1`` (bare);
  :func:`chat_vision_config` turns an encoder configuration into that tower.
* ``qformer``: a BERT configuration (``dict`` or ``transformers.BertConfig``) carrying the official
  ``cross_attention_freq`` and ``encoder_width`` (the tower width) and optionally ``drop_path_rate`` (the
  official ``qformer_drop_path_rate``, linear over layers);
* ``llm``: any Hugging Face causal LM: a config (``dict`` with ``model_type`` or a ``PretrainedConfig``,
  random weights) or a local path / hub id (pretrained weights), frozen; ``lora`` holds ``peft`` LoRA options.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from iv2_encoders import VideoEncoderConfig, get_config

# Official LoRA of VideoChat2-Mistral / InternVideo2-Chat (scripts/videochat_mistral/config_7b_stage3.py).
OFFICIAL_LORA: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.1,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
}

# bert-base-uncased, as the official ``build_qformer`` configures it: cross-attention every 2nd layer to the
# tower's tokens, dropout 0.1/0.1, and the vocabulary grown by one for the "[DEC]" BOS token (30522 + 1).
BERT_BASE_QFORMER: dict[str, Any] = {
    "vocab_size": 30523,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "cross_attention_freq": 2,
    "encoder_width": 1408,
    "drop_path_rate": 0.2,
}

# Mistral-7B-Instruct-v0.3 (the InternVideo2-Chat-8B LLM), as a config so that the release shape can be
# built without downloading; pass ``llm="mistralai/Mistral-7B-Instruct-v0.3"`` for the pretrained weights.
MISTRAL_7B_V03: dict[str, Any] = {
    "model_type": "mistral",
    "vocab_size": 32768,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# QFormer fields and the InstructBLIP QFormer config names they map to (the official names are BERT's).
_QFORMER_RENAMES = {"cross_attention_freq": "cross_attention_frequency", "encoder_width": "encoder_hidden_size"}
_QFORMER_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "initializer_range",
    "layer_norm_eps", "pad_token_id", "cross_attention_freq", "encoder_width",
)


def chat_vision_config(encoder: VideoEncoderConfig | str, return_index: int = -2, **overrides: Any):
    """The chat tower built from an encoder configuration (or a registered encoder name).

    As the official ``PretrainVisionTransformer_clean(x_vis_return_idx=-2, x_vis_only=True)``: depth
    ``depth + return_index + 1`` (the output of the second-to-last block), every token returned (no pooling
    head), a learnable image position table, bare LayerScale names, LayerScale in the compute dtype
    (``layerscale_no_force_fp32``), and other frame counts and sizes than built accepted by interpolating the
    position table at run time (the chat tower's ``expand_pos_embed``: 16-frame MVBench on the 8-frame tower).
    """
    cfg = get_config(encoder) if isinstance(encoder, str) else encoder
    if not -cfg.depth <= return_index < 0:
        raise ValueError(f"return_index must be in [-{cfg.depth}, -1] for a {cfg.depth}-block encoder, "
                         f"got {return_index}")
    tower = dict(depth=cfg.depth + return_index + 1, pool_head=False, sep_image_video_pos_embed=True,
                 layerscale_keys="bare", layerscale_force_fp32=False, interpolate_pos_embed_at_runtime=True)
    tower.update(overrides)
    return cfg.replace(**tower)


@dataclass
class ChatConfig:
    """InternVideo2-Chat: vision tower → LayerNorm → QFormer (+ instruction) → ``project_up`` → causal LM.

    ``num_query_tokens`` learnable queries (N(0, 0.02)) plus ``extra_num_query_tokens`` zero-initialised ones
    give the LLM ``num_visual_tokens`` slots per clip (32 + 64 = 96 in the release).
    """

    vision: VideoEncoderConfig
    qformer: dict[str, Any] | Any
    num_query_tokens: int
    extra_num_query_tokens: int
    llm: dict[str, Any] | Any | str
    lora: dict[str, Any] | None = None
    # torch dtype name for the LLM weights ("float16", "bfloat16", ...); None keeps the default (float32).
    llm_dtype: str | None = None
    # Load a pretrained LLM (path / hub id) with ``local_files_only`` (no network).
    local_files_only: bool = False
    # Keep the unused ``project_down`` (LLM width → QFormer width) of the official model so that state dicts
    # have the same keys; it only served an optional regression loss that the release does not use.
    project_down: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.vision, VideoEncoderConfig):
            raise TypeError(f"vision must be a VideoEncoderConfig, got {type(self.vision).__name__}")
        if self.vision.pool_head:
            raise ValueError("the chat tower keeps every token: build vision with pool_head=False "
                             "(chat_vision_config(...) makes the official tower)")
        if self.vision.layerscale_keys != "bare":
            raise ValueError("the InternVideo2-Chat layout names LayerScale blocks.N.ls1: build vision with "
                             "layerscale_keys='bare' (chat_vision_config(...) does)")
        if self.num_query_tokens < 1 or self.extra_num_query_tokens < 0:
            raise ValueError(f"need num_query_tokens >= 1 and extra_num_query_tokens >= 0, got "
                             f"{self.num_query_tokens}, {self.extra_num_query_tokens}")
        q = self.qformer_dict()
        if q["encoder_width"] != self.vision.embed_dim:
            raise ValueError(f"qformer encoder_width {q['encoder_width']} must equal the vision tower width "
                             f"{self.vision.embed_dim}")
        if not isinstance(self.llm, (str, dict)) and not hasattr(self.llm, "to_dict"):
            raise TypeError(f"llm must be a config dict, a transformers PretrainedConfig or a path / hub id, "
                            f"got {type(self.llm).__name__}")
        if isinstance(self.llm, dict) and "model_type" not in self.llm:
            raise ValueError("an llm config dict needs a 'model_type' (e.g. 'mistral', 'llama')")

    @property
    def num_visual_tokens(self) -> int:
        """LLM slots per clip (per sub-video in HD): all query outputs."""
        return self.num_query_tokens + self.extra_num_query_tokens

    def qformer_dict(self) -> dict[str, Any]:
        """The QFormer configuration as a plain dict with the official field names."""
        raw = self.qformer.to_dict() if hasattr(self.qformer, "to_dict") else dict(self.qformer)
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("the QFormer uses absolute position embeddings only, got "
                             f"position_embedding_type={raw['position_embedding_type']!r}")
        missing = [k for k in ("cross_attention_freq", "encoder_width") if k not in raw]
        if missing:
            raise ValueError(f"the qformer config needs {missing} (official BLIP-2 QFormer fields)")
        out = {k: raw[k] for k in _QFORMER_FIELDS if k in raw}
        out["drop_path_rate"] = float(raw.get("drop_path_rate", 0.0))
        return out

    def qformer_hf_config(self):
        """``transformers.InstructBlipQFormerConfig`` equivalent of :meth:`qformer_dict`."""
        from transformers import InstructBlipQFormerConfig

        q = self.qformer_dict()
        q.pop("drop_path_rate")
        kwargs = {_QFORMER_RENAMES.get(k, k): v for k, v in q.items()}
        return InstructBlipQFormerConfig(**kwargs)

    def llm_hf_config(self):
        """The LLM's ``PretrainedConfig`` (read from the path / hub id when ``llm`` is a string)."""
        from transformers import AutoConfig

        if isinstance(self.llm, str):
            return AutoConfig.from_pretrained(self.llm, local_files_only=self.local_files_only)
        if isinstance(self.llm, dict):
            kwargs = dict(self.llm)
            return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
        return self.llm

    def replace(self, **overrides: Any) -> ChatConfig:
        """A copy with ``overrides`` (validated again); an unknown field name is a ``TypeError``."""
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``from_dict`` reads it back)."""
        llm = self.llm if isinstance(self.llm, (str, dict)) else self.llm.to_dict()
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out.update(vision=self.vision.to_dict(), qformer=self.qformer_dict(), llm=llm)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatConfig:
        data = dict(data)
        data["vision"] = VideoEncoderConfig(**data["vision"])
        return cls(**data)


def _internvideo2_chat_8b() -> ChatConfig:
    # InternVideo2-Chat-8B: IV2-1B tower (8 frames, 224 px, 39 blocks), bert-base QFormer with the
    # instruction, 32 + 64 queries, Mistral-7B-Instruct-v0.3 with the official LoRA.
    vision = chat_vision_config("internvideo2-1b", num_frames=8, drop_path_rate=0.25)
    return ChatConfig(vision=vision, qformer=dict(BERT_BASE_QFORMER), num_query_tokens=32,
                      extra_num_query_tokens=64, llm=dict(MISTRAL_7B_V03), lora=dict(OFFICIAL_LORA))


def _tiny() -> ChatConfig:
    from .tiny import tiny_chat_config

    return tiny_chat_config()


def _tiny_synthetic() -> ChatConfig:
    from .tiny import tiny_synthetic_chat_config

    return tiny_synthetic_chat_config()


_CHAT_CONFIGS = {
    "internvideo2-chat-8b": _internvideo2_chat_8b,
    "tiny": _tiny,
    "tiny-synthetic": _tiny_synthetic,
}


def list_chat_configs() -> list[str]:
    return sorted(_CHAT_CONFIGS)


def chat_config(name: str, **overrides: Any) -> ChatConfig:
    """A named chat configuration: ``"internvideo2-chat-8b"`` (the release shape), ``"tiny-synthetic"`` (the
    demo's model) or ``"tiny"`` (tests); the tiny ones match the offline tokenizers of :mod:`iv2_chat.tiny`.
    ``overrides`` replace fields."""
    if name not in _CHAT_CONFIGS:
        raise KeyError(f"unknown chat config {name!r}; known: {list_chat_configs()}")
    return _CHAT_CONFIGS[name]().replace(**overrides)
