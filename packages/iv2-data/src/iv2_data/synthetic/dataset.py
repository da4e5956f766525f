"""The synthetic corpus in memory: :class:`SyntheticCorpus` (tensors and text per clip) and
:class:`SyntheticDataset` (one sample kind, built by the same sample builders as the file datasets from the same
records :func:`~iv2_data.synthetic.write_corpus` writes — only the media come from rendering, not decoding)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from iv2_data.reading import AudioReadConfig, FramesRule, VideoReadConfig
from iv2_data.samples import SAMPLE_BUILDERS, SampleBuilder, VideoLabelBuilder, sample_builder
from iv2_data.sampling import sample_frame_indices
from iv2_data.synthetic.records import ANNOTATION_FILES, SYNTHETIC_CLASSES, clip_records, conversation, mcqa_items
from iv2_data.synthetic.render import SyntheticClip, clip_spec, render_audio, render_frames

__all__ = ["SyntheticCorpus", "SyntheticDataset"]


@dataclass
class SyntheticCorpus:
    """``num_samples`` clips of ``num_frames`` frames of ``size``² pixels at ``fps``, from ``seed``.

    ``corpus[i]`` is a dict of tensors and text: ``video`` float32 ``(3, T, size, size)`` ImageNet-normalised,
    ``frames`` uint8 ``(T, size, size, 3)``, ``waveform`` float32 ``(samples,)`` at 16 kHz, ``caption``,
    ``captions``, ``audio_caption``, ``asr``, ``avs_caption``, ``qa`` (four MC items), ``conversation`` and
    ``spec``. ``fbank(i)`` gives the audio encoder's input (needs the ``audio`` extra); ``dataset(kind)`` one
    sample kind with the file datasets' samples.
    """

    num_samples: int = 64
    num_frames: int = 8
    size: int = 64
    fps: int = 8
    seed: int = 0
    sample_rate: int = 16_000
    specs: list[SyntheticClip] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        self.specs = [clip_spec(i, self.seed) for i in range(self.num_samples)]

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def mcqa(self, index: int) -> list[dict[str, Any]]:
        return mcqa_items(self.specs[index], np.random.default_rng([self.seed, index, 0xA5]))

    def frames(self, index: int) -> np.ndarray:
        """Clip ``index`` as uint8 RGB ``(num_frames, size, size, 3)``."""
        return render_frames(self.specs[index], self.num_frames, self.size)

    def waveform(self, index: int) -> np.ndarray:
        return render_audio(self.specs[index], self.seconds, self.sample_rate)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from iv2_data.transforms import normalize

        if not 0 <= index < len(self):
            raise IndexError(f"synthetic corpus has {len(self)} clips, index {index} is out of range")
        spec = self.specs[index]
        frames = self.frames(index)
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)
        return {
            "index": index,
            "video": normalize(video),
            "frames": torch.from_numpy(frames),
            "waveform": torch.from_numpy(self.waveform(index)),
            "caption": spec.captions()[0],
            "captions": spec.captions(),
            "audio_caption": spec.audio_caption(),
            "asr": spec.transcript(),
            "avs_caption": spec.avs_caption(),
            "qa": self.mcqa(index),
            "conversation": conversation(spec),
            "spec": spec,
        }

    def fbank(self, index: int) -> torch.Tensor:
        from iv2_data.audio import waveform_to_fbank

        return waveform_to_fbank(torch.from_numpy(self.waveform(index)), self.sample_rate)

    def records(self, kind: str) -> list[tuple[int, dict[str, Any]]]:
        """``(clip, record)`` for every record of ``kind``, as :func:`~iv2_data.synthetic.write_corpus` writes
        them to ``ANNOTATION_FILES[kind]``."""
        if kind not in ANNOTATION_FILES:
            raise ValueError(f"unknown synthetic dataset kind {kind!r}; expected one of {sorted(ANNOTATION_FILES)}")
        return [(spec.index, record) for spec in self.specs for record in clip_records(spec, self.seed)[kind]]

    def dataset(self, kind: str, *, caption_sampling: str = "first", **options: Any) -> SyntheticDataset:
        """An in-memory map-style dataset of ``kind`` (a key of :data:`ANNOTATION_FILES`) whose samples equal
        those of the file dataset of that kind, without writing or decoding any file."""
        return SyntheticDataset(self, kind, caption_sampling=caption_sampling, **options)


@dataclass
class _RenderedMedia:
    """The media of one clip's record, rendered instead of decoded (see :class:`~iv2_data.reading.MediaAccess`).

    Video goes through the same frame choice and transform as a decoded file would: the corpus' frames are
    the file's frames."""

    dataset: SyntheticDataset
    clip: int
    record: dict[str, Any]

    def has(self, key: str) -> bool:
        return bool(self.record.get(key))

    def video(self, key: str, *, num_frames: int | None = None, frames_rule: FramesRule | None = None) -> torch.Tensor:
        corpus, config = self.dataset.corpus, self.dataset.video
        frames = corpus.frames(self.clip)
        if key == "image":  # the written image is the middle frame
            frames = frames[len(frames) // 2 : len(frames) // 2 + 1]
        count = num_frames or config.num_frames
        sampling = "middle" if num_frames == 1 else config.frame_sampling
        if frames_rule is not None:
            indices = frames_rule(len(frames), float(corpus.fps), count, sampling)
        else:
            indices = sample_frame_indices(len(frames), count, sampling)
        transform = config.transform_for(self.record)
        return transform(torch.from_numpy(np.ascontiguousarray(frames[indices])))

    def audio(self, key: str) -> torch.Tensor | None:
        return self.dataset.fbank(self.clip)

    def missing_audio(self) -> torch.Tensor:
        return self.dataset.audio.missing()


class SyntheticDataset(torch.utils.data.Dataset):
    """The corpus viewed as one sample kind, in memory (see :meth:`SyntheticCorpus.dataset`).

    Records and builders are the file datasets' (captions cleaned with ``pre_text``, ...), so samples are the
    same dicts; ``video`` (default: the corpus' frame count and size, evaluation reading) and builder
    ``options`` work as for :class:`~iv2_data.AnnotationDataset`. Filter banks are computed once per clip and
    cached. ``mcqa`` has four items per clip (``index = 4 * clip + task``).
    """

    def __init__(
        self,
        corpus: SyntheticCorpus,
        kind: str,
        *,
        caption_sampling: str = "first",
        video: VideoReadConfig | None = None,
        audio: AudioReadConfig | None = None,
        **options: Any,
    ) -> None:
        self.corpus, self.kind = corpus, kind
        self.items = corpus.records(kind)
        builder_type = SAMPLE_BUILDERS[kind]
        if any(f.name == "caption_sampling" for f in dataclasses.fields(builder_type)):
            options["caption_sampling"] = caption_sampling
        if builder_type is VideoLabelBuilder:
            options.setdefault("classes", SYNTHETIC_CLASSES)
        self.builder: SampleBuilder = sample_builder(kind, **options)
        self.video = video or VideoReadConfig(num_frames=corpus.num_frames, size=corpus.size)
        self.audio = audio or AudioReadConfig()
        self.source = f"synthetic {kind} (seed {corpus.seed})"
        for index, (_, record) in enumerate(self.items):
            self.builder.validate(record, self.source, index)
        self._fbanks: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def fbank(self, clip: int) -> torch.Tensor:
        if clip not in self._fbanks:
            self._fbanks[clip] = self.corpus.fbank(clip)
        return self._fbanks[clip]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"synthetic {self.kind} dataset has {len(self)} items, index {index} is out of range")
        clip, record = self.items[index]
        return self.builder.build(record, index, _RenderedMedia(self, clip, record), self.source)
