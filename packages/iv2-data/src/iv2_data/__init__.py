"""iv2-data: Video/audio decoding, datasets, shards, synthetic corpus and curation for InternVideo2.

Layers, bottom up:

- media access (:mod:`~iv2_data.media`): :func:`open_media`, :func:`read_media_bytes`, :func:`find_media` — the
  one place media files are opened for reading; :mod:`~iv2_data.files`: :func:`atomic_write`,
  :class:`JsonlManifest` — the one way outputs are written;
- decoding and frame choice: :func:`read_clip`, :func:`read_frames`, :func:`read_audio_fbank`,
  :mod:`~iv2_data.sampling`, :mod:`~iv2_data.transforms`;
- samples (:mod:`~iv2_data.samples`): one builder per sample kind, read through :class:`VideoReadConfig` /
  :class:`AudioReadConfig`;
- record sources: annotation files (:mod:`~iv2_data.datasets`), shards (:mod:`~iv2_data.shards`), the
  synthetic corpus (:mod:`~iv2_data.synthetic`); and curation (:mod:`iv2_data.curate`), which makes them.
"""

from iv2_data.annotations import AnnotationError, load_annotations, pre_text
from iv2_data.audio import load_waveform, missing_audio_fbank, mono_at, read_audio_fbank, waveform_to_fbank
from iv2_data.datasets import (
    AnnotationDataset,
    AudioTextDataset,
    ImageTextDataset,
    InstructionDataset,
    MultipleChoiceQADataset,
    VideoAudioTextDataset,
    VideoLabelDataset,
    VideoTextDataset,
    collate,
)
from iv2_data.files import JsonlManifest, atomic_write, remove_leftovers
from iv2_data.media import (
    MEDIA_SUFFIXES,
    AudioReadError,
    MediaFile,
    MediaReadError,
    MediaSearch,
    VideoReadError,
    find_media,
    media_bytes,
    open_media,
    read_media_bytes,
)
from iv2_data.reading import (
    AudioReadConfig,
    BrokenSamplePolicy,
    FileMedia,
    MediaAccess,
    TooManyBrokenSamples,
    VideoReadConfig,
)
from iv2_data.samples import (
    SAMPLE_BUILDERS,
    AudioTextBuilder,
    ImageTextBuilder,
    InstructionBuilder,
    MultipleChoiceQABuilder,
    SampleBuilder,
    VideoAudioTextBuilder,
    VideoLabelBuilder,
    VideoTextBuilder,
    mcqa_prompt,
    sample_builder,
)
from iv2_data.sampling import (
    clip_window,
    mvbench_frame_indices,
    sample_frame_indices,
    sliding_windows,
    window_frame_indices,
)
from iv2_data.shards import ShardDataset, ShardLoader, ShardManifest, write_shards
from iv2_data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticClip,
    SyntheticCorpus,
    SyntheticDataset,
    clip_spec,
    render_audio,
    render_frames,
    write_corpus,
)
from iv2_data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCropTransform,
    GroupMultiScaleCrop,
    RandomResizedCropTransform,
    ResizeTransform,
)
from iv2_data.video import VideoInfo, iter_frames, probe_video, read_clip, read_frames

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MEDIA_SUFFIXES",
    "SAMPLE_BUILDERS",
    "SYNTHETIC_CLASSES",
    "AnnotationDataset",
    "AnnotationError",
    "AudioReadConfig",
    "AudioReadError",
    "AudioTextBuilder",
    "AudioTextDataset",
    "BrokenSamplePolicy",
    "CenterCropTransform",
    "FileMedia",
    "GroupMultiScaleCrop",
    "ImageTextBuilder",
    "ImageTextDataset",
    "InstructionBuilder",
    "InstructionDataset",
    "JsonlManifest",
    "MediaAccess",
    "MediaFile",
    "MediaReadError",
    "MediaSearch",
    "MultipleChoiceQABuilder",
    "MultipleChoiceQADataset",
    "RandomResizedCropTransform",
    "ResizeTransform",
    "SampleBuilder",
    "ShardDataset",
    "ShardLoader",
    "ShardManifest",
    "SyntheticClip",
    "SyntheticCorpus",
    "SyntheticDataset",
    "TooManyBrokenSamples",
    "VideoAudioTextBuilder",
    "VideoAudioTextDataset",
    "VideoInfo",
    "VideoLabelBuilder",
    "VideoLabelDataset",
    "VideoReadConfig",
    "VideoReadError",
    "VideoTextBuilder",
    "VideoTextDataset",
    "atomic_write",
    "clip_spec",
    "clip_window",
    "collate",
    "find_media",
    "iter_frames",
    "load_annotations",
    "load_waveform",
    "mcqa_prompt",
    "media_bytes",
    "missing_audio_fbank",
    "mono_at",
    "mvbench_frame_indices",
    "open_media",
    "pre_text",
    "probe_video",
    "read_audio_fbank",
    "read_clip",
    "read_frames",
    "read_media_bytes",
    "remove_leftovers",
    "render_audio",
    "render_frames",
    "sample_builder",
    "sample_frame_indices",
    "sliding_windows",
    "waveform_to_fbank",
    "window_frame_indices",
    "write_corpus",
    "write_shards",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-data")
