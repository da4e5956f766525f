"""State-dict layout: the 8B release shape on the meta device vs the official layout written from the source."""

import pytest
import torch
from _chat_official_layout import (
    BUFFERS,
    MISTRAL_7B_V03_PARAMS,
    OFFICIAL_LORA_PARAMS,
    internvideo2_chat_8b_layout,
    qformer_layout,
    vision_tower_layout,
)

from iv2_chat import ChatConfig, VideoChatModel, chat_config, chat_vision_config


@pytest.fixture(scope="module")
def release_model():
    with torch.device("meta"):
        return VideoChatModel(chat_config("internvideo2-chat-8b"))


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_release_key_set_and_shapes_equal_the_official_layout(release_model):
    ours, official = _shapes(release_model), internvideo2_chat_8b_layout()
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    wrong = {k: (ours[k], s) for k, s in official.items() if ours[k] != s}
    assert wrong == {}


def test_release_is_on_meta_and_counts_match(release_model):
    assert all(p.is_meta for p in release_model.parameters())
    official = internvideo2_chat_8b_layout()
    expected = sum(torch.Size(s).numel() for k, s in official.items() if k not in BUFFERS)
    assert sum(p.numel() for p in release_model.parameters()) == expected
    lm = release_model.lm
    lora = sum(p.numel() for n, p in lm.named_parameters() if "lora_" in n)
    assert lora == OFFICIAL_LORA_PARAMS == 42_532_864
    assert sum(p.numel() for n, p in lm.named_parameters() if "lora_" not in n) == MISTRAL_7B_V03_PARAMS


def test_release_trainable_parameters_are_lora_only_in_the_llm(release_model):
    trainable = {n for n, p in release_model.lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not release_model.project_down.weight.requires_grad  # unused, kept for the layout


def test_vision_tower_is_the_official_chat_tower():
    cfg = chat_vision_config("internvideo2-1b", num_frames=8)
    assert (cfg.depth, cfg.pool_head, cfg.sep_image_video_pos_embed, cfg.layerscale_keys) == (39, False, True, "bare")
    with torch.device("meta"):
        from iv2_encoders import VideoEncoder

        tower = VideoEncoder(cfg)
    assert _shapes(tower) == vision_tower_layout()


def test_tiny_layout_follows_the_same_rules(make_model):
    model = make_model()
    cfg = model.cfg
    q = cfg.qformer_dict()
    ours = _shapes(model)
    expected_q = qformer_layout(h=q["hidden_size"], layers=q["num_hidden_layers"], inter=q["intermediate_size"],
                                vocab=q["vocab_size"], positions=q["max_position_embeddings"],
                                encoder_width=q["encoder_width"], freq=q["cross_attention_freq"])
    assert {k: v for k, v in ours.items() if k.startswith("qformer.")} == expected_q
    side = cfg.vision.img_size // cfg.vision.patch_size
    expected_v = vision_tower_layout(d=cfg.vision.embed_dim, depth=cfg.vision.depth, mlp=cfg.vision.mlp_hidden_dim,
                                     frames=cfg.vision.num_frames, grid=side)
    assert {k[len("vision_encoder."):]: v for k, v in ours.items() if k.startswith("vision_encoder.")} == expected_v
    assert ours["query_tokens"] == (1, cfg.num_query_tokens, q["hidden_size"])
    assert ours["extra_query_tokens"] == (1, cfg.extra_num_query_tokens, q["hidden_size"])
    # widths come from the config, not the official hard-coded 768 / 96
    assert ours["project_up.weight"] == (model.lm.config.hidden_size, q["hidden_size"])
    assert model.num_visual_tokens == 8


def test_config_errors_name_the_problem():
    cfg = chat_config("tiny")
    with pytest.raises(ValueError, match="pool_head=False"):
        ChatConfig(vision=cfg.vision.replace(pool_head=True), qformer=cfg.qformer, num_query_tokens=4,
                   extra_num_query_tokens=4, llm=cfg.llm)
    with pytest.raises(ValueError, match="encoder_width 99 must equal the vision tower width 32"):
        cfg.replace(qformer={**cfg.qformer, "encoder_width": 99})
    with pytest.raises(ValueError, match="model_type"):
        cfg.replace(llm={"hidden_size": 8})
    with pytest.raises(TypeError, match="depth"):
        cfg.replace(depth=3)


def test_config_round_trips_through_a_dict():
    cfg = chat_config("tiny")
    again = ChatConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    assert again.num_visual_tokens == cfg.num_visual_tokens


def test_llm_from_a_local_path_keeps_its_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = chat_config("tiny", lora=None)
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(cfg.llm_hf_config())
    llm.save_pretrained(tmp_path / "llm")
    model = VideoChatModel(cfg.replace(llm=str(tmp_path / "llm"), local_files_only=True))
    assert all(torch.equal(a, b) for a, b in zip(llm.state_dict().values(), model.lm.state_dict().values()))
    assert not any(p.requires_grad for p in model.lm.parameters())  # the LLM is frozen
