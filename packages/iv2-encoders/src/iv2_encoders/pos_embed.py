"""Fixed-formula 3D sin-cos position embedding and its interpolation to other frame counts and sizes.

Layout (official ``get_3d_sincos_pos_embed``): rows are a class-token row (zeros) followed by the tokens in
(t, h, w) order; the first ``D/4`` channels encode time, the other ``3D/4`` space, split in two halves: the
first half encodes the column (w) index and the second the row (h) index. Each 1D code of width ``d`` is
``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 10000 ** (-k / (d/2))``, computed in float32 like the official
numpy code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``(M,) -> (M, dim)`` sin-cos code of the given positions."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float32) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.reshape(-1, 1).float() * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_3d(dim: int, grid_size: int, t_size: int, cls_token: bool = True) -> torch.Tensor:
    """``(cls + t_size * grid_size**2, dim)`` 3D sin-cos table (square spatial grid, as the official one)."""
    if dim % 4:
        raise ValueError(f"3D sin-cos embedding width must divide by 4, got {dim}")
    dim_t, dim_s = dim // 4, dim // 4 * 3
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    spatial = torch.cat([sincos_1d(dim_s // 2, cols), sincos_1d(dim_s // 2, rows)], dim=1)  # (HW, 3D/4)
    temporal = sincos_1d(dim_t, torch.arange(t_size))  # (T, D/4)
    hw = grid_size * grid_size
    table = torch.cat([temporal[:, None, :].expand(t_size, hw, dim_t),
                       spatial[None, :, :].expand(t_size, hw, dim_s)], dim=-1).reshape(t_size * hw, dim)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim), table], dim=0)
    return table


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    src_grid: tuple[int, int, int],
    dst_grid: tuple[int, int, int],
    num_extra_tokens: int = 1,
) -> torch.Tensor:
    """Resample a ``(1, extra + T*H*W, C)`` table from ``src_grid`` (T, H, W) to ``dst_grid``.

    As the official loader: extra (class) rows are kept; time is resampled first, linearly
    (``align_corners=False``), then space, bicubically (``align_corners=False``). Equal grids return the
    input unchanged. Computed in float32 and returned in the input dtype.
    """
    (t0, h0, w0), (t1, h1, w1) = src_grid, dst_grid
    if pos_embed.ndim == 2:
        pos_embed = pos_embed[None]
    c = pos_embed.shape[-1]
    if pos_embed.shape[1] != num_extra_tokens + t0 * h0 * w0:
        raise ValueError(
            f"position embedding has {pos_embed.shape[1]} rows, expected {num_extra_tokens} + {t0}x{h0}x{w0}"
        )
    if (t0, h0, w0) == (t1, h1, w1):
        return pos_embed
    dtype = pos_embed.dtype
    extra, tokens = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:].float()
    if t0 != t1:
        x = tokens.reshape(t0, h0 * w0 * c).transpose(0, 1)[None]  # (1, HW*C, T)
        x = F.interpolate(x, size=t1, mode="linear", align_corners=False)
        tokens = x[0].transpose(0, 1).reshape(1, t1 * h0 * w0, c)
    if (h0, w0) != (h1, w1):
        x = tokens.reshape(t1, h0, w0, c).permute(0, 3, 1, 2)  # (T, C, H, W)
        x = F.interpolate(x, size=(h1, w1), mode="bicubic", align_corners=False)
        tokens = x.permute(0, 2, 3, 1).reshape(1, t1 * h1 * w1, c)
    return torch.cat([extra, tokens.to(dtype)], dim=1)
