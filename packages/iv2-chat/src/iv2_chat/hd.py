"""HD inputs: the InternVL-1.5 tiling rule of the official HD post-training (Ask-Anything
``dataset/hd_utils.py::HD_transform_no_padding``, ``dynamic_config`` local_size 224, hd_num 6, add_global).

1. :func:`hd_grid` picks ``(cols, rows)`` with ``1 <= cols·rows <= max_tiles`` whose ratio ``cols/rows`` is
   closest to the frame's ``W/H``. Candidates are visited in the official order (``sorted(set(...),
   key=cols·rows)``; within one product that is CPython's iteration order of the set, which is fixed for
   small-int tuples); on an exact tie the later candidate wins when ``W·H > 0.5·size²·cols·rows``.
2. :func:`hd_transform` resizes every frame bicubically to ``(rows·size, cols·size)`` on 0–255 floats,
   without clamping (values overshoot [0, 255] near edges, as in the official pipeline, which then divides by
   255 and normalises).
3. :func:`hd_sub_videos` cuts the normalised clip into ``size × size`` tiles (row-major, each holding all T
   frames) and appends the global view: the whole normalised clip resized bicubically to ``size × size``.
   Each sub-video then goes through the tower and the QFormer; the LLM gets ``Q·(cols·rows + 1)`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from iv2_data import IMAGENET_MEAN, IMAGENET_STD


def hd_candidates(max_tiles: int) -> list[tuple[int, int]]:
    """``(cols, rows)`` grids with ``1 <= cols·rows <= max_tiles`` in the official visiting order."""
    grids = {(i, j) for n in range(1, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if 1 <= i * j <= max_tiles}
    return sorted(grids, key=lambda g: g[0] * g[1])


def hd_grid(width: int, height: int, size: int = 224, max_tiles: int = 6) -> tuple[int, int]:
    """The ``(cols, rows)`` grid the official rule picks for a ``width × height`` frame."""
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in hd_candidates(max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * size * size * cols * rows:
            best = (cols, rows)
    return best


def hd_transform(
    frames: torch.Tensor, size: int = 224, max_tiles: int = 6
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize ``(T, 3, H, W)`` frames in 0–255 to the HD grid: returns ``(resized, (cols, rows))`` with
    ``resized`` float ``(T, 3, rows·size, cols·size)`` (bicubic, ``align_corners=False``, not clamped)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        frames = frames.float()
    cols, rows = hd_grid(frames.shape[-1], frames.shape[-2], size, max_tiles)
    resized = F.interpolate(frames, size=(rows * size, cols * size), mode="bicubic", align_corners=False)
    return resized, (cols, rows)


def hd_sub_videos(video: torch.Tensor, size: int = 224) -> torch.Tensor:
    """``(3, T, rows·size, cols·size)`` normalised clip → ``(rows·cols + 1, 3, T, size, size)``: the tiles in
    row-major order, then the global view (the clip resized bicubically to ``size × size``)."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be (3, T, H, W), got shape {tuple(video.shape)}")
    c, t, h, w = video.shape
    if h % size or w % size:
        raise ValueError(f"an HD clip must be a multiple of {size} on both sides, got {h}x{w} "
                         f"(resize it with hd_transform first)")
    rows, cols = h // size, w // size
    tiles = video.reshape(c, t, rows, size, cols, size).permute(2, 4, 0, 1, 3, 5).reshape(-1, c, t, size, size)
    frames = video.transpose(0, 1)  # (T, 3, H, W): the global view resizes each frame
    glob = F.interpolate(frames.float(), size=(size, size), mode="bicubic", align_corners=False).to(video.dtype)
    return torch.cat([tiles, glob.transpose(0, 1)[None]], dim=0)


def hd_preprocess(
    frames: torch.Tensor,
    size: int = 224,
    max_tiles: int = 6,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(T, 3, H, W)`` frames in 0–255 → the normalised HD clip ``(3, T, rows·size, cols·size)`` and its
    ``(cols, rows)``: :func:`hd_transform`, then ``/255`` and the mean/std normalisation (ImageNet, as the
    official HD training)."""
    resized, grid = hd_transform(frames, size, max_tiles)
    m = torch.tensor(mean, dtype=resized.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=resized.dtype).view(1, 3, 1, 1)
    return ((resized / 255.0 - m) / s).transpose(0, 1).contiguous(), grid


@dataclass(frozen=True)
class HDTransform:
    """An ``iv2_data`` video transform (``VideoReadConfig(transform=...)``) giving HD clips: decoded uint8
    ``(T, H, W, 3)`` frames → :func:`hd_preprocess` → normalised ``(3, T, rows·size, cols·size)``. The reader's
    raw 0–255 frames go straight into the official HD rule (no crop, no augmentation, as the HD trainer)."""

    size: int = 224
    max_tiles: int = 6
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got shape {tuple(frames.shape)}")
        clip, _ = hd_preprocess(frames.permute(0, 3, 1, 2).float(), self.size, self.max_tiles, self.mean, self.std)
        return clip
