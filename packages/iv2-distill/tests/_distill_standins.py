"""A tiny stand-in for InternVL's remote-code InternViT (``InternVisionModel``) and InternVL-C's attention-pooling
``clip_projector``, exposing the same interface as the released code (modeling_intern_vit.py /
modeling_internvl.py): ``config.{num_hidden_layers, patch_size, image_size}``, ``forward(pixel_values,
output_hidden_states, return_dict)`` returning ``last_hidden_state``, ``pooler_output`` (the class token) and
``hidden_states`` (embeddings first); attention modules with ``use_flash_attn`` and an ``attn_drop`` applied to
the softmax; the projector's ``cross_attn.attn_drop`` likewise."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling


class StandInAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.use_flash_attn = True  # the released default when flash-attn is installed

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.use_flash_attn:  # a fused path that exposes no weights
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
            out = attn @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class StandInLayer(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = StandInAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ls1, self.ls2 = nn.Parameter(torch.full((dim,), 0.5)), nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.mlp(self.norm2(x)) * self.ls2


class StandInInternVisionModel(nn.Module):
    def __init__(self, dim=32, depth=4, heads=4, patch=14, image=28):
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=depth, patch_size=patch, image_size=image, hidden_size=dim)
        self.embeddings = nn.Module()
        self.embeddings.patch_embedding = nn.Conv2d(3, dim, patch, patch)
        self.embeddings.class_embedding = nn.Parameter(torch.randn(1, 1, dim))
        self.embeddings.position_embedding = nn.Parameter(torch.randn(1, 1 + (image // patch) ** 2, dim) * 0.1)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(StandInLayer(dim, heads) for _ in range(depth))

    def forward(self, pixel_values, output_hidden_states=False, return_dict=True):
        e = self.embeddings
        x = e.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([e.class_embedding.expand(x.shape[0], -1, -1), x], dim=1) + e.position_embedding
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            states.append(x)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=x[:, 0],
                                          hidden_states=tuple(states) if output_hidden_states else None)


class StandInCrossAttention(nn.Module):
    def __init__(self, dim, heads, out_dim):
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.q_bias, self.k_bias, self.v_bias = (nn.Parameter(torch.randn(dim) * 0.1) for _ in range(3))
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x, k, v):
        b, _, c = k.shape
        split = lambda t: t.reshape(b, t.shape[1], self.num_heads, -1).transpose(1, 2)
        q = split(F.linear(x, self.q.weight, self.q_bias)) * self.scale
        k, v = split(F.linear(k, self.k.weight, self.k_bias)), split(F.linear(v, self.v.weight, self.v_bias))
        attn = self.attn_drop((q @ k.transpose(-2, -1)).softmax(dim=-1))
        return self.proj((attn @ v).transpose(1, 2).reshape(b, x.shape[1], c))


class StandInPooling(nn.Module):
    """InternVL-C's AttentionPoolingBlock interface: ``norm1_q/k/v`` (LayerNorm 1e-5), ``cross_attn``."""

    def __init__(self, dim, heads, out_dim):
        super().__init__()
        self.norm1_q, self.norm1_k, self.norm1_v = (nn.LayerNorm(dim, eps=1e-5) for _ in range(3))
        self.cross_attn = StandInCrossAttention(dim, heads, out_dim)

    def forward(self, x):
        q = self.norm1_q(x.mean(1, keepdim=True))
        return self.cross_attn(q, k=self.norm1_k(x), v=self.norm1_v(x)).squeeze(1)


class StandInInternVLC(nn.Module):
    """InternVL-C as the official teacher uses it: ``vision_model`` + ``clip_projector``."""

    def __init__(self, dim=32, depth=4, heads=4, pool_heads=2, out_dim=12):
        super().__init__()
        self.vision_model = StandInInternVisionModel(dim, depth, heads)
        self.clip_projector = StandInPooling(dim, pool_heads, out_dim)
