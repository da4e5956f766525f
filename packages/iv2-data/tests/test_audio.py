"""Audio filter bank: shape, the tone's Mel bin, padding/cropping, silent videos and broken files."""

from __future__ import annotations

import math
import os
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchaudio", reason="the audio extra (torchaudio) is not installed")

from iv2_data.audio import (
    FBANK_MEAN,
    FBANK_STD,
    AudioReadError,
    load_waveform,
    read_audio_fbank,
    waveform_to_fbank,
)

SHARED_WAV = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "audio_16k_stereo_6s.wav"


def kaldi_mel_bin_of(frequency: float, num_bins: int = 64, low: float = 20.0, high: float = 8000.0) -> int:
    """The Mel bin whose centre is nearest ``frequency``: Kaldi's bins are evenly spaced on
    mel = 1127 ln(1 + f / 700) between low and high (default high = Nyquist)."""
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)
    step = (mel(high) - mel(low)) / (num_bins + 1)
    centres = [mel(low) + (i + 1) * step for i in range(num_bins)]
    return min(range(num_bins), key=lambda i: abs(centres[i] - mel(frequency)))


def write_wav(path: Path, channels: np.ndarray, sample_rate: int) -> None:
    """Write (channels, samples) floats in [-1, 1] as 16-bit PCM with the standard library only."""
    pcm = (np.clip(channels, -1, 1) * 32767).astype("<i2").T.copy()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels.shape[0])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def tone(frequency: float, seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return 0.5 * np.sin(2 * np.pi * frequency * t)


@pytest.mark.parametrize("frequency", [440.0, 1000.0, 3000.0])
def test_tone_peaks_in_its_mel_bin(frequency: float) -> None:
    fbank = waveform_to_fbank(torch.from_numpy(tone(frequency, 2.0, 16_000)).float(), 16_000)
    assert fbank.shape == (998, 64)
    voiced = fbank[5:190]  # 2 s of tone = frames 0..197
    assert int(voiced.mean(0).argmax()) == kaldi_mel_bin_of(frequency)


def test_stereo_44k_file_is_mixed_resampled_and_padded(tmp_path: Path) -> None:
    left = tone(1000.0, 2.0, 44_100)
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([left, np.zeros_like(left)]), 44_100)
    waveform, rate = load_waveform(path)
    assert rate == 44_100 and waveform.shape == (2, left.size)
    fbank = read_audio_fbank(path)
    assert fbank.shape == (998, 64) and fbank.dtype == torch.float32
    assert int(fbank[5:190].mean(0).argmax()) == kaldi_mel_bin_of(1000.0)
    # Zero padding after 2 s: every padded row is Kaldi's log floor, log(float eps), normalised.
    floor = (math.log(torch.finfo(torch.float32).eps) - FBANK_MEAN) / (2 * FBANK_STD)
    torch.testing.assert_close(fbank[300:], torch.full_like(fbank[300:], floor), atol=1e-3, rtol=0)


def test_fbank_equals_the_official_recipe_step_by_step() -> None:
    """The official MM/dataset/utils.py steps, written out with REFERENCE.md g's literal numbers (not the
    module's constants): resample each channel to 16 kHz, mean of the two channels, zero-pad to 160000
    samples, ×2**15, Kaldi fbank (64 bins, 25/10 ms), (f − 15.41663) / (2 · 6.55582). Pins the scale, the
    bin count and the statistics, which the tone/shape tests above cannot see."""
    import torchaudio

    rng = np.random.default_rng(0)
    stereo = torch.from_numpy(0.3 * rng.standard_normal((2, 44_100 * 3))).float()
    resampled = torchaudio.transforms.Resample(44_100, 16_000)(stereo)
    mono = resampled.mean(dim=0)
    mono = torch.nn.functional.pad(mono, (0, 160_000 - mono.shape[0]))[None]
    raw = torchaudio.compliance.kaldi.fbank(
        mono * 2**15, num_mel_bins=64, sample_frequency=16000, frame_length=25, frame_shift=10
    )
    expected = (raw - 15.41663) / (6.55582 * 2)
    got = waveform_to_fbank(stereo, 44_100)
    assert got.shape == expected.shape == (998, 64)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_long_audio_is_cropped_to_ten_seconds() -> None:
    wave_12s = torch.from_numpy(tone(500.0, 12.0, 16_000)).float()
    wave_12s[16_000 * 11 :] = 0  # silence at the end tells where a crop came from
    head = waveform_to_fbank(wave_12s, 16_000)
    assert head.shape == (998, 64)
    torch.testing.assert_close(head, waveform_to_fbank(wave_12s[:160_000], 16_000))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = waveform_to_fbank(wave_12s, 16_000, random_crop=True, generator=g1)
    b = waveform_to_fbank(wave_12s, 16_000, random_crop=True, generator=g2)
    assert a.shape == (998, 64)
    torch.testing.assert_close(a, b)


def test_shared_stereo_file() -> None:
    if not SHARED_WAV.is_file():
        pytest.skip(f"shared sample {SHARED_WAV} is not present in this checkout")
    with wave.open(str(SHARED_WAV)) as reference:  # decoded independently by the standard library
        expected = np.frombuffer(reference.readframes(reference.getnframes()), "<i2").reshape(-1, 2).T
    waveform, rate = load_waveform(SHARED_WAV)
    assert rate == 16_000 and waveform.shape == expected.shape  # 2 channels, 6.56 s
    torch.testing.assert_close(waveform, torch.from_numpy(expected / 32768.0).float())
    fbank = read_audio_fbank(SHARED_WAV)
    assert fbank.shape == (998, 64) and torch.isfinite(fbank).all()
    # 6.56 s of audio (frames 0..653), then zero padding: the padded tail is flat, the audio part is not.
    assert fbank[660:].std() < 1e-4
    assert fbank[:650].std() > 0.05


def write_adts(path: Path, channels: int, frequency: float, seconds: float = 1.0, rate: int = 16_000) -> None:
    import av

    layout = "mono" if channels == 1 else "stereo"
    data = np.tile(tone(frequency, seconds, rate).astype(np.float32), (channels, 1))
    with av.open(str(path), "w", format="adts") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        for start in range(0, data.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[:, start : start + 1024]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_channel_layout_changing_midstream(tmp_path: Path) -> None:
    """A mono stretch followed by a stereo one in one AAC stream (concatenated ADTS files, as broadcast
    recordings switch): every frame is converted to the first frame's layout, nothing crashes."""
    write_adts(tmp_path / "mono.aac", 1, 440.0)
    write_adts(tmp_path / "stereo.aac", 2, 1000.0)
    joined = tmp_path / "joined.aac"
    joined.write_bytes((tmp_path / "mono.aac").read_bytes() + (tmp_path / "stereo.aac").read_bytes())
    waveform, rate = load_waveform(joined)
    assert rate == 16_000 and waveform.shape[0] == 1
    assert 2 * 16_000 <= waveform.shape[1] <= 2 * 16_000 + 4 * 1024  # both halves (plus AAC priming)
    fbank = read_audio_fbank(joined)
    assert int(fbank[10:90].mean(0).argmax()) == kaldi_mel_bin_of(440.0)
    assert int(fbank[115:190].mean(0).argmax()) == kaldi_mel_bin_of(1000.0)


def test_unknown_audio_codec_is_an_audio_read_error(tmp_path: Path) -> None:
    """Codec tag and decoder config renamed (as damage does): FFmpeg keeps the stream but has no codec for it.
    That must be an AudioReadError naming the file, not an AttributeError from PyAV's stream proxy."""
    from iv2_data.synthetic import write_corpus

    paths = write_corpus(tmp_path, 1, num_frames=4, size=32)
    data = (paths["root"] / "videos" / "000000.mp4").read_bytes()
    assert data.count(b"mp4a") == 1 and data.count(b"esds") == 1
    damaged = tmp_path / "unknown_codec.mp4"
    damaged.write_bytes(data.replace(b"mp4a", b"zzzz").replace(b"esds", b"zzzz"))
    with pytest.raises(AudioReadError, match="codec is unknown") as info:
        read_audio_fbank(damaged)
    assert "unknown_codec.mp4" in str(info.value)


def test_file_with_a_non_utf8_tag_is_read(tmp_path: Path) -> None:
    """Old WAV/MP3 files carry Latin-1 tags; a title the metadata decoder cannot read must not make the audio
    unreadable."""
    import struct

    pcm = (tone(440.0, 1.0, 16_000) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    info = b"INFO" + b"INAM" + struct.pack("<I", 6) + b"Caf\xe9\x00\x00"  # "Café" in Latin-1
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", len(info)) + info
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    path = tmp_path / "latin1.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    fbank = read_audio_fbank(path)
    assert fbank.shape == (998, 64)
    assert int(fbank[5:90].mean(0).argmax()) == kaldi_mel_bin_of(440.0)


def test_video_without_audio_returns_none(tmp_path: Path) -> None:
    from iv2_data.synthetic import write_corpus

    paths = write_corpus(tmp_path, 1, num_frames=4, size=32, with_audio_track=False)
    assert read_audio_fbank(paths["root"] / "videos" / "000000.mp4") is None


@pytest.mark.parametrize("content", [None, b"", b"RIFF not really a wave file" * 20])
def test_unreadable_audio_raises_naming_the_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioReadError, match="broken.wav"):
        read_audio_fbank(path)


def test_directory_and_fifo_are_named_for_what_they_are(tmp_path: Path) -> None:
    folder = tmp_path / "clips.wav"
    folder.mkdir()
    with pytest.raises(AudioReadError, match="is a directory") as info:
        read_audio_fbank(folder)
    assert "no such file" not in str(info.value)  # it exists: saying otherwise sends the user the wrong way
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.wav"
        os.mkfifo(fifo)
        with pytest.raises(AudioReadError, match="not a regular file"):
            read_audio_fbank(fifo)


def test_audio_read_error_survives_pickling_between_processes() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(AudioReadError("/data/a.wav", "no such file")))
    assert isinstance(error, OSError) and error.path == "/data/a.wav"
    assert str(error) == "cannot read audio '/data/a.wav': no such file"
