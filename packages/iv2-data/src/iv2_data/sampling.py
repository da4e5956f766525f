"""Which frames of a video to read: segment sampling, the official time-bound rules, sliding windows.

Everything here is index arithmetic on frame counts — no decoding — so every reader (datasets, extraction,
the synthetic corpus) picks frames by the same rules:

- :func:`sample_frame_indices`: ``n`` frames of a video (``"middle"``, ``"random"``, ``"tsn"``,
  ``"get_index"``);
- :func:`window_frame_indices`: the same inside a window ``[start, stop)`` of the video;
- :func:`sliding_windows`: windows of ``window`` frames every ``stride`` frames, the last one aligned to
  the end so that every frame is covered;
- :func:`clip_window`: VideoChat2's window for a record's ``start``/``end`` seconds;
- :func:`mvbench_frame_indices`: the MVBench rule over a question's time bound.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = [
    "SAMPLING_MODES",
    "clip_window",
    "mvbench_frame_indices",
    "sample_frame_indices",
    "sliding_windows",
    "window_frame_indices",
]

SAMPLING_MODES = ("middle", "random", "tsn", "get_index")


def sample_frame_indices(
    num_video_frames: int,
    num_frames: int,
    sampling: str = "middle",
    *,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Which ``num_frames`` frames of a video with ``num_video_frames`` frames to read, in order.

    - ``"middle"``: the video is cut into ``n`` segments with integer edges ``linspace(0, N, n + 1)`` and the
      middle frame of each, ``(a + b - 1) // 2`` for segment ``[a, b)``, is read — the official InternVideo2
      (stage 2) retrieval and zero-shot evaluation rule.
    - ``"random"``: a uniformly random frame of each of those segments (the official stage-2 training
      ``rand``, which draws from ``range(a, b - 1)``, never a segment's last frame, and fails on one-frame
      segments; we draw from the whole segment).
    - ``"tsn"``: the official stage-1 TSN rule (``_sample_train_indices``): ``n`` segments of ``N // n``
      frames from the start (the ``N mod n`` frames at the end are never read) and a uniformly random frame
      of each. [!] The official loader then reads frame ``offset − 1``, so its first segment can yield
      frame −1, which decord wraps to the last frame of the video; we read ``offset``.
    - ``"get_index"``: ``int(s / 2) + round(s * i)`` with ``s = (N - 1) / n`` — the ``get_index`` rule of
      the official VideoChat2 / InternVideo2-chat code.

    A video with fewer frames than asked (N < n): the segment rules take every frame once and pad with the
    last one, as the official stage-2 code does (N = 3, n = 8 → 0 1 2 2 2 2 2 2; the official stage-1 rule
    would read the last frame n times); ``"get_index"`` repeats frames along the way (0 0 0 1 1 1 2 2). The
    result always has ``num_frames`` non-decreasing indices in ``[0, N)``. Edges are computed as the
    official code does, with numpy's floating-point ``linspace`` (which can put an edge one frame lower than
    exact arithmetic).
    """
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    n, total = num_frames, num_video_frames
    if sampling == "get_index":
        seg = (total - 1) / n
        return [min(int(seg / 2) + round(seg * i), total - 1) for i in range(n)]
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLING_MODES}")
    if sampling == "tsn" and total >= n:
        length = total // n
        draws = torch.randint(length, (n,), generator=generator).tolist()
        return [i * length + d for i, d in enumerate(draws)]
    segments = min(n, total)
    # The official code's edges, floating-point rounding included (linspace(0, 30, 23)[11] is 14.999...).
    edges = np.linspace(0, total, segments + 1).astype(int).tolist()
    if sampling == "middle":
        out = [(a + b - 1) // 2 for a, b in itertools.pairwise(edges)]
    else:
        draws = torch.rand(segments, generator=generator, dtype=torch.float64).tolist()
        out = [a + min(int(u * (b - a)), b - a - 1) for (a, b), u in zip(itertools.pairwise(edges), draws)]
    return out + [out[-1]] * (n - segments)


def window_frame_indices(
    start: int,
    stop: int,
    num_frames: int,
    sampling: str = "middle",
    *,
    generator: torch.Generator | None = None,
) -> list[int]:
    """:func:`sample_frame_indices` inside the window ``[start, stop)`` of a video (absolute indices)."""
    if not 0 <= start < stop:
        raise ValueError(f"a frame window needs 0 <= start < stop, got [{start}, {stop})")
    return [start + i for i in sample_frame_indices(stop - start, num_frames, sampling, generator=generator)]


def sliding_windows(num_video_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``[start, stop)`` of ``window`` frames every ``stride`` frames, the last one ending at the last
    frame: with ``stride <= window`` every frame is in a window.

    Where the stride steps past the last full window (8 frames, window 3, stride 2: 0–2, 2–4, 4–6), one
    more window ends at the last frame (5–7), so the tail is never dropped. A video no longer than one
    window gets one window over all of it.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window} and {stride}")
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    if num_video_frames <= window:
        return [(0, num_video_frames)]
    starts = list(range(0, num_video_frames - window + 1, stride))
    if starts[-1] + window < num_video_frames:
        starts.append(num_video_frames - window)
    return [(s, s + window) for s in starts]


def clip_window(num_video_frames: int, fps: float, start: float, end: float) -> tuple[int, int]:
    """The frames ``[first, stop)`` of a record's ``start``/``end`` (seconds) as the official VideoChat2 reader
    takes them: ``int((end − start)·fps)`` frames from ``int(start·fps)``, kept inside the video (at least
    one frame)."""
    first = min(max(int(start * fps), 0), num_video_frames - 1)
    length = max(1, min(int((end - start) * fps), num_video_frames - first))
    return first, first + length


def mvbench_frame_indices(
    num_video_frames: int,
    fps: float,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
    first_index: int = 0,
) -> list[int]:
    """The official MVBench ``get_index``: frames ``int(s + seg/2 + round(seg·i))`` with ``seg = (e − s)/n``,
    ``s = max(first_index, round(start·fps))`` and ``e = min(round(end·fps), N − 1)``; without a bound
    (``start``/``end`` ``None``) the whole video, where it equals the ``"get_index"`` sampling. Indices are
    clamped to ``[0, N)`` (a bound past the end of the file)."""
    if num_video_frames < 1 or num_frames < 1:
        raise ValueError(f"need >= 1 video frame and >= 1 frame to read, got {num_video_frames}, {num_frames}")
    last = num_video_frames - 1
    s = max(first_index, round(start * fps)) if start is not None else first_index
    e = min(round(end * fps), last) if end is not None else last
    seg = (e - s) / num_frames
    return [min(max(int(s + seg / 2 + round(seg * i)), 0), last) for i in range(num_frames)]
