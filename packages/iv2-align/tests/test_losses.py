"""VTM (hard negatives) and MLM against small independent computations of the official procedure."""

import math

import pytest
import torch
from _align_reference import bert_fuse, f64, linear, mlm_head

from iv2_align import hard_negative_weights, mask_tokens, mlm_loss, sample_hard_negatives, vtm_loss


def _text_sd(model):
    return f64({k[len("text_encoder."):]: v for k, v in model.state_dict().items() if k.startswith("text_encoder.")})


def test_hard_negative_weights_by_hand():
    g = torch.Generator().manual_seed(0)
    media, text = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    idx = torch.tensor([7, 3, 7, 5])  # samples 0 and 2 are the same video
    temp = 0.3
    w_v2t, w_t2v = hard_negative_weights(media, text, idx, torch.tensor(temp))
    cos = [[sum(a * b for a, b in zip(media[i].tolist(), text[j].tolist()))
            / math.sqrt(sum(a * a for a in media[i].tolist())) / math.sqrt(sum(b * b for b in text[j].tolist()))
            for j in range(4)] for i in range(4)]

    def weights(rows):
        out = []
        for i, row in enumerate(rows):
            e = [math.exp(s / temp + 1e-4) for s in row]
            out.append([0.0 if idx[i] == idx[j] else e[j] / sum(e) for j in range(4)])
        return out

    torch.testing.assert_close(w_v2t, torch.tensor(weights(cos)), atol=1e-6, rtol=0)
    torch.testing.assert_close(w_t2v, torch.tensor(weights([list(c) for c in zip(*cos)])), atol=1e-6, rtol=0)
    assert w_v2t[0, 2] == 0 and w_v2t[2, 0] == 0 and w_t2v[2, 2] == 0


def test_negative_draws_follow_the_official_order_and_skip_positives():
    g = torch.Generator().manual_seed(1)
    media, text = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    idx = torch.tensor([0, 1, 1, 2, 3, 4])
    w_v2t, w_t2v = hard_negative_weights(media, text, idx, 0.5)
    neg_media, neg_text = sample_hard_negatives(media, text, idx, 0.5, generator=torch.Generator().manual_seed(9))
    ref = torch.Generator().manual_seed(9)  # official: the negative video per text is drawn first
    assert neg_media.tolist() == torch.multinomial(w_t2v, 1, generator=ref)[:, 0].tolist()
    assert neg_text.tolist() == torch.multinomial(w_v2t, 1, generator=ref)[:, 0].tolist()
    for _ in range(20):
        nm, nt = sample_hard_negatives(media, text, idx, 0.5)
        assert (idx[nm] != idx).all() and (idx[nt] != idx).all()


def test_hard_negative_is_the_most_similar_at_low_temperature():
    text = torch.eye(4)
    media = torch.eye(4)
    media[0] = torch.tensor([0.0, 1.0, 0.1, 0.0])  # video 0 looks like text 1
    nm, nt = sample_hard_negatives(media, text, torch.arange(4), 0.001, generator=torch.Generator().manual_seed(0))
    assert nt[0] == 1 and nm[1] == 0


def test_degenerate_batches():
    media = torch.randn(3, 4)
    with pytest.raises(ValueError, match="share one idx"):
        sample_hard_negatives(media, media, torch.tensor([5, 5, 5]), 0.07)
    # every negative's weight underflows to 0 (temp tiny, positives dominate): uniform over the negatives
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    for _ in range(5):
        nm, nt = sample_hard_negatives(x, x, torch.arange(3), 1e-5)
        assert (nm != torch.arange(3)).all() and (nt != torch.arange(3)).all()


def _inputs(model, batch=4, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (batch, length), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[mask == 0] = 0
    media = torch.randn(batch, 9, model.cfg.encoder_width, generator=g)
    return ids, mask, media


@pytest.mark.parametrize("audio_visual", [False, True], ids=["vtm", "avtm"])
def test_vtm_loss_against_reference(tiny_model, tiny_av_model, audio_visual):
    model = tiny_av_model if audio_visual else tiny_model
    head = "avtm" if audio_visual else "itm"
    ids, mask, media = _inputs(model)
    with torch.no_grad():
        text_tokens, cls = model.encode_text(ids, mask)
        media_feat = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
        text_feat = model.text_features(cls)
        idx = torch.tensor([0, 1, 2, 1])
        loss = vtm_loss(model, media, text_tokens, mask, media_feat, text_feat, idx, model.temp, head=head,
                        generator=torch.Generator().manual_seed(4))
    nm, nt = sample_hard_negatives(media_feat, text_feat, idx, model.temp, generator=torch.Generator().manual_seed(4))
    sd, tsd = f64(model.state_dict()), _text_sd(model)
    pairs = [(i, i, 1) for i in range(4)] + [(int(nm[i]), i, 0) for i in range(4)] + [(i, int(nt[i]), 0)
                                                                                      for i in range(4)]
    total = 0.0
    for v, t, label in pairs:
        fused = bert_fuse(tsd, text_tokens[t:t + 1].double(), mask[t:t + 1], media[v:v + 1], 2, 3, 4)
        logits = linear(fused[:, 0], sd, f"{head}_head")[0]
        total -= (logits[label] - torch.logsumexp(logits, 0)).item()
    assert abs(loss.item() - total / len(pairs)) < 1e-5


def test_mask_tokens_follows_the_official_draws():
    ids = torch.tensor([[2, 9, 12, 3, 0, 0], [2, 5, 6, 7, 8, 3]])
    kw = dict(vocab_size=40, mask_token_id=4, pad_token_id=0, cls_token_id=2, mask_prob=0.5)
    corrupted, labels = mask_tokens(ids, **kw, generator=torch.Generator().manual_seed(11))
    # the same four draws, in the official order, evaluated by hand
    g = torch.Generator().manual_seed(11)
    chosen = torch.bernoulli(torch.full(ids.shape, 0.5), generator=g).tolist()
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=g).tolist()
    to_random = torch.bernoulli(torch.full(ids.shape, 0.5), generator=g).tolist()
    random_ids = torch.randint(40, ids.shape, generator=g).tolist()
    for r in range(2):
        for c in range(6):
            tok = int(ids[r, c])
            pick = chosen[r][c] == 1 and tok not in (0, 2)
            assert labels[r, c] == (tok if pick else -100)
            if pick and to_mask[r][c] == 1:
                expected = 4
            elif pick and to_random[r][c] == 1:
                expected = random_ids[r][c]
            else:
                expected = tok
            assert corrupted[r, c] == expected, (r, c)


def test_mask_tokens_statistics():
    ids = torch.randint(5, 1000, (200, 50))
    ids[:, 0] = 2
    ids[:, 40:] = 0
    corrupted, labels = mask_tokens(ids, vocab_size=1000, mask_token_id=4, pad_token_id=0, cls_token_id=2,
                                    generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 40:].any()  # never [CLS] or [PAD]
    eligible = 200 * 39
    assert abs(chosen.sum().item() / eligible - 0.5) < 0.03
    masked = (corrupted == 4) & chosen
    assert abs(masked.sum().item() / chosen.sum().item() - 0.8) < 0.03
    changed = chosen & (corrupted != ids) & (corrupted != 4)
    assert abs(changed.sum().item() / chosen.sum().item() - 0.1) < 0.02
    assert (labels[chosen] == ids[chosen]).all() and (corrupted[~chosen] == ids[~chosen]).all()


def test_mlm_loss_against_reference(tiny_model, tokenizer):
    ids, mask, media = _inputs(tiny_model, length=9, seed=5)
    with torch.no_grad():
        loss = mlm_loss(tiny_model, ids, mask, media, tokenizer, generator=torch.Generator().manual_seed(2))
    corrupted, labels = mask_tokens(ids, vocab_size=64, mask_token_id=4, pad_token_id=0, cls_token_id=2,
                                    generator=torch.Generator().manual_seed(2))
    from _align_reference import bert_text

    tsd = _text_sd(tiny_model)
    fused = bert_fuse(tsd, bert_text(tsd, corrupted, mask, 2, 4), mask, media, 2, 3, 4)
    logp = torch.log_softmax(mlm_head(tsd, fused), dim=-1)
    picked = labels != -100
    ref = -logp[picked].gather(1, labels[picked][:, None]).mean().item()
    assert picked.any() and abs(loss.item() - ref) < 1e-5


def test_mlm_loss_without_masked_tokens_is_zero_with_grad(tiny_model, tokenizer):
    ids = torch.tensor([[2, 0, 0]])  # only [CLS] and padding: nothing can be masked
    mask = torch.tensor([[1, 0, 0]])
    media = torch.randn(1, 5, tiny_model.cfg.encoder_width)
    loss = mlm_loss(tiny_model, ids, mask, media, tokenizer)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_losses_backward_with_and_without_gradient_checkpointing(tokenizer):
    """Training readiness: both losses backpropagate into every tower; recomputation gives the same gradients."""
    import dataclasses

    from _align_helpers import randomize_

    from iv2_align import Stage2Model, get_stage2_config

    cfg = get_stage2_config("internvideo2-stage2-tiny")
    cfg = dataclasses.replace(cfg, text=dict(cfg.text, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = randomize_(Stage2Model(cfg), seed=3).train()
        model.set_grad_checkpointing(checkpointing)
        video = torch.randn(3, 3, 4, 56, 56, generator=torch.Generator().manual_seed(1))
        ids, mask, _ = _inputs(model, batch=3)
        tokens, pooled = model.encode_video(video)
        text_tokens, cls = model.encode_text(ids, mask)
        loss = vtm_loss(model, tokens, text_tokens, mask, model.video_features(pooled), model.text_features(cls),
                        torch.arange(3), model.temp, generator=torch.Generator().manual_seed(0))
        loss = loss + mlm_loss(model, ids, mask, tokens, tokenizer, generator=torch.Generator().manual_seed(0))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert any(n.startswith("vision_encoder.blocks.0.") for n in grads[0])
    assert any(".crossattention." in n for n in grads[0]) and "itm_head.weight" in grads[0]
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5, msg=n)
