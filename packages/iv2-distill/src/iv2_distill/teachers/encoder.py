"""An ``iv2_encoders`` InternVideo2 model as a teacher, in two ways:

* :class:`EncoderTeacher` runs it on the whole clip, as the official S/B/L distillation runs the 1B stage-2 model
  (SM/models/internvideo2_teacher.py, engines/engine_for_distill.py): the tapped residual streams with their one
  class token (no averaging over frames), the attention-pooled vector, both L2-normalised, and the pooling head's
  attention over all ``T·HW`` patch tokens as the saliency (the mask is then drawn over the clip jointly);
* :class:`EncoderImageTeacher` runs it frame by frame (``T = 1``, the encoder's image rule), like the official
  InternVL-C image teacher: per-frame targets combined by :func:`~iv2_distill.teachers.base.image_targets`, and
  the saliency is the pooling head's attention of each frame (exactly how InternVL-C's ``clip_projector`` gives
  it). The synthetic image teacher of the ``tiny-synthetic`` flavor is one.
"""

from __future__ import annotations

import torch

from iv2_encoders import VideoEncoder

from ..config import return_layer_indices
from ..model import l2_normalize
from .base import FrozenTeacher, ImageTeacher, TeacherOutput, resize_clip


def _check_encoder(model: object, name: str, saliency: bool) -> VideoEncoder:
    if not isinstance(model, VideoEncoder):
        raise TypeError(f"{name} needs an iv2_encoders.VideoEncoder, got {type(model).__name__}")
    if model.clip_projector is None:
        raise ValueError(f"{name}: the encoder has no attention-pooling head (pool_head=False); the final target "
                         "and the saliency come from it")
    return model


class EncoderImageTeacher(ImageTeacher):
    """An InternVideo2 encoder run on every frame as an image (``T = 1``); ``options`` are those of
    :class:`~iv2_distill.teachers.base.ImageTeacher` (``return_layers``, ``return_interval``, ``frames_per_batch``,
    ``saliency``). Saliency: the pooling head's attention over the frame's patch tokens."""

    def __init__(self, model: VideoEncoder, *, saliency: bool = True, **options) -> None:
        cfg = _check_encoder(model, "EncoderImageTeacher", saliency).cfg
        if cfg.tubelet_size != 1:
            raise ValueError(f"EncoderImageTeacher: an image needs tubelet 1, the encoder has {cfg.tubelet_size}")
        super().__init__(model, depth=cfg.depth, patch_size=cfg.patch_size, input_size=cfg.img_size,
                         saliency=saliency, **options)

    def _encode_images(self, images):
        out = self.model(images[:, :, None], return_hidden_states=self.return_index, return_attention=self.saliency)
        return out.hidden_states, out.pooled, out.attention


class EncoderTeacher(FrozenTeacher):
    """An InternVideo2 encoder run on the whole clip: the official S/B/L distillation teacher.

    ``return_layers`` / ``return_interval`` pick the tapped blocks by the official rule (the 1B teacher: 6 at
    3.34 → blocks 23, 26, 29, 33, 36, 39). Targets: ``clip_middle`` (K, B, 1 + T·HW, C) = L2 of the tapped residual
    streams, class token first; ``clip_final`` = L2 of the pooled vector; ``saliency`` (B, T, HW) = the pooling
    head's attention over the patch tokens (class key dropped). Frames of another size are resized bicubically
    to the encoder's input size (the official ``clip_input_resolution``).
    """

    kind = "clip teacher"

    def __init__(
        self,
        model: VideoEncoder,
        *,
        return_layers: int = 6,
        return_interval: float = 1.0,
        saliency: bool = True,
    ) -> None:
        cfg = _check_encoder(model, "EncoderTeacher", saliency).cfg
        super().__init__(model)
        self.cfg = cfg
        self.return_index = return_layer_indices(cfg.depth, return_layers, return_interval)
        self.saliency = saliency
        self.patch_size, self.input_size, self.tubelet_size = cfg.patch_size, cfg.img_size, cfg.tubelet_size

    def token_grid(self, num_frames: int, size: int) -> tuple[int, int, int]:
        side = self.input_size // self.patch_size
        return num_frames // self.tubelet_size, side, side

    def describe(self) -> str:
        return (f"EncoderTeacher: patch {self.patch_size} at {self.input_size} px, tubelet {self.tubelet_size}, "
                f"{self.cfg.num_frames} frames")

    def _targets(self, video: torch.Tensor) -> TeacherOutput:
        video = resize_clip(video, self.input_size)
        b, t = video.shape[0], video.shape[2]
        out = self.model(video.to(self.dtype), return_hidden_states=self.return_index, return_attention=self.saliency)
        clip_middle = l2_normalize(torch.stack(out.hidden_states).float())
        clip_final = l2_normalize(out.pooled.float())
        saliency = None
        if self.saliency:
            grid = self.token_grid(t, self.input_size)
            saliency = out.attention.float().reshape(b, grid[0], grid[1] * grid[2])
        return TeacherOutput(clip_middle=clip_middle, clip_final=clip_final, saliency=saliency)
