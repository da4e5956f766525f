"""Curation: the InternVid2 recipe as pluggable, resumable stages (segment, caption, filter, output).

``curate(inputs, output_dir, CurationConfig(...))``, ``curate(..., stages=[...])`` or ``iv2-data curate``. Scene
detection needs the ``curate`` extra (PySceneDetect, OpenCV); captioning models the ``captions`` extra
(transformers, Pillow) and user-supplied weights.

The names below are imported on first use (PEP 562), so that importing the package (and the command lines'
``--help``) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iv2_data.lazy import lazy_exports

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # caption
    "AudioCaptioner": "caption",
    "CaptionFuser": "caption",
    "FUSION_PROMPT": "caption",
    "HFAudioCaptioner": "caption",
    "HFLLMFuser": "caption",
    "HFVideoCaptioner": "caption",
    "SpeechRecognizer": "caption",
    "TemplateFuser": "caption",
    "VideoCaptioner": "caption",
    "WhisperSpeechRecognizer": "caption",
    # doubles
    "ConstantCaptioner": "doubles",
    "FrameDifferenceBoundaryModel": "doubles",
    "FunctionCaptioner": "doubles",
    "HashingEmbedder": "doubles",
    # filter
    "caption_similarity": "filter",
    "ClipEmbedder": "filter",
    "deduplicate": "filter",
    # pipeline
    "curate": "pipeline",
    "CurationConfig": "pipeline",
    "CurationResult": "pipeline",
    "default_stages": "pipeline",
    "find_videos": "pipeline",
    # segment
    "BoundaryModel": "segment",
    "ClipRules": "segment",
    "ContentSceneDetector": "segment",
    "cut_clip": "segment",
    "LearnedSceneDetector": "segment",
    "SceneDetector": "segment",
    "video_duration": "segment",
    "WholeVideo": "segment",
    # stages
    "CaptionStage": "stages",
    "CurationContext": "stages",
    "CurationStage": "stages",
    "FilterStage": "stages",
    "OutputStage": "stages",
    "SegmentStage": "stages",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what static analysis and IDEs see; the table above is what runs
    from .caption import (  # noqa: F401
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
    from .doubles import (  # noqa: F401
        ConstantCaptioner,
        FrameDifferenceBoundaryModel,
        FunctionCaptioner,
        HashingEmbedder,
    )
    from .filter import (  # noqa: F401
        ClipEmbedder,
        caption_similarity,
        deduplicate,
    )
    from .pipeline import (  # noqa: F401
        CurationConfig,
        CurationResult,
        curate,
        default_stages,
        find_videos,
    )
    from .segment import (  # noqa: F401
        BoundaryModel,
        ClipRules,
        ContentSceneDetector,
        LearnedSceneDetector,
        SceneDetector,
        WholeVideo,
        cut_clip,
        video_duration,
    )
    from .stages import (  # noqa: F401
        CaptionStage,
        CurationContext,
        CurationStage,
        FilterStage,
        OutputStage,
        SegmentStage,
    )
