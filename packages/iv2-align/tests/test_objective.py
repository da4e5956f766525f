"""The training objective (Stage2Model.forward): which losses each media type computes, their weighting, the
masks, the temperature clamp and frozen towers — each term recomputed independently from the loss functions
with the same random draws."""

import pytest
import torch
from _align_helpers import randomize_

from iv2_align import LossWeights, Stage2Objective, create_stage2_model, mlm_loss, vtc_loss, vtm_loss


def _objective(tokenizer, **kw):
    return Stage2Objective.for_tokenizer(tokenizer, **kw)


def _batch(model, media_type, b=4, frames=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (b, 7), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    ids[mask == 0] = 0
    out = {"input_ids": ids, "attention_mask": mask, "idx": torch.tensor([0, 1, 2, 1])[:b]}
    if media_type in ("image", "video", "audio_video"):
        out["video"] = torch.randn(b, 3, 1 if media_type == "image" else frames, 56, 56, generator=g)
    if media_type in ("audio", "audio_video"):
        out["audio"] = torch.randn(b, 198, 64, generator=g)
    return out


@pytest.fixture
def av_model():
    torch.manual_seed(0)
    return randomize_(create_stage2_model("internvideo2-stage2-tiny-av"), seed=4).train()


@pytest.mark.parametrize("media_type, terms", [
    ("video", {"vtc", "vtm", "mlm"}), ("image", {"vtc", "vtm", "mlm"}), ("audio", {"atc", "amlm"}),
    ("audio_video", {"vtc", "vtm", "mlm", "atc", "avtc", "avtm", "avmlm"})])
def test_each_media_type_computes_its_official_terms(av_model, tokenizer, media_type, terms):
    weights = LossWeights(atc=0.5, amlm=0.25)
    av_model.objective = _objective(tokenizer, weights=weights)
    if media_type != "audio_video":
        terms = terms | ({"amlm"} if media_type == "audio" else set())
    else:
        terms = terms | {"amlm"}
    out = av_model((media_type, _batch(av_model, media_type)))
    assert set(out) == {"loss"} | {f"loss_{t}" for t in terms}
    total = sum(v for k, v in out.items() if k != "loss")
    torch.testing.assert_close(out["loss"], total)
    out["loss"].backward()
    assert av_model.temp.grad is not None


def test_video_losses_equal_the_terms_computed_by_hand(av_model, tokenizer):
    """Same RNG state -> the objective's weighted terms equal VTC/VTM/MLM called directly on a masked forward."""
    weights = LossWeights(vtc=0.7, vtm=1.3, mlm=0.4)
    av_model.objective = _objective(tokenizer, weights=weights, video_mask_ratio=0.5)
    av_model.eval()  # no dropout, so that the two computations see the same network
    batch = _batch(av_model, "video")
    with torch.no_grad():
        av_model.temp.fill_(0.9)  # out of range: the objective clamps it to 0.5 first
        torch.manual_seed(11)
        out = av_model(("video", batch))
        assert av_model.temp.item() == 0.5
        torch.manual_seed(11)
        mask = torch.zeros(4, 64, dtype=torch.bool)
        order = torch.rand(4, 64).argsort(dim=1)  # random_mask's draw
        mask.scatter_(1, order[:, :32], True)
        tokens, pooled = av_model.encode_video(batch["video"], mask)
        assert tokens.shape[1] == 1 + 32
        text_tokens, cls = av_model.encode_text(batch["input_ids"], batch["attention_mask"])
        v, t = av_model.video_features(pooled), av_model.text_features(cls)
        vtc = vtc_loss(v, t, batch["idx"], av_model.temp)
        vtm = vtm_loss(av_model, tokens, text_tokens, batch["attention_mask"], v, t, batch["idx"], av_model.temp)
        mlm = mlm_loss(av_model, batch["input_ids"], batch["attention_mask"], tokens, tokenizer)
    torch.testing.assert_close(out["loss_vtc"], 0.7 * vtc)
    torch.testing.assert_close(out["loss_vtm"], 1.3 * vtm)
    torch.testing.assert_close(out["loss_mlm"], 0.4 * mlm)


def test_image_masks_use_the_image_ratio_and_none_means_unmasked(av_model, tokenizer):
    objective = _objective(tokenizer, video_mask_ratio=0.8, image_mask_ratio=0.5)
    assert int(objective.draw_mask(torch.zeros(2, 3, 4, 56, 56), 14, 1)[0].sum()) == int(0.8 * 64)
    assert int(objective.draw_mask(torch.zeros(2, 3, 1, 56, 56), 14, 1)[0].sum()) == int(0.5 * 16)
    assert _objective(tokenizer, video_mask_type="none").draw_mask(torch.zeros(2, 3, 4, 56, 56), 14, 1) is None
    tube = _objective(tokenizer, video_mask_type="tube").draw_mask(torch.zeros(2, 3, 4, 56, 56), 14, 1)
    assert torch.equal(tube.view(2, 4, 16), tube.view(2, 4, 16)[:, :1].expand(2, 4, 16))


def test_frozen_towers_get_no_gradient_and_run_without_a_graph(av_model, tokenizer):
    from iv2_train import freeze

    freeze(av_model.vision_encoder)
    freeze(av_model.audio_encoder)
    av_model.objective = _objective(tokenizer, video_mask_type="none")
    out = av_model(("audio_video", _batch(av_model, "audio_video")))
    out["loss"].backward()
    assert all(p.grad is None for p in av_model.vision_encoder.parameters())
    assert all(p.grad is None for p in av_model.audio_encoder.parameters())
    assert av_model.av_concat_vision_proj[0].weight.grad is not None  # the trainable projections still learn
    assert av_model.text_encoder.bert.embeddings.word_embeddings.weight.grad is not None


def test_bad_batches_are_clear_errors(av_model, tokenizer):
    with pytest.raises(RuntimeError, match="objective"):
        av_model(("video", _batch(av_model, "video")))
    av_model.objective = _objective(tokenizer)
    with pytest.raises(ValueError, match="unknown media type"):
        av_model(("sound", {}))
    with pytest.raises(KeyError, match="missing \\['audio'\\]"):
        av_model(("audio_video", _batch(av_model, "video")))
    av_model.objective = _objective(tokenizer, weights=LossWeights(atc=0.0, amlm=0.0))
    with pytest.raises(ValueError, match="every loss weight"):
        av_model(("audio", _batch(av_model, "audio")))
    with pytest.raises(ValueError, match="mask_ratio"):
        Stage2Objective(video_mask_ratio=1.0)
