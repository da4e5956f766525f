"""Stage-2 contrastive (VTC), matching (VTM) and masked-language-modelling (MLM) losses, as the official
``VTC_VTM_Loss`` and ``MLMLoss`` (InternVideo2/multi_modality/models/criterions.py).

VTC runs through ``iv2_kernels.contrastive_loss`` (blockwise, never the ``B x B`` logits): same-``idx`` pairs are
positives (each row's targets normalised to sum 1) and, in a process group, negatives come from every rank with
the official gradient semantics (each rank's own rows of the global loss's gradient, no ``x world_size``).

The audio-visual variants are the same functions on other inputs: AVTM = :func:`vtm_loss` with media tokens
``[audio tokens, vision tokens]`` (concatenated along the token axis, audio first), the ``av_fusion`` feature
and ``head="avtm"``; AVMLM = :func:`mlm_loss` with those media tokens.

Randomness: every draw takes an optional ``torch.Generator``. MLM corruption is drawn on the CPU in the
official order (mask, [MASK], random, random ids), so with ``generator=None`` and the same global seed it
matches the official corruption.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from iv2_kernels import contrastive_loss

from .model import Stage2Model

IGNORE_INDEX = -100


def _same_index(idx: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    if idx is None:
        return torch.eye(size, dtype=torch.bool, device=device)
    idx = idx.reshape(-1, 1).to(device)
    if idx.shape[0] != size:
        raise ValueError(f"idx has {idx.shape[0]} entries for a batch of {size}")
    return idx == idx.T


def _default_group() -> dist.ProcessGroup | None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


def vtc_loss(
    media_feat: torch.Tensor,
    text_feat: torch.Tensor,
    idx: torch.Tensor | None,
    temp: torch.Tensor | float,
    *,
    group: dist.ProcessGroup | str | None = "auto",
) -> torch.Tensor:
    """The official video(-audio)-text contrastive loss on projected features ``(B, D)``: both sides
    L2-normalised, logits ``cos / temp``, targets = same-``idx`` pairs (rows normalised to sum 1; the diagonal
    when ``idx`` is None), ``(CE_v2t + CE_t2v) / 2``.

    ``temp`` is used as given: the model clamps it to ``[0.001, 0.5]`` in place before every training forward
    (:meth:`Stage2Model.clamp_temperature`), as the official code. ``group``: ``"auto"`` (default) gathers
    features and ``idx`` from every rank of the default process group when there is more than one, as the
    official ``all_gather=True``; None keeps the local batch; or a ``torch.distributed`` group.
    """
    if media_feat.dim() != 2 or media_feat.shape != text_feat.shape:
        raise ValueError(f"media_feat {tuple(media_feat.shape)} and text_feat {tuple(text_feat.shape)} must both "
                         f"be (B, D)")
    if group == "auto":
        group = _default_group()
    elif isinstance(group, str):
        raise ValueError(f"group must be 'auto', None or a process group, got {group!r}")
    media = F.normalize(media_feat, dim=-1)
    text = F.normalize(text_feat, dim=-1)
    if idx is not None:
        idx = idx.reshape(-1).to(device=media.device, dtype=torch.long)
    return contrastive_loss(media, text, temp, idx=idx, group=group)


@torch.no_grad()
def hard_negative_weights(
    media_feat: torch.Tensor, text_feat: torch.Tensor, idx: torch.Tensor | None, temp: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official VTM sampling weights ``(weights_v2t, weights_t2v)``, both ``(B, B)``: ``softmax(cos / temp +
    1e-4)`` per row, entries of the same ``idx`` (the positives) zeroed, NaN/inf replaced by 1e-2."""
    if media_feat.shape[0] != text_feat.shape[0]:
        raise ValueError(f"media_feat {tuple(media_feat.shape)} and text_feat {tuple(text_feat.shape)} "
                         f"must have the same batch size")
    sim_v2t = F.normalize(media_feat, dim=-1) @ F.normalize(text_feat, dim=-1).T / temp
    weights_v2t = torch.softmax(sim_v2t + 1e-4, dim=1)
    weights_t2v = torch.softmax(sim_v2t.T + 1e-4, dim=1)
    same = _same_index(idx, sim_v2t.shape[0], sim_v2t.device)
    weights_v2t.masked_fill_(same, 0)
    weights_t2v.masked_fill_(same, 0)
    weights_v2t = torch.nan_to_num_(weights_v2t, nan=1e-2, posinf=1e-2, neginf=1e-2)
    weights_t2v = torch.nan_to_num_(weights_t2v, nan=1e-2, posinf=1e-2, neginf=1e-2)
    return weights_v2t, weights_t2v


def _draw_one(weights: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None, what: str) -> torch.Tensor:
    """One index per row, with probability proportional to ``weights``. A row whose weights all underflowed
    to 0 falls back to uniform over its negatives (the official multinomial would fail); a row without any
    negative (every sample shares its idx) is an error."""
    dead = weights.sum(dim=1) <= 0
    if bool(dead.any()):
        negatives = (~same).to(weights.dtype)
        if bool((negatives[dead].sum(dim=1) == 0).any()):
            raise ValueError(f"VTM needs a negative {what} for every sample, but some rows have none: all samples "
                             f"of the batch share one idx (batch of {weights.shape[0]})")
        weights = torch.where(dead[:, None], negatives, weights)
    device = generator.device if generator is not None else weights.device
    drawn = torch.multinomial(weights.to(device), 1, generator=generator)[:, 0]
    return drawn.to(weights.device)


def sample_hard_negatives(
    media_feat: torch.Tensor, text_feat: torch.Tensor, idx: torch.Tensor | None, temp: torch.Tensor | float,
    generator: torch.Generator | None = None, *, hard: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(negative_media_per_text, negative_text_per_media)``, each ``(B,)`` indices into the batch, drawn
    (in that order, as the official code) from :func:`hard_negative_weights`; ``hard=False`` draws uniformly
    among the negatives instead (the official ``vtm_hard_neg=False``, ``get_rand_indices``)."""
    if hard:
        weights_v2t, weights_t2v = hard_negative_weights(media_feat, text_feat, idx, temp)
    else:
        size = media_feat.shape[0]
        weights_v2t = weights_t2v = torch.ones(size, size, device=media_feat.device)
    same = _same_index(idx, weights_v2t.shape[0], weights_v2t.device)
    if not hard:
        weights_v2t = weights_t2v = weights_v2t.masked_fill(same, 0)
    negative_media = _draw_one(weights_t2v, same, generator, "video")
    negative_text = _draw_one(weights_v2t, same, generator, "text")
    return negative_media, negative_text


def vtm_loss(
    model: Stage2Model,
    media_tokens: torch.Tensor,
    text_tokens: torch.Tensor,
    attention_mask: torch.Tensor,
    media_feat: torch.Tensor,
    text_feat: torch.Tensor,
    idx: torch.Tensor | None,
    temp: torch.Tensor | float,
    *,
    head: str = "itm",
    generator: torch.Generator | None = None,
    hard_negatives: bool = True,
) -> torch.Tensor:
    """Video(-audio)-text matching with hard negatives (local batch). The fusion layers score the ``3B`` pairs
    ``[(v, t), (v_neg, t), (v, t_neg)]`` with labels ``[1]*B + [0]*2B``; cross-entropy of ``head``'s logits.

    ``media_tokens``/``text_tokens``/``attention_mask`` as from :meth:`Stage2Model.encode_video` (or
    ``[audio, vision]`` tokens) and :meth:`Stage2Model.encode_text`; ``media_feat``/``text_feat`` the projected
    features (``vision_proj``/``av_fusion`` and ``text_proj``) that choose the negatives.
    """
    b = media_tokens.shape[0]
    if text_tokens.shape[0] != b or attention_mask.shape[0] != b:
        raise ValueError(f"media_tokens ({b}), text_tokens ({text_tokens.shape[0]}) and attention_mask "
                         f"({attention_mask.shape[0]}) must share the batch size")
    negative_media, negative_text = sample_hard_negatives(media_feat, text_feat, idx, temp, generator,
                                                          hard=hard_negatives)
    media_all = torch.cat([media_tokens, media_tokens[negative_media], media_tokens], dim=0)
    text_all = torch.cat([text_tokens, text_tokens, text_tokens[negative_text]], dim=0)
    mask_all = torch.cat([attention_mask, attention_mask, attention_mask[negative_text]], dim=0)
    logits = model.match_logits(media_all, text_all, mask_all, head=head)
    labels = torch.zeros(3 * b, dtype=torch.long, device=logits.device)
    labels[:b] = 1
    return F.cross_entropy(logits, labels)


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    pad_token_id: int,
    cls_token_id: int,
    mask_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official MLM corruption: each token is chosen with ``mask_prob`` (never ``[PAD]`` or ``[CLS]``; ``[SEP]``
    can be); 80% of the chosen become ``[MASK]``, half of the rest a random id from the whole vocabulary
    (special tokens included), the others stay. Returns ``(corrupted_ids, labels)`` with labels ``-100``
    where not chosen. Draws happen on the CPU (``generator`` must be a CPU generator)."""
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"mask_tokens draws on the CPU as the official code; pass a CPU generator, "
                         f"got one on {generator.device}")
    ids = input_ids.detach().cpu().clone()
    labels = ids.clone()
    shape = ids.shape
    chosen = torch.bernoulli(torch.full(shape, float(mask_prob)), generator=generator).bool()
    chosen[ids == pad_token_id] = False
    chosen[ids == cls_token_id] = False
    labels[~chosen] = IGNORE_INDEX
    to_mask = torch.bernoulli(torch.full(shape, 0.8), generator=generator).bool() & chosen
    ids[to_mask] = mask_token_id
    to_random = torch.bernoulli(torch.full(shape, 0.5), generator=generator).bool() & chosen & ~to_mask
    random_ids = torch.randint(vocab_size, shape, dtype=torch.long, generator=generator)
    ids[to_random] = random_ids[to_random]
    return ids.to(input_ids.device), labels.to(input_ids.device)


def mlm_loss(
    model: Stage2Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    media_tokens: torch.Tensor,
    tokenizer,
    *,
    mask_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Masked language modelling conditioned on the media: corrupt ``input_ids`` (:func:`mask_tokens`, ids of
    ``tokenizer``), run :meth:`Stage2Model.mlm_logits`, cross-entropy over the chosen tokens.

    When no token was chosen (a batch of one-word captions can draw none) the loss is a zero connected to the
    graph; the official code returns NaN there."""
    corrupted, labels = mask_tokens(
        input_ids, vocab_size=model.text_encoder.config.vocab_size, mask_token_id=tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id, mask_prob=mask_prob,
        generator=generator,
    )
    logits = model.mlm_logits(corrupted, attention_mask, media_tokens)
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
