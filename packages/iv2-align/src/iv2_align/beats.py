"""BEATs audio encoder: our implementation of the official architecture and state-dict keys.

Official: InternVideo2/multi_modality/models/backbones/beats/{BEATs,backbone,modules}.py (from microsoft/unilm,
fairseq-based). Stage 2 feeds it a normalised 64-bin Kaldi fbank from iv2-data:

    fbank (B, T, F) -> Conv2d(1 -> embed_dim, kernel = stride = patch) -> tokens (B, T/p * F/p, embed_dim),
    time-major -> LayerNorm -> post_extract_proj (Linear -> encoder_embed_dim)
    -> x + GELU(SamePad(conv1d_weightnorm(x)))  (grouped convolutional position embedding)
    -> LayerNorm (post-LN models) -> layers:
        attention with a T5-bucket relative position bias (computed in layer 0, shared by all layers) gated
        per query (WavLM ``grep_linear`` / ``grep_a``), the official scaling trick
        ``q = q_proj(x) * d^-0.5 / 32``, logits ``(q k^T - rowmax) * 32``;
        post-LN residuals scaled by DeepNorm ``alpha = (2 * layers)^(1/4)``; FFN GELU computed in float.

A (998, 64) fbank gives a 62 x 4 grid: 248 tokens.

Weight normalisation: the positional conv holds the official ``encoder.pos_conv.0.weight_g`` / ``weight_v`` as
its own parameters and forms the weight in ``forward`` (the legacy ``nn.utils.weight_norm`` the official code
uses cannot be deep-copied). Old checkpoints with a plain ``pos_conv.0.weight`` are
converted by :func:`weight_norm_from_plain` in the loaders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import BEATsConfig

_ALPHA = 32.0  # the official attention scaling constant (backbone.py: ``alpha = 32``)
_WN_DIM = 2  # weight norm over dims (0, 1), one magnitude per kernel tap, as the official call


def weight_norm_from_plain(weight: torch.Tensor, dim: int = _WN_DIM) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight_g, weight_v)`` reproducing a plain conv ``weight`` under weight normalisation over all dims
    but ``dim`` (the layout of BEATs checkpoints saved before the official code adopted weight_norm)."""
    dims = [d for d in range(weight.dim()) if d != dim]
    return weight.norm(p=2, dim=dims, keepdim=True), weight


class _WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``v * (g / ||v||)`` (norm over all dims but 2: one magnitude per kernel tap), with
    its parameters under the official names ``weight_g``, ``weight_v``, ``bias`` (the layout of the legacy
    ``nn.utils.weight_norm`` the official code calls, which cannot be deep-copied; the parametrizations API
    would name them ``original0`` / ``original1``, a second naming that state dicts and parameter lists would
    disagree on)."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        # official init before weight_norm: N(0, sqrt(4 / (k * C))), zero bias
        weight = torch.empty(channels, channels // groups, kernel_size)
        nn.init.normal_(weight, mean=0.0, std=math.sqrt(4.0 / (kernel_size * channels)))
        g, v = weight_norm_from_plain(weight)
        self.weight_g = nn.Parameter(g)
        self.weight_v = nn.Parameter(v)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.padding, self.groups = kernel_size // 2, groups

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(p=2, dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)


class _SamePad(nn.Module):
    """Drop the last frame after an even-kernel convolution (fairseq ``SamePad``)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove else x


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled by ``scale`` (fairseq ``GradMultiply``; layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    # fairseq computes the GELUs in float32 and casts back
    if name == "gelu":
        return F.gelu(x.float()).type_as(x)
    if name == "gelu_accurate":
        return F.gelu(x.float(), approximate="tanh").type_as(x)
    if name == "relu":
        return F.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    return x  # "linear"


def relative_position_buckets(length: int, num_buckets: int, max_distance: int,
                              device: torch.device | None = None) -> torch.Tensor:
    """``(L, L)`` bidirectional T5 buckets of ``key - query`` offsets, as the official ``compute_bias``."""
    pos = torch.arange(length, dtype=torch.long, device=device)
    relative = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).to(torch.long) * half
    relative = relative.abs()
    max_exact = half // 2
    is_small = relative < max_exact
    # relative == 0 gives log(0) = -inf here; it is masked by is_small (max_exact > 0), as in the official code
    large = max_exact + (
        torch.log(relative.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).to(torch.long)
    large = torch.minimum(large, torch.full_like(large, half - 1))
    return buckets + torch.where(is_small, relative, large)


class BEATsAttention(nn.Module):
    """Multi-head self-attention with the gated relative position bias (official ``MultiheadAttention``)."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.num_heads = cfg.encoder_attention_heads
        self.head_dim = dim // self.num_heads
        self.scaling = self.head_dim**-0.5
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_distance
        # every layer holds the same Embedding (layer 0's), so each layer has the official
        # ``relative_attention_bias.weight`` key
        self.relative_attention_bias = relative_attention_bias
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        self.dropout = nn.Dropout(cfg.attention_dropout)

    def compute_bias(self, length: int) -> torch.Tensor:
        """``(1, H, L, L)`` relative position bias (computed by the first layer, shared by the others)."""
        table = self.relative_attention_bias
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance, table.weight.device)
        return table(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, c = x.shape
        h, d = self.num_heads, self.head_dim
        if self.relative_attention_bias is not None and position_bias is None:
            position_bias = self.compute_bias(n)
        q = self.q_proj(x) * self.scaling
        q = q * (1.0 / _ALPHA)
        q = q.view(b, n, h, d).transpose(1, 2)
        k = self.k_proj(x).view(b, n, h, d).transpose(1, 2)
        v = self.v_proj(x).view(b, n, h, d).transpose(1, 2)
        logits = q @ k.transpose(-2, -1)
        logits = (logits - logits.amax(dim=-1, keepdim=True)) * _ALPHA
        if position_bias is not None:
            bias = position_bias
            if self.gru_rel_pos:
                query = q * _ALPHA / self.scaling  # the unscaled q_proj(x), as the official gate input
                gate = torch.sigmoid(self.grep_linear(query).view(b, h, n, 2, 4).sum(-1))
                gate_a, gate_b = gate.chunk(2, dim=-1)
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * position_bias
            logits = logits + bias
        attn = self.dropout(torch.softmax(logits, dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(out), position_bias


class BEATsLayer(nn.Module):
    """Official ``TransformerSentenceEncoderLayer`` (post-LN with DeepNorm scaling, or pre-LN)."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.self_attn = BEATsAttention(cfg, relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.activation_dropout)
        self.dropout3 = nn.Dropout(cfg.dropout)
        self.activation = cfg.activation_fn
        self.layer_norm_first = cfg.layer_norm_first
        self.residual_scale = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout2(_activation(self.activation, self.fc1(x)))
        return self.dropout3(self.fc2(x))

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.layer_norm_first:
            attn, position_bias = self.self_attn(self.self_attn_layer_norm(x), position_bias)
            x = x + self.dropout1(attn)
            return x + self._ffn(self.final_layer_norm(x)), position_bias
        attn, position_bias = self.self_attn(x, position_bias)
        x = self.self_attn_layer_norm(x * self.residual_scale + self.dropout1(attn))
        x = self.final_layer_norm(x * self.residual_scale + self._ffn(x))
        return x, position_bias


class BEATsEncoder(nn.Module):
    """Official ``TransformerEncoder``: convolutional position embedding, then the layers."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(
            _WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups), _SamePad(cfg.conv_pos), nn.GELU()
        )
        bias = nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads) if cfg.relative_position_embedding else None
        self.layers = nn.ModuleList(BEATsLayer(cfg, bias) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = cfg.layer_norm_first
        self.layerdrop = cfg.encoder_layerdrop
        self.dropout = nn.Dropout(cfg.dropout)
        self.gradient_decay = cfg.layer_wise_gradient_decay_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.pos_conv(x.transpose(1, 2)).to(x.dtype).transpose(1, 2)
        x = x + conv
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        position_bias = None
        for layer in self.layers:
            if self.gradient_decay != 1.0:
                x = _GradMultiply.apply(x, self.gradient_decay)
            # LayerDrop in training, as the official loop (a torch draw instead of numpy's)
            if not self.training or self.layerdrop == 0.0 or float(torch.rand(())) > self.layerdrop:
                x, position_bias = layer(x, position_bias)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x


class BEATs(nn.Module):
    """BEATs audio encoder. ``model(fbank)`` with ``fbank`` float ``(B, frames, mel_bins)`` (iv2-data's
    normalised 64-bin fbank, ``(B, 998, 64)`` for 10 s) returns the tokens ``(B, N, encoder_embed_dim)``,
    time-major (``N = frames // p * mel_bins // p``)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, kernel_size=p, stride=p, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (
            nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim) if cfg.embed_dim != cfg.encoder_embed_dim else None
        )
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.encoder = BEATsEncoder(cfg)
        # fine-tuned (classifier) checkpoints carry a predictor; stage 2 uses only the tokens
        self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class) if cfg.finetuned_model else None
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official initialisation: BERT-style N(0, 0.02) Linear/Embedding weights with zero biases in the
        encoder, then DeepNorm's Xavier-normal projections (gain ``(8 * layers)^(-1/4)`` on v, out, fc1, fc2)."""
        for m in self.encoder.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        if self.cfg.deep_norm:
            beta = math.pow(8 * self.cfg.encoder_layers, -0.25)
            for layer in self.encoder.layers:
                a = layer.self_attn
                nn.init.xavier_normal_(a.k_proj.weight, gain=1.0)
                nn.init.xavier_normal_(a.q_proj.weight, gain=1.0)
                for w in (a.v_proj.weight, a.out_proj.weight, layer.fc1.weight, layer.fc2.weight):
                    nn.init.xavier_normal_(w, gain=beta)

    def grid_size(self, frames: int, mel_bins: int) -> tuple[int, int]:
        p = self.cfg.input_patch_size
        return frames // p, mel_bins // p

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        p = self.cfg.input_patch_size
        if fbank.dim() != 3 or fbank.shape[1] < p or fbank.shape[2] < p:
            raise ValueError(f"fbank must be (B, frames, mel_bins) with at least {p} frames and bins "
                             f"(iv2-data gives (B, 998, 64)), got {tuple(fbank.shape)}")
        x = self.patch_embedding(fbank.unsqueeze(1).to(self.patch_embedding.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # (B, T' * F', C), time-major
        x = self.layer_norm(x)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(self.dropout_input(x))


def convert_beats_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Bring a BEATs state dict (keys under ``prefix``) to this module's layout: a plain
    ``encoder.pos_conv.0.weight`` becomes ``weight_g``/``weight_v``; layers other than 0 get the shared
    ``relative_attention_bias.weight`` when a checkpoint stored it once. Other keys are left as they are."""
    out = dict(state_dict)
    plain = prefix + "encoder.pos_conv.0.weight"
    if plain in out and prefix + "encoder.pos_conv.0.weight_v" not in out:
        out[prefix + "encoder.pos_conv.0.weight_g"], out[prefix + "encoder.pos_conv.0.weight_v"] = (
            weight_norm_from_plain(out.pop(plain))
        )
    shared = out.get(prefix + "encoder.layers.0.self_attn.relative_attention_bias.weight")
    if shared is not None:
        i = 1
        while any(k.startswith(f"{prefix}encoder.layers.{i}.") for k in out):
            out.setdefault(f"{prefix}encoder.layers.{i}.self_attn.relative_attention_bias.weight", shared)
            i += 1
    return out


def read_beats_checkpoint(path: str | os.PathLike) -> tuple[BEATsConfig, dict[str, torch.Tensor]]:
    """The cfg and the converted state dict of an official BEATs checkpoint (``{"cfg": {...}, "model": ...}``,
    e.g. ``BEATs_iter3_plus_AS2M.pt``), read with ``weights_only=True``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, Mapping) or "cfg" not in ckpt or "model" not in ckpt:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{path}: not a BEATs checkpoint (expected keys 'cfg' and 'model', got {keys})")
    return BEATsConfig(**ckpt["cfg"]), convert_beats_state_dict(ckpt["model"])


def load_beats(path: str | os.PathLike) -> BEATs:
    """Build a :class:`BEATs` from an official BEATs checkpoint, checked by ``iv2_encoders.load_state_dict_checked``
    (a key of another shape or a missing weight is an error naming it and the file)."""
    from iv2_encoders import load_state_dict_checked

    cfg, state = read_beats_checkpoint(path)
    model = BEATs(cfg)
    load_state_dict_checked(model, state, source=str(path))
    return model
