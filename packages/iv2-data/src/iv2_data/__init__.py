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

The names below are imported on first use (PEP 562): ``import iv2_data`` and the command lines' ``--help``
do not load torch or PyAV.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = _version("iv2-data")

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # annotations
    "AnnotationError": "annotations",
    "load_annotations": "annotations",
    "pre_text": "annotations",
    # audio
    "load_waveform": "audio",
    "missing_audio_fbank": "audio",
    "mono_at": "audio",
    "read_audio_fbank": "audio",
    "waveform_to_fbank": "audio",
    # datasets
    "AnnotationDataset": "datasets",
    "AudioTextDataset": "datasets",
    "collate": "datasets",
    "ImageTextDataset": "datasets",
    "InstructionDataset": "datasets",
    "MultipleChoiceQADataset": "datasets",
    "VideoAudioTextDataset": "datasets",
    "VideoLabelDataset": "datasets",
    "VideoTextDataset": "datasets",
    # files
    "atomic_write": "files",
    "cache_dir": "files",
    "file_sha256": "files",
    "JsonlManifest": "files",
    "remove_leftovers": "files",
    "unfinished_writes": "files",
    # media
    "AudioReadError": "media",
    "find_media": "media",
    "media_bytes": "media",
    "MEDIA_SUFFIXES": "media",
    "MediaFile": "media",
    "MediaReadError": "media",
    "MediaSearch": "media",
    "open_media": "media",
    "read_media_bytes": "media",
    "VideoReadError": "media",
    # reading
    "AudioReadConfig": "reading",
    "BrokenSamplePolicy": "reading",
    "FileMedia": "reading",
    "MediaAccess": "reading",
    "TooManyBrokenSamples": "reading",
    "VideoReadConfig": "reading",
    # samples
    "AudioTextBuilder": "samples",
    "ImageTextBuilder": "samples",
    "InstructionBuilder": "samples",
    "mcqa_prompt": "samples",
    "MultipleChoiceQABuilder": "samples",
    "sample_builder": "samples",
    "SAMPLE_BUILDERS": "samples",
    "SampleBuilder": "samples",
    "VideoAudioTextBuilder": "samples",
    "VideoLabelBuilder": "samples",
    "VideoTextBuilder": "samples",
    # sampling
    "clip_window": "sampling",
    "mvbench_frame_indices": "sampling",
    "sample_frame_indices": "sampling",
    "sliding_windows": "sampling",
    "window_frame_indices": "sampling",
    # shards
    "ShardDataset": "shards",
    "ShardLoader": "shards",
    "ShardManifest": "shards",
    "write_shards": "shards",
    # synthetic
    "clip_spec": "synthetic",
    "render_audio": "synthetic",
    "render_frames": "synthetic",
    "SYNTHETIC_CLASSES": "synthetic",
    "SyntheticClip": "synthetic",
    "SyntheticCorpus": "synthetic",
    "SyntheticDataset": "synthetic",
    "write_corpus": "synthetic",
    # transforms
    "CenterCropTransform": "transforms",
    "GroupMultiScaleCrop": "transforms",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "RandomResizedCropTransform": "transforms",
    "ResizeTransform": "transforms",
    # video
    "iter_frames": "video",
    "probe_video": "video",
    "read_clip": "video",
    "read_frames": "video",
    "VideoInfo": "video",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what static analysis and IDEs see; the table above is what runs
    from .annotations import (  # noqa: F401
        AnnotationError,
        load_annotations,
        pre_text,
    )
    from .audio import (  # noqa: F401
        load_waveform,
        missing_audio_fbank,
        mono_at,
        read_audio_fbank,
        waveform_to_fbank,
    )
    from .datasets import (  # noqa: F401
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
    from .files import (  # noqa: F401
        JsonlManifest,
        atomic_write,
        cache_dir,
        file_sha256,
        remove_leftovers,
        unfinished_writes,
    )
    from .media import (  # noqa: F401
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
    from .reading import (  # noqa: F401
        AudioReadConfig,
        BrokenSamplePolicy,
        FileMedia,
        MediaAccess,
        TooManyBrokenSamples,
        VideoReadConfig,
    )
    from .samples import (  # noqa: F401
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
    from .sampling import (  # noqa: F401
        clip_window,
        mvbench_frame_indices,
        sample_frame_indices,
        sliding_windows,
        window_frame_indices,
    )
    from .shards import (  # noqa: F401
        ShardDataset,
        ShardLoader,
        ShardManifest,
        write_shards,
    )
    from .synthetic import (  # noqa: F401
        SYNTHETIC_CLASSES,
        SyntheticClip,
        SyntheticCorpus,
        SyntheticDataset,
        clip_spec,
        render_audio,
        render_frames,
        write_corpus,
    )
    from .transforms import (  # noqa: F401
        IMAGENET_MEAN,
        IMAGENET_STD,
        CenterCropTransform,
        GroupMultiScaleCrop,
        RandomResizedCropTransform,
        ResizeTransform,
    )
    from .video import (  # noqa: F401
        VideoInfo,
        iter_frames,
        probe_video,
        read_clip,
        read_frames,
    )
