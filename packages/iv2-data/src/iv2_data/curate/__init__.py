"""Curation: the InternVid2 recipe as pluggable, resumable stages (segment, caption, filter, output).

``curate(inputs, output_dir, CurationConfig(...))``, ``curate(..., stages=[...])`` or ``iv2-data curate``. Scene
detection needs the ``curate`` extra (PySceneDetect, OpenCV); captioning models the ``captions`` extra
(transformers, Pillow) and user-supplied weights.
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
from iv2_data.curate.pipeline import CurationConfig, CurationResult, curate, default_stages, find_videos
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
from iv2_data.curate.stages import (
    CaptionStage,
    CurationContext,
    CurationStage,
    FilterStage,
    OutputStage,
    SegmentStage,
)

__all__ = [
    "FUSION_PROMPT",
    "AudioCaptioner",
    "BoundaryModel",
    "CaptionFuser",
    "CaptionStage",
    "ClipEmbedder",
    "ClipRules",
    "ConstantCaptioner",
    "ContentSceneDetector",
    "CurationConfig",
    "CurationContext",
    "CurationResult",
    "CurationStage",
    "FilterStage",
    "FrameDifferenceBoundaryModel",
    "FunctionCaptioner",
    "HFAudioCaptioner",
    "HFLLMFuser",
    "HFVideoCaptioner",
    "HashingEmbedder",
    "LearnedSceneDetector",
    "OutputStage",
    "SceneDetector",
    "SegmentStage",
    "SpeechRecognizer",
    "TemplateFuser",
    "VideoCaptioner",
    "WhisperSpeechRecognizer",
    "WholeVideo",
    "caption_similarity",
    "curate",
    "cut_clip",
    "deduplicate",
    "default_stages",
    "find_videos",
    "video_duration",
]
