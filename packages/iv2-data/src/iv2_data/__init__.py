"""iv2-data: Video/audio decoding, datasets, shards, synthetic corpus and curation for InternVideo2."""

from iv2_data.annotations import AnnotationError, load_annotations, pre_text
from iv2_data.audio import AudioReadError, load_waveform, missing_audio_fbank, read_audio_fbank, waveform_to_fbank
from iv2_data.datasets import (
    AudioTextDataset,
    BrokenSamplePolicy,
    ImageTextDataset,
    InstructionDataset,
    MultipleChoiceQADataset,
    TooManyBrokenSamples,
    VideoAudioTextDataset,
    VideoTextDataset,
    collate,
    mcqa_prompt,
)
from iv2_data.shards import ShardDataset, ShardLoader, ShardManifest, write_shards
from iv2_data.synthetic import SyntheticCorpus, SyntheticDataset, clip_spec, render_audio, render_frames, write_corpus
from iv2_data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCropTransform,
    RandomResizedCropTransform,
    ResizeTransform,
)
from iv2_data.video import VideoInfo, VideoReadError, probe_video, read_clip, read_frames, sample_frame_indices

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AnnotationError",
    "AudioReadError",
    "AudioTextDataset",
    "BrokenSamplePolicy",
    "CenterCropTransform",
    "ImageTextDataset",
    "InstructionDataset",
    "MultipleChoiceQADataset",
    "RandomResizedCropTransform",
    "ResizeTransform",
    "ShardDataset",
    "ShardLoader",
    "ShardManifest",
    "SyntheticCorpus",
    "SyntheticDataset",
    "TooManyBrokenSamples",
    "VideoAudioTextDataset",
    "VideoInfo",
    "VideoReadError",
    "VideoTextDataset",
    "clip_spec",
    "collate",
    "load_annotations",
    "load_waveform",
    "mcqa_prompt",
    "missing_audio_fbank",
    "pre_text",
    "probe_video",
    "read_audio_fbank",
    "read_clip",
    "read_frames",
    "render_audio",
    "render_frames",
    "sample_frame_indices",
    "waveform_to_fbank",
    "write_corpus",
    "write_shards",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-data")
