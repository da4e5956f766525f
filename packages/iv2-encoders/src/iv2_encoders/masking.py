"""Random patch-token masks for masked training of the encoder (the ``mask`` argument of
:meth:`VideoEncoder.forward`: ``(B, T'·H'·W')`` bool, True = dropped, the same count per sample).

Official: InternVideo2/multi_modality/models/mask.py (``RandomMaskingGenerator``, ``TubeMaskingGenerator``),
used by stage 2 (random, ratio 0.8 for video, 0.5 for images) and offered by stage 1. The official generators
shuffle with NumPy's global RNG; these draw from torch (an optional ``generator``), so a run is reproducible
from the torch seed that the training runtime checkpoints. The class column is not part of the mask (the
encoder always keeps the class token).
"""

from __future__ import annotations

import torch

__all__ = ["random_mask", "tube_mask"]

Grid = tuple[int, int, int]


def _check(mask_ratio: float, grid: Grid) -> None:
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be the token grid (T', H', W') of positive sizes, got {tuple(grid)}")


def random_mask(batch_size: int, grid: Grid, mask_ratio: float, generator: torch.Generator | None = None, *,
                device: torch.device | str | None = None) -> torch.Tensor:
    """``int(mask_ratio · T'H'W')`` tokens of each sample dropped, uniformly over the whole clip and independently
    per sample (official ``RandomMaskingGenerator``). Returns ``(batch_size, T'H'W')`` bool."""
    _check(mask_ratio, grid)
    n = int(grid[0]) * int(grid[1]) * int(grid[2])
    order = torch.rand(batch_size, n, generator=generator, device=device).argsort(dim=1)
    mask = torch.zeros(batch_size, n, dtype=torch.bool, device=device)
    return mask.scatter_(1, order[:, : int(mask_ratio * n)], True)


def tube_mask(batch_size: int, grid: Grid, mask_ratio: float, generator: torch.Generator | None = None, *,
              device: torch.device | str | None = None) -> torch.Tensor:
    """One random pattern of ``int(mask_ratio · H'W')`` dropped tokens per sample, repeated in every frame (a
    tube through time; official ``TubeMaskingGenerator``). Returns ``(batch_size, T'H'W')`` bool."""
    _check(mask_ratio, grid)
    frames, height, width = (int(g) for g in grid)
    return random_mask(batch_size, (1, height, width), mask_ratio, generator, device=device).repeat(1, frames)
