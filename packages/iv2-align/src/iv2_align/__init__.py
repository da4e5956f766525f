"""iv2-align: InternVideo2 stage 2: video/audio/speech/text contrastive, matching and MLM alignment; retrieval eval.

>>> from iv2_align import create_stage2_model, tokenize
>>> model = create_stage2_model("internvideo2-stage2-tiny")
>>> tokens, pooled = model.encode_video(video)            # video: (B, 3, T, H, W)
>>> text_tokens, cls = model.encode_text(*tokenize(tokenizer, captions, 32))
>>> result = train(load_align_config("tiny-synthetic"))   # the stage-2 schedule; result.metrics, result.model_dir
>>> result = train(synthetic_config("runs/demo", vision_init="runs/demo/stage1/export"))  # result.encoder_dir

The names below are imported on first use (PEP 562), so that ``import iv2_align`` and ``iv2-align --help`` do
not load torch or transformers.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from iv2_data.lazy import lazy_exports

__version__ = _version("iv2-align")

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # beats
    "BEATs": "beats",
    "convert_beats_state_dict": "beats",
    "load_beats": "beats",
    "read_beats_checkpoint": "beats",
    # checkpoint
    "convert_official_state_dict": "checkpoint",
    "load_checkpoint": "checkpoint",
    # clip
    "VideoCLIPConfig": "clip",
    "VideoCLIPModel": "clip",
    # clip_train
    "CLIP_TRAIN_FLAVORS": "clip_train",
    "ClipTrainConfig": "clip_train",
    "ClipTrainResult": "clip_train",
    "train_clip": "clip_train",
    # config
    "BEATS_ITER3": "config",
    "BEATsConfig": "config",
    "BERT_LARGE": "config",
    "STAGE2_CONFIGS": "config",
    "Stage2Config": "config",
    # data
    "build_tokenizer": "data",
    "synthetic_vocabulary": "data",
    # embed
    "Stage2Embedder": "embed",
    "curation_embedder": "embed",
    "embed_files": "embed",
    # evaluate
    "RetrievalSet": "evaluate",
    "evaluate_sets": "evaluate",
    "load_retrieval_set": "evaluate",
    # losses
    "hard_negative_weights": "losses",
    "mask_tokens": "losses",
    "mlm_loss": "losses",
    "sample_hard_negatives": "losses",
    "vtc_loss": "losses",
    "vtm_loss": "losses",
    # model
    "Stage2Model": "model",
    "create_stage2_model": "model",
    "get_stage2_config": "model",
    "list_stage2_models": "model",
    # objective
    "LossWeights": "objective",
    "Stage2Objective": "objective",
    "stage2_losses": "objective",
    # pretrained
    "Preprocessing": "pretrained",
    "Stage2Bundle": "pretrained",
    "load_stage2": "pretrained",
    "save_stage2": "pretrained",
    # retrieval
    "RetrievalResult": "retrieval",
    "evaluate_retrieval": "retrieval",
    "retrieval_metrics": "retrieval",
    # text
    "BertFusionEncoder": "text",
    "tokenize": "text",
    # train_config
    "ALIGN_FLAVORS": "train_config",
    "AlignConfig": "train_config",
    "load_align_config": "train_config",
    "synthetic_config": "train_config",
    # training
    "AlignResult": "training",
    "train": "training",
    # zero_shot
    "KINETICS_TEMPLATES": "zero_shot",
    "ZeroShotResult": "zero_shot",
    "class_prompts": "zero_shot",
    "zero_shot_classify": "zero_shot",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what static analysis and IDEs see; the table above is what runs
    from .beats import BEATs, convert_beats_state_dict, load_beats, read_beats_checkpoint  # noqa: F401
    from .checkpoint import convert_official_state_dict, load_checkpoint  # noqa: F401
    from .clip import VideoCLIPConfig, VideoCLIPModel  # noqa: F401
    from .clip_train import CLIP_TRAIN_FLAVORS, ClipTrainConfig, ClipTrainResult, train_clip  # noqa: F401
    from .config import BEATS_ITER3, BERT_LARGE, STAGE2_CONFIGS, BEATsConfig, Stage2Config  # noqa: F401
    from .data import build_tokenizer, synthetic_vocabulary  # noqa: F401
    from .embed import Stage2Embedder, curation_embedder, embed_files  # noqa: F401
    from .evaluate import RetrievalSet, evaluate_sets, load_retrieval_set  # noqa: F401
    from .losses import hard_negative_weights, mask_tokens, mlm_loss, sample_hard_negatives, vtc_loss, vtm_loss  # noqa: F401
    from .model import Stage2Model, create_stage2_model, get_stage2_config, list_stage2_models  # noqa: F401
    from .objective import LossWeights, Stage2Objective, stage2_losses  # noqa: F401
    from .pretrained import Preprocessing, Stage2Bundle, load_stage2, save_stage2  # noqa: F401
    from .retrieval import RetrievalResult, evaluate_retrieval, retrieval_metrics  # noqa: F401
    from .text import BertFusionEncoder, tokenize  # noqa: F401
    from .train_config import ALIGN_FLAVORS, AlignConfig, load_align_config, synthetic_config  # noqa: F401
    from .training import AlignResult, train  # noqa: F401
    from .zero_shot import KINETICS_TEMPLATES, ZeroShotResult, class_prompts, zero_shot_classify  # noqa: F401
