"""The CLIP variant's post-pretraining from a stage-2 folder: what is frozen, what trains, the official CLIP key
layout of the export, and the command line."""

import json

import torch
from _align_helpers import randomize_

from iv2_align import Preprocessing, create_stage2_model, load_stage2, save_stage2
from iv2_align.clip_train import CLIP_TRAIN_FLAVORS, ClipTrainConfig, build_clip_model, train_clip
from iv2_train import load_config, read_safetensors


def test_clip_post_pretraining_from_stage2(tmp_path, tokenizer):
    from iv2_data import write_corpus

    torch.manual_seed(0)
    stage2 = randomize_(create_stage2_model("internvideo2-stage2-tiny"), seed=7)
    folder = save_stage2(stage2, tokenizer, tmp_path / "stage2", Preprocessing(num_frames=4, img_size=56))
    write_corpus(tmp_path / "corpus", 40, num_frames=8, size=64)
    cfg = load_config(ClipTrainConfig, "tiny-synthetic", [
        f"stage2={folder}", f"data.corpus={tmp_path / 'corpus'}", "data.held_out=8", "data.batch_size.video=8",
        "data.batch_size.image=8", "steps=3", f"train.output_dir={tmp_path / 'clip'}", "train.logging.progress=none",
        "train.logging.plots=false"], flavors=CLIP_TRAIN_FLAVORS)
    # the text tower is the stage-2 text layers as an HF BertModel: same [CLS] features before training
    model, _tokenizer, frames, size = build_clip_model(cfg)
    model.eval()  # BERT's dropout would make the two passes differ
    ids, mask = torch.tensor([[2, 5, 6, 7, 0]]), torch.tensor([[1, 1, 1, 1, 0]])
    hidden = model.text_encoder.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(hidden[:, 0], load_stage2(folder).model.encode_text(ids, mask)[1], atol=1e-5, rtol=1e-5)
    assert (frames, size) == (4, 56)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"temp", "text_encoder.text_projection"} | {
        n for n in trainable if n.startswith("vision_encoder.clip_projector.")}
    assert any(n.startswith("vision_encoder.clip_projector.") for n in trainable)

    result = train_clip(cfg)
    exported = read_safetensors(result.model_dir / "model.safetensors")
    assert "temp" in exported and "text_encoder.text_projection" in exported
    assert any(k.startswith("text_encoder.transformer.encoder.layer.") for k in exported)
    start = stage2.vision_encoder.state_dict()
    assert torch.equal(exported["vision_encoder.blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    assert not torch.equal(exported["vision_encoder.clip_projector.cross_attn.proj.weight"],
                           start["clip_projector.cross_attn.proj.weight"])
    assert exported["temp"].item() >= 0.01  # clamped from below at temp_min
    assert "t2v_r1" in result.metrics and "sim_t2v_r1" in result.metrics  # CLIP: ITC only (sim = main)
    report = json.loads((tmp_path / "clip" / "eval" / "retrieval_step_000003.json").read_text())
    assert report["step"] == 3
