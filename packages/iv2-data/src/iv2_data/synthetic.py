"""A deterministic synthetic multimodal corpus: moving shapes and digits with captions, tones, speech and QA.

Every clip shows ``count`` copies of one object (a shape or a seven-segment digit) of one colour moving in one
direction over a static textured background. The sound track is a tone whose pitch follows the colour, beeping
once per object; an ASR-like transcript names the object and its direction; multiple-choice questions ask about
motion, colour, count and identity. Motion questions cannot be answered from one frame: a clip moving right is
exactly the time reversal of the same clip moving left (tested), so only the order of frames tells them apart.

Nothing is downloaded. Everything is a pure function of ``(seed, index)``, so the corpus is the same on every
machine. :class:`SyntheticCorpus` yields tensors in memory; :func:`write_corpus` writes mp4 (with an AAC audio
track), wav, png and the annotation files the datasets in :mod:`iv2_data.datasets` read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DIRECTIONS",
    "OBJECTS",
    "ClipSpec",
    "SyntheticCorpus",
    "SyntheticDataset",
    "clip_spec",
    "render_audio",
    "render_frames",
    "write_corpus",
    "write_video",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 200, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 30),
    "magenta": (220, 50, 210),
    "cyan": (40, 215, 225),
}
# Tone pitch per colour (Hz): spread over the Mel scale so each lands in its own fbank bins.
PITCH_HZ: dict[str, float] = {
    "red": 300.0,
    "green": 450.0,
    "blue": 650.0,
    "yellow": 950.0,
    "magenta": 1400.0,
    "cyan": 2000.0,
}
PITCH_WORDS: dict[str, str] = {
    "red": "very low",
    "green": "low",
    "blue": "medium",
    "yellow": "high",
    "magenta": "very high",
    "cyan": "shrill",
}
OBJECTS = ("circle", "square", "triangle", "cross", "2", "3", "5", "7")
DIRECTIONS = ("left", "right", "up", "down")
BACKGROUNDS = ("striped", "checkered", "dotted", "noisy")
COUNTS = (1, 2, 3)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
MCQA_TASKS = ("motion", "colour", "count", "identity")

# Seven-segment digits: which of the segments a (top), b (top right), c (bottom right), d (bottom),
# e (bottom left), f (top left), g (middle) are lit.
_SEGMENTS = {"2": "abged", "3": "abgcd", "5": "afgcd", "7": "abc"}


@dataclass(frozen=True)
class ClipSpec:
    """The attributes of one synthetic clip; everything rendered follows from them."""

    index: int
    object: str
    colour: str
    direction: str
    background: str
    count: int
    # Where the trajectory sits, as fractions of the frame; shared by a direction and its reverse.
    anchor: tuple[float, float]
    tint: tuple[int, int, int]
    texture_seed: int

    @property
    def is_digit(self) -> bool:
        return self.object.isdigit()

    def noun(self, plural: bool = False) -> str:
        if not plural:
            return self.object
        return self.object + ("es" if self.object.endswith("s") else "s")

    def identity_name(self) -> str:
        return f"the digit {self.object}" if self.is_digit else f"a {self.object}"

    def subject(self) -> str:
        if self.count == 1:
            return f"a {self.colour} {self.noun()}"
        return f"{NUMBER_WORDS[self.count]} {self.colour} {self.noun(plural=True)}"

    def captions(self) -> list[str]:
        """Several paraphrases of the visual content (the official layout's multiple captions)."""
        verb = "moves" if self.count == 1 else "move"
        verbing = "moving"
        return [
            f"{self.subject()} {verb} {self.direction} across a {self.background} background",
            f"{self.subject()} {verbing} {self.direction} over a {self.background} texture",
            f"on a {self.background} background, {self.subject()} {verb} towards the {self.direction}",
        ]

    def audio_caption(self) -> str:
        times = {1: "once", 2: "twice", 3: "three times"}[self.count]
        return f"a {PITCH_WORDS[self.colour]} tone beeps {times}"

    def transcript(self) -> str:
        """An ASR-like 'speech' line: it names the object and the direction, not the colour."""
        name = f"number {self.object}" if self.is_digit else self.object
        templates = (
            f"look at the {name} going {self.direction}",
            f"here comes the {name} heading {self.direction}",
            f"watch the {name} it is moving {self.direction}",
        )
        return templates[self.index % len(templates)]

    def avs_caption(self) -> str:
        """One fused audio-visual-speech caption, the form the paper's VidCap fuser produces."""
        return f"{self.captions()[0]} while {self.audio_caption()} and someone says {self.transcript()}"


def clip_spec(index: int, seed: int = 0) -> ClipSpec:
    """The attributes of clip ``index`` of the corpus with ``seed``: a pure function of both."""
    rng = np.random.default_rng([seed, index, 0x5EED])
    return ClipSpec(
        index=index,
        object=OBJECTS[rng.integers(len(OBJECTS))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        direction=DIRECTIONS[rng.integers(len(DIRECTIONS))],
        background=BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
        count=int(COUNTS[rng.integers(len(COUNTS))]),
        anchor=(float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0))),
        tint=_muted_colour(rng),
        texture_seed=int(rng.integers(2**31)),
    )


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A background tint of any hue, moderately saturated and darkish, so saturated objects stand out."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.25, 0.5), rng.uniform(0.4, 0.6))
    return (round(r * 255), round(g * 255), round(b * 255))


# ---------------------------------------------------------------------------------------------------------
# Rendering


def _background(spec: ClipSpec, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // 8)
    if spec.background == "striped":
        pattern = ((xx + yy) // (period // 2)) % 2
    elif spec.background == "checkered":
        pattern = ((xx // period) + (yy // period)) % 2
    elif spec.background == "dotted":
        cy, cx = yy % period - period / 2, xx % period - period / 2
        pattern = (cy**2 + cx**2 <= (period / 4) ** 2).astype(np.int64)
    else:  # noisy: blocky value noise
        rng = np.random.default_rng(spec.texture_seed)
        coarse = rng.random((size // 4 + 1, size // 4 + 1))
        pattern = coarse[yy // 4, xx // 4]
    tint = np.asarray(spec.tint, dtype=np.float32)
    # Low-contrast texture so that the objects stand out but the background still carries appearance.
    image = tint[None, None, :] * (0.8 + 0.35 * pattern[..., None].astype(np.float32))
    return np.clip(image, 0, 255).astype(np.uint8)


def _object_mask(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= 0.85 * r) & (np.abs(dx) <= 0.85 * r)
    if kind == "triangle":  # apex up
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if kind == "cross":
        bar = r / 3
        return ((np.abs(dx) <= bar) & (np.abs(dy) <= r)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= r))
    if kind in _SEGMENTS:
        half_w, half_h, t = 0.6 * r, r, max(1.0, r / 4)
        segments = {
            "a": (np.abs(dy + half_h) <= t) & (np.abs(dx) <= half_w),
            "g": (np.abs(dy) <= t) & (np.abs(dx) <= half_w),
            "d": (np.abs(dy - half_h) <= t) & (np.abs(dx) <= half_w),
            "f": (np.abs(dx + half_w) <= t) & (dy >= -half_h) & (dy <= 0),
            "b": (np.abs(dx - half_w) <= t) & (dy >= -half_h) & (dy <= 0),
            "e": (np.abs(dx + half_w) <= t) & (dy >= 0) & (dy <= half_h),
            "c": (np.abs(dx - half_w) <= t) & (dy >= 0) & (dy <= half_h),
        }
        mask = np.zeros_like(dy, dtype=bool)
        for name in _SEGMENTS[kind]:
            mask |= segments[name]
        return mask
    raise ValueError(f"unknown synthetic object {kind!r}; expected one of {OBJECTS}")


def _centres(spec: ClipSpec, num_frames: int, size: int) -> list[list[tuple[float, float]]]:
    """Object centres per frame. Moving right is the time reversal of moving left (same for up/down)."""
    radius = 0.1 * size
    margin = radius + 1
    travel = 0.45 * size
    spacing = 2.5 * radius
    horizontal = spec.direction in ("left", "right")
    # Along the motion axis: the trajectory runs between `low` and `low + travel`.
    low = margin + spec.anchor[0] * (size - 2 * margin - travel)
    # Across it: the group of `count` objects is centred at `across`.
    group = (spec.count - 1) * spacing
    across = margin + group / 2 + spec.anchor[1] * max(0.0, size - 2 * margin - group)
    positions = []
    for t in range(num_frames):
        progress = t / max(1, num_frames - 1)
        if spec.direction in ("right", "down"):
            along = low + progress * travel
        else:
            along = low + (1 - progress) * travel
        frame = []
        for k in range(spec.count):
            offset = across - group / 2 + k * spacing
            frame.append((offset, along) if horizontal else (along, offset))  # (y, x)
        positions.append(frame)
    return positions


def render_frames(spec: ClipSpec, num_frames: int = 8, size: int = 64) -> np.ndarray:
    """RGB frames ``(num_frames, size, size, 3)`` uint8 of ``spec``."""
    if num_frames < 1 or size < 16:
        raise ValueError(f"need num_frames >= 1 and size >= 16, got {num_frames} and {size}")
    background = _background(spec, size)
    colour = np.asarray(COLOURS[spec.colour], dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t, centres in enumerate(_centres(spec, num_frames, size)):
        frame = background.copy()
        for cy, cx in centres:
            frame[_object_mask(spec.object, yy, xx, cy, cx, 0.1 * size)] = colour
        frames[t] = frame
    return frames


def render_audio(spec: ClipSpec, seconds: float, sample_rate: int = 16_000) -> np.ndarray:
    """Mono float32 waveform: a tone at the colour's pitch, beeping ``count`` times, amplitude 0.5."""
    n = round(seconds * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    tone = np.sin(2 * np.pi * PITCH_HZ[spec.colour] * t)
    # `count` equal slots; each beep fills the middle 60 % of its slot with 5 ms ramps against clicks.
    envelope = np.zeros(n)
    slot = n / spec.count
    ramp = max(1, int(0.005 * sample_rate))
    for k in range(spec.count):
        start, stop = int(k * slot + 0.2 * slot), int(k * slot + 0.8 * slot)
        length = stop - start
        env = np.ones(length)
        r = min(ramp, length // 2)
        if r > 0:
            env[:r] = np.linspace(0, 1, r)
            env[-r:] = np.linspace(1, 0, r)
        envelope[start:stop] = env
    return (0.5 * tone * envelope).astype(np.float32)


def _mcqa(spec: ClipSpec, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Four MVBench-style items: question, four candidates, the answer (one of the candidates), task."""

    def options(correct: str, pool: list[str]) -> list[str]:
        others = [p for p in pool if p != correct]
        chosen = [correct, *[others[i] for i in rng.permutation(len(others))[:3]]]
        return [chosen[i] for i in rng.permutation(len(chosen))]

    thing = f"the digit {spec.object}" if spec.is_digit else spec.object
    plural = f"digits {spec.object}" if spec.is_digit else spec.noun(plural=True)
    identities = [f"the digit {o}" if o.isdigit() else f"a {o}" for o in OBJECTS]
    return [
        {
            "task": "motion",
            "question": f"In which direction does the {spec.colour} {thing.removeprefix('the ')} move?",
            "candidates": options(spec.direction, list(DIRECTIONS)),
            "answer": spec.direction,
        },
        {
            "task": "colour",
            "question": f"What colour is the moving {thing.removeprefix('the ')}?",
            "candidates": options(spec.colour, list(COLOURS)),
            "answer": spec.colour,
        },
        {
            "task": "count",
            "question": f"How many {plural} are there?",
            "candidates": options(NUMBER_WORDS[spec.count], list(NUMBER_WORDS.values())),
            "answer": NUMBER_WORDS[spec.count],
        },
        {
            "task": "identity",
            "question": f"Which object moves {spec.direction}?",
            "candidates": options(spec.identity_name(), identities),
            "answer": spec.identity_name(),
        },
    ]


def _instruction(spec: ClipSpec) -> list[dict[str, str]]:
    """A VideoChat2-style conversation: ``[{"i", "q", "a"}, ...]``."""
    instruction = "Carefully watch the video and describe what moves and where it goes."
    return [
        {"i": instruction, "q": "Describe the video briefly.", "a": spec.captions()[0] + "."},
        {"i": instruction, "q": "Where does it move?", "a": f"It moves {spec.direction}."},
    ]


# ---------------------------------------------------------------------------------------------------------
# In memory


@dataclass
class SyntheticCorpus:
    """``num_samples`` clips of ``num_frames`` frames of ``size``² pixels at ``fps``, from ``seed``.

    ``corpus[i]`` is a dict of tensors and text in the same format as the map-style datasets:
    ``video`` float32 ``(3, T, size, size)`` ImageNet-normalised, ``frames`` uint8 ``(T, size, size, 3)``,
    ``waveform`` float32 ``(samples,)`` at 16 kHz, ``caption``, ``captions``, ``audio_caption``, ``asr``,
    ``avs_caption``, ``qa`` (four MC items), ``conversation`` and ``spec``. ``fbank(i)`` gives the audio
    encoder's input (needs the ``audio`` extra).
    """

    num_samples: int = 64
    num_frames: int = 8
    size: int = 64
    fps: int = 8
    seed: int = 0
    sample_rate: int = 16_000
    specs: list[ClipSpec] = field(init=False, repr=False)

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
        return _mcqa(self.specs[index], np.random.default_rng([self.seed, index, 0xA5]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        from iv2_data.transforms import normalize

        if not 0 <= index < len(self):
            raise IndexError(f"synthetic corpus has {len(self)} clips, index {index} is out of range")
        spec = self.specs[index]
        frames = render_frames(spec, self.num_frames, self.size)
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)
        return {
            "index": index,
            "video": normalize(video),
            "frames": torch.from_numpy(frames),
            "waveform": torch.from_numpy(render_audio(spec, self.seconds, self.sample_rate)),
            "caption": spec.captions()[0],
            "captions": spec.captions(),
            "audio_caption": spec.audio_caption(),
            "asr": spec.transcript(),
            "avs_caption": spec.avs_caption(),
            "qa": self.mcqa(index),
            "conversation": _instruction(spec),
            "spec": spec,
        }

    def fbank(self, index: int) -> torch.Tensor:
        from iv2_data.audio import waveform_to_fbank

        wave = torch.from_numpy(render_audio(self.specs[index], self.seconds, self.sample_rate))
        return waveform_to_fbank(wave, self.sample_rate)

    def dataset(self, kind: str, *, caption_sampling: str = "first") -> SyntheticDataset:
        """An in-memory map-style dataset of ``kind`` (a key of :data:`ANNOTATION_FILES`) whose samples have
        the same keys as the file-based dataset of that kind, without writing or decoding any file."""
        return SyntheticDataset(self, kind, caption_sampling=caption_sampling)


class SyntheticDataset(torch.utils.data.Dataset):
    """The corpus viewed as one dataset kind, in memory (see :meth:`SyntheticCorpus.dataset`).

    Captions are cleaned with ``pre_text`` as the file datasets do; filter banks are computed once per clip
    and cached. ``mcqa`` has four items per clip (``index = 4 * clip + task``).
    """

    def __init__(self, corpus: SyntheticCorpus, kind: str, *, caption_sampling: str = "first") -> None:
        if kind not in ANNOTATION_FILES:
            raise ValueError(f"unknown synthetic dataset kind {kind!r}; expected one of {sorted(ANNOTATION_FILES)}")
        if caption_sampling not in ("first", "random"):
            raise ValueError(f"caption_sampling must be 'first' or 'random', got {caption_sampling!r}")
        self.corpus, self.kind, self.caption_sampling = corpus, kind, caption_sampling
        self._fbanks: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.corpus) * (len(MCQA_TASKS) if self.kind == "mcqa" else 1)

    def _fbank(self, clip: int) -> torch.Tensor:
        if clip not in self._fbanks:
            self._fbanks[clip] = self.corpus.fbank(clip)
        return self._fbanks[clip]

    def __getitem__(self, index: int) -> dict[str, Any]:
        from iv2_data.annotations import pre_text
        from iv2_data.datasets import OPTION_LETTERS, mcqa_prompt

        if not 0 <= index < len(self):
            raise IndexError(f"synthetic {self.kind} dataset has {len(self)} items, index {index} is out of range")
        clip = index // len(MCQA_TASKS) if self.kind == "mcqa" else index
        sample = self.corpus[clip]
        path = f"videos/{clip:06d}.mp4"
        if self.kind in ("video_text", "image_text"):
            captions = sample["captions"]
            pick = int(torch.randint(len(captions), ()).item()) if self.caption_sampling == "random" else 0
            video = sample["video"]
            if self.kind == "image_text":
                middle = video.shape[1] // 2
                video, path = video[:, middle : middle + 1], f"images/{clip:06d}.png"
                pick = 0
            return {"video": video, "caption": pre_text(captions[pick]), "index": index, "path": path}
        if self.kind == "audio_text":
            return {
                "audio": self._fbank(clip),
                "caption": pre_text(sample["audio_caption"]),
                "index": index,
                "path": f"audio/{clip:06d}.wav",
            }
        if self.kind == "video_audio_text":
            return {
                "video": sample["video"],
                "audio": self._fbank(clip),
                "has_audio": True,
                "caption": pre_text(sample["avs_caption"]),
                "asr": pre_text(sample["asr"]),
                "index": index,
                "path": path,
            }
        if self.kind == "mcqa":
            item = sample["qa"][index % len(MCQA_TASKS)]
            answer_index = item["candidates"].index(item["answer"])
            letter = OPTION_LETTERS[answer_index]
            return {
                "video": sample["video"],
                "question": item["question"],
                "candidates": list(item["candidates"]),
                "answer": item["answer"],
                "answer_index": answer_index,
                "answer_letter": letter,
                "prompt": mcqa_prompt(item["question"], item["candidates"]),
                "target": f"({letter}) {item['answer']}",
                "task": item["task"],
                "index": index,
                "path": path,
            }
        turns = sample["conversation"]
        return {
            "video": sample["video"],
            "media_type": "video",
            "instruction": turns[0]["i"],
            "qa": [{"q": t["q"], "a": t["a"]} for t in turns],
            "index": index,
            "path": path,
        }


# ---------------------------------------------------------------------------------------------------------
# On disk


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
) -> None:
    """Write RGB ``frames`` ``(T, H, W, 3)`` uint8 as H.264 mp4, with mono float ``audio`` as AAC if given."""
    _write_mp4(Path(path), frames, fps, audio, sample_rate)


def _write_mp4(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None, sample_rate: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "12", "preset": "ultrafast"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate)


def _encode_audio(container: Any, stream: Any, audio: np.ndarray, sample_rate: int) -> None:
    import av

    chunk = 1024
    pts = 0
    for start in range(0, len(audio), chunk):
        piece = np.ascontiguousarray(audio[None, start : start + chunk], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = pts
        pts += piece.shape[1]
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import av

    pcm = np.clip(audio * 32767.0, -32768, 32767).astype(np.int16)[None, :]
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_png(path: Path, image: np.ndarray) -> None:
    import av

    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height = image.shape[1], image.shape[0]
        stream.pix_fmt = "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


ANNOTATION_FILES = {
    "video_text": "video_text.json",
    "image_text": "image_text.json",
    "audio_text": "audio_text.json",
    "video_audio_text": "video_audio_text.json",
    "mcqa": "mcqa.json",
    "instructions": "instructions.json",
}


def write_corpus(
    output_dir: str | os.PathLike[str],
    num_samples: int = 64,
    *,
    num_frames: int = 8,
    size: int = 64,
    fps: int = 8,
    seed: int = 0,
    with_audio_track: bool = True,
    progress: bool = False,
) -> dict[str, Path]:
    """Write the corpus as media files plus one annotation file per dataset kind; return those paths.

    Layout under ``output_dir``: ``videos/000000.mp4`` (H.264, with an AAC track unless
    ``with_audio_track=False``), ``audio/000000.wav`` (16 kHz mono), ``images/000000.png`` (the middle frame)
    and the annotation files of :data:`ANNOTATION_FILES` in the official layouts, media paths relative to
    ``output_dir``, plus ``corpus.json`` with the parameters and every clip's attributes. Files that already
    exist are kept, so an interrupted run can be resumed.
    """
    corpus = SyntheticCorpus(num_samples, num_frames, size, fps, seed)
    root = Path(output_dir)
    for sub in ("videos", "audio", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    annotations: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ANNOTATION_FILES}
    from iv2_data._progress import progress as progress_bar

    indices = progress_bar(range(num_samples), enabled=progress, desc="synthetic clips", unit="clip")
    for i in indices:
        spec = corpus.specs[i]
        name = f"{i:06d}"
        video_rel, audio_rel, image_rel = f"videos/{name}.mp4", f"audio/{name}.wav", f"images/{name}.png"
        frames = waveform = None
        if not (root / video_rel).exists() or not (root / image_rel).exists():
            frames = render_frames(spec, num_frames, size)
        if not (root / video_rel).exists() or not (root / audio_rel).exists():
            waveform = render_audio(spec, corpus.seconds, corpus.sample_rate)
        _write_atomically(
            root / video_rel,
            lambda p, f=frames, w=waveform: _write_mp4(p, f, fps, w if with_audio_track else None, corpus.sample_rate),
        )
        _write_atomically(root / audio_rel, lambda p, w=waveform: _write_wav(p, w, corpus.sample_rate))
        _write_atomically(root / image_rel, lambda p, f=frames: _write_png(p, f[len(f) // 2]))
        annotations["video_text"].append({"video": video_rel, "captions": spec.captions()})
        annotations["image_text"].append({"image": image_rel, "caption": spec.captions()[0]})
        annotations["audio_text"].append({"audio": audio_rel, "caption": spec.audio_caption()})
        annotations["video_audio_text"].append(
            {
                "video": video_rel,
                "caption": spec.avs_caption(),
                "visual_caption": spec.captions()[0],
                "audio_caption": spec.audio_caption(),
                "asr": spec.transcript(),
            }
        )
        for item in corpus.mcqa(i):
            annotations["mcqa"].append({"video": video_rel, **item})
        annotations["instructions"].append({"video": video_rel, "QA": _instruction(spec)})
    paths = {}
    for kind, filename in ANNOTATION_FILES.items():
        paths[kind] = root / filename
        paths[kind].write_text(json.dumps(annotations[kind], indent=1))
    meta = {
        "num_samples": num_samples,
        "num_frames": num_frames,
        "size": size,
        "fps": fps,
        "seed": seed,
        "clips": [asdict(s) for s in corpus.specs],
    }
    (root / "corpus.json").write_text(json.dumps(meta, indent=1))
    paths["root"] = root
    return paths


def _write_atomically(path: Path, write: Any) -> None:
    if path.exists():
        return
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    write(partial)
    os.replace(partial, path)


def reversed_spec(spec: ClipSpec) -> ClipSpec:
    """The same clip moving the opposite way (its frames are this clip's frames in reverse order)."""
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    return replace(spec, direction=opposite[spec.direction])
