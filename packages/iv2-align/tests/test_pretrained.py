"""The exported stage-2 folder: official key layout, exact round trip, embedding API and the curation hook."""

import pytest
import torch
from _align_helpers import randomize_
from _align_layout import tiny_official

from iv2_align import Preprocessing, Stage2Embedder, create_stage2_model, load_stage2, save_stage2


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = randomize_(create_stage2_model("internvideo2-stage2-tiny-av"), seed=5).eval()
    directory = save_stage2(model, tokenizer, tmp_path_factory.mktemp("stage2") / "model",
                            Preprocessing(num_frames=4, img_size=56, max_text_length=12, audio_seconds=2.0))
    return model, directory


def test_saved_file_is_the_official_layout_and_round_trips(saved):
    from safetensors import safe_open

    model, directory = saved
    layout, _stage1_heads = tiny_official(audio_visual=True)
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    # official names only (tied copies and the shared BEATs bias stored once; the loader refills them)
    assert keys <= set(layout) | {"temp", "text_encoder.bert.embeddings.position_ids"}
    assert {k for k in layout if ".relative_attention_bias." not in k and ".decoder." not in k} <= keys
    bundle = load_stage2(directory)
    assert bundle.preprocessing.max_text_length == 12 and bundle.preprocessing.audio_seconds == 2.0
    reloaded = bundle.model
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert reloaded.text_encoder.cls.predictions.decoder.weight is reloaded.text_encoder.bert.embeddings.word_embeddings.weight
    video, fbank = torch.randn(2, 3, 4, 56, 56), torch.randn(2, 198, 64)
    torch.testing.assert_close(reloaded.embed_video(video), model.embed_video(video), rtol=0, atol=0)
    torch.testing.assert_close(reloaded.embed_audio(fbank), model.embed_audio(fbank), rtol=0, atol=0)


def test_embedder_reads_files_like_evaluation(saved, tmp_path):
    from iv2_data import ResizeTransform, read_audio_fbank, read_clip, write_corpus

    model, directory = saved
    write_corpus(tmp_path, 3, num_frames=8, size=64)
    embedder = Stage2Embedder.from_pretrained(directory, batch_size=2)
    paths = [tmp_path / "videos" / f"{i:06d}.mp4" for i in range(3)]
    videos = embedder.embed_videos(paths)
    clips = torch.stack([read_clip(p, 4, 56, "middle", transform=ResizeTransform(56)) for p in paths])
    torch.testing.assert_close(videos, model.embed_video(clips), rtol=1e-5, atol=1e-6)
    assert torch.allclose(videos.norm(dim=-1), torch.ones(3), atol=1e-5)
    audio = embedder.embed_audio([tmp_path / "audio" / "000001.wav"])
    fbank = read_audio_fbank(tmp_path / "audio" / "000001.wav", max_seconds=2.0)
    torch.testing.assert_close(audio, model.embed_audio(fbank[None]), rtol=1e-5, atol=1e-6)
    images = embedder.embed_images([tmp_path / "images" / "000000.png"])
    assert images.shape == (1, model.cfg.embed_dim)
    texts = embedder.embed_texts(["a man plays guitar", "the dog runs"])
    assert texts.shape == (2, model.cfg.embed_dim)
    torch.testing.assert_close(embedder.similarity(paths[:1], ["the dog runs"]), videos[:1] @ texts[1:].T)
    with pytest.raises(OSError, match="missing.mp4"):
        embedder.embed_videos([tmp_path / "missing.mp4"])


def test_embed_command_records_failures_and_resumes(saved, tmp_path, capsys):
    import json

    from iv2_align.cli import main
    from iv2_data import write_corpus

    _, directory = saved
    write_corpus(tmp_path / "corpus", 2, num_frames=8, size=64)
    (tmp_path / "corpus" / "videos" / "broken.mp4").write_bytes(b"not a video")
    texts = tmp_path / "texts.txt"
    texts.write_text("a man plays guitar\nthe dog runs\n")
    args = ["embed", str(tmp_path / "corpus" / "videos"), "--model", str(directory), "--output", str(tmp_path / "out"),
            "--texts", str(texts), "--quiet"]
    assert main(args) == 1  # one input failed, the others were embedded
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"embedded": 2, "already_done": 0, "failed": 1, "texts": 2, "output": str(tmp_path / "out")}
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows} == {"ok", "error"} and "broken.mp4" in next(r for r in rows
                                                                                  if r["status"] == "error")["input"]
    assert main(args) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["embedded"] == 0 and again["already_done"] == 2 and again["failed"] == 1


def test_curation_filter_stage_uses_the_stage2_embedder(saved, tmp_path, monkeypatch):
    """iv2-data's FilterStage with our embedder (iv2-data's ClipEmbedder protocol): the recorded similarity is
    the model's video-caption cosine and the threshold keeps exactly the clips above it."""
    import shutil

    from iv2_align import curation_embedder
    from iv2_data import write_corpus
    from iv2_data.curate import ClipEmbedder, CurationContext, FilterStage

    _, directory = saved
    write_corpus(tmp_path / "corpus", 4, num_frames=8, size=64)
    out = tmp_path / "curated"
    (out / "clips").mkdir(parents=True)
    items = []
    for i, caption in enumerate(["a man plays guitar", "the dog runs", "a red car", "a woman swim"]):
        shutil.copy(tmp_path / "corpus" / "videos" / f"{i:06d}.mp4", out / "clips" / f"{i}.mp4")
        items.append({"clip": f"clips/{i}.mp4", "caption": caption})
    monkeypatch.setenv("IV2_ALIGN_MODEL", str(directory))
    embedder = curation_embedder()
    assert isinstance(embedder, ClipEmbedder)
    scores = (embedder.embed_videos([out / it["clip"] for it in items])
              * embedder.embed_texts([it["caption"] for it in items])).sum(-1)
    ordered = scores.sort().values
    threshold = float(ordered[1] + ordered[2]) / 2  # two clips above, two below, none at the edge
    kept = FilterStage(embedder, min_similarity=threshold, dedup_threshold=None).run(items, CurationContext(out))
    assert [k["clip"] for k in kept] == [it["clip"] for it, s in zip(items, scores) if s >= threshold]
    assert len(kept) == 2
    for k in kept:
        assert abs(k["similarity"] - float(scores[int(k["clip"][6])])) < 1e-4
