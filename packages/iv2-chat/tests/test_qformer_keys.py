"""The QFormer state-dict adapter: transformers' InstructBLIP names ↔ the official BLIP-2 names."""

import torch
from _chat_official_layout import qformer_layout

from iv2_chat import QFormer, chat_config, qformer_key_from_official, qformer_key_to_official

# (transformers, official) pairs written by hand from both sources
PAIRS = [
    ("embeddings.layernorm.weight", "embeddings.LayerNorm.weight"),
    ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("encoder.layer.3.attention.attention.query.bias", "encoder.layer.3.attention.self.query.bias"),
    ("encoder.layer.0.crossattention.attention.value.weight", "encoder.layer.0.crossattention.self.value.weight"),
    ("encoder.layer.0.crossattention.output.LayerNorm.bias", "encoder.layer.0.crossattention.output.LayerNorm.bias"),
    ("encoder.layer.1.attention.output.dense.weight", "encoder.layer.1.attention.output.dense.weight"),
    ("encoder.layer.1.output_query.LayerNorm.weight", "encoder.layer.1.output_query.LayerNorm.weight"),
    ("encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.intermediate.dense.weight"),
]


def test_adapter_both_directions_on_hand_written_pairs():
    for ours, official in PAIRS:
        assert qformer_key_to_official(ours) == official
        assert qformer_key_from_official(official) == ours
        assert qformer_key_to_official("qformer.bert." + ours) == "qformer.bert." + official


def test_adapter_round_trips_every_transformers_key():
    from transformers import InstructBlipQFormerModel

    hf_keys = list(InstructBlipQFormerModel(chat_config("tiny").qformer_hf_config()).state_dict())
    assert all(qformer_key_from_official(qformer_key_to_official(k)) == k for k in hf_keys)
    official = {qformer_key_to_official(k) for k in hf_keys} | {"embeddings.position_ids"}
    q = chat_config("tiny").qformer_dict()
    expected = qformer_layout(h=32, layers=2, inter=64, vocab=q["vocab_size"], positions=64, encoder_width=32)
    assert official == {k[len("qformer.bert."):] for k in expected}


def test_module_saves_official_names_and_loads_them_back():
    cfg = chat_config("tiny")
    torch.manual_seed(0)
    a, b = QFormer(cfg.qformer_hf_config()), QFormer(cfg.qformer_hf_config())
    sd = a.state_dict()
    assert "bert.encoder.layer.0.attention.self.query.weight" in sd
    assert not any(".attention.attention." in k or "layernorm" in k for k in sd)
    assert torch.equal(sd["bert.embeddings.position_ids"], torch.arange(64)[None])
    b.load_state_dict(sd, strict=True)  # official names in, no missing / unexpected keys
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), name


def test_drop_path_is_linear_over_layers_and_only_in_training():
    cfg = chat_config("tiny")
    q = QFormer(cfg.qformer_hf_config(), drop_path_rate=0.2)
    rates = []
    for layer in q.bert.encoder.layer:
        seq = layer.output_query.dropout
        rates.append(seq[1].p if isinstance(seq, torch.nn.Sequential) else 0.0)
    assert rates == [0.0, 0.2]  # linspace(0, 0.2, 2): the first layer has none, as the official list
    queries, tokens = torch.randn(2, 8, 32), torch.randn(2, 5, 32)
    q.eval()
    assert torch.equal(q(queries, tokens), q(queries, tokens))
