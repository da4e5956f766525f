"""Using a chat folder: MC-QA evaluation (official and strict scores, unreadable videos, resumable
predictions), batch answering of a JSONL file (batched = one by one, unreadable video recorded, resumable,
stale rows redone), one video, prompts longer than the LLM's context."""

import json

import pytest
import torch

from iv2_chat import (
    answer_file,
    check_answer,
    check_answer_strict,
    evaluate_mcqa,
    load_chat,
    read_video,
    save_chat,
    save_checkpoint,
)
from iv2_chat.evaluation import mcqa_read_config
from iv2_chat.tiny import tiny_chat_config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from iv2_data.synthetic import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, 6, num_frames=8, size=32, with_audio_track=False)
    return root


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory, llm_tokenizer, qformer_tokenizer):
    """A chat folder of a tiny random model (4 frames at 28 px)."""
    from _chat_helpers import scramble_

    from iv2_chat import VideoChatModel, read_chat_config

    folder = tmp_path_factory.mktemp("chat")
    cfg = tiny_chat_config()
    torch.manual_seed(0)
    save_chat(folder, cfg, llm_tokenizer, qformer_tokenizer, settings={"num_frames": 4, "size": 28})
    model = scramble_(VideoChatModel(read_chat_config(folder)), seed=3)
    save_checkpoint(model, folder / "model.safetensors", trainable_only=True)
    return folder


def test_load_chat_restores_the_saved_weights(chat_dir):
    from safetensors.torch import load_file

    chat = load_chat(chat_dir)
    saved = load_file(str(chat_dir / "model.safetensors"))
    state = chat.model.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())
    assert chat.settings["num_frames"] == 4 and chat.settings["size"] == 28
    assert not chat.model.training
    # the same folder again gives the same base LLM (it is stored, not re-drawn)
    again = load_chat(chat_dir)
    assert all(torch.equal(a, b) for a, b in zip(chat.model.lm.parameters(), again.model.lm.parameters()))


def test_save_chat_refuses_a_folder_of_another_model(chat_dir, llm_tokenizer, qformer_tokenizer):
    other = tiny_chat_config(num_frames=2)
    with pytest.raises(ValueError, match="another model configuration"):
        save_chat(chat_dir, other, llm_tokenizer, qformer_tokenizer, settings={"num_frames": 4, "size": 28})


def _mcqa_dataset(chat, corpus, frames=None):
    from iv2_data import MultipleChoiceQADataset

    return MultipleChoiceQADataset(corpus / "mcqa.json", video=mcqa_read_config(chat, frames))


def test_mcqa_scores_each_item_by_both_rules(chat_dir, corpus, tmp_path):
    chat = load_chat(chat_dir)
    dataset = _mcqa_dataset(chat, corpus, frames=16)  # 16 frames on the 4-frame tower (run-time interpolation)
    report = evaluate_mcqa(chat, dataset, batch_size=5, max_new_tokens=6, predictions=tmp_path / "p.jsonl",
                           progress=False)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == len(dataset) == report.total == 24
    for row in rows:  # every row re-scored by hand with the two rules
        assert row["correct"] == check_answer(row["prediction"], row["answer"])
        assert row["correct_strict"] == check_answer_strict(row["prediction"], row["answer"])
        assert row["prediction"].startswith("(")
    assert set(report.tasks) == {"motion", "colour", "count", "identity"}
    for task, t in report.tasks.items():
        mine = [r for r in rows if r["task"] == task]
        assert t["total"] == len(mine) and t["correct"] == sum(r["correct"] for r in mine)
    assert report.accuracy == sum(r["correct"] for r in rows) / 24
    assert report.accuracy_strict == sum(r["correct_strict"] for r in rows) / 24
    assert report.chance == pytest.approx(0.25)
    assert "overall" in report.table()


def test_mcqa_batching_does_not_change_predictions(chat_dir, corpus, tmp_path):
    chat = load_chat(chat_dir)
    dataset = _mcqa_dataset(chat, corpus)
    one = evaluate_mcqa(chat, dataset, batch_size=1, max_new_tokens=5, predictions=tmp_path / "a.jsonl",
                        progress=False)
    many = evaluate_mcqa(chat, dataset, batch_size=24, max_new_tokens=5, predictions=tmp_path / "b.jsonl",
                         progress=False)
    preds = [[json.loads(x)["prediction"] for x in (tmp_path / f).read_text().splitlines()] for f in ("a.jsonl", "b.jsonl")]
    assert preds[0] == preds[1] and one.accuracy == many.accuracy


def test_mcqa_records_unreadable_videos_and_resumes(chat_dir, corpus, tmp_path):
    import shutil

    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    (root / "videos" / "000002.mp4").write_bytes(b"not a video at all")
    chat = load_chat(chat_dir)
    dataset = _mcqa_dataset(chat, root)
    predictions = tmp_path / "p.jsonl"
    report = evaluate_mcqa(chat, dataset, batch_size=4, max_new_tokens=4, predictions=predictions, progress=False)
    assert report.total == 20 and len(report.failed) == 4
    assert all("000002.mp4" in f["error"] for f in report.failed)
    # a rerun with the same model keeps the finished rows; the failed ones are retried (still failing)
    lines = len(predictions.read_text().splitlines())
    again = evaluate_mcqa(chat, dataset, batch_size=4, max_new_tokens=4, predictions=predictions, progress=False)
    assert again.to_dict() == report.to_dict()
    assert len(predictions.read_text().splitlines()) == lines + 4
    # another model: nothing is reused
    chat.model.project_up.bias.data += 1.0
    evaluate_mcqa(chat, dataset, batch_size=4, max_new_tokens=4, predictions=predictions, progress=False)
    assert len(predictions.read_text().splitlines()) == lines + 4 + 24


def _questions(tmp_path, corpus, broken=True):
    import shutil

    videos = tmp_path / "v"
    shutil.copytree(corpus / "videos", videos)
    if broken:
        (videos / "000003.mp4").write_bytes(b"")
    rows = [{"video": f"v/{i:06d}.mp4", "question": q, "id": f"q{i}"}
            for i, q in enumerate(["What moves?", "Where does it move?", "What colour is it?", "How many?",
                                   "Describe the video briefly.", "Which object moves?"])]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_batch_answers_equal_one_by_one_and_record_failures(chat_dir, corpus, tmp_path):
    chat = load_chat(chat_dir)
    questions = _questions(tmp_path, corpus)
    options = {"max_new_tokens": 6}
    report = answer_file(chat, questions, tmp_path / "out.jsonl", batch_size=4, generation=options, progress=False)
    assert (report.answered, report.failed, report.kept) == (5, 1, 0)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert rows["q3"]["status"] == "error" and "empty" in rows["q3"]["error"]
    one = answer_file(chat, questions, tmp_path / "one.jsonl", batch_size=1, generation=options, progress=False)
    assert one.answered == 5
    singles = {r["id"]: r for r in map(json.loads, (tmp_path / "one.jsonl").read_text().splitlines())}
    assert {k: r.get("answer") for k, r in rows.items()} == {k: r.get("answer") for k, r in singles.items()}
    # the same answers through VideoChat.chat, one video at a time
    clip, msg = read_video(chat, tmp_path / "v" / "000001.mp4")
    chat.upload(clip, msg=msg)
    assert chat.chat("Where does it move?", do_sample=False, max_new_tokens=6) == rows["q1"]["answer"]


def test_batch_rerun_keeps_finished_rows_and_redoes_stale_ones(chat_dir, corpus, tmp_path):
    chat = load_chat(chat_dir)
    questions = _questions(tmp_path, corpus)
    out = tmp_path / "out.jsonl"
    answer_file(chat, questions, out, batch_size=3, generation={"max_new_tokens": 4}, progress=False)
    again = answer_file(chat, questions, out, batch_size=3, generation={"max_new_tokens": 4}, progress=False)
    assert (again.answered, again.failed, again.kept) == (0, 1, 5)  # the broken video is retried
    # a changed question and a changed video file are not reported as done
    rows = [json.loads(x) for x in questions.read_text().splitlines()]
    rows[0]["question"] = "What is it?"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "v" / "000004.mp4").write_bytes((tmp_path / "v" / "000005.mp4").read_bytes())
    third = answer_file(chat, questions, out, batch_size=3, generation={"max_new_tokens": 4}, progress=False)
    assert (third.answered, third.failed, third.kept) == (2, 1, 3)
    # other generation settings: everything is redone
    fourth = answer_file(chat, questions, out, batch_size=3, generation={"max_new_tokens": 5}, progress=False)
    assert fourth.kept == 0 and fourth.answered == 5


def test_bad_input_files_name_the_line(chat_dir, tmp_path):
    chat = load_chat(chat_dir)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "a.mp4", "question": "x"}\n{"video": 3}\n')
    with pytest.raises(ValueError, match="line 2: needs string fields"):
        answer_file(chat, bad, tmp_path / "o.jsonl", progress=False)
    with pytest.raises(FileNotFoundError, match="input file not found"):
        answer_file(chat, tmp_path / "missing.jsonl", tmp_path / "o.jsonl", progress=False)


def test_a_prompt_longer_than_the_context_is_a_clear_error(chat_dir, corpus):
    chat = load_chat(chat_dir)
    clip, _ = read_video(chat, corpus / "videos" / "000000.mp4")
    chat.upload(clip)
    context = chat.model.lm.config.max_position_embeddings
    with pytest.raises(ValueError, match=r"does not fit the \d+ available"):
        chat.chat("what " * context, do_sample=False, max_new_tokens=4)


def test_a_question_longer_than_the_context_is_recorded_and_the_run_goes_on(chat_dir, corpus, tmp_path):
    """``batch`` and ``eval mcqa``: an input whose prompt does not fit the LLM's context becomes an error row
    naming the limit; the others in its batch are answered as they would be without it."""
    from iv2_data import MultipleChoiceQADataset

    chat = load_chat(chat_dir)
    context = chat.model.lm.config.max_position_embeddings
    questions = _questions(tmp_path, corpus, broken=False)
    rows = [json.loads(x) for x in questions.read_text().splitlines()]
    rows[2]["question"] = "what " * context
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = {"max_new_tokens": 4}
    report = answer_file(chat, questions, tmp_path / "out.jsonl", batch_size=4, generation=options, progress=False)
    assert (report.answered, report.failed) == (5, 1)
    out = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert out["q2"]["status"] == "error" and "does not fit the" in out["q2"]["error"]
    alone = _questions(tmp_path / "alone", corpus, broken=False)
    answer_file(chat, alone, tmp_path / "alone.jsonl", batch_size=4, generation=options, progress=False)
    expected = {r["id"]: r["answer"] for r in map(json.loads, (tmp_path / "alone.jsonl").read_text().splitlines())}
    assert {k: r["answer"] for k, r in out.items() if k != "q2"} == {k: v for k, v in expected.items() if k != "q2"}

    items = json.loads((corpus / "mcqa.json").read_text())[:4]
    items[1]["question"] = "what " * context
    (tmp_path / "mcqa.json").write_text(json.dumps(items))
    dataset = MultipleChoiceQADataset(tmp_path / "mcqa.json", corpus, video=mcqa_read_config(chat))
    result = evaluate_mcqa(chat, dataset, batch_size=4, max_new_tokens=4, progress=False)
    assert result.total == 3 and [f["index"] for f in result.failed] == [1]
    assert "does not fit the" in result.failed[0]["error"]
