"""Curation: the InternVid2 recipe as pluggable, resumable stages (segment, caption, filter, output).

``curate(inputs, output_dir, CurationConfig(...))`` or ``iv2-data curate``. Scene detection needs the
``curate`` extra (PySceneDetect, OpenCV); captioning models need ``transformers`` and user-supplied weights.
"""

from iv2_data.curate.caption import (
    FUSION_PROMPT,
    AudioCaptioner,
    CaptionFuser,
    HFAudioCaptioner,
    HFLLMFuser,
    HFVideoCaptioner,
    SpeechRecognizer,
    TemplateFuser,
    VideoCaptioner,
    WhisperSpeechRecognizer,
)
from iv2_data.curate.doubles import (
    ConstantCaptioner,
    FrameDifferenceBoundaryModel,
    FunctionCaptioner,
    HashingEmbedder,
)
from iv2_data.curate.filter import ClipEmbedder, caption_similarity, deduplicate
from iv2_data.curate.pipeline import CurationConfig, CurationResult, curate, find_videos
from iv2_data.curate.segment import (
    BoundaryModel,
    ClipRules,
    ContentSceneDetector,
    LearnedSceneDetector,
    SceneDetector,
    WholeVideo,
    cut_clip,
    video_duration,
)

__all__ = [
    "FUSION_PROMPT",
    "AudioCaptioner",
    "BoundaryModel",
    "CaptionFuser",
    "ClipEmbedder",
    "ClipRules",
    "ConstantCaptioner",
    "ContentSceneDetector",
    "CurationConfig",
    "CurationResult",
    "FrameDifferenceBoundaryModel",
    "FunctionCaptioner",
    "HFAudioCaptioner",
    "HFLLMFuser",
    "HFVideoCaptioner",
    "HashingEmbedder",
    "LearnedSceneDetector",
    "SceneDetector",
    "SpeechRecognizer",
    "TemplateFuser",
    "VideoCaptioner",
    "WhisperSpeechRecognizer",
    "WholeVideo",
    "caption_similarity",
    "curate",
    "cut_clip",
    "deduplicate",
    "find_videos",
    "video_duration",
]
