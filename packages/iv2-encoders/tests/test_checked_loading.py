"""The generic checked loader the stage packages share: read_state_dict (files, folders, shards, prefixes) and
load_state_dict_checked (renames, drops, shape errors, missing parameters)."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from iv2_encoders import CheckpointError, load_state_dict_checked, read_state_dict


class TwoTowers(nn.Module):
    """A stand-in for a stage model: two sub-modules under their own prefixes, one buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.vision = nn.Linear(4, 3)
        self.lm = nn.Linear(3, 2)
        self.register_buffer("scale", torch.ones(2))


def reference_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"vision.weight": torch.randn(3, 4, generator=g), "vision.bias": torch.randn(3, generator=g),
            "lm.weight": torch.randn(2, 3, generator=g), "lm.bias": torch.randn(2, generator=g),
            "scale": torch.randn(2, generator=g)}


def test_prefix_renames_and_drops_are_reported():
    ref = reference_state()
    official = {"visual_encoder." + k[len("vision."):] if k.startswith("vision.") else
                "mistral_model." + k[len("lm."):] if k.startswith("lm.") else k: v for k, v in ref.items()}
    official["teacher.head.weight"] = torch.zeros(5)  # something the model does not have
    official["visual_encoder.clip_decoder.0.weight"] = torch.zeros(3)  # dropped on purpose
    model = TwoTowers()
    result = load_state_dict_checked(model, official, source="official.pt",
                                     rename={"visual_encoder.": "vision.", "mistral_model.": "lm.",
                                             "visual_encoder.clip_decoder.": "vision.clip_decoder."},
                                     drop=["vision.clip_decoder."])
    assert result.missing == [] and result.source == "official.pt"
    assert result.dropped == ["teacher.head.weight", "visual_encoder.clip_decoder.0.weight"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_callable_rename_may_drop_keys():
    ref = reference_state()
    model = TwoTowers()
    result = load_state_dict_checked(model, ref, source="sd", rename=lambda k: None if k.startswith("lm.") else k,
                                     strict=False)
    assert result.dropped == ["lm.bias", "lm.weight"] and result.missing == ["lm.bias", "lm.weight"]


def test_shape_mismatch_names_source_key_and_both_shapes():
    bad = {**reference_state(), "lm.weight": torch.zeros(2, 7)}
    with pytest.raises(CheckpointError, match=r"ckpt.bin: key 'lm.weight' has shape \(2, 7\) but the model expects "
                                              r"\(2, 3\)"):
        load_state_dict_checked(TwoTowers(), bad, source="ckpt.bin")
    renamed = {"llm.weight": torch.zeros(2, 7)}
    with pytest.raises(CheckpointError, match=r"key 'llm.weight' \(the model's 'lm.weight'\) has shape \(2, 7\)"):
        load_state_dict_checked(TwoTowers(), renamed, source="x", rename={"llm.": "lm."}, strict=False)


def test_missing_parameters_are_an_error_unless_allowed_or_not_strict():
    partial = {k: v for k, v in reference_state().items() if not k.startswith("lm.")}
    model = TwoTowers()
    before = model.lm.weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"trainable.pt: the checkpoint lacks 2 parameter\(s\) the model "
                                              r"needs: lm.bias, lm.weight; pass strict=False"):
        load_state_dict_checked(model, partial, source="trainable.pt")
    assert torch.equal(model.lm.weight, before), "nothing is loaded when the check fails"
    result = load_state_dict_checked(model, partial, source="trainable.pt", allow_missing=["lm."])
    assert result.missing == ["lm.bias", "lm.weight"]  # reported, not fatal
    assert torch.equal(model.vision.weight, partial["vision.weight"])
    result = load_state_dict_checked(TwoTowers(), {}, source="empty", strict=False)
    assert result.missing == sorted(TwoTowers().state_dict())


def test_two_keys_onto_one_parameter_is_an_error():
    ref = reference_state()
    both = {"vision.weight": ref["vision.weight"], "visual.weight": ref["vision.weight"]}
    with pytest.raises(CheckpointError, match="both map to the model's 'vision.weight'"):
        load_state_dict_checked(TwoTowers(), both, source="x", rename={"visual.": "vision."}, strict=False)


def test_meta_model_gets_the_tensors_assigned():
    with torch.device("meta"):
        model = TwoTowers()
    ref = reference_state()
    load_state_dict_checked(model, ref, source="sd")
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert torch.equal(model.lm.bias, ref["lm.bias"])


def test_read_state_dict_sharded_reads_only_the_shards_it_needs(tmp_path):
    ref = reference_state()
    save_file({k: v for k, v in ref.items() if k.startswith("vision.")}, str(tmp_path / "model-00001-of-00002.safetensors"))
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"not even a safetensors file")
    weight_map = {k: "model-00001-of-00002.safetensors" if k.startswith("vision.") else
                  "model-00002-of-00002.safetensors" for k in ref}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    got = read_state_dict(tmp_path / "model.safetensors.index.json", prefix="vision.")
    assert sorted(got) == ["vision.bias", "vision.weight"]  # the broken second shard was never opened
    assert read_state_dict(tmp_path, prefix="vision.").keys() == got.keys()  # a folder: its index is found
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors: not a readable safetensors"):
        read_state_dict(tmp_path / "model.safetensors.index.json")


def test_read_state_dict_folder_and_prefix(tmp_path):
    ref = reference_state()
    torch.save({"module": ref}, tmp_path / "pytorch_model.bin")
    assert sorted(read_state_dict(tmp_path)) == sorted(ref)
    assert sorted(read_state_dict(tmp_path / "pytorch_model.bin", prefix="lm.")) == ["lm.bias", "lm.weight"]
    (tmp_path / "other").mkdir()
    with pytest.raises(FileNotFoundError, match="other: no checkpoint in this folder"):
        read_state_dict(tmp_path / "other")
    (tmp_path / "bad.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="bad.index.json: not a sharded-checkpoint index"):
        read_state_dict(tmp_path / "bad.index.json")
