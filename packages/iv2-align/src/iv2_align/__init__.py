"""iv2-align: InternVideo2 stage 2: video/audio/speech/text contrastive, matching and MLM alignment; retrieval eval.

>>> from iv2_align import create_stage2_model, tokenize
>>> model = create_stage2_model("internvideo2-stage2-tiny")
>>> tokens, pooled = model.encode_video(video)            # video: (B, 3, T, H, W)
>>> text_tokens, cls = model.encode_text(*tokenize(tokenizer, captions, 32))
"""

from .beats import BEATs, convert_beats_state_dict, load_beats
from .checkpoint import convert_official_state_dict, load_checkpoint
from .clip import VideoCLIPConfig, VideoCLIPModel
from .config import BEATS_ITER3, BERT_LARGE, STAGE2_CONFIGS, BEATsConfig, Stage2Config
from .losses import hard_negative_weights, mask_tokens, mlm_loss, sample_hard_negatives, vtc_loss, vtm_loss
from .model import Stage2Model, create_stage2_model, get_stage2_config, list_stage2_models
from .retrieval import RetrievalResult, evaluate_retrieval, retrieval_metrics
from .text import BertFusionEncoder, tokenize
from .zero_shot import KINETICS_TEMPLATES, ZeroShotResult, class_prompts, zero_shot_classify

__all__ = [
    "BEATS_ITER3",
    "BERT_LARGE",
    "KINETICS_TEMPLATES",
    "STAGE2_CONFIGS",
    "BEATs",
    "BEATsConfig",
    "BertFusionEncoder",
    "RetrievalResult",
    "Stage2Config",
    "Stage2Model",
    "VideoCLIPConfig",
    "VideoCLIPModel",
    "ZeroShotResult",
    "class_prompts",
    "convert_beats_state_dict",
    "convert_official_state_dict",
    "create_stage2_model",
    "evaluate_retrieval",
    "get_stage2_config",
    "hard_negative_weights",
    "list_stage2_models",
    "load_beats",
    "load_checkpoint",
    "mask_tokens",
    "mlm_loss",
    "retrieval_metrics",
    "sample_hard_negatives",
    "tokenize",
    "vtc_loss",
    "vtm_loss",
    "zero_shot_classify",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-align")
