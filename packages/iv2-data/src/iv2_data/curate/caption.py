"""Stage 2 of curation: captions from separate video, audio and speech models, fused by an LLM.

The paper's VidCap: a video captioner, an audio captioner and an ASR model describe a clip separately, then
an LLM corrects and merges the three into one audio-visual-speech caption. Each role is a Protocol, so any
model fits. The implementations here wrap Hugging Face ``transformers`` pipelines (whisper for speech) from
model paths the user supplies; ``transformers`` (the ``captions`` extra) is imported only when one is built.
:mod:`.doubles` has deterministic stand-ins for tests and dry runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "FUSION_PROMPT",
    "AudioCaptioner",
    "CaptionFuser",
    "HFAudioCaptioner",
    "HFLLMFuser",
    "HFVideoCaptioner",
    "SpeechRecognizer",
    "TemplateFuser",
    "VideoCaptioner",
    "WhisperSpeechRecognizer",
]


@runtime_checkable
class VideoCaptioner(Protocol):
    def caption_video(self, path: str | os.PathLike[str]) -> str: ...


@runtime_checkable
class AudioCaptioner(Protocol):
    def caption_audio(self, path: str | os.PathLike[str]) -> str: ...


@runtime_checkable
class SpeechRecognizer(Protocol):
    def transcribe(self, path: str | os.PathLike[str]) -> str: ...


@runtime_checkable
class CaptionFuser(Protocol):
    def fuse(self, video_caption: str, audio_caption: str, speech: str) -> str: ...


def _pipeline(task: str, model: str, **kwargs: Any) -> Any:
    try:
        from transformers import pipeline
    except ImportError as error:
        raise ImportError(
            f"the {task!r} captioning model needs Hugging Face transformers (and Pillow); install the extra: "
            "pip install 'iv2-data[captions]'"
        ) from error
    return pipeline(task, model=model, **kwargs)


def _middle_frames(path: str | os.PathLike[str], count: int) -> list[np.ndarray]:
    """``count`` RGB frames at segment middles, decoded with PyAV."""
    from iv2_data.video import read_frames

    frames = read_frames(path, count, "middle")
    return [frame.numpy() if hasattr(frame, "numpy") else np.asarray(frame) for frame in frames]


def _mono_16k(path: str | os.PathLike[str]) -> np.ndarray | None:
    from iv2_data.audio import load_waveform, mono_at

    decoded = load_waveform(path)
    return None if decoded is None else mono_at(*decoded).numpy()


@dataclass
class HFVideoCaptioner:
    """Captions ``num_frames`` frames with an ``image-to-text`` pipeline and joins the distinct captions.
    ``model`` is a local path or hub id the user provides (no default weights are assumed)."""

    model: str
    num_frames: int = 3
    device: int | str | None = None
    _pipe: Any = field(default=None, init=False, repr=False)

    def caption_video(self, path: str | os.PathLike[str]) -> str:
        if self._pipe is None:
            self._pipe = _pipeline("image-to-text", self.model, device=self.device)
        from PIL import Image  # transformers' image pipelines require Pillow

        captions: list[str] = []
        for frame in _middle_frames(path, self.num_frames):
            text = self._pipe(Image.fromarray(frame))[0]["generated_text"].strip()
            if text and text not in captions:
                captions.append(text)
        return "; then ".join(captions)


@dataclass
class HFAudioCaptioner:
    """Describes the sound with an ``audio-classification`` pipeline (e.g. an AudioSet classifier): the
    labels scoring at least ``min_score``. Silent clips give ``""``."""

    model: str
    top_k: int = 3
    min_score: float = 0.2
    device: int | str | None = None
    _pipe: Any = field(default=None, init=False, repr=False)

    def caption_audio(self, path: str | os.PathLike[str]) -> str:
        audio = _mono_16k(path)
        if audio is None:
            return ""
        if self._pipe is None:
            self._pipe = _pipeline("audio-classification", self.model, device=self.device)
        labels = self._pipe({"raw": audio, "sampling_rate": 16_000}, top_k=self.top_k)
        kept = [item["label"].lower() for item in labels if item["score"] >= self.min_score]
        return ("the sound of " + ", ".join(kept)) if kept else ""


@dataclass
class WhisperSpeechRecognizer:
    """Speech transcript with an ``automatic-speech-recognition`` pipeline (a whisper checkpoint)."""

    model: str
    device: int | str | None = None
    _pipe: Any = field(default=None, init=False, repr=False)

    def transcribe(self, path: str | os.PathLike[str]) -> str:
        audio = _mono_16k(path)
        if audio is None:
            return ""
        if self._pipe is None:
            self._pipe = _pipeline("automatic-speech-recognition", self.model, device=self.device)
        return self._pipe({"raw": audio, "sampling_rate": 16_000})["text"].strip()


FUSION_PROMPT = (
    "Combine the descriptions of one video clip into a single fluent caption of one or two sentences. "
    "Correct obvious recognition errors, keep only what the sources support, and mention the sound and "
    "the speech when they are informative.\n"
    "Visual: {video}\nAudio: {audio}\nSpeech: {speech}\nCaption:"
)


@dataclass
class HFLLMFuser:
    """Fuses the three captions with a ``text-generation`` pipeline (an instruction-tuned LLM)."""

    model: str
    prompt: str = FUSION_PROMPT
    max_new_tokens: int = 80
    device: int | str | None = None
    _pipe: Any = field(default=None, init=False, repr=False)

    def fuse(self, video_caption: str, audio_caption: str, speech: str) -> str:
        if self._pipe is None:
            self._pipe = _pipeline("text-generation", self.model, device=self.device)
        prompt = self.prompt.format(video=video_caption, audio=audio_caption or "none", speech=speech or "none")
        out = self._pipe(prompt, max_new_tokens=self.max_new_tokens, do_sample=False, return_full_text=False)
        return out[0]["generated_text"].strip().split("\n")[0].strip()


@dataclass
class TemplateFuser:
    """A deterministic, model-free fuser: ``{video}[, with {audio}][; someone says "{speech}"]``."""

    def fuse(self, video_caption: str, audio_caption: str, speech: str) -> str:
        text = video_caption.strip()
        if audio_caption.strip():
            text += f", with {audio_caption.strip()}"
        if speech.strip():
            text += f'; someone says "{speech.strip()}"'
        return text
