"""iv2-encoders: the InternVideo2 video encoder, faithful to the released weights.

>>> from iv2_encoders import create_model, list_models
>>> list_models(pretrained=True)              # released weights: 'internvideo2-1b.stage2-f4', ...
>>> model = create_model("internvideo2-1b.stage2-f4", pretrained=True)    # fetched from the Hub
>>> out = model(video)                        # video: (B, 3, T, H, W) float
>>> out.tokens, out.pooled                    # (B, 1 + N, D), (B, clip_embed_dim)
>>> model.pretrained_cfg.mean, model.pretrained_cfg.resize                # how its inputs were made

Checkpoints: :func:`load_checkpoint` (every released encoder layout), and for any model the shared checked
loader :func:`load_state_dict_checked` with :func:`read_state_dict`.

The names below are imported on first use (PEP 562), so that importing the package (and the command lines'
``--help``) does not load torch.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from iv2_data.lazy import lazy_exports

__version__ = _version("iv2-encoders")

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # checkpoint
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_state_dict_checked": "checkpoint",
    "LoadResult": "checkpoint",
    "read_state_dict": "checkpoint",
    "save_checkpoint": "checkpoint",
    "split_vision_prefix": "checkpoint",
    # config
    "HubFile": "config",
    "MODEL_CONFIGS": "config",
    "PretrainedCfg": "config",
    "VideoEncoderConfig": "config",
    # masking
    "random_mask": "masking",
    "tube_mask": "masking",
    # model
    "AttentionPoolingHead": "model",
    "DropPath": "model",
    "EncoderOutput": "model",
    "VideoEncoder": "model",
    "layerscale_key_map": "model",
    # pos_embed
    "interpolate_pos_embed": "pos_embed",
    "sincos_3d": "pos_embed",
    # pretrained
    "get_pretrained_cfg": "pretrained",
    "load_pretrained": "pretrained",
    "save_pretrained": "pretrained",
    # registry
    "create_model": "registry",
    "get_config": "registry",
    "list_models": "registry",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what static analysis and IDEs see; the table above is what runs
    from .checkpoint import (  # noqa: F401
        CheckpointError,
        LoadResult,
        load_checkpoint,
        load_state_dict_checked,
        read_state_dict,
        save_checkpoint,
        split_vision_prefix,
    )
    from .config import (  # noqa: F401
        MODEL_CONFIGS,
        HubFile,
        PretrainedCfg,
        VideoEncoderConfig,
    )
    from .masking import (  # noqa: F401
        random_mask,
        tube_mask,
    )
    from .model import (  # noqa: F401
        AttentionPoolingHead,
        DropPath,
        EncoderOutput,
        VideoEncoder,
        layerscale_key_map,
    )
    from .pos_embed import (  # noqa: F401
        interpolate_pos_embed,
        sincos_3d,
    )
    from .pretrained import (  # noqa: F401
        get_pretrained_cfg,
        load_pretrained,
        save_pretrained,
    )
    from .registry import (  # noqa: F401
        create_model,
        get_config,
        list_models,
    )
