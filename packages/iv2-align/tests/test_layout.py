"""Full-size official key layouts, built on the meta device (nothing allocated)."""

import pytest
import torch
from _align_layout import BEATS_ITER3_CFG, beats_layout, bert_layout, stage2_layout

from iv2_align import BEATS_ITER3, BEATs, BEATsConfig, create_stage2_model

# tensors the official state dict lists more than once (tied or shared) or that are buffers
_ALIASES = ("text_encoder.cls.predictions.decoder.weight", "text_encoder.cls.predictions.decoder.bias",
            "text_encoder.bert.embeddings.position_ids")


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("size", ["1b", "6b"])
def test_stage2_layout_matches_official(size):
    with torch.device("meta"):
        model = create_stage2_model(f"internvideo2-stage2-{size}")
    official, stage1_heads = stage2_layout(size)
    ours = _shapes(model)
    # every official key but the stage-1 heads, with the official shape; nothing else
    assert set(ours) == set(official), (sorted(set(ours) - set(official))[:5], sorted(set(official) - set(ours))[:5])
    assert {k: ours[k] for k in official} == official
    assert not set(stage1_heads) & set(ours)
    # the parameters are exactly the distinct official tensors (tied/shared ones counted once)
    distinct = {k: v for k, v in official.items()
                if k not in _ALIASES and not (".relative_attention_bias." in k and ".layers.0." not in k)}
    expected = sum(int(torch.Size(s).numel()) for s in distinct.values())
    assert sum(p.numel() for p in model.parameters()) == expected
    assert all(p.is_meta for p in model.parameters())


def test_stage2_1b_sizes():
    with torch.device("meta"):
        model = create_stage2_model("internvideo2-stage2-1b")
    # bert-large: 19 text layers, 5 fusion layers whose cross-attention reads 1408-d vision tokens
    layers = model.text_encoder.bert.encoder.layer
    assert len(layers) == 24 and model.text_encoder.fusion_layer == 19
    assert not hasattr(layers[18], "crossattention")
    assert layers[19].crossattention.self.key.weight.shape == (1024, 1408)
    assert model.vision_encoder.cfg.num_frames == 4 and model.vision_encoder.img_pos_embed is not None


def test_bert_layout_tiny_ret_and_pt():
    from transformers import BertConfig

    from iv2_align import BertFusionEncoder

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=20)
    enc = BertFusionEncoder(cfg, fusion_layer=1, encoder_width=12)
    expected = bert_layout(hidden=16, layers=3, ffn=24, vocab=50, max_pos=20, type_vocab=2, fusion_layer=1,
                           encoder_width=12)
    assert _shapes(enc) == expected
    # tied as the official model: decoder weight is the word embedding, decoder bias is predictions.bias
    assert enc.cls.predictions.decoder.weight is enc.bert.embeddings.word_embeddings.weight
    assert enc.cls.predictions.decoder.bias is enc.cls.predictions.bias


def test_beats_layout_full_size_meta():
    with torch.device("meta"):
        beats = BEATs(BEATsConfig(**BEATS_ITER3))
    assert _shapes(beats) == beats_layout(BEATS_ITER3_CFG)
    # one relative-bias table shared by every layer, as the official model
    tables = {id(layer.self_attn.relative_attention_bias) for layer in beats.encoder.layers}
    assert len(tables) == 1


def test_beats_config_from_checkpoint_cfg_dict():
    cfg = dict(BEATS_ITER3, finetuned_model=False, predictor_class=527, some_future_field=3)
    with pytest.warns(UserWarning, match="some_future_field"):
        c = BEATsConfig(**cfg)
    assert c.encoder_layers == 12 and c.max_distance == 800 and c.extra == {"some_future_field": 3}
    assert c.to_dict()["some_future_field"] == 3
    with pytest.warns(UserWarning):  # still unknown on a round trip, still kept
        assert BEATsConfig(**c.to_dict()).to_dict() == c.to_dict()
    with pytest.raises(ValueError, match="input_patch_size"):
        BEATsConfig()
    with pytest.raises(ValueError, match="deep_norm"):
        BEATsConfig(input_patch_size=16, deep_norm=True, layer_norm_first=True)


def test_stage2_config_validation():
    from iv2_align import get_stage2_config

    cfg = get_stage2_config("internvideo2-stage2-tiny")
    with pytest.raises(ValueError, match="fusion_layer"):
        type(cfg)(vision=cfg.vision, text=cfg.text, fusion_layer=9, embed_dim=16)
    with pytest.raises(ValueError, match="av_concat_dim"):
        type(cfg)(vision=cfg.vision, text=cfg.text, fusion_layer=1, embed_dim=16, audio=dict(input_patch_size=16))
    assert type(cfg).from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    with pytest.raises(KeyError, match="registered"):
        get_stage2_config("internvideo2-stage2-7b")
