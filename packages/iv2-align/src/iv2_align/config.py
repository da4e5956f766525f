"""Configurations of the stage-2 models: the BEATs audio encoder, the stage-2 model and its named sizes.

Field names follow the official code so that released configs load as they are: ``BEATsConfig`` takes the
``cfg`` dict stored in a BEATs checkpoint, ``Stage2Config.text`` a BERT config (``config_bert_large.json``).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from iv2_encoders import VideoEncoderConfig, get_config

_ACTIVATIONS = ("gelu", "gelu_accurate", "relu", "tanh", "linear")


@dataclass(init=False)
class BEATsConfig:
    """Hyper-parameters of the BEATs audio encoder, named as the official ``BEATsConfig`` (and the ``cfg``
    dict a BEATs checkpoint stores), so ``BEATsConfig(**checkpoint["cfg"])`` works.

    Defaults are the official class defaults. Keys this implementation does not use (e.g. fields of newer
    BEATs releases) are kept in ``extra`` and reported once with a warning, never silently dropped.
    """

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(self, **cfg: Any) -> None:
        known = {f.name: f for f in dataclasses.fields(self) if f.name != "extra"}
        for name, f in known.items():
            setattr(self, name, cfg.pop(name) if name in cfg else f.default)
        self.extra = dict(cfg.pop("extra", {}) or {})
        if cfg:
            warnings.warn(f"BEATsConfig: keys not used by this implementation kept in .extra: {sorted(cfg)}",
                          stacklevel=2)
            self.extra.update(cfg)
        self._validate()

    def _validate(self) -> None:
        if self.input_patch_size <= 0:
            raise ValueError(f"BEATsConfig.input_patch_size must be positive (16 for the released models), "
                             f"got {self.input_patch_size}")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(f"BEATsConfig.encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                             f"encoder_attention_heads {self.encoder_attention_heads}")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(f"BEATsConfig.encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                             f"conv_pos_groups {self.conv_pos_groups}")
        if self.deep_norm and self.layer_norm_first:
            raise ValueError("BEATsConfig: deep_norm and layer_norm_first cannot both be set (as the official model)")
        if self.activation_fn not in _ACTIVATIONS:
            raise ValueError(f"BEATsConfig.activation_fn must be one of {_ACTIVATIONS}, got {self.activation_fn!r}")

    def to_dict(self) -> dict[str, Any]:
        """The official ``cfg`` dict (unknown keys included), e.g. to save next to the weights."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    def replace(self, **overrides: Any) -> BEATsConfig:
        return BEATsConfig(**{**self.to_dict(), **overrides})


# BEATs_iter3+ (AS2M), the audio encoder of the 6B stage-2 model. The cfg is not in the InternVideo repo; these
# are the values of the released BEATs iter3 checkpoints (REFERENCE g). A checkpoint's own cfg always wins.
BEATS_ITER3 = dict(
    input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12, encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu", layer_norm_first=False,
    deep_norm=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.05,
    dropout_input=0.0, conv_pos=128, conv_pos_groups=16, relative_position_embedding=True, num_buckets=320,
    max_distance=800, gru_rel_pos=True,
)

# bert-large-uncased as configs/config_bert_large.json (24 layers, 1024-d, 16 heads).
BERT_LARGE = dict(
    vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
    type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
)


@dataclass
class Stage2Config:
    """The stage-2 model (official ``InternVideo2_Stage2_visual`` / ``InternVideo2_Stage2_audiovisual``).

    ``text`` is a BERT config (dict or ``transformers.BertConfig``): layers ``0 .. fusion_layer - 1`` encode
    text, layers ``fusion_layer ..`` add cross-attention to the media tokens. ``embed_dim`` is the contrastive
    width (official ``embed_dim`` for 1B, ``contra_dim`` for 6B). With ``audio`` set the model is the
    audio-visual (6B-style) one and the fusion layers attend to ``av_concat_dim``-wide media tokens.
    """

    vision: VideoEncoderConfig
    text: Any
    fusion_layer: int
    embed_dim: int
    audio: BEATsConfig | None = None
    av_concat_dim: int | None = None
    temp: float = 0.07

    def __post_init__(self) -> None:
        if isinstance(self.audio, dict):
            self.audio = BEATsConfig(**self.audio)
        if isinstance(self.vision, dict):
            self.vision = VideoEncoderConfig(**self.vision)
        if not self.vision.pool_head:
            raise ValueError("Stage2Config.vision needs the attention-pooling head (pool_head=True)")
        layers = self.text_config().num_hidden_layers
        if not 0 <= self.fusion_layer <= layers:
            raise ValueError(f"Stage2Config.fusion_layer {self.fusion_layer} must be in [0, {layers}] "
                             f"(the text model has {layers} layers)")
        if self.audio is not None and self.av_concat_dim is None:
            raise ValueError("Stage2Config: the audio-visual model (audio set) needs av_concat_dim")
        if self.audio is None and self.av_concat_dim is not None:
            raise ValueError("Stage2Config: av_concat_dim is only used by the audio-visual model; set audio too")

    @property
    def is_audio_visual(self) -> bool:
        return self.audio is not None

    @property
    def encoder_width(self) -> int:
        """Width of the media tokens the fusion layers attend to (the official ``encoder_width``)."""
        return self.av_concat_dim if self.av_concat_dim is not None else self.vision.embed_dim

    def text_config(self):
        """The BERT config as a ``transformers.BertConfig`` (a copy; the model adds its own fields)."""
        from transformers import BertConfig

        if isinstance(self.text, BertConfig):
            return BertConfig.from_dict(self.text.to_dict())
        if isinstance(self.text, dict):
            return BertConfig(**self.text)
        raise TypeError(f"Stage2Config.text must be a dict or transformers.BertConfig, got {type(self.text).__name__}")

    def to_dict(self) -> dict[str, Any]:
        text = self.text if isinstance(self.text, dict) else self.text.to_diff_dict()
        return {
            "vision": self.vision.to_dict(), "text": dict(text), "fusion_layer": self.fusion_layer,
            "embed_dim": self.embed_dim, "audio": None if self.audio is None else self.audio.to_dict(),
            "av_concat_dim": self.av_concat_dim, "temp": self.temp,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stage2Config:
        return cls(**d)


def _stage2_1b(**vision: Any) -> Stage2Config:
    # scripts/pretraining/stage2/1B/config.py: 4 frames, separate image position embedding, embed_dim 512.
    return Stage2Config(
        vision=get_config("internvideo2-1b", num_frames=4, sep_image_video_pos_embed=True, **vision),
        text=dict(BERT_LARGE), fusion_layer=19, embed_dim=512,
    )


def _stage2_6b(**vision: Any) -> Stage2Config:
    # scripts/pretraining/stage2/6B/config.py: 4 frames, [cls, mean over T] image rule, contra/av_concat 768.
    return Stage2Config(
        vision=get_config("internvideo2-6b", num_frames=4, **vision),
        text=dict(BERT_LARGE), fusion_layer=19, embed_dim=768, audio=BEATsConfig(**BEATS_ITER3),
        av_concat_dim=768,
    )


_TINY_BERT = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=40, type_vocab_size=2)
_TINY_BEATS = dict(input_patch_size=16, embed_dim=24, encoder_layers=2, encoder_embed_dim=32,
                   encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos=8, conv_pos_groups=4,
                   deep_norm=True, relative_position_embedding=True, num_buckets=16, max_distance=32,
                   gru_rel_pos=True, dropout=0.0, attention_dropout=0.0)


def _stage2_tiny(**vision: Any) -> Stage2Config:
    return Stage2Config(
        vision=get_config("internvideo2-tiny", sep_image_video_pos_embed=True, **vision),
        text=dict(_TINY_BERT), fusion_layer=2, embed_dim=16,
    )


def _stage2_tiny_av(**vision: Any) -> Stage2Config:
    return Stage2Config(
        vision=get_config("internvideo2-tiny", **vision),
        text=dict(_TINY_BERT), fusion_layer=2, embed_dim=16, audio=BEATsConfig(**_TINY_BEATS), av_concat_dim=24,
    )


STAGE2_CONFIGS = {
    "internvideo2-stage2-tiny": _stage2_tiny,
    "internvideo2-stage2-tiny-av": _stage2_tiny_av,
    "internvideo2-stage2-1b": _stage2_1b,
    "internvideo2-stage2-6b": _stage2_6b,
}
