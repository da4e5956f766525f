"""Frame transforms for video clips: evaluation (centre crop, or the official squash) and training (random resized
crop or multi-scale crop, flip).

Four transforms: :class:`CenterCropTransform` (evaluation, the default of ``read_clip``), :class:`ResizeTransform`
(the official stage-2 evaluation: the whole frame squashed to a square), :class:`RandomResizedCropTransform`
(stage-2 training) and :class:`GroupMultiScaleCrop` (stage-1 training). Each takes decoded frames as a ``uint8``
tensor ``(T, H, W, 3)`` (RGB, as :func:`iv2_data.read_frames` returns them) and gives a normalised ``float32``
tensor ``(3, T, size, size)``, the layout the InternVideo2 encoders take. All frames of a clip get the same crop
and flip.

Resizing is bicubic (bilinear for the stage-1 crop, as its official code) with antialiasing, done by torch on
``uint8`` pixels (``F.interpolate(..., antialias=True)`` with the same kernel and fixed-point rounding as PIL), as
the official pipelines resize with PIL/torchvision transforms. Each transform crops first and resizes the crop, so
the work is proportional to the crop, not the whole frame. For the evaluation transform that is the same as
"resize the short side to ``size``, then centre-crop ``size × size``" up to sub-pixel placement of the crop and the
filter's support at its border.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCropTransform",
    "GroupMultiScaleCrop",
    "RandomResizedCropTransform",
    "ResizeTransform",
    "center_crop_box",
    "fixed_crop_offsets",
    "multi_scale_crop_sizes",
    "normalize",
    "random_resized_crop_box",
    "resize_crop",
]

# The normalisation every official InternVideo2 pipeline uses (REFERENCE.md d., n.).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The official MVBench evaluation notebook normalises with CLIP's statistics instead (REFERENCE.md m.); pass
# ``mean=CLIP_MEAN, std=CLIP_STD`` to a transform to reproduce it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"expected non-empty frames, got shape {tuple(frames.shape)}")


def center_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The largest centred square ``(top, left, side, side)`` of a ``height × width`` frame."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """A crop ``(top, left, crop_height, crop_width)`` covering a random fraction of the frame area.

    The area fraction is uniform in ``scale`` and the aspect ratio log-uniform in ``ratio`` (the
    RandomResizedCrop rule); after 10 rejected draws it falls back to the largest centred crop whose aspect
    lies in ``ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = min(int(u[2] * (height - crop_h + 1)), height - crop_h)
            left = min(int(u[3] * (width - crop_w + 1)), width - crop_w)
            return top, left, crop_h, crop_w
    frame_ratio = width / height
    if frame_ratio < ratio[0]:
        crop_w, crop_h = width, round(width / ratio[0])
    elif frame_ratio > ratio[1]:
        crop_h, crop_w = height, round(height * ratio[1])
    else:
        crop_h, crop_w = height, width
    crop_h, crop_w = max(1, min(crop_h, height)), max(1, min(crop_w, width))
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def _crop_resize(
    frames: torch.Tensor, box: tuple[int, int, int, int], size: int | tuple[int, int], interpolation: str
) -> torch.Tensor:
    """``(T, 3, out_h, out_w)`` pixels in ``[0, 255]``: ``uint8`` for bilinear/bicubic, else ``float32``."""
    _check_frames(frames)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    top, left, crop_h, crop_w = box
    crop = frames[:, top : top + crop_h, left : left + crop_w, :].permute(0, 3, 1, 2)  # (T, 3, h, w) view
    if (crop_h, crop_w) == (out_h, out_w):
        return crop
    if interpolation in ("bilinear", "bicubic") and crop.dtype == torch.uint8:
        # torch's uint8 antialiased resize (channels-last, fixed point, like PIL's) is several times faster
        # than resizing floats and rounds to uint8 as the official PIL-based pipelines do.
        crop = crop.contiguous(memory_format=torch.channels_last)
        return F.interpolate(crop, size=(out_h, out_w), mode=interpolation, antialias=True)
    antialias = interpolation in ("bilinear", "bicubic")
    kwargs = {"align_corners": False} if antialias else {}
    x = F.interpolate(crop.float(), size=(out_h, out_w), mode=interpolation, antialias=antialias, **kwargs)
    return x.clamp_(0.0, 255.0)  # bicubic overshoots at edges


def _normalized(
    pixels: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """``(T, 3, h, w)`` pixels in ``[0, 255]`` → ``float32 (3, T, h, w)`` ``(x / 255 - mean) / std``, in one
    transposing copy and one fused multiply-add."""
    out = torch.empty((3, pixels.shape[0], *pixels.shape[2:]), dtype=torch.float32)
    out.copy_(pixels.permute(1, 0, 2, 3))
    scale = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32).view(3, 1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(3, 1, 1, 1)
    return out.mul_(scale).add_(shift)


def resize_crop(
    frames: torch.Tensor,
    box: tuple[int, int, int, int],
    size: int | tuple[int, int],
    *,
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Cut ``box = (top, left, h, w)`` out of ``uint8 (T, H, W, 3)`` frames and resize it to ``size``.

    Returns ``float32 (3, T, out_h, out_w)`` in ``[0, 1]`` (not yet normalised).
    """
    return _normalized(_crop_resize(frames, box, size, interpolation), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def normalize(
    video: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """Normalise ``(3, T, H, W)`` values in ``[0, 1]`` per channel, in place."""
    m = torch.tensor(mean, dtype=video.dtype).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=video.dtype).view(3, 1, 1, 1)
    return video.sub_(m).div_(s)


def _crop_flip_normalize(
    transform: RandomResizedCropTransform | GroupMultiScaleCrop,
    frames: torch.Tensor,
    box: tuple[int, int, int, int],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The training transforms' common tail: crop + resize, a horizontal flip with ``flip_prob``, normalise."""
    pixels = _crop_resize(frames, box, transform.size, transform.interpolation)
    if transform.flip_prob > 0 and torch.rand((), generator=generator).item() < transform.flip_prob:
        pixels = pixels.flip(-1)
    return _normalized(pixels, transform.mean, transform.std)


@dataclass(frozen=True)
class _FixedBoxTransform:
    """Evaluation transforms: one deterministic box per frame size, resized to ``size × size``, normalised."""

    size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_frames(frames)
        box = self.box(frames.shape[1], frames.shape[2])
        return _normalized(_crop_resize(frames, box, self.size, self.interpolation), self.mean, self.std)


@dataclass(frozen=True)
class CenterCropTransform(_FixedBoxTransform):
    """Evaluation transform: short side to ``size``, centre ``size × size`` crop, ImageNet normalisation
    (``mean``/``std``: e.g. :data:`CLIP_MEAN` / :data:`CLIP_STD` for the official MVBench evaluation)."""

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        return center_crop_box(height, width)


@dataclass(frozen=True)
class ResizeTransform(_FixedBoxTransform):
    """The whole frame resized to ``size × size`` (aspect not kept, nothing cropped), ImageNet normalisation.

    This is the official stage-2 retrieval / zero-shot evaluation transform (``Resize((224, 224))``, bicubic;
    REFERENCE.md n.); use it to reproduce those numbers exactly. :class:`CenterCropTransform` is the default.
    """

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        return 0, 0, height, width


@dataclass(frozen=True)
class RandomResizedCropTransform:
    """Training transform: random resized crop (area ``scale``, aspect ``ratio``), then a horizontal flip
    with probability ``flip_prob``, then ImageNet normalisation; the same crop and flip for all frames.

    The defaults follow the official stage-2 training pipeline: ``RandomResizedCrop(224, scale=(0.5, 1.0))``
    (bicubic) and a horizontal flip (REFERENCE.md n.). Pass ``flip_prob=0`` for data where left and right
    matter (the official code does so for Something-Something).
    """

    size: int = 224
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_frames(frames)
        box = random_resized_crop_box(frames.shape[1], frames.shape[2], self.scale, self.ratio, generator=generator)
        return _crop_flip_normalize(self, frames, box, generator)


def multi_scale_crop_sizes(
    height: int,
    width: int,
    output_size: tuple[int, int] = (224, 224),
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66),
    max_distort: int = 1,
) -> list[tuple[int, int]]:
    """The official ``GroupMultiScaleCrop`` crop candidates ``(crop_w, crop_h)`` for a ``height × width`` frame.

    Side lengths are ``int(min(H, W) · scale)``, snapped to the output side when within 2 pixels of it; a
    candidate pairs a height scale ``i`` with a width scale ``j`` where ``|i − j| <= max_distort``, listed
    for ``i`` then ``j`` in ``scales`` order (the order matters: the draw is uniform over this list).
    """
    out_h, out_w = output_size
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    crop_h = [out_h if abs(x - out_h) < 3 else x for x in sides]
    crop_w = [out_w if abs(x - out_w) < 3 else x for x in sides]
    return [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]


def fixed_crop_offsets(
    height: int, width: int, crop_h: int, crop_w: int, more_fix_crop: bool = True
) -> list[tuple[int, int]]:
    """The official fixed crop positions ``(left, top)``: corners and centre on a 4 × 4 grid of steps
    ``((W − w) // 4, (H − h) // 4)``; ``more_fix_crop`` adds the edge middles and the four quarter points
    (13 positions, in the official order)."""
    w_step, h_step = (width - crop_w) // 4, (height - crop_h) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]
    if more_fix_crop:
        grid += [(0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(a * w_step, b * h_step) for a, b in grid]


@dataclass(frozen=True)
class GroupMultiScaleCrop:
    """Stage-1 training transform, the official ``GroupMultiScaleCrop(224, [1, .875, .75, .66])`` followed by
    ``GroupRandomHorizontalFlip`` and ImageNet normalisation (REFERENCE.md d.).

    One crop for the whole clip: a size drawn uniformly from :func:`multi_scale_crop_sizes` (aspect distorted
    by at most ``max_distort`` scale steps), placed at one of the :func:`fixed_crop_offsets` (``fix_crop``;
    else anywhere), resized to ``size × size`` bilinearly (PIL's antialiased bilinear, as the official code),
    then flipped horizontally with probability ``flip_prob``. The official pipeline turns the flip off for
    Something-Something (``source == "ssv2"``), where left and right carry the label: a dataset does that per
    record through :meth:`iv2_data.VideoReadConfig.transform_for`.
    """

    size: int = 224
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_distort: int = 1
    fix_crop: bool = True
    more_fix_crop: bool = True
    flip_prob: float = 0.5
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def crop_box(self, height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
        """A random crop ``(top, left, crop_h, crop_w)`` of a ``height × width`` frame."""
        sizes = multi_scale_crop_sizes(height, width, (self.size, self.size), self.scales, self.max_distort)
        crop_w, crop_h = sizes[int(torch.randint(len(sizes), (), generator=generator))]
        crop_w, crop_h = min(crop_w, width), min(crop_h, height)  # a snapped side can exceed a tiny frame
        if self.fix_crop:
            offsets = fixed_crop_offsets(height, width, crop_h, crop_w, self.more_fix_crop)
            left, top = offsets[int(torch.randint(len(offsets), (), generator=generator))]
        else:
            left = int(torch.randint(width - crop_w + 1, (), generator=generator))
            top = int(torch.randint(height - crop_h + 1, (), generator=generator))
        return top, left, crop_h, crop_w

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_frames(frames)
        return _crop_flip_normalize(self, frames, self.crop_box(frames.shape[1], frames.shape[2], generator), generator)
