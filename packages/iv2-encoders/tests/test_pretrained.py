"""Pretrained tags (timm-style ``architecture.tag``), fetching through huggingface_hub (faked here with local
files laid out like the official releases), ``model.pretrained_cfg``, and save_pretrained folders."""

import json
import math
import os
import stat

import pytest
import torch
from _enc_helpers import randomize_
from _enc_official_layout import (
    CHAT_MODEL_OTHER_KEYS,
    OFFICIAL_SIZES,
    official_chat_tower_layout,
    official_distillation_heads,
    official_encoder_layout,
)
from _enc_reference import resample_position_table
from safetensors.torch import save_file

from iv2_encoders import (
    CheckpointError,
    PretrainedCfg,
    VideoEncoderConfig,
    create_model,
    get_config,
    list_models,
    save_pretrained,
)
from iv2_encoders.config import IMAGENET_MEAN, IMAGENET_STD

TAGS = ["internvideo2-1b.chat-8b", "internvideo2-1b.clip", "internvideo2-1b.stage1", "internvideo2-1b.stage2-f4",
        "internvideo2-6b.stage2-f4", "internvideo2-b14.distill", "internvideo2-l14.distill",
        "internvideo2-s14.distill"]


def tiny_overrides(name: str) -> dict:
    """A few-block, small-width version of any registered size (heads kept: the width is their lcm)."""
    cfg = get_config(name)
    width = math.lcm(cfg.num_heads, cfg.attn_pool_num_heads if cfg.pool_head else 1, 4)
    width *= max(1, 32 // width)
    return dict(embed_dim=width, depth=2, img_size=28, clip_embed_dim=16)


def test_imagenet_statistics_are_iv2_datas():
    from iv2_data.transforms import IMAGENET_MEAN as data_mean
    from iv2_data.transforms import IMAGENET_STD as data_std

    assert (data_mean, data_std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_list_models_shows_the_released_tags():
    assert list_models(pretrained=True) == TAGS
    assert list_models("internvideo2-1b.*", pretrained=True) == TAGS[:4]
    assert list_models("*distill", pretrained=True) == TAGS[5:]
    assert "internvideo2-1b" in list_models() and not any("." in n for n in list_models())


@pytest.mark.parametrize("tag", TAGS)
def test_every_tag_builds_the_official_layout_under_meta(tag):
    with torch.device("meta"):
        model = create_model(tag)
    arch, _, _ = tag.partition(".")
    width, depth, hidden = OFFICIAL_SIZES[arch]
    frames = model.cfg.num_frames
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if tag.endswith("chat-8b"):  # 39 of 40 blocks, bare LayerScale, image table, no pooling head
        assert ours == official_chat_tower_layout(width, depth - 1, hidden, num_patches=frames * 256, img_patches=256)
    else:
        expected = official_encoder_layout(width, depth, hidden, num_patches=frames * 256)
        if model.cfg.sep_image_video_pos_embed:
            expected["img_pos_embed"] = (1, 257, width)
        assert ours == expected
    pcfg = model.pretrained_cfg
    assert pcfg.name == tag and pcfg.hub_files and pcfg.num_frames == frames and pcfg.img_size == 224
    assert all(f.repo_id.startswith("OpenGVLab/") for f in pcfg.hub_files)


def test_tags_record_the_facts_of_their_files():
    stage2 = create_model.__globals__["get_pretrained_cfg"]("internvideo2-1b.stage2-f4")
    assert (stage2.hub_files[0].repo_id, stage2.hub_files[0].filename) == (
        "OpenGVLab/InternVideo2-Stage2_1B-224p-f4", "InternVideo2-stage2_1b-224p-f4.pt")
    assert stage2.checkpoint_num_frames == 4 and stage2.config["sep_image_video_pos_embed"] is True
    assert stage2.resize == "squash" and stage2.mean == IMAGENET_MEAN
    assert get_config("internvideo2-6b.stage2-f4").sep_image_video_pos_embed is False  # 6B: averaged video table
    chat = get_config("internvideo2-1b.chat-8b")
    assert (chat.depth, chat.pool_head, chat.layerscale_keys, chat.interpolate_pos_embed_at_runtime) == (
        39, False, "bare", True)
    clip = get_config("internvideo2-1b.clip")
    assert clip.num_frames == 8 and not clip.sep_image_video_pos_embed


def test_plain_architecture_gets_imagenet_defaults():
    model = create_model("internvideo2-tiny", num_frames=2)
    assert model.pretrained_cfg == PretrainedCfg(architecture="internvideo2-tiny", num_frames=2, img_size=56)
    assert model.pretrained_cfg.mean == (0.485, 0.456, 0.406) and model.pretrained_cfg.resize == "center_crop"
    with pytest.raises(ValueError, match="names an architecture, not released weights.*internvideo2-1b.stage2-f4"):
        create_model("internvideo2-1b", pretrained=True, **tiny_overrides("internvideo2-1b"))
    with pytest.raises(KeyError, match="unknown pretrained tag"):
        create_model("internvideo2-1b.stage9")


# ------------------------------------------------------------------------------- offline Hub round trips
class FakeHub:
    """Stands in for huggingface_hub.hf_hub_download: files under ``root/<repo_id>/<filename>``."""

    def __init__(self, root):
        self.root, self.calls = root, []

    def put(self, repo_id, filename, obj):
        path = self.root / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if filename.endswith(".safetensors"):
            save_file(obj, str(path))
        elif filename.endswith(".json"):
            path.write_text(json.dumps(obj))
        else:
            torch.save(obj, path)

    def __call__(self, repo_id, filename, **kwargs):
        self.calls.append((repo_id, filename))
        path = self.root / repo_id / filename
        if not path.is_file():
            raise FileNotFoundError(f"404 Client Error: Entry Not Found for url {repo_id}/{filename}")
        return str(path)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub

    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return fake


def publish(tag, hub, source, frames_in_file):
    """Write ``source``'s weights the way the official release of ``tag`` holds them; return what the loaded
    model's state dict must be."""
    file, *overlay = source.pretrained_cfg.hub_files
    tower = {k: v.clone() for k, v in source.state_dict().items()}
    expected = {k: v.clone() for k, v in tower.items()}
    width = source.cfg.embed_dim
    if tag.endswith((".stage1", ".distill")):  # the student with its distillation heads, unprefixed
        heads = official_distillation_heads(width, num_patches=tower["pos_embed"].shape[1] - 1, clip_layers=2,
                                            mae_layers=1 if tag.endswith("stage1") else 0)
        state = {**tower, **{k: torch.zeros(s) for k, s in heads.items()}}
        hub.put(file.repo_id, file.filename, {"module": state} if tag.endswith("stage1") else state)
    elif tag.endswith("stage2-f4"):  # the whole stage-2 model, DeepSpeed-wrapped
        state = {"vision_encoder." + k: v for k, v in tower.items()}
        state.update({"vision_encoder.clip_decoder.0.head.weight": torch.zeros(3, width),
                      "text_encoder.bert.embeddings.word_embeddings.weight": torch.zeros(5, 4),
                      "vision_proj.weight": torch.zeros(4, 16), "temp": torch.tensor(0.07)})
        if tag.startswith("internvideo2-6b"):
            state["audio_encoder.patch_embedding.weight"] = torch.zeros(8, 1, 2, 2)
        hub.put(file.repo_id, file.filename, {"module": state})
    elif tag.endswith("clip"):  # the stage-2 file (4 frames, image table) + 1B_clip.pth's pooling head
        t, h, w = 4, 2, 2
        base_pos = torch.randn(1, 1 + t * h * w, width, generator=torch.Generator().manual_seed(5))
        base = {"vision_encoder." + k: v for k, v in tower.items()}
        base["vision_encoder.pos_embed"] = base_pos
        base["vision_encoder.img_pos_embed"] = torch.randn(1, 1 + h * w, width)
        base.update({f"vision_encoder.{k}": torch.zeros_like(v) for k, v in tower.items()
                     if k.startswith("clip_projector.")})  # stage-2 head: replaced by the CLIP one
        hub.put(file.repo_id, file.filename, {"module": base})
        extra = {f"vision_encoder.{k}": v for k, v in tower.items() if k.startswith("clip_projector.")}
        extra.update({"text_encoder.text_projection": torch.zeros(4, 4), "temp": torch.tensor(0.01)})
        hub.put(overlay[0].repo_id, overlay[0].filename, extra)
        expected["pos_embed"] = resample_position_table(base_pos, (t, h, w), (8, h, w)).float()
    elif tag.endswith("chat-8b"):  # sharded safetensors; the LLM's shard must not even be fetched
        shard1 = {"vision_encoder." + k: v for k, v in tower.items()}
        shard1.update({k: torch.zeros(2, 3) for k in CHAT_MODEL_OTHER_KEYS[:4]})
        shard2 = {"lm.base_model.model.lm_head.weight": torch.zeros(7, 3)}
        hub.put(file.repo_id, "model-00001-of-00002.safetensors", shard1)
        hub.put(file.repo_id, "model-00002-of-00002.safetensors", shard2)
        hub.put(file.repo_id, file.filename, {"metadata": {}, "weight_map": {
            **dict.fromkeys(shard1, "model-00001-of-00002.safetensors"),
            **dict.fromkeys(shard2, "model-00002-of-00002.safetensors")}})
    return expected


@pytest.mark.parametrize("tag", TAGS)
def test_tags_round_trip_offline_from_local_files(tag, hub):
    overrides = tiny_overrides(tag)
    source = randomize_(create_model(tag, **overrides), seed=7)
    frames = source.cfg.num_frames
    expected = publish(tag, hub, source, frames)
    model = create_model(tag, pretrained=True, **overrides)
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-6, msg=k)
    assert model.pretrained_cfg.name == tag
    if tag.endswith("chat-8b"):
        assert ("OpenGVLab/InternVideo2-Chat-8B", "model-00002-of-00002.safetensors") not in hub.calls
        assert model.cfg.layerscale_keys == "bare" and "blocks.0.ls1" in got


def test_a_tag_file_lacking_a_parameter_is_refused(hub):
    tag = "internvideo2-b14.distill"
    overrides = tiny_overrides(tag)
    source = create_model(tag, **overrides)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("clip_projector.")}
    hub.put(*(lambda f: (f.repo_id, f.filename))(source.pretrained_cfg.hub_files[0]), state)
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: the checkpoint lacks \d+ parameter.*clip_projector"):
        create_model(tag, pretrained=True, **overrides)
    model = create_model(tag, pretrained=True, strict=False, **overrides)  # asked for: loads the rest
    assert torch.equal(model.cls_token, source.cls_token)


def test_hub_failures_say_what_to_do(hub):
    with pytest.raises(OSError, match="could not fetch 'pretrain.pth' from the Hugging Face Hub repo "
                                      "'OpenGVLab/InternVideo2-Stage1-1B-224p-f8'.*gated.*pretrained=PATH"):
        create_model("internvideo2-1b.stage1", pretrained=True, **tiny_overrides("internvideo2-1b"))


def test_a_tag_with_a_local_file_uses_the_tags_frame_count(tmp_path):
    # a 4-frame table of a 2x2 grid (16 rows) into a 4-frame 4x4 model is ambiguous when guessed (1 frame of
    # 4x4, or 4 frames of 2x2); the tag knows the file has 4 frames
    overrides = {**tiny_overrides("internvideo2-1b"), "img_size": 56}
    small = randomize_(create_model("internvideo2-1b.stage2-f4", **{**overrides, "img_size": 28}), seed=3)
    path = tmp_path / "InternVideo2-stage2_1b-224p-f4.pt"
    torch.save({"module": {"vision_encoder." + k: v for k, v in small.state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match="fits several"):
        create_model("internvideo2-1b", pretrained=path, sep_image_video_pos_embed=True, num_frames=4, **overrides)
    model = create_model("internvideo2-1b.stage2-f4", pretrained=path, **overrides)
    expected = resample_position_table(small.pos_embed.detach(), (4, 2, 2), (4, 4, 4)).float()
    torch.testing.assert_close(model.pos_embed.detach(), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- save_pretrained
@pytest.mark.parametrize("name", [*list_models(), *TAGS])
def test_save_pretrained_round_trips_every_registered_size(tmp_path, name):
    overrides = tiny_overrides(name) if name != "internvideo2-tiny" else {}
    model = randomize_(create_model(name, **overrides), seed=11).eval()
    folder = save_pretrained(model, tmp_path / "saved")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    document = json.loads((folder / "config.json").read_text())
    assert document["config"] == model.cfg.to_dict() and document["architecture"] == name.partition(".")[0]

    loaded = create_model(pretrained=folder).eval()
    assert loaded.cfg == model.cfg
    assert loaded.pretrained_cfg == model.pretrained_cfg.replace(checkpoint_num_frames=model.cfg.num_frames)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    clip = torch.randn(1, 3, model.cfg.num_frames, model.cfg.img_size, model.cfg.img_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip).tokens, model(clip).tokens, rtol=0, atol=0)
    # with a name, the name decides the architecture and the folder must fit it
    again = create_model(name, pretrained=folder, **overrides)
    assert torch.equal(again.cls_token, model.cls_token)


def test_save_pretrained_writes_atomically_with_the_umask_permissions(tmp_path, monkeypatch):
    model = create_model("internvideo2-tiny")
    old = os.umask(0o027)
    try:
        save_pretrained(model, tmp_path / "out")
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o640, name

    import safetensors.torch

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(model, tmp_path / "failed")
    assert list((tmp_path / "failed").iterdir()) == []  # neither a partial file nor a temporary one


def test_a_folder_without_a_valid_config_is_a_clear_error(tmp_path):
    folder = save_pretrained(create_model("internvideo2-tiny"), tmp_path / "saved")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not an iv2-encoders config"):
        create_model(pretrained=folder)
    with pytest.raises(TypeError, match="needs a model name"):
        create_model(pretrained=tmp_path / "elsewhere")


def test_config_fields_survive_json(tmp_path):
    cfg = VideoEncoderConfig(embed_dim=48, depth=1, num_heads=4, attn_pool_num_heads=4, img_size=28,
                             mlp_ratio=48 / 11, init_values=None, qkv_bias=True)
    from iv2_encoders import VideoEncoder

    model = VideoEncoder(cfg)
    assert create_model(pretrained=save_pretrained(model, tmp_path / "s")).cfg == cfg
