"""The command line: quick help without torch, usage errors (2), one-line errors for common mistakes (1),
ask / batch / eval on a chat folder."""

import json
import subprocess
import sys

import pytest

from iv2_chat.cli import build_parser, main


def test_help_is_quick_and_does_not_import_torch():
    code = ("import sys; from iv2_chat.cli import build_parser; build_parser().format_help(); "
            "[build_parser().parse_known_args([c, '--help']) if False else None for c in ()]; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for command in (["--help"], ["train", "--help"], ["ask", "--help"], ["batch", "--help"], ["eval", "mcqa", "--help"]):
        run = subprocess.run([sys.executable, "-m", "iv2_chat.cli", *command], capture_output=True, text=True)
        assert run.returncode == 0 and "usage: iv2-chat" in run.stdout
    help_text = subprocess.run([sys.executable, "-m", "iv2_chat.cli", "train", "--help"], capture_output=True,
                               text=True).stdout
    assert "tiny-synthetic" in help_text and "default: tiny-synthetic" in help_text


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["ask", "--video", "a.mp4"], ["eval", "mcqa"], ["nope"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2


def test_common_mistakes_are_one_line_errors(tmp_path, capsys):
    assert main(["train", "no-such-flavor"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config flavor 'no-such-flavor'" in err
    assert main(["train", "tiny-synthetic-quick", "instruct.max_stepz=3"]) == 1
    assert "did you mean 'max_steps'" in capsys.readouterr().err
    assert main(["ask", "--model", str(tmp_path / "nothing"), "--video", "v.mp4", "--question", "q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "neither a chat model folder nor a training run" in err


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory, llm_tokenizer, qformer_tokenizer):
    import torch
    from _chat_helpers import scramble_

    from iv2_chat import VideoChatModel, read_chat_config, save_chat, save_checkpoint
    from iv2_chat.tiny import tiny_chat_config

    folder = tmp_path_factory.mktemp("chat")
    torch.manual_seed(0)
    save_chat(folder, tiny_chat_config(), llm_tokenizer, qformer_tokenizer, settings={"num_frames": 4, "size": 28})
    save_checkpoint(scramble_(VideoChatModel(read_chat_config(folder)), seed=5), folder / "model.safetensors",
                    trainable_only=True)
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from iv2_data.synthetic import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, 3, num_frames=8, size=32, with_audio_track=False)
    return root


def test_ask_streams_the_answer_and_keeps_history(chat_folder, videos, capsys):
    from iv2_chat import load_chat, read_video

    code = main(["ask", "--model", str(chat_folder), "--video", str(videos / "videos" / "000000.mp4"),
                 "--question", "What moves?", "--question", "Where?", "--greedy", "--max-new-tokens", "5"])
    out = capsys.readouterr().out
    assert code == 0 and "> What moves?" in out and "> Where?" in out
    chat = load_chat(chat_folder)
    clip, msg = read_video(chat, videos / "videos" / "000000.mp4")
    chat.upload(clip, msg=msg)
    first = chat.chat("What moves?", do_sample=False, max_new_tokens=5)
    second = chat.chat("Where?", do_sample=False, max_new_tokens=5)
    assert out.splitlines()[1] == first and out.splitlines()[3] == second


def test_ask_names_an_unreadable_video(chat_folder, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("hello")
    assert main(["ask", "--model", str(chat_folder), "--video", str(bad), "--question", "q"]) == 1
    err = capsys.readouterr().err
    assert "bad.mp4" in err and err.strip().count("\n") == 0


def test_ask_with_a_question_longer_than_the_context_is_a_one_line_error(chat_folder, videos, capsys):
    code = main(["ask", "--model", str(chat_folder), "--video", str(videos / "videos" / "000000.mp4"),
                 "--question", "what " * 600, "--greedy", "--max-new-tokens", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "does not fit the 508 available" in err  # 512 positions - 4


def test_batch_exit_code_reports_failed_rows(chat_folder, videos, tmp_path, capsys):
    rows = [{"video": str(videos / "videos" / "000001.mp4"), "question": "What moves?"},
            {"video": str(tmp_path / "missing.mp4"), "question": "What moves?"}]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "answers.jsonl"
    argv = ["batch", str(questions), "--model", str(chat_folder), "--output", str(out), "--max-new-tokens", "4"]
    assert main(argv) == 1
    assert "1 answered, 1 failed, 0 kept" in capsys.readouterr().out
    # rows are written as they finish (failed reads first): one row per input, found by its id
    answers = {a["video"]: a for a in map(json.loads, out.read_text().splitlines())}
    assert len(answers) == 2 and answers[rows[0]["video"]]["status"] == "ok"
    assert answers[rows[1]["video"]]["status"] == "error" and "missing.mp4" in answers[rows[1]["video"]]["error"]
    assert main(argv) == 1
    assert "0 answered, 1 failed, 1 kept" in capsys.readouterr().out


def test_eval_mcqa_writes_the_report(chat_folder, videos, tmp_path, capsys):
    code = main(["eval", "mcqa", str(videos / "mcqa.json"), "--model", str(chat_folder), "--num-frames", "8",
                 "--max-new-tokens", "4", "--output", str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert code == 0 and "overall" in out and "strict" in out
    report = json.loads((tmp_path / "eval" / "mcqa.json").read_text())
    assert report["total"] == 12 and set(report["tasks"]) == {"motion", "colour", "count", "identity"}
    assert len((tmp_path / "eval" / "mcqa_predictions.jsonl").read_text().splitlines()) == 12


def test_parser_defaults_are_shown():
    text = build_parser()._subparsers._group_actions[0].choices["batch"].format_help()
    assert "(default: 8)" in text
