"""Stage-2 data: the tokenizer, the training sources the MetaLoader mixes, and the held-out evaluation sets.

Everything goes through iv2-data: annotation files in the official layouts (the synthetic corpus writes them),
one sample builder per kind, ``VideoReadConfig`` / ``AudioReadConfig`` for decoding, ``BrokenSamplePolicy`` for
unreadable media (skipped, logged and counted; too many stop the run). Here only what is specific to stage 2:

- the synthetic tokenizer: a ``BertTokenizer`` whose vocabulary is the corpus' words
  (``iv2_data.synthetic.corpus_words``) plus the zero-shot prompt words and the BERT specials;
- caption checks: an empty caption is an error naming the file and record (iv2-data would drop it quietly);
- a media cache for deterministic reads (decoding costs far more than the tiny model's step on a CPU);
- :class:`CaptionBatches`, the collate function: samples -> tensors, captions tokenised the official way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iv2_data import (
    AnnotationDataset,
    AudioReadConfig,
    BrokenSamplePolicy,
    ResizeTransform,
    VideoReadConfig,
    atomic_write,
    collate,
    load_annotations,
    pre_text,
    sample_builder,
)
from iv2_data.annotations import AnnotationError, get_captions

from .text import tokenize
from .train_config import SOURCE_KINDS, SYNTHETIC_TOKENIZER, DataSection
from .zero_shot import KINETICS_TEMPLATES

log = logging.getLogger("iv2_align")

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CAPTION_KEYS = {"video_text": "caption", "image_text": "caption", "audio_text": "caption",
                "video_audio_text": "caption"}


# ---------------------------------------------------------------------------------------------- tokenizer
def synthetic_vocabulary() -> list[str]:
    """The BERT specials, every word of the synthetic corpus' texts and of the zero-shot prompt templates (so
    neither has an unknown token), in a fixed order."""
    from iv2_data.synthetic import corpus_words

    words = dict.fromkeys(BERT_SPECIALS)
    words.update(dict.fromkeys(corpus_words()))
    for template in KINETICS_TEMPLATES:
        words.update(dict.fromkeys(pre_text(template.format("")).split()))
    return list(words)


def build_tokenizer(spec: str, directory: str | Path | None = None):
    """``"synthetic"``: a ``BertTokenizer`` over :func:`synthetic_vocabulary` (its ``vocab.txt`` written to
    ``directory``, or a temporary folder); anything else: ``AutoTokenizer.from_pretrained(spec)`` (a local
    folder or a hub id such as ``bert-large-uncased``)."""
    from transformers import AutoTokenizer, BertTokenizer

    if spec != SYNTHETIC_TOKENIZER:
        return AutoTokenizer.from_pretrained(spec)
    if directory is None:
        import tempfile

        directory = tempfile.mkdtemp(prefix="iv2-align-vocab-")
    path = Path(directory) / "vocab.txt"
    text = "\n".join(synthetic_vocabulary()) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(text)
    return BertTokenizer(str(path), do_lower_case=True)


# ---------------------------------------------------------------------------------------------- annotations
@dataclass
class AnnotationSplit:
    """The records of one sample kind for training and for evaluation, and where their media live."""

    kind: str
    source: str
    media_root: Path
    train: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[dict[str, Any]] = field(default_factory=list)


def check_captions(records: Sequence[Mapping[str, Any]], source: str, key: str = "caption") -> None:
    """Every caption of every record must have text after the official cleaning: an empty one is an error
    naming the file, the record and the caption (iv2-data's loaders would drop the record quietly)."""
    for index, record in enumerate(records):
        for caption in get_captions(dict(record), source, index, key):
            if not pre_text(caption):
                raise AnnotationError(f"{source}, record {index}: caption {caption!r} is empty after cleaning; "
                                      f"every caption needs text (record: {dict(record)})")


def ensure_corpus(data: DataSection) -> Path:
    """The synthetic corpus folder, written with ``iv2_data.write_corpus`` when it holds no corpus yet (or one
    of older records: rewritten, media kept). An existing corpus is used as it is (its own size, whatever
    ``corpus_clips`` says)."""
    from iv2_data.synthetic import corpus_is_current

    root = Path(data.corpus)
    if not corpus_is_current(root):
        from iv2_data import write_corpus

        log.info("writing the synthetic corpus (%d clips) to %s", data.corpus_clips, root)
        write_corpus(root, data.corpus_clips, num_frames=data.corpus_frames, size=data.corpus_size,
                     seed=data.corpus_seed)
    return root


def annotation_splits(data: DataSection, kinds: Sequence[str], required: set[str] | None = None
                      ) -> dict[str, AnnotationSplit]:
    """Records per sample kind: from the corpus (one record per clip, in clip order; the last ``held_out`` clips
    are the evaluation split) or from the annotation files (all for training). Captions are checked. A kind
    without a file is an error when ``required`` names it (default: all), else left out."""
    required = set(kinds) if required is None else required
    splits = {}
    corpus = ensure_corpus(data) if data.corpus else None
    if corpus is not None:
        clips = int(json.loads((corpus / "corpus.json").read_text(encoding="utf-8"))["num_samples"])
        if not 0 <= data.held_out < clips:
            raise ValueError(f"data.held_out = {data.held_out} but the corpus {corpus} has {clips} clips")
    for kind in kinds:
        explicit = getattr(data, kind)
        if explicit is None and corpus is None:
            if kind not in required:
                continue
            raise ValueError(f"data.{kind} is not set: give an annotation file in the official {kind} layout "
                             f"(or data.corpus for the synthetic corpus)")
        path = Path(explicit) if explicit is not None else corpus / f"{kind}.json"
        records = load_annotations(path)
        check_captions(records, str(path), CAPTION_KEYS[kind])
        root = Path(data.media_root) if data.media_root else path.parent
        split = AnnotationSplit(kind, str(path), root, train=list(records))
        if explicit is None:
            if len(records) != clips:
                raise ValueError(f"{path} has {len(records)} records for a corpus of {clips} clips")
            cut = clips - data.held_out
            keep = cut if data.max_train_clips is None else min(cut, data.max_train_clips)
            split.train, split.held_out = list(records[:keep]), list(records[cut:])
        splits[kind] = split
    return splits


# ----------------------------------------------------------------------------------------------- datasets
class MediaCache:
    """Decoded media kept in memory, keyed by file and read settings, shared by the training sources (the video of
    a ``video_audio_text`` record is the same clip a ``video_text`` record reads). Only for deterministic reads."""

    def __init__(self) -> None:
        self.items: dict[tuple, Any] = {}

    def get(self, key: tuple, read: Any) -> Any:
        if key not in self.items:
            self.items[key] = read()
        return self.items[key]


class _CachedMedia:
    """A record's media through a :class:`MediaCache` (``MediaAccess``)."""

    def __init__(self, inner: Any, cache: MediaCache, sources: Mapping[str, Any], video: VideoReadConfig,
                 audio: AudioReadConfig) -> None:
        self.inner, self.cache, self.sources = inner, cache, sources
        self.video_settings = (video.size, video.frame_sampling, repr(video.transform), video.num_frames)
        self.audio_settings = (audio.max_seconds,)

    def has(self, key: str) -> bool:
        return self.inner.has(key)

    def video(self, key: str, *, num_frames: int | None = None, frames_rule: Any = None) -> torch.Tensor:
        if frames_rule is not None:
            return self.inner.video(key, num_frames=num_frames, frames_rule=frames_rule)
        slot = ("video", str(self.sources[key]), num_frames, self.video_settings)
        return self.cache.get(slot, lambda: self.inner.video(key, num_frames=num_frames))

    def audio(self, key: str) -> torch.Tensor | None:
        slot = ("audio", str(self.sources[key]), self.audio_settings)
        return self.cache.get(slot, lambda: self.inner.audio(key))

    def missing_audio(self) -> torch.Tensor:
        return self.inner.missing_audio()


class CachedAnnotationDataset(AnnotationDataset):
    """An :class:`iv2_data.AnnotationDataset` whose decoded media go through a :class:`MediaCache` (captions are
    still drawn per access). Refused for random reads (augmentation, random audio crops), whose every read must
    differ."""

    def __init__(self, *args: Any, cache: MediaCache | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.video.train or self.video.frame_sampling == "random" or self.audio.random_crop:
            raise ValueError("a media cache needs deterministic reads (train=False, no random sampling or crop)")
        self.cache = cache if cache is not None else MediaCache()

    def sample(self, record: Mapping[str, Any], index: int, sources: Mapping[str, Any]) -> dict[str, Any]:
        from iv2_data import FileMedia

        media = _CachedMedia(FileMedia(sources, self.video, self.audio, record), self.cache, sources, self.video,
                             self.audio)
        return self.builder.build(record, index, media, self.source)


def read_configs(data: DataSection, num_frames: int, size: int, *, train: bool) -> tuple[VideoReadConfig,
                                                                                        AudioReadConfig]:
    """Training reads follow ``data.train_augment`` (official random sampling + random resized crop); evaluation
    and non-augmented reads are the official evaluation reads (middle frames, the whole frame resized)."""
    if train and data.train_augment:
        video = VideoReadConfig(num_frames=num_frames, size=size, train=True)
        audio = AudioReadConfig(max_seconds=data.audio_seconds, random_crop=True)
    else:
        video = VideoReadConfig(num_frames=num_frames, size=size, transform=ResizeTransform(size))
        audio = AudioReadConfig(max_seconds=data.audio_seconds)
    return video, audio


def make_dataset(split: AnnotationSplit, records: list[dict[str, Any]], data: DataSection, num_frames: int,
                 size: int, *, train: bool, caption_sampling: str = "random",
                 cache: MediaCache | None = None) -> AnnotationDataset:
    video, audio = read_configs(data, num_frames, size, train=train)
    builder = sample_builder(split.kind, caption_sampling=caption_sampling)
    broken = BrokenSamplePolicy(max_fraction=data.max_broken_fraction)
    if train and data.cache_media:
        dataset = CachedAnnotationDataset(records, split.media_root, builder=builder, video=video, audio=audio,
                                          broken=broken, cache=cache)
    else:
        dataset = AnnotationDataset(records, split.media_root, builder=builder, video=video, audio=audio,
                                    broken=broken)
    dataset.source = split.source  # messages name the annotation file, not "<records>"
    return dataset


@dataclass
class CaptionBatches:
    """Collate function of the training sources: ``iv2_data.collate`` then the official caption encoding
    (:func:`iv2_align.tokenize`). Yields ``video`` / ``audio``, ``input_ids``, ``attention_mask`` and ``idx`` (the
    record index: captions of one record are positives of each other in VTC and never VTM negatives)."""

    tokenizer: Any
    max_length: int

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate(samples)
        input_ids, attention_mask = tokenize(self.tokenizer, batch["caption"], self.max_length)
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "idx": batch["index"].long()}
        for key in ("video", "audio"):
            if key in batch:
                out[key] = batch[key]
        return out


def media_geometry(data: DataSection, vision_frames: int, vision_size: int) -> tuple[int, int]:
    """Frames and size the media are read at: ``data.num_frames`` / ``data.size``, else the model's."""
    return data.num_frames or vision_frames, data.size or vision_size


def training_sources(data: DataSection, splits: Mapping[str, AnnotationSplit], tokenizer: Any, *, num_frames: int,
                     size: int, max_text_length: int, seed: int) -> dict[str, Any]:
    """One ``iv2_train.ResumableBatches`` per MetaLoader source (each rank takes its share of every epoch)."""
    from iv2_train import ResumableBatches

    collate_fn = CaptionBatches(tokenizer, max_text_length)
    cache = MediaCache()
    sources = {}
    for number, name in enumerate(data.sources):
        split = splits[SOURCE_KINDS[name]]
        frames = 1 if name == "image" else num_frames
        dataset = make_dataset(split, split.train, data, frames, size, train=True, cache=cache,
                               caption_sampling=data.caption_sampling)
        sources[name] = ResumableBatches(dataset, data.batch_size[name], seed=seed * 1009 + number,
                                         collate_fn=collate_fn, num_workers=data.num_workers)
    return sources


def broken_counts(sources: Mapping[str, Any]) -> dict[str, int]:
    """Unreadable samples skipped so far per source (in this process)."""
    return {name: int(source.dataset.stats.failures) for name, source in sources.items()}
