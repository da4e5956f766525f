"""LoRA: the official configuration, merge equality against the hand formula, save/load, eval semantics."""

import copy

import torch

from iv2_chat import OFFICIAL_LORA, chat_config, load_checkpoint


def _logits(lm, embeds):
    with torch.no_grad():
        return lm(inputs_embeds=embeds).logits


def test_release_lora_is_the_official_one():
    lora = chat_config("internvideo2-chat-8b").lora
    assert lora == OFFICIAL_LORA
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (16, 32, 0.1)
    assert set(lora["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj", "lm_head"}


def test_merged_weights_follow_the_lora_formula_and_give_the_same_logits(make_model):
    model = make_model(seed=3)
    cfg = model.cfg.lora
    scale = cfg["lora_alpha"] / cfg["r"]
    sd = model.state_dict()
    merged = copy.deepcopy(model.lm).merge_and_unload()
    for name in ("model.layers.1.mlp.down_proj", "lm_head"):
        p = "lm.base_model.model." + name
        w, a, b = (sd[p + s].double() for s in (".base_layer.weight", ".lora_A.default.weight", ".lora_B.default.weight"))
        expected = w + scale * b @ a
        assert (merged.get_submodule(name).weight.double() - expected).abs().max() < 1e-6
    embeds = torch.randn(2, 7, model.lm.config.hidden_size)
    assert (_logits(model.lm, embeds) - _logits(merged, embeds)).abs().max() < 1e-5
    # LoRA matters: the base model alone gives other logits
    with model.lm.disable_adapter():
        assert (_logits(model.lm, embeds) - _logits(merged, embeds)).abs().max() > 1e-3


def test_peft_adapter_file_loads_and_reproduces_the_logits(make_model, tmp_path):
    a, b = make_model(seed=3), make_model(seed=3)  # same base weights,
    with torch.no_grad():  # different LoRA weights
        for n, p in b.lm.named_parameters():
            if "lora_" in n:
                p.normal_()
    embeds = torch.randn(1, 5, a.lm.config.hidden_size)
    assert (_logits(a.lm, embeds) - _logits(b.lm, embeds)).abs().max() > 1e-3
    a.lm.save_pretrained(tmp_path / "adapter")
    # an adapter file holds LoRA weights only: strict=False keeps the rest of the model as it is
    result = load_checkpoint(b, tmp_path / "adapter" / "adapter_model.safetensors", strict=False)
    assert result.dropped == [] and result.from_llm  # only adapter weights in the file
    assert (_logits(a.lm, embeds) - _logits(b.lm, embeds)).abs().max() < 1e-6


def test_eval_turns_lora_dropout_off(make_model):
    model = make_model(seed=4)
    embeds = torch.randn(1, 6, model.lm.config.hidden_size)
    model.eval()
    assert torch.equal(_logits(model.lm, embeds), _logits(model.lm, embeds))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(_logits(model.lm, embeds), _logits(model.lm, embeds))  # dropout 0.1 acts in training


def test_building_the_lora_model_prints_no_third_party_deprecation():
    """peft reads a deprecated transformers attribute in get_peft_model; that FutureWarning is not the user's
    to act on and is kept out of every log that builds a model (the demo's included)."""
    import warnings

    from iv2_chat import VideoChatModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        VideoChatModel(chat_config("tiny"))
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
