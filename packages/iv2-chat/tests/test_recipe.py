"""The demo's stage 3 end to end: ``synthetic_config(..., quick=True)`` + ``train`` on a corpus written as the demo
writes it (256 clips, 8 frames, 64 px, 8 fps, seed 0; the last 64 held out)."""

import json

import pytest


@pytest.fixture(scope="module")
def corpus256(tmp_path_factory):
    from iv2_data import write_corpus

    root = tmp_path_factory.mktemp("corpus256")
    write_corpus(root, 256, num_frames=8, size=64, fps=8, seed=0, with_audio_track=False)
    return root


@pytest.fixture(scope="module")
def quick_run(corpus256, tmp_path_factory):
    from iv2_chat import synthetic_config, train

    root = tmp_path_factory.mktemp("stage3")
    cfg = synthetic_config(root, corpus=corpus256, quick=True)
    cfg.train.logging.progress = "none"
    return cfg, train(cfg)


def test_synthetic_config_uses_the_given_corpus_and_holds_out_64_clips(corpus256, tmp_path):
    from iv2_chat import synthetic_config

    cfg = synthetic_config(tmp_path, corpus=corpus256, vision_init=tmp_path / "enc", quick=True)
    assert cfg.data.root == str(corpus256) and cfg.data.write_synthetic == 0  # used as it is, never rewritten
    assert cfg.data.held_out == 64 and cfg.model.vision_init == str(tmp_path / "enc")
    assert cfg.train.output_dir.startswith(str(tmp_path))
    own = synthetic_config(tmp_path)  # no corpus: the flavor writes its own under root
    assert own.data.root.startswith(str(tmp_path)) and own.data.write_synthetic > 64


def test_quick_train_reports_the_demo_metrics_and_its_loss_falls(quick_run):
    from iv2_chat.recipe import split_held_out

    cfg, result = quick_run
    m = result.metrics
    for key in ("mcqa_accuracy", "chance", "loss_first", "loss_last", "mcqa_accuracy_content"):
        assert isinstance(m[key], float)
    for task in ("motion", "colour", "count", "identity"):
        assert 0.0 <= m[f"mcqa_accuracy_{task}"] <= 1.0
    assert m["chance"] == pytest.approx(0.25)
    # every held-out item is asked: 64 clips x 4 questions, none of them seen in training
    from iv2_data import load_annotations

    _, held = split_held_out(load_annotations(f"{cfg.data.root}/mcqa.json"), 64)
    assert m["mcqa_items"] == len(held) == 256
    assert m["loss_last"] < 0.5 * m["loss_first"]
    assert json.loads(result.metrics_path.read_text()) == m
    rows = [json.loads(x) for x in result.history["instruct"].read_text().splitlines()]
    assert rows and all("loss" in r for r in rows)
    assert result.export.is_file()


def test_rerun_of_a_finished_run_returns_the_same_result_without_training(quick_run):
    import time

    from iv2_chat import train

    cfg, result = quick_run
    started = time.perf_counter()
    again = train(cfg)
    assert again.metrics == result.metrics
    assert again.phases["instruct"].step == cfg.instruct.max_steps
    assert time.perf_counter() - started < 0.5 * sum(result.seconds.values()) + 5
