"""The teacher protocol of stage 1 and what every teacher returns.

A teacher is frozen (no parameter requires grad), always in ``eval()`` (``train()`` does not change it), runs
under ``torch.no_grad()``, accepts a clip in any float dtype (cast to its own) and returns a
:class:`TeacherOutput` in float32 on the student's token grid. Image teachers run frame by frame (frames folded
into the batch, as the official InternViT teacher); :class:`DistillTeachers` combines an image teacher and a
video teacher the way the official pipeline feeds them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from iv2_encoders import VideoEncoderConfig

from ..config import return_layer_indices
from ..model import l2_normalize


@dataclass
class TeacherOutput:
    """What the teachers give for the full, unmasked clip, normalised the official way (float32).

    ``clip_middle`` (K, B, 1 + T·HW, C): the image teacher's tapped layers; its class row is the raw per-frame
    class token averaged over T, then every token is L2-normalised. ``clip_final`` (B, C): L2(mean over T of the
    per-frame pooled vector). ``mae`` (K, B, T·HW, C): the video teacher's tapped layers, L2 per token (its final
    LayerNorm on the last block only). ``saliency`` (B, T, HW): the non-negative attention that
    :func:`~iv2_distill.attention_mask` draws from. Fields a teacher does not produce are None.
    """

    clip_middle: torch.Tensor | None
    clip_final: torch.Tensor | None
    mae: torch.Tensor | None = None
    saliency: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields that are set, by name (what a target cache stores)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TeacherOutput:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(tensors) - names)
        if unknown:
            raise KeyError(f"unknown TeacherOutput field(s) {unknown}; known: {sorted(names)}")
        return cls(**{n: tensors.get(n) for n in names})

    def to(self, *args, **kwargs) -> TeacherOutput:
        """``Tensor.to`` on every field that is set."""
        return TeacherOutput(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(
            *args, **kwargs) for f in fields(self)})

    def merge(self, other: TeacherOutput) -> TeacherOutput:
        """Fields of ``self`` completed by those of ``other``; a field set on both sides is an error."""
        out = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is not None and theirs is not None:
                raise ValueError(f"both teachers produce {f.name!r}")
            out[f.name] = mine if mine is not None else theirs
        return TeacherOutput(**out)


class FrozenTeacher(nn.Module, abc.ABC):
    """Base of every teacher: wraps a pretrained ``model``, freezes it and keeps it in eval mode."""

    kind = "teacher"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        # A teacher never leaves eval mode (dropout, drop-path, batch statistics stay off), whatever a trainer
        # calling ``.train()`` on everything wants.
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @abc.abstractmethod
    def token_grid(self, num_frames: int, size: int) -> tuple[int, int, int]:
        """Token grid (T', H', W') this teacher produces for a clip of ``num_frames`` frames at ``size`` px."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Patch size, input size and tubelet, for error messages."""

    @abc.abstractmethod
    def _targets(self, video: torch.Tensor) -> TeacherOutput: ...

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> TeacherOutput:
        """``video`` (B, 3, T, H, W), any float dtype -> :class:`TeacherOutput` (float32)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"{type(self).__name__}: video must be (B, 3, T, H, W), got {tuple(video.shape)}")
        if video.shape[-1] != video.shape[-2]:
            raise ValueError(f"{type(self).__name__}: frames must be square, got {tuple(video.shape[-2:])}")
        return self._targets(video.to(self.device))


class ImageTeacher(FrozenTeacher):
    """An image ViT run on every frame of the clip. Subclasses adapt one model family by implementing
    :meth:`_encode_images`; the official normalisation (:func:`image_targets`) is shared.

    Options of every image teacher: ``return_layers`` / ``return_interval`` pick the tapped blocks by the
    official rule on the teacher's own depth (:func:`~iv2_distill.return_layer_indices`); ``frames_per_batch``
    bounds how many frames go through the model at once; ``saliency=False`` skips the attention map (no
    semantic masking; the fused attention path stays on). Frames are resized bicubically to ``input_size``
    when they differ (the official ``clip_input_resolution``).
    """

    kind = "image teacher"

    def __init__(
        self,
        model: nn.Module,
        *,
        depth: int,
        patch_size: int,
        input_size: int,
        return_layers: int = 6,
        return_interval: float = 1.0,
        frames_per_batch: int | None = None,
        saliency: bool = True,
    ) -> None:
        super().__init__(model)
        self.depth, self.patch_size, self.input_size = depth, patch_size, input_size
        if input_size % patch_size:
            raise ValueError(f"{type(self).__name__}: input_size {input_size} is not a multiple of patch {patch_size}")
        self.return_index = return_layer_indices(depth, return_layers, return_interval)
        self.frames_per_batch = frames_per_batch
        self.saliency = saliency

    def token_grid(self, num_frames: int, size: int) -> tuple[int, int, int]:
        side = self.input_size // self.patch_size
        return num_frames, side, side

    def describe(self) -> str:
        return f"{type(self).__name__}: patch {self.patch_size} at {self.input_size} px, run per frame"

    @abc.abstractmethod
    def _encode_images(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """``images`` (N, 3, S, S) in the model's dtype -> (tapped layers in ascending block order, each
        (N, 1 + HW, C) with the class token first and no other prefix token; pooled (N, C_final); saliency
        (N, HW) or None)."""

    def _targets(self, video: torch.Tensor) -> TeacherOutput:
        video = resize_clip(video, self.input_size)
        b, c, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, c, h, w).to(self.dtype)
        chunk = self.frames_per_batch or frames.shape[0]
        parts = [self._encode_images(x) for x in frames.split(chunk)]
        layers = [torch.cat([p[0][k] for p in parts]) for k in range(len(self.return_index))]
        pooled = torch.cat([p[1] for p in parts])
        saliency = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        return image_targets(layers, pooled, saliency, batch_size=b)


def resize_clip(video: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, T, H, W)`` frames resized bicubically to ``size x size`` (a teacher's input size: the official
    ``clip_input_resolution``); returned as is when they already have it."""
    b, c, t, h, w = video.shape
    if (h, w) == (size, size):
        return video
    frames = F.interpolate(video.reshape(b, c * t, h, w).float(), size=(size, size), mode="bicubic",
                           align_corners=False)
    return frames.reshape(b, c, t, size, size)


def image_targets(
    layers: Sequence[torch.Tensor],
    pooled: torch.Tensor,
    saliency: torch.Tensor | None,
    *,
    batch_size: int,
) -> TeacherOutput:
    """Per-frame features of B·T frames -> clip targets, as the official InternViT teacher (clip_norm_type
    'l2'): the class rows of every tapped layer are averaged over T before the L2 normalisation, the patch
    tokens are laid out (t, h, w); the pooled vectors are averaged over T, then L2-normalised."""
    z = torch.stack(list(layers)).float()  # (K, B·T, 1 + HW, C)
    k, bt, rows, c = z.shape
    b, t, hw = batch_size, bt // batch_size, rows - 1
    cls = z[:, :, :1].reshape(k, b, t, 1, c).mean(dim=2)
    patches = z[:, :, 1:].reshape(k, b, t * hw, c)
    clip_middle = l2_normalize(torch.cat([cls, patches], dim=2))
    clip_final = l2_normalize(pooled.float().reshape(b, t, -1).mean(dim=1))
    sal = None if saliency is None else saliency.float().reshape(b, t, hw)
    return TeacherOutput(clip_middle=clip_middle, clip_final=clip_final, saliency=sal)


class DistillTeachers(nn.Module):
    """The teachers of one distillation run, fed as the official pipeline feeds them.

    ``image`` is the CLIP teacher (``clip_middle``, ``clip_final``, saliency): an :class:`ImageTeacher` run per
    frame (the 1B/6B recipe: InternViT-6B), or an iv2-encoders model run on the whole clip
    (:class:`~iv2_distill.teachers.encoder.EncoderTeacher`, the S/B/L recipe). ``video`` gives the ``mae``
    targets (VideoMAE).

    The loader gives a clip of ``frame_stride × T`` frames (official: 16). The video teacher sees all of them
    (tubelet ``frame_stride``: VideoMAE tubelet 2); the image teacher and the student see every
    ``frame_stride``-th frame (:meth:`student_frames`, official ``videos[:, :, ::2]``), so all three share the
    student's T x H x W token grid. ``frame_stride`` defaults to the video teacher's tubelet (1 without one).
    ``teachers(clip)`` returns the merged :class:`TeacherOutput`; it is what a target cache stores.
    """

    def __init__(
        self,
        image: FrozenTeacher | None = None,
        video: FrozenTeacher | None = None,
        *,
        frame_stride: int | None = None,
    ) -> None:
        super().__init__()
        if image is None and video is None:
            raise ValueError("DistillTeachers needs an image teacher, a video teacher or both")
        self.image, self.video = image, video
        self.frame_stride = frame_stride or (getattr(video, "tubelet_size", 1) if video is not None else 1)
        self.train(False)

    def train(self, mode: bool = True) -> DistillTeachers:
        return super().train(False)

    @property
    def mask_per_frame(self) -> bool:
        """Whether semantic masks are drawn frame by frame (an image teacher's per-frame saliency, the 1B/6B
        recipe) or over the whole clip (a video model as the CLIP teacher, the S/B/L recipe)."""
        return isinstance(self.image, ImageTeacher)

    def student_frames(self, clip: torch.Tensor) -> torch.Tensor:
        """The frames the student (and the image teacher) see: ``clip[:, :, ::frame_stride]``."""
        return clip[:, :, :: self.frame_stride]

    def check_student(self, student: VideoEncoderConfig) -> None:
        """Raise if a teacher's token grid differs from the student's (naming both)."""
        want = student.grid_size
        clip_frames = student.num_frames * self.frame_stride
        for teacher, frames in ((self.image, student.num_frames), (self.video, clip_frames)):
            if teacher is None:
                continue
            got = teacher.token_grid(frames, student.img_size)
            if tuple(got) != tuple(want):
                raise ValueError(
                    f"the {teacher.kind}'s token grid {got} ({teacher.describe()}, {frames} frames at "
                    f"{student.img_size} px) cannot be mapped to the student's grid {want} (patch "
                    f"{student.patch_size} at {student.img_size} px, {student.num_frames} frames, tubelet "
                    f"{student.tubelet_size}); choose a teacher input size / patch / tubelet giving the same grid"
                )

    @torch.no_grad()
    def forward(self, clip: torch.Tensor) -> TeacherOutput:
        out = TeacherOutput(None, None)
        if self.image is not None:
            out = out.merge(self.image(self.student_frames(clip)))
        if self.video is not None:
            out = out.merge(self.video(clip))
        return out


@contextmanager
def capture_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the outputs of ``module`` while the block runs (e.g. an ``attn_drop`` whose input and output
    are the softmax attention weights), with a forward hook removed on exit."""
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _inp, out: captured.append(out))
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def temporarily(obj: object, name: str, value: object) -> Iterator[None]:
    """Set ``obj.name = value`` for the duration of the block (e.g. switch a fused attention off)."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def class_token_attention(weights: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Attention of the first query (the class token, or the pooling query) over the patch keys, averaged
    over heads: ``weights`` (N, heads, L_q, L_k) softmax probabilities -> (N, L_k - num_prefix_tokens). The
    prefix keys are dropped without renormalising, as the official ``attn[:, 0, 1:]``."""
    return weights.float().mean(dim=1)[:, 0, num_prefix_tokens:]
