import math

import pytest
import torch

from iv2_encoders import interpolate_pos_embed, sincos_3d


def formula(dim, grid, t_size):
    """The official 3D sin-cos rule evaluated element by element in float64."""
    dt, ds = dim // 4, dim // 4 * 3
    rows = [[0.0] * dim]
    for t in range(t_size):
        for h in range(grid):
            for w in range(grid):
                row = []
                for pos, d in ((t, dt), (w, ds // 2), (h, ds // 2)):
                    freqs = [1.0 / 10000 ** (k / (d / 2)) for k in range(d // 2)]
                    row += [math.sin(pos * f) for f in freqs] + [math.cos(pos * f) for f in freqs]
                rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("dim,grid,t", [(16, 3, 2), (48, 4, 3), (1408 // 8, 2, 2)])
def test_sincos_matches_formula(dim, grid, t):
    torch.testing.assert_close(sincos_3d(dim, grid, t).double(), formula(dim, grid, t), rtol=0, atol=2e-6)


def test_time_channels_come_first_and_cls_row_is_zero():
    table = sincos_3d(32, 2, 3)
    assert table.shape == (1 + 3 * 4, 32)
    assert table[0].abs().sum() == 0
    # the first D/4 channels depend only on t, the rest only on (h, w)
    body = table[1:].reshape(3, 4, 32)
    assert torch.equal(body[:, :1, :8].expand(3, 4, 8), body[:, :, :8])
    assert torch.equal(body[:1, :, 8:].expand(3, 4, 24), body[:, :, 8:])


def test_interpolation_to_the_same_grid_is_identity():
    table = torch.randn(1, 1 + 4 * 9, 8)
    assert interpolate_pos_embed(table, (4, 3, 3), (4, 3, 3)) is table


def test_temporal_interpolation_is_linear_with_half_pixel_centres():
    c, hw = 4, 4
    t0, t1 = 4, 8
    per_frame = torch.randn(t0, 1, c).expand(t0, hw, c)
    table = torch.cat([torch.full((1, c), 7.0), per_frame.reshape(-1, c)])[None]
    out = interpolate_pos_embed(table, (t0, 2, 2), (t1, 2, 2))
    assert out.shape == (1, 1 + t1 * hw, c)
    assert torch.equal(out[0, 0], table[0, 0])  # class row kept
    body = out[0, 1:].reshape(t1, hw, c)
    for i in range(t1):  # align_corners=False: source coordinate (i + 0.5) * t0 / t1 - 0.5, clamped
        src = min(max((i + 0.5) * t0 / t1 - 0.5, 0.0), t0 - 1)
        lo = math.floor(src)
        hi = min(lo + 1, t0 - 1)
        expected = per_frame[lo, 0] * (1 - (src - lo)) + per_frame[hi, 0] * (src - lo)
        torch.testing.assert_close(body[i], expected.expand(hw, c))


def test_spatial_interpolation_is_bicubic_per_frame():
    table = torch.randn(1, 1 + 2 * 16, 3)
    out = interpolate_pos_embed(table, (2, 4, 4), (2, 6, 6))
    frames = table[0, 1:].reshape(2, 4, 4, 3).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(frames, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[0, 1:].reshape(2, 6, 6, 3), expected.permute(0, 2, 3, 1))


def test_wrong_row_count_is_an_error():
    with pytest.raises(ValueError, match="rows"):
        interpolate_pos_embed(torch.randn(1, 10, 4), (2, 2, 2), (4, 2, 2))
