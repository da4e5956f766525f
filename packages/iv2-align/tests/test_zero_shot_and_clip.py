"""Zero-shot classification (official prompt ensembles and aggregation) and the CLIP variant's model."""

import pytest
import torch
import torch.nn.functional as F

from iv2_align import (
    KINETICS_TEMPLATES,
    VideoCLIPConfig,
    VideoCLIPModel,
    class_prompts,
    evaluate_retrieval,
    tokenize,
    zero_shot_classify,
)
from iv2_encoders import get_config

CLASSES = ["playing guitar", "swim", "cooking"]


def test_sixteen_templates_class_major():
    prompts = class_prompts(["jump", "swim"])
    assert len(KINETICS_TEMPLATES) == 16 and len(prompts) == 32
    assert prompts[0] == "a photo of action jump" and prompts[15] == "The woman is jump"
    assert prompts[16] == "a photo of action swim" and prompts[27] == "Can you recognize the action of swim?"


def _videos(n=4, seed=0):
    return torch.randn(n, 3, 4, 56, 56, generator=torch.Generator().manual_seed(seed))


def _cosines(model, videos, tokenizer):
    ids, mask = tokenize(tokenizer, class_prompts(CLASSES), 32)
    with torch.no_grad():
        return model.embed_video(videos) @ model.embed_text(ids, mask).T  # (N, classes * 16)


def test_stage2_rule_softmax_over_all_prompts_then_mean(tiny_model, tokenizer):
    videos = _videos()
    result = zero_shot_classify(tiny_model, videos, CLASSES, tokenizer, labels=[0, 1, 2, 0], batch_size=3)
    cos = _cosines(tiny_model, videos, tokenizer).double()
    prob = cos.exp() / cos.exp().sum(1, keepdim=True)
    expected = torch.stack([prob[:, c * 16:(c + 1) * 16].mean(1) for c in range(3)], 1)
    torch.testing.assert_close(result.scores.double(), expected, atol=1e-6, rtol=0)
    ranks = [sorted(range(3), key=lambda c: (float(result.scores[i, c]), c))[::-1].index(label)
             for i, label in enumerate([0, 1, 2, 0])]
    assert result.metrics == {"top1": round(100 * sum(r < 1 for r in ranks) / 4, 2), "top5": 100.0}


def test_bad_labels(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="class indices"):
        zero_shot_classify(tiny_model, _videos(2), CLASSES, tokenizer, labels=[0, 3])


TINY_BERT_TEXT = dict(model_type="bert", vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=40)
TINY_LLAMA_TEXT = dict(model_type="llama", vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=40)


@pytest.fixture
def clip_model():
    torch.manual_seed(0)
    return VideoCLIPModel(VideoCLIPConfig(vision=get_config("internvideo2-tiny"), text=TINY_LLAMA_TEXT)).eval()


def test_clip_keys_and_text_pooling(clip_model):
    keys = set(clip_model.state_dict())
    assert "text_encoder.text_projection" in keys and "temp" in keys
    assert any(k.startswith("text_encoder.transformer.layers.0.") for k in keys)
    assert any(k.startswith("vision_encoder.clip_projector.") for k in keys)
    assert clip_model.text_encoder.text_projection.shape == (16, 32)
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    with torch.no_grad():
        feats = clip_model.encode_text(ids, mask)
        hidden = clip_model.text_encoder.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    # official LLaMA tower: the hidden state of the last non-padding token, times text_projection
    expected = torch.stack([hidden[0, 2], hidden[1, 4]]) @ clip_model.text_encoder.text_projection
    torch.testing.assert_close(feats, expected)


def test_clip_first_token_pooling_with_a_bert_tower():
    model = VideoCLIPModel(VideoCLIPConfig(vision=get_config("internvideo2-tiny"), text=TINY_BERT_TEXT,
                                           text_pooling="first")).eval()
    ids, mask = torch.tensor([[2, 5, 6, 0]]), torch.tensor([[1, 1, 1, 0]])
    with torch.no_grad():
        hidden = model.text_encoder.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(model.encode_text(ids, mask), hidden[:, 0] @ model.text_encoder.text_projection)


def test_clip_freeze_and_temperature(clip_model):
    clip_model.freeze()
    trainable = {n for n, p in clip_model.named_parameters() if p.requires_grad}
    assert trainable == {"temp", "text_encoder.text_projection"} | {
        n for n, _ in clip_model.named_parameters() if n.startswith("vision_encoder.clip_projector.")}
    with torch.no_grad():
        clip_model.temp.fill_(0.001)
    clip_model.clamp_temperature()
    assert clip_model.temp.item() == pytest.approx(0.01)


def test_clip_zero_shot_averages_raw_similarities(clip_model, tokenizer):
    videos = _videos(3, seed=1)
    result = zero_shot_classify(clip_model, videos, CLASSES, tokenizer)
    cos = _cosines(clip_model, videos, tokenizer)
    expected = torch.stack([cos[:, c * 16:(c + 1) * 16].mean(1) for c in range(3)], 1)
    torch.testing.assert_close(result.scores, expected, atol=1e-6, rtol=0)
    assert result.metrics == {}


def test_clip_retrieval_is_itc_only_on_raw_scores(clip_model, tokenizer):
    videos = _videos(3, seed=2)
    ids, mask = tokenize(tokenizer, ["a dog runs", "a red car", "a man is playing guitar"], 8)
    result = evaluate_retrieval(clip_model, videos, ids, mask, text_to_video=[0, 1, 2])
    with torch.no_grad():
        itc = F.normalize(clip_model.encode_video(videos), dim=-1) @ F.normalize(clip_model.encode_text(ids, mask), dim=-1).T
    torch.testing.assert_close(result.itc, itc, atol=1e-6, rtol=0)
    assert result.itm_v2t is None and set(result.metrics) == {"sim", "dsl"}
    rows = evaluate_retrieval(clip_model, videos, ids, mask, text_to_video=[0, 1, 2], keep_scores=False, chunk_rows=2)
    assert rows.metrics == result.metrics  # raw scores, row chunks


def test_clip_vision_from_a_stage2_checkpoint(tiny_model, tmp_path):
    """Post-pretraining starts from the stage-2 tower: iv2_encoders loads ``vision_encoder.*`` and drops the rest."""
    from iv2_encoders import load_checkpoint

    torch.save({"module": tiny_model.state_dict()}, tmp_path / "stage2.pth")
    clip = VideoCLIPModel(VideoCLIPConfig(vision=get_config("internvideo2-tiny", sep_image_video_pos_embed=True),
                                          text=TINY_BERT_TEXT))
    result = load_checkpoint(clip.vision_encoder, tmp_path / "stage2.pth")
    assert result.missing == [] and result.prefix == "vision_encoder."
    video = _videos(1)
    with torch.no_grad():
        torch.testing.assert_close(clip.eval().encode_video(video), tiny_model.encode_video(video)[1])
