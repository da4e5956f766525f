"""Audio loading and the log-Mel filter bank the InternVideo2 audio encoder (BEATs) is fed.

The pipeline is the official stage-2 one (``multi_modality/dataset/utils.py``): mono as the mean of the
channels, resample to 16 kHz, crop (random in training, the start otherwise) or zero-pad the waveform to 10 s,
scale by 2**15, Kaldi-compliant fbank with 64 Mel bins, 25 ms windows every 10 ms, then normalise with the
statistics the audio encoder was trained with. A 10 s clip gives 998 rows.

PyAV decodes (any container it reads, including the audio track of a video); torchaudio, the ``audio`` extra,
resamples and computes the filter bank. It is imported when first needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from iv2_data.media import AudioReadError, MediaSource, open_media

__all__ = [
    "FBANK_MEAN",
    "FBANK_NUM_FRAMES",
    "FBANK_NUM_MEL_BINS",
    "FBANK_STD",
    "SAMPLE_RATE",
    "AudioReadError",
    "load_waveform",
    "missing_audio_fbank",
    "mono_at",
    "read_audio_fbank",
    "waveform_to_fbank",
]

SAMPLE_RATE = 16_000
MAX_SECONDS = 10.0
FBANK_NUM_MEL_BINS = 64
FBANK_NUM_FRAMES = 998  # 1 + (160000 - 400) // 160 with Kaldi's snip_edges framing
# Dataset statistics of the stage-2 audio fbank (official MM/dataset/utils.py).
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582


def _torchaudio() -> Any:
    try:
        import torchaudio
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("audio features need torchaudio; install the extra: pip install 'iv2-data[audio]'") from error
    return torchaudio


def load_waveform(path: MediaSource) -> tuple[torch.Tensor, int] | None:
    """Decode the first audio stream of ``path`` (a file, or its bytes / a seekable file object) with PyAV.

    Returns ``(waveform, sample_rate)`` with ``waveform`` float32 ``(channels, samples)`` in [-1, 1], or ``None``
    when the file has no audio stream (a silent video). Raises :class:`AudioReadError` naming the file when it is
    missing, empty or cannot be decoded.
    """
    import av

    with open_media(path, "audio") as media:
        name = media.name
        stream = media.audio_stream(required=False)
        if stream is None:
            return None
        try:
            # Convert every frame to planar float at the first frame's rate and channel layout; mixing down
            # and resampling to 16 kHz happen in torch so that they match the reference pipeline exactly.
            # A stream whose layout or rate changes midway (broadcast recordings, concatenated files) gets a
            # converter per input setup, all with that same output, so the pieces join up.
            chunks: list[np.ndarray] = []
            sample_rate = stream.rate or stream.codec_context.sample_rate
            output: tuple[str, int] | None = None
            setup: tuple[str, str, int] | None = None
            resampler = None
            for frame in media.container.decode(stream):
                if output is None:
                    output = (frame.layout.name, frame.sample_rate or sample_rate)
                    sample_rate = output[1]
                if (frame.format.name, frame.layout.name, frame.sample_rate) != setup:
                    if resampler is not None:
                        chunks += [c.to_ndarray() for c in resampler.resample(None)]
                    setup = (frame.format.name, frame.layout.name, frame.sample_rate)
                    resampler = av.AudioResampler(format="fltp", layout=output[0], rate=output[1])
                chunks += [c.to_ndarray() for c in resampler.resample(frame)]
            if resampler is not None:
                chunks += [c.to_ndarray() for c in resampler.resample(None)]
        except (av.FFmpegError, ValueError) as error:  # PyAV raises ValueError for frames it cannot convert
            raise AudioReadError(name, f"FFmpeg cannot decode it ({error})") from error
    if not chunks:
        raise AudioReadError(name, "no audio samples could be decoded")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32, copy=False))
    if not sample_rate:
        raise AudioReadError(name, "the audio stream has no sample rate")
    return waveform, int(sample_rate)


def mono_at(waveform: torch.Tensor, sample_rate: int, target_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``(samples,)`` float32: the mean of the channels of a ``(channels, samples)`` waveform, resampled to
    ``target_rate`` (torchaudio's sinc resampler) — the first two steps of the official fbank pipeline."""
    torchaudio = _torchaudio()
    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.dim() != 2 or waveform.shape[1] == 0:
        raise ValueError(f"waveform must be (channels, samples) with samples > 0, got {tuple(waveform.shape)}")
    mono = waveform.float().mean(dim=0, keepdim=True)
    if sample_rate != target_rate:
        mono = torchaudio.functional.resample(mono, orig_freq=sample_rate, new_freq=target_rate)
    return mono[0]


def waveform_to_fbank(
    waveform: torch.Tensor,
    sample_rate: int,
    *,
    max_seconds: float = MAX_SECONDS,
    random_crop: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised 64-bin log-Mel filter bank of a ``(channels, samples)`` or ``(samples,)`` waveform.

    Returns float32 ``(frames, 64)``; ``frames`` is 998 for the default 10 s. Longer audio is cropped (at a
    random offset when ``random_crop``, as in training, else from the start); shorter audio is zero-padded.
    """
    torchaudio = _torchaudio()
    mono = mono_at(waveform, sample_rate)[None]
    target = round(max_seconds * SAMPLE_RATE)
    length = mono.shape[1]
    if length > target:
        start = 0
        if random_crop:
            start = int(torch.randint(0, length - target + 1, (1,), generator=generator).item())
        mono = mono[:, start : start + target]
    elif length < target:
        mono = torch.nn.functional.pad(mono, (0, target - length))
    # Kaldi defaults otherwise, as the official call: povey window (a Hamming-like window; the issue text says
    # Hamming, the released code uses the default), pre-emphasis 0.97, no dither, log energies.
    fbank = torchaudio.compliance.kaldi.fbank(
        mono * 2**15,
        sample_frequency=SAMPLE_RATE,
        num_mel_bins=FBANK_NUM_MEL_BINS,
        frame_length=25.0,
        frame_shift=10.0,
        dither=0.0,
    )
    return (fbank - FBANK_MEAN) / (FBANK_STD * 2)


def read_audio_fbank(
    path: MediaSource,
    *,
    max_seconds: float = MAX_SECONDS,
    random_crop: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Filter bank ``(998, 64)`` float32 of an audio file or of a video's audio track.

    Returns ``None`` when the file has no audio stream (datasets turn that into :func:`missing_audio_fbank`
    and a ``has_audio=False`` flag); raises :class:`AudioReadError` naming the file when it cannot be read.
    """
    decoded = load_waveform(path)
    if decoded is None:
        return None
    waveform, sample_rate = decoded
    return waveform_to_fbank(
        waveform, sample_rate, max_seconds=max_seconds, random_crop=random_crop, generator=generator
    )


def missing_audio_fbank(max_seconds: float = MAX_SECONDS) -> torch.Tensor:
    """The zero filter bank the official stage-2 code uses for a video without audio."""
    rows = 1 + (round(max_seconds * SAMPLE_RATE) - 400) // 160
    return torch.zeros(rows, FBANK_NUM_MEL_BINS, dtype=torch.float32)
