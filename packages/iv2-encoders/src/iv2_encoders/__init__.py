"""iv2-encoders: the InternVideo2 video encoder, faithful to the released weights.

>>> from iv2_encoders import create_model
>>> model = create_model("internvideo2-tiny")
>>> out = model(video)            # video: (B, 3, T, H, W) float
>>> out.tokens, out.pooled        # (B, 1 + N, D), (B, clip_embed_dim)
"""

from .checkpoint import CheckpointError, LoadResult, load_checkpoint, read_state_dict, save_checkpoint
from .config import MODEL_CONFIGS, VideoEncoderConfig
from .model import EncoderOutput, VideoEncoder
from .pos_embed import interpolate_pos_embed, sincos_3d
from .registry import create_model, get_config, list_models

__all__ = [
    "MODEL_CONFIGS",
    "CheckpointError",
    "EncoderOutput",
    "LoadResult",
    "VideoEncoder",
    "VideoEncoderConfig",
    "create_model",
    "get_config",
    "interpolate_pos_embed",
    "list_models",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
    "sincos_3d",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-encoders")
