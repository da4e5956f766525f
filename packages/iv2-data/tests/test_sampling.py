"""Frame choice shared by every reader: sliding windows (the tail covered), windows of a video, the official
stage-1 TSN rule and VideoChat2's clip window."""

from __future__ import annotations

import pytest
import torch

from iv2_data.sampling import clip_window, sample_frame_indices, sliding_windows, window_frame_indices


def test_sliding_windows_cover_the_tail() -> None:
    # issue 12 item 10: window 3, stride 2 on 8 frames stopped at frames 4..6 and never read frame 7
    assert sliding_windows(8, 3, 2) == [(0, 3), (2, 5), (4, 7), (5, 8)]
    assert sliding_windows(24, 16, 8) == [(0, 16), (8, 24)]  # already covered: no extra window
    assert sliding_windows(5, 16, 8) == [(0, 5)]  # shorter than a window: one window over all of it
    for total in range(1, 60):
        for window, stride in [(1, 1), (3, 2), (4, 4), (7, 3), (16, 8), (5, 9)]:
            windows = sliding_windows(total, window, stride)
            covered = {f for a, b in windows for f in range(a, b)}
            assert windows[-1][1] == total  # the last window ends at the last frame
            if stride <= window:  # (a stride longer than the window skips frames between windows on purpose)
                assert covered == set(range(total)), (total, window, stride)
            assert all(b - a == min(window, total) and 0 <= a < b <= total for a, b in windows)
            assert [a for a, _ in windows] == sorted({a for a, _ in windows})
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 3, 0)


def test_window_frame_indices_are_the_segment_rule_inside_the_window() -> None:
    # frames 3..7 (5 frames), 4 segment middles: linspace(0, 5, 5) = 0 1 2 3 5 -> middles 0 1 2 3, offset by 3
    assert window_frame_indices(3, 8, 4) == [3, 4, 5, 6]
    assert window_frame_indices(10, 30, 4) == [12, 17, 22, 27]
    with pytest.raises(ValueError, match="window"):
        window_frame_indices(5, 5, 4)


def test_clip_window_is_videochat2s_rule() -> None:
    # int(start * fps) = 10, int((end - start) * fps) = 20 frames
    assert clip_window(40, 25.0, 0.4, 1.2) == (10, 30)
    assert clip_window(40, 25.0, 1.5, 9.0) == (37, 40)  # kept inside the video
    assert clip_window(40, 25.0, 5.0, 6.0) == (39, 40)  # at least one frame


@pytest.mark.parametrize(("total", "n"), [(300, 16), (16, 16), (37, 16), (100, 8)])
def test_tsn_sampling_is_the_official_stage1_rule(total: int, n: int) -> None:
    """Official _sample_train_indices: segments of N // n frames from the start (the remainder at the end is
    never read), one uniformly random frame each."""
    length = total // n
    seen: list[set[int]] = [set() for _ in range(n)]
    for seed in range(200):
        indices = sample_frame_indices(total, n, "tsn", generator=torch.Generator().manual_seed(seed))
        assert len(indices) == n
        for i, frame in enumerate(indices):
            assert i * length <= frame < (i + 1) * length, (i, frame)
            seen[i].add(frame)
    assert all(len(s) == length for s in seen)  # every frame of every segment can be drawn
    again = sample_frame_indices(total, n, "tsn", generator=torch.Generator().manual_seed(3))
    assert again == sample_frame_indices(total, n, "tsn", generator=torch.Generator().manual_seed(3))


def test_tsn_sampling_of_a_short_video_takes_each_frame_once() -> None:
    assert sample_frame_indices(5, 8, "tsn") == [0, 1, 2, 3, 4, 4, 4, 4]
