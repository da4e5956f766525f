"""The InternVideo2 vision encoder.

Layout and numerics follow the official ``PretrainInternVideo2`` (InternVideo2/single_modality/models/
internvideo2_pretrain.py and multi_modality/models/backbones/internvideo2/internvideo2.py) so released
checkpoints load by key name and give the same outputs:

    Conv3d patch embedding (kernel = stride = (tubelet, patch, patch), bias) -> class token -> + 3D sin-cos
    position embedding (learnable parameter) -> [drop masked tokens] -> blocks of
        x = x + LayerScale(Attention(RMSNorm(x)))      attention: qkv without bias, RMSNorm over the full
        x = x + LayerScale(MLP(RMSNorm(x)))            width on q and k, softmax(q k^T / sqrt(d)) v
    -> no final norm -> attention-pooling head (query = mean of all tokens) -> clip_embed_dim.

The residual stream is carried as (branch, residual) pairs so that every "add + RMSNorm" is one call of
``iv2_kernels.rms_norm(..., residual=...)`` (fused on GPU), the same arithmetic as the official fused path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from iv2_kernels import AttentionPoolParams, add_rms_norm, attention_pool, rms_norm

from .config import PretrainedCfg, VideoEncoderConfig
from .pos_embed import interpolate_pos_embed, sincos_3d


@dataclass
class EncoderOutput:
    """``tokens``: (B, 1 + N_kept, D) final hidden state, class token first. ``pooled``: (B, clip_embed_dim)
    attention-pooled feature (None without a pooling head). ``hidden_states``: the residual stream after each
    requested block, in ascending block order (empty unless asked for). ``attention``: (B, N_kept) the pooling
    head's attention over the patch tokens — softmax over keys averaged over heads, class key dropped (official
    stage-1 saliency; rows sum to 1 minus the class token's share), None unless asked for."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None
    hidden_states: list[torch.Tensor]
    attention: torch.Tensor | None = None


class RMSNorm(nn.Module):
    """RMSNorm with a weight and no bias; ``forward(x, residual)`` fuses the residual add."""

    def __init__(self, dim: int, eps: float = 1e-6, backend: str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.backend = backend

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """``rms_norm(x)``, or with ``residual`` the pair ``(rms_norm(x + residual), x + residual)``."""
        if residual is None:
            return rms_norm(x, self.weight, self.eps, backend=self.backend)
        return add_rms_norm(x, residual, self.weight, self.eps, backend=self.backend)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float, force_fp32: bool = True) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))
        self.force_fp32 = force_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.force_fp32:  # the official default: multiply in float32 whatever the autocast dtype
            return (x.float() * self.gamma.float()).to(x.dtype)
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drop the whole branch per sample with probability ``p`` (rescaled when kept)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    def __init__(self, cfg: VideoEncoderConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.head_dim = dim // cfg.num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=cfg.qkv_bias)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:  # over the full width (all heads together), as the official code
            self.q_norm = RMSNorm(dim, cfg.norm_eps, cfg.kernel_backend)
            self.k_norm = RMSNorm(dim, cfg.norm_eps, cfg.kernel_backend)
        self.proj = nn.Linear(dim, dim)
        self.attn_impl = cfg.attn_impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, c).unbind(2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(b, n, self.num_heads, self.head_dim) for t in (q, k, v))
        if self.attn_impl == "flash":
            out = _flash_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            out = out.transpose(1, 2)
        return self.proj(out.reshape(b, n, c))


def _flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    try:
        from flash_attn import flash_attn_func
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            "attn_impl='flash' needs flash-attn: pip install 'iv2-encoders[flash]' (CUDA only)"
        ) from err
    return flash_attn_func(q, k, v)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: VideoEncoderConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = RMSNorm(dim, cfg.norm_eps, cfg.kernel_backend)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(dim, cfg.init_values, cfg.layerscale_force_fp32) if cfg.init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = RMSNorm(dim, cfg.norm_eps, cfg.kernel_backend)
        self.mlp = Mlp(dim, cfg.mlp_hidden_dim)
        self.ls2 = LayerScale(dim, cfg.init_values, cfg.layerscale_force_fp32) if cfg.init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, branch: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block on the stream ``branch + residual`` (``residual`` None for the first block); returns the
        new ``(branch, residual)`` pair whose sum is the block's output."""
        # Under autocast the branch comes back in the autocast dtype while the residual stream keeps the
        # embedding's dtype; the branch is cast to the stream's dtype first, which is what the unfused
        # official ``x + branch`` does by type promotion.
        if residual is None:
            h, residual = self.norm1(branch), branch
        else:
            h, residual = self.norm1(branch.to(residual.dtype), residual)
        branch = self.drop_path1(self.ls1(self.attn(h)))
        h, residual = self.norm2(branch.to(residual.dtype), residual)
        branch = self.drop_path2(self.ls2(self.mlp(h)))
        return branch, residual


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VideoEncoderConfig) -> None:
        super().__init__()
        kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, C, T', H', W')
        return x.flatten(2).transpose(1, 2)  # (B, T'H'W', C), tokens in (t, h, w) order


class CrossAttention(nn.Module):
    """Parameters of the pooling head's attention under the official names (q/k/v without bias in the
    Linear, separate ``q_bias``/``k_bias``/``v_bias``, ``proj``)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.k_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, out_dim)


class AttentionPoolingHead(nn.Module):
    """The official ``clip_projector``: LayerNorm'd mean query attending over all tokens, then projected."""

    def __init__(self, cfg: VideoEncoderConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.num_heads = cfg.attn_pool_num_heads
        self.eps = cfg.pool_norm_eps
        self.norm1_q = nn.LayerNorm(dim, eps=cfg.pool_norm_eps)
        self.norm1_k = nn.LayerNorm(dim, eps=cfg.pool_norm_eps)
        self.norm1_v = nn.LayerNorm(dim, eps=cfg.pool_norm_eps)
        self.cross_attn = CrossAttention(dim, cfg.clip_embed_dim)
        self.backend = cfg.kernel_backend

    def attention_pool_params(self) -> AttentionPoolParams:
        """This head's parameters as the bundle ``iv2_kernels.attention_pool`` takes."""
        a = self.cross_attn
        return AttentionPoolParams(
            self.num_heads,
            (self.norm1_q.weight, self.norm1_q.bias), (self.norm1_k.weight, self.norm1_k.bias),
            (self.norm1_v.weight, self.norm1_v.bias),
            a.q.weight, a.q_bias, a.k.weight, a.k_bias, a.v.weight, a.v_bias, a.proj.weight, a.proj.bias,
            eps=self.eps,
        )

    def forward(self, x: torch.Tensor, return_weights: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, C) -> (B, clip_embed_dim)``; with ``return_weights`` also ``(B, N)``: the softmax over all N
        keys (class token included) averaged over heads, as the official ``return_attn`` gives it."""
        return attention_pool(x, self, backend=self.backend, return_weights=return_weights)


_GAMMA_KEY = re.compile(r"^(blocks\.\d+\.ls[12])\.gamma$")
_BARE_KEY = re.compile(r"^(blocks\.\d+\.ls[12])$")


def layerscale_key_map(keys: Iterable[str], layout: str) -> dict[str, str]:
    """``{key: renamed}`` turning LayerScale keys (relative to the encoder) into ``layout`` ("gamma": the
    stage-1/2 ``blocks.N.ls1.gamma``; "bare": the InternVideo2-Chat ``blocks.N.ls1``); other keys are absent."""
    pattern, fmt = (_GAMMA_KEY, "{}") if layout == "bare" else (_BARE_KEY, "{}.gamma")
    return {k: fmt.format(m.group(1)) for k in keys if (m := pattern.match(k))}


def _rename_in_place(state_dict: dict, prefix: str, layout: str) -> None:
    local = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    for old, new in layerscale_key_map(local, layout).items():
        state_dict[prefix + new] = state_dict.pop(prefix + old)


def _bare_layerscale_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    _rename_in_place(state_dict, prefix, "bare")


def _gamma_layerscale_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    _rename_in_place(state_dict, prefix, "gamma")


class VideoEncoder(nn.Module):
    """InternVideo2 ViT. ``model(video, mask=None)`` with ``video`` float (B, 3, T, H, W) and ``mask`` bool
    (B, N) over patch tokens, True = dropped (the same count in every sample); see :class:`EncoderOutput`.

    ``T == 1`` is an image: it uses ``img_pos_embed`` when the model has one (official
    ``sep_image_video_pos_embed``) and otherwise the class row plus the time-average of the video table.
    With ``cfg.interpolate_pos_embed_at_runtime`` other frame counts and sizes are accepted and the position
    table is interpolated to them at every forward (the InternVideo2-Chat tower's behaviour).

    ``pretrained_cfg``: the weight file's :class:`PretrainedCfg` (source, preprocessing); ImageNet defaults
    until :func:`create_model` sets it.
    """

    def __init__(self, cfg: VideoEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, cfg.embed_dim))
        if cfg.sep_image_video_pos_embed:
            self.img_pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.grid_size[1] * cfg.grid_size[2],
                                                          cfg.embed_dim))
        else:
            self.register_parameter("img_pos_embed", None)
        # stochastic depth rising linearly over depth (plain floats: no tensor, so meta builds work)
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, rates[i]) for i in range(cfg.depth))
        self.clip_projector = AttentionPoolingHead(cfg) if cfg.pool_head else None
        self.grad_checkpointing = cfg.grad_checkpointing
        self.pretrained_cfg = PretrainedCfg(num_frames=cfg.num_frames, img_size=cfg.img_size)
        if cfg.layerscale_keys == "bare" and cfg.init_values:
            # The chat tower's layout: the modules stay the same, only the state-dict names change.
            self.register_state_dict_post_hook(_bare_layerscale_keys)
            self.register_load_state_dict_pre_hook(_gamma_layerscale_keys)
        self.init_weights()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """Official initialisation: sin-cos position tables, trunc-normal(0.02) class token and Linear
        weights, zero biases, unit LayerNorms, and attn.proj / mlp.fc2 of block i divided by sqrt(2 (i+1))."""
        _, side, _ = self.cfg.grid_size
        self.pos_embed.copy_(sincos_3d(self.cfg.embed_dim, side, self.cfg.grid_size[0])[None])
        if self.img_pos_embed is not None:
            self.img_pos_embed.copy_(sincos_3d(self.cfg.embed_dim, side, 1)[None])
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for i, blk in enumerate(self.blocks):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * (i + 1)))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "img_pos_embed", "cls_token"}

    @property
    def num_frames(self) -> int:
        return self.cfg.num_frames

    # --------------------------------------------------------------- forward
    def _position_embedding(self, frames: int, height: int, width: int) -> torch.Tensor:
        """The position table for a clip of ``frames`` frames of ``height x width`` (checked by :meth:`embed`)."""
        t, h, w = self.cfg.grid_size
        p = self.cfg.patch_size
        if frames == self.cfg.tubelet_size and frames != self.cfg.num_frames:  # an image (T == 1, tubelet 1)
            if self.img_pos_embed is not None:
                table = self.img_pos_embed
            else:
                video = self.pos_embed[:, 1:].reshape(1, t, h * w, -1).mean(dim=1)
                table = torch.cat([self.pos_embed[:, :1], video], dim=1)
            built = (1, h, w)
        else:
            table, built = self.pos_embed, (t, h, w)
        wanted = (frames // self.cfg.tubelet_size, height // p, width // p)
        if wanted == built:
            return table
        # run-time interpolation (reached only with cfg.interpolate_pos_embed_at_runtime): linear in time,
        # bicubic in space, class row kept, as the official chat tower's expand_pos_embed; differentiable
        return interpolate_pos_embed(table, built, wanted)

    def _check_input(self, video: torch.Tensor) -> None:
        cfg = self.cfg
        if video.ndim != 5 or video.shape[1] != cfg.in_chans:
            raise ValueError(f"video must be (B, {cfg.in_chans}, T, H, W), got {tuple(video.shape)}")
        frames, height, width = video.shape[2:]
        if cfg.interpolate_pos_embed_at_runtime:
            if height % cfg.patch_size or width % cfg.patch_size or not height or not width:
                raise ValueError(f"frames of {height}x{width} are not a (non-zero) multiple of the patch size "
                                 f"{cfg.patch_size}")
            if frames % cfg.tubelet_size or not frames:
                raise ValueError(f"{frames} frames is not a (non-zero) multiple of tubelet_size {cfg.tubelet_size}")
            return
        if (height, width) != (cfg.img_size, cfg.img_size):
            raise ValueError(
                f"the encoder was built for {cfg.img_size}x{cfg.img_size} frames, got {height}x{width}; build it "
                f"with img_size={width}, or with interpolate_pos_embed_at_runtime=True to accept other sizes"
            )
        if frames not in (cfg.num_frames, cfg.tubelet_size):
            raise ValueError(
                f"the encoder was built for {cfg.num_frames} frames (or 1 for images), got {frames}; build it "
                f"with num_frames={frames} (load_checkpoint interpolates the position embedding), or with "
                "interpolate_pos_embed_at_runtime=True to accept other frame counts"
            )

    def embed(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embedding + class token + position embedding, then drop the masked tokens."""
        self._check_input(video)
        pos = self._position_embedding(*video.shape[2:])
        x = self.patch_embed(video.to(self.patch_embed.proj.weight.dtype))
        b, n, c = x.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + pos
        if mask is not None:
            if mask.shape != (b, n) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be bool (B, N) = ({b}, {n}), got {mask.dtype} {tuple(mask.shape)}")
            dropped = mask.sum(dim=1)
            if b > 1 and not bool((dropped == dropped[0]).all()):
                raise ValueError(f"mask must drop the same number of tokens in every sample, got {dropped.tolist()}")
            keep = torch.cat([mask.new_ones(b, 1), ~mask], dim=1)  # the class token is always kept
            x = x[keep].reshape(b, -1, c)
        return x

    def forward(
        self,
        video: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        return_hidden_states: bool | Sequence[int] = False,
        return_attention: bool = False,
    ) -> EncoderOutput:
        """Encode a clip. ``return_hidden_states``: True for every block, or block indices (negative
        counts from the end) whose output residual stream is returned in ``hidden_states``.
        ``return_attention``: also the pooling head's attention over the patch tokens (``attention``)."""
        if return_attention and self.clip_projector is None:
            raise ValueError("return_attention needs the attention-pooling head; this encoder was built with "
                             "pool_head=False")
        wanted = self._wanted_layers(return_hidden_states)
        branch, residual = self.embed(video, mask), None
        hidden: list[torch.Tensor] = []
        for i, blk in enumerate(self.blocks):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                branch, residual = torch.utils.checkpoint.checkpoint(blk, branch, residual, use_reentrant=False)
            else:
                branch, residual = blk(branch, residual)
            if i in wanted:
                hidden.append(branch.to(residual.dtype) + residual)
        tokens = branch if residual is None else branch.to(residual.dtype) + residual
        pooled = attention = None
        if return_attention:
            pooled, weights = self.clip_projector(tokens, return_weights=True)
            attention = weights[:, 1:]  # the class key dropped, as the official stage-1 masking does
        elif self.clip_projector is not None:
            pooled = self.clip_projector(tokens)
        return EncoderOutput(tokens=tokens, pooled=pooled, hidden_states=hidden, attention=attention)

    def _wanted_layers(self, request: bool | Sequence[int]) -> set[int]:
        depth = len(self.blocks)
        if request is True:
            return set(range(depth))
        if request is False or request is None:
            return set()
        out = set()
        for i in request:
            j = i + depth if i < 0 else i
            if not 0 <= j < depth:
                raise ValueError(f"hidden-state layer {i} is out of range for depth {depth}")
            out.add(j)
        return out
