"""iv2-encoders: the InternVideo2 video encoder, faithful to the released weights.

>>> from iv2_encoders import create_model, list_models
>>> list_models(pretrained=True)              # released weights: 'internvideo2-1b.stage2-f4', ...
>>> model = create_model("internvideo2-1b.stage2-f4", pretrained=True)    # fetched from the Hub
>>> out = model(video)                        # video: (B, 3, T, H, W) float
>>> out.tokens, out.pooled                    # (B, 1 + N, D), (B, clip_embed_dim)
>>> model.pretrained_cfg.mean, model.pretrained_cfg.resize                # how its inputs were made

Checkpoints: :func:`load_checkpoint` (every released encoder layout), and for any model the shared checked
loader :func:`load_state_dict_checked` with :func:`read_state_dict`.
"""

from .checkpoint import (
    CheckpointError,
    LoadResult,
    load_checkpoint,
    load_state_dict_checked,
    read_state_dict,
    save_checkpoint,
)
from .config import MODEL_CONFIGS, HubFile, PretrainedCfg, VideoEncoderConfig
from .model import AttentionPoolingHead, DropPath, EncoderOutput, VideoEncoder
from .pos_embed import interpolate_pos_embed, sincos_3d
from .pretrained import get_pretrained_cfg, load_pretrained, save_pretrained
from .registry import create_model, get_config, list_models

__all__ = [
    "MODEL_CONFIGS",
    "AttentionPoolingHead",
    "CheckpointError",
    "DropPath",
    "EncoderOutput",
    "HubFile",
    "LoadResult",
    "PretrainedCfg",
    "VideoEncoder",
    "VideoEncoderConfig",
    "create_model",
    "get_config",
    "get_pretrained_cfg",
    "interpolate_pos_embed",
    "list_models",
    "load_checkpoint",
    "load_pretrained",
    "load_state_dict_checked",
    "read_state_dict",
    "save_checkpoint",
    "save_pretrained",
    "sincos_3d",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-encoders")
