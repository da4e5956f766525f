"""iv2-chat: train the chat stage, chat about a video, answer a JSONL of questions, evaluate MC-QA.

::

    iv2-chat train [FLAVOR|config.yaml] [key=value ...]    # tiny-synthetic[-quick], internvideo2-chat-8b
    iv2-chat ask --model RUN --video clip.mp4 --question "What moves?"      (answer streamed)
    iv2-chat batch questions.jsonl --model RUN --output answers.jsonl        (resumable)
    iv2-chat eval mcqa mcqa.json --model RUN [--num-frames 16] [--output DIR]

Nothing here imports torch before a command runs, so --help is quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from iv2_data.command_line import EXIT_CODES_HELP, HelpFormatter

from .recipe_config import CHAT_FLAVORS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser(prog: str = "iv2-chat") -> argparse.ArgumentParser:
    formatter = HelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=HelpFormatter,
        description="InternVideo2 stage 3: video chat (QFormer → LLM with LoRA), training, MC-QA evaluation.",
        epilog=EXIT_CODES_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", formatter_class=formatter, help="run the progressive recipe (align → instruct → HD)",
        description="Train the chat stage. CONFIG is a flavor name or a YAML file (which may start from one with "
                    "'flavor: NAME'); then dotted overrides such as instruct.max_steps=200 "
                    "model.vision_init=runs/stage2/vision train.output_dir=runs/chat. "
                    f"Flavors: {', '.join(CHAT_FLAVORS)}.")
    train.add_argument("config", nargs="?", default="tiny-synthetic",
                       help="flavor name or YAML file (default: tiny-synthetic)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")

    model_help = "a chat folder, or a training run's output folder (its model/)"
    ask = commands.add_parser("ask", formatter_class=formatter, help="ask questions about one video (streamed)",
                              description="Answer one or more questions about a video; later questions see the "
                                          "earlier turns (the chat history). The answer is printed as it is made.")
    ask.add_argument("--model", required=True, help=model_help)
    ask.add_argument("--video", required=True, help="video file")
    ask.add_argument("--question", required=True, action="append", help="a question (repeat for a conversation)")
    _generation_options(ask, greedy_default=False)
    ask.add_argument("--num-frames", type=int, default=None, help="frames to read (default: the model's)")
    ask.add_argument("--device", default="cpu", help="torch device")

    batch = commands.add_parser("batch", formatter_class=formatter, help="answer a JSONL of (video, question)",
                                description="Answer every {\"video\", \"question\"[, \"id\"]} row of INPUT (video "
                                            "paths relative to its folder) into OUTPUT, one row per input, in "
                                            "left-padded batches. An unreadable video gives an error row and the "
                                            "run goes on; a rerun keeps finished rows and redoes the rest.")
    batch.add_argument("input", help="JSONL file of {\"video\", \"question\"[, \"id\"]}")
    batch.add_argument("--model", required=True, help=model_help)
    batch.add_argument("--output", required=True, help="JSONL file of answers (appended, resumable)")
    batch.add_argument("--batch-size", type=int, default=8, help="videos answered together")
    batch.add_argument("--num-frames", type=int, default=None, help="frames to read (default: the model's)")
    _generation_options(batch, greedy_default=True)
    batch.add_argument("--device", default="cpu", help="torch device")

    evaluate = commands.add_parser("eval", help="evaluate a chat model")
    kinds = evaluate.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    mcqa = kinds.add_parser("mcqa", formatter_class=formatter, help="MVBench-style multiple-choice QA",
                            description="MVBench protocol: the official prompt with 'Best option:(' pre-filled, "
                                        "greedy decoding, the official answer parsing; accuracy per task and "
                                        "overall by the official check_ans rule and a strict rule.")
    mcqa.add_argument("annotations", help="MC-QA annotation file (MVBench layout: video, question, candidates, "
                                          "answer[, task, start, end])")
    mcqa.add_argument("--model", required=True, help=model_help)
    mcqa.add_argument("--media-root", default=None, help="folder the video paths are relative to (default: the "
                                                         "annotation file's)")
    mcqa.add_argument("--num-frames", type=int, default=16, help="frames per item (MVBench: 16)")
    mcqa.add_argument("--batch-size", type=int, default=8, help="items answered together")
    mcqa.add_argument("--max-new-tokens", type=int, default=100, help="longest answer (official: 100)")
    mcqa.add_argument("--limit", type=int, default=0, help="evaluate the first N items only (0: all)")
    mcqa.add_argument("--question-in-instruction", choices=("model", "yes", "no"), default="model",
                      help="give the QFormer the question too (default: as the model was trained)")
    mcqa.add_argument("--output", default=None, help="folder for mcqa.json and the per-item predictions "
                                                     "(resumable)")
    mcqa.add_argument("--device", default="cpu", help="torch device")
    return parser


def _generation_options(parser: argparse.ArgumentParser, greedy_default: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--greedy", dest="greedy", action="store_true", default=greedy_default,
                       help="greedy decoding" + (" (default)" if greedy_default else ""))
    group.add_argument("--sample", dest="greedy", action="store_false",
                       help="sample with top-p 0.9" + ("" if greedy_default else " (default: the official setting)"))
    parser.add_argument("--max-new-tokens", type=int, default=200, help="longest answer")


def main(argv: Sequence[str] | None = None, *, prog: str = "iv2-chat") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    handlers = {"train": _train, "ask": _ask, "batch": _batch, "eval": _eval}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{_done_note(args)}, rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _UserError as error:
        print(f"{prog} {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED


class _UserError(Exception):
    """A common mistake, reported in one line."""


def _done_note(args: argparse.Namespace) -> str:
    count = getattr(args, "_done", None)
    return f", {count} done" if count is not None else ""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from iv2_encoders import CheckpointError
    from iv2_train import ConfigError

    return (FileNotFoundError, ConfigError, CheckpointError, ValueError, OSError)


def _train(args: argparse.Namespace) -> int:
    from iv2_train import ConfigError

    from .recipe_config import load_chat_config

    try:
        cfg = load_chat_config(args.config, args.overrides)
    except ConfigError as error:
        raise _UserError(str(error)) from None
    from .recipe import chat_train_summary, train

    try:
        result = train(cfg)
    except _expected_errors() as error:
        raise _UserError(f"{type(error).__name__}: {error}") from None
    print(chat_train_summary(result))
    return EXIT_OK


def _load(args: argparse.Namespace, generation: dict | None = None):
    from transformers.utils import logging as hf_logging

    from .bundle import load_chat

    hf_logging.disable_progress_bar()  # the weight-loading bar of the tiny LLM is noise on the command line

    try:
        return load_chat(args.model, device=args.device, generation=generation)
    except _expected_errors() as error:
        raise _UserError(str(error)) from None


def _generation(args: argparse.Namespace) -> dict:
    options = {"max_new_tokens": args.max_new_tokens, "do_sample": not args.greedy}
    if not args.greedy:
        options.update(top_p=0.9, temperature=1.0)
    return options


def _ask(args: argparse.Namespace) -> int:
    chat = _load(args)
    from .evaluation import read_video

    try:
        clip, msg = read_video(chat, args.video, num_frames=args.num_frames)
    except OSError as error:
        raise _UserError(str(error)) from None
    chat.upload(clip, msg=msg, hd=bool(chat.settings.get("hd")))
    for question in args.question:
        if len(args.question) > 1:
            print(f"> {question}")
        streamed: list[str] = []

        def show(text: str, streamed: list[str] = streamed) -> None:
            streamed.append(text)
            print(text, end="", flush=True)

        try:
            answer = chat.chat(question, on_text=show, **_generation(args))
        except ValueError as error:  # e.g. the prompt does not fit the LLM's context
            print(file=sys.stdout)
            raise _UserError(str(error)) from None
        if not streamed:
            print(answer, end="")
        print()
    return EXIT_OK


def _batch(args: argparse.Namespace) -> int:
    chat = _load(args)
    from .evaluation import answer_file

    args._done = 0

    def count(row: dict) -> None:
        args._done += 1

    try:
        report = answer_file(chat, args.input, args.output, batch_size=args.batch_size, num_frames=args.num_frames,
                             generation=_generation(args), on_row=count)
    except (FileNotFoundError, ValueError) as error:
        raise _UserError(str(error)) from None
    print(f"{report.answered} answered, {report.failed} failed, {report.kept} kept from an earlier run → "
          f"{report.output}")
    return EXIT_FAILED if report.failed else EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    chat = _load(args)
    import json

    from iv2_data import MultipleChoiceQADataset, atomic_write

    from .evaluation import evaluate_mcqa, mcqa_read_config

    settings = chat.settings
    hd = bool(settings.get("hd"))
    try:
        video = mcqa_read_config(chat, args.num_frames)
        dataset = MultipleChoiceQADataset(args.annotations, args.media_root, video=video)
    except (OSError, ValueError) as error:
        raise _UserError(str(error)) from None
    if args.limit:
        dataset.records = dataset.records[: args.limit]
    question = None if args.question_in_instruction == "model" else args.question_in_instruction == "yes"
    output = Path(args.output) if args.output else None
    report = evaluate_mcqa(chat, dataset, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                           question_in_instruction=question,
                           predictions=output / "mcqa_predictions.jsonl" if output else None,
                           hd_max_tiles=int(settings.get("hd_max_tiles", 6)) if hd else None)
    print(report.table())
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        with atomic_write(output / "mcqa.json", "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=1)
        print(f"report: {output / 'mcqa.json'}")
    return EXIT_FAILED if report.failed else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
