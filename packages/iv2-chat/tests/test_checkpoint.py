"""Checkpoint layouts: InternVideo2-Chat, VideoChat2 (Ask-Anything), old peft names, trainable-only, wrappers."""

import pytest
import torch

from iv2_chat import checkpoint_key_map, export_state_dict, load_checkpoint, save_checkpoint
from iv2_encoders import CheckpointError


def _differs(a, b, keys=None):
    sa, sb = a.state_dict(), b.state_dict()
    return sorted(k for k in (keys or sa) if not torch.equal(sa[k], sb[k]))


def test_key_map_on_hand_written_names():
    model_keys = {
        "lm.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
        "lm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "lm.base_model.model.model.embed_tokens.weight",
        "lm.base_model.model.lm_head.base_layer.weight",
        "project_up.weight", "vision_encoder.blocks.0.ls1", "qformer.bert.embeddings.LayerNorm.weight",
    }
    got = checkpoint_key_map([
        "mistral_model.base_model.model.model.layers.0.self_attn.q_proj.weight",      # AA + peft < 0.7
        "module.lm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",  # DDP + peft save names
        "lm.model.embed_tokens.weight",                                              # no LoRA wrapper
        "lm.lm_head.weight",
        "mistral_proj.weight",
        "vision_encoder.blocks.0.ls1.gamma",                                         # stage-2 LayerScale
        "qformer.bert.embeddings.LayerNorm.weight",
        "qformer.cls.predictions.bias",                                              # not in the model
    ], model_keys)
    assert got == {
        "mistral_model.base_model.model.model.layers.0.self_attn.q_proj.weight":
            "lm.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
        "module.lm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
            "lm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "lm.model.embed_tokens.weight": "lm.base_model.model.model.embed_tokens.weight",
        "lm.lm_head.weight": "lm.base_model.model.lm_head.base_layer.weight",
        "mistral_proj.weight": "project_up.weight",
        "vision_encoder.blocks.0.ls1.gamma": "vision_encoder.blocks.0.ls1",
        "qformer.bert.embeddings.LayerNorm.weight": "qformer.bert.embeddings.LayerNorm.weight",
        "qformer.cls.predictions.bias": None,
    }


def test_internvideo2_chat_layout_round_trip(make_model, tmp_path):
    a, b = make_model(seed=1), make_model(seed=2)
    save_checkpoint(a, tmp_path / "chat.safetensors")
    missing, dropped = load_checkpoint(b, tmp_path / "chat.safetensors")
    assert (missing, dropped) == ([], [])
    assert _differs(a, b) == []


def test_deepspeed_wrapping_and_module_prefix(make_model, tmp_path):
    a, b = make_model(seed=1), make_model(seed=2)
    torch.save({"module": {"module." + k: v for k, v in a.state_dict().items()}}, tmp_path / "ds.pt")
    result = load_checkpoint(b, tmp_path / "ds.pt")
    assert result.missing == [] and result.dropped == []
    assert _differs(a, b) == []


def test_videochat2_layout_round_trip(make_model, tmp_path):
    a, b = make_model(seed=1), make_model(seed=2)
    sd = export_state_dict(a, layout="videochat2")
    assert any(k.startswith("mistral_model.base_model.model.") for k in sd)
    assert "mistral_proj.weight" in sd and not any(k.startswith(("project_", "lm.")) for k in sd)
    torch.save({"model": sd}, tmp_path / "aa.pth")
    missing, dropped = load_checkpoint(b, tmp_path / "aa.pth")
    assert missing == ["project_down.bias", "project_down.weight"] and dropped == []
    assert _differs(a, b) == ["project_down.bias", "project_down.weight"]


def test_old_peft_names_round_trip(make_model, tmp_path):
    a, b = make_model(seed=1), make_model(seed=2)
    sd = export_state_dict(a, peft_base_layer=False)
    assert not any(".base_layer." in k for k in sd)
    assert "lm.base_model.model.lm_head.weight" in sd
    missing, dropped = load_checkpoint(b, sd)
    assert (missing, dropped) == ([], [])
    assert _differs(a, b) == []


def test_trainable_only_checkpoint_keeps_the_base_llm(make_model, tmp_path):
    a, b = make_model(seed=1), make_model(seed=2)
    sd = export_state_dict(a, layout="videochat2", trainable_only=True)
    base = [k for k in sd if k.startswith("mistral_model.") and "lora_" not in k]
    assert base == []  # the frozen LLM is not saved, LoRA is
    assert any("lora_A" in k for k in sd)
    save_checkpoint(a, tmp_path / "t.safetensors", layout="videochat2", trainable_only=True)
    before = {k: v.clone() for k, v in b.state_dict().items() if k.startswith("lm.") and "lora_" not in k}
    result = load_checkpoint(b, tmp_path / "t.safetensors")
    assert result.from_llm == sorted(before)
    assert result.missing == ["project_down.bias", "project_down.weight"]
    assert all(torch.equal(b.state_dict()[k], v) for k, v in before.items())  # base LLM untouched
    rest = [k for k in a.state_dict() if k not in before and not k.startswith("project_down")]
    assert _differs(a, b, rest) == []


def test_checkpoint_without_lora_loads_into_the_base_layers(make_model):
    plain, lora = make_model(seed=1, lora=None), make_model(seed=2)
    result = load_checkpoint(lora, plain.state_dict())
    assert result.dropped == [] and result.from_llm == []
    assert all("lora_" in k for k in result.missing)
    p, q = plain.state_dict(), lora.state_dict()
    assert torch.equal(p["lm.model.layers.0.self_attn.q_proj.weight"],
                       q["lm.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])
    assert torch.equal(p["lm.lm_head.weight"], q["lm.base_model.model.lm_head.base_layer.weight"])


def test_shape_mismatch_names_key_and_shapes(make_model):
    model = make_model()
    sd = model.state_dict()
    sd["project_up.weight"] = torch.zeros(48, 16)
    with pytest.raises(CheckpointError, match=r"'project_up.weight'.*\(48, 16\).*\(48, 32\)"):
        load_checkpoint(model, sd)


def test_lora_weights_into_a_model_without_lora_is_an_error(make_model):
    with pytest.raises(CheckpointError, match="holds LoRA weights"):
        load_checkpoint(make_model(lora=None), make_model().state_dict())


def test_umt_tower_is_refused(make_model):
    with pytest.raises(CheckpointError, match="UMT vision tower"):
        load_checkpoint(make_model(), {"vision_encoder.encoder.patch_embed.proj.weight": torch.zeros(1)})


def test_stage2_tower_names_and_fewer_frames_are_resampled(make_model):
    """The official chat loader strips ``.gamma`` and interpolates the 4-frame stage-2 table in time."""
    src, dst = make_model(seed=1, num_frames=2), make_model(seed=2, num_frames=4)
    sd = {k.replace(".ls1", ".ls1.gamma").replace(".ls2", ".ls2.gamma") if k.startswith("vision_encoder.") else k: v
          for k, v in src.state_dict().items()}
    result = load_checkpoint(dst, sd)
    assert result.num_frames == 2 and result.missing == []
    assert torch.equal(dst.state_dict()["vision_encoder.blocks.0.ls1"], src.state_dict()["vision_encoder.blocks.0.ls1"])
    assert dst.vision_encoder.pos_embed.shape[1] == 1 + 4 * 4
