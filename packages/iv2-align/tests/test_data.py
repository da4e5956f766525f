"""Stage-2 data: the synthetic tokenizer, caption checks, the held-out split, the shared media cache, batches;
bad input (missing media skipped and counted, an empty caption named)."""

import shutil

import pytest
import torch

from iv2_align.data import (
    annotation_splits,
    build_tokenizer,
    check_captions,
    make_dataset,
    synthetic_vocabulary,
    training_sources,
)
from iv2_align.train_config import DataSection
from iv2_data.annotations import AnnotationError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from iv2_data import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, 10, num_frames=8, size=64)
    return root


def test_synthetic_tokenizer_knows_every_corpus_and_prompt_word(tmp_path):
    from iv2_align import KINETICS_TEMPLATES, tokenize
    from iv2_data import SYNTHETIC_CLASSES, SyntheticCorpus

    tok = build_tokenizer("synthetic", tmp_path)
    assert (tmp_path / "vocab.txt").read_text().split("\n")[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(tok) == len(synthetic_vocabulary())
    corpus = SyntheticCorpus(40)
    texts = [t for i in range(40) for t in (*corpus[i]["captions"], corpus[i]["audio_caption"], corpus[i]["asr"],
                                             corpus[i]["avs_caption"])]
    texts += [t.format(name) for name in SYNTHETIC_CLASSES[:4] for t in KINETICS_TEMPLATES]
    ids, _mask = tokenize(tok, texts, 64)
    assert not (ids == tok.unk_token_id).any()
    assert (ids[:, 0] == tok.cls_token_id).all() and not (ids == tok.sep_token_id).any()
    build_tokenizer("synthetic", tmp_path)  # a second build reuses the file


def test_empty_caption_is_an_error_naming_the_record():
    records = [{"video": "a.mp4", "caption": "a red circle"}, {"video": "b.mp4", "captions": ["fine text", "?!"]}]
    with pytest.raises(AnnotationError, match=r"ann.json, record 1: caption '\?!' is empty"):
        check_captions(records, "ann.json")


def test_corpus_split_holds_out_the_last_clips(corpus):
    data = DataSection(corpus=str(corpus), held_out=4)
    splits = annotation_splits(data, ["video_text", "audio_text"])
    video = splits["video_text"]
    assert len(video.train) == 6 and len(video.held_out) == 4
    assert [r["video"] for r in video.held_out] == [f"videos/{i:06d}.mp4" for i in range(6, 10)]
    with pytest.raises(ValueError, match="held_out"):
        annotation_splits(DataSection(corpus=str(corpus), held_out=10), ["video_text"])
    with pytest.raises(ValueError, match="data.video_text is not set"):
        annotation_splits(DataSection(), ["video_text"])


def test_media_cache_reads_each_file_once_and_batches_are_tokenised(corpus, tmp_path, monkeypatch):
    data = DataSection(corpus=str(corpus), held_out=4, sources=("video", "audio_video"), train_augment=False,
                       cache_media=True, audio_seconds=2.0, batch_size={"video": 3, "audio_video": 3})
    splits = annotation_splits(data, ["video_text", "video_audio_text"])
    tok = build_tokenizer("synthetic", tmp_path)
    sources = training_sources(data, splits, tok, num_frames=4, size=56, max_text_length=16, seed=0)
    import iv2_data.reading

    reads = []
    original = iv2_data.reading.VideoReadConfig.read
    monkeypatch.setattr(iv2_data.reading.VideoReadConfig, "read",
                        lambda self, source, **kw: reads.append(str(source)) or original(self, source, **kw))
    for name in ("video", "audio_video"):
        for _ in range(2):  # two passes over the 6 training clips
            for i in range(len(sources[name].dataset)):
                sources[name].dataset[i]
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 6  # one decode per clip, shared by both kinds
    batch = next(iter(sources["audio_video"]))
    assert set(batch) == {"video", "audio", "input_ids", "attention_mask", "idx"}
    assert batch["video"].shape == (3, 3, 4, 56, 56) and batch["audio"].shape == (3, 198, 64)
    assert batch["input_ids"].shape == (3, 16) and batch["idx"].dtype == torch.long


def test_missing_media_is_skipped_and_counted(corpus, tmp_path):
    broken = tmp_path / "corpus"
    shutil.copytree(corpus, broken)
    (broken / "videos" / "000002.mp4").unlink()
    data = DataSection(corpus=str(broken), held_out=4, train_augment=False)
    split = annotation_splits(data, ["video_text"])["video_text"]
    dataset = make_dataset(split, split.train, data, 4, 56, train=True)
    samples = [dataset[i] for i in range(len(dataset))]
    assert dataset.stats.failures == 1 and "000002.mp4" in dataset.stats.failed_files[0]
    assert [s["index"] for s in samples] == [0, 1, 3, 3, 4, 5]  # the missing one replaced by the next readable

