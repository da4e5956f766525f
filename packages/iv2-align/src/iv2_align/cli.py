"""iv2-align: train stage 2 (and the CLIP variant), evaluate retrieval and zero-shot classification, embed.

    iv2-align train [FLAVOR|YAML] [key=value ...]       the paper's stage-2 schedule (masked, then unmasked)
    iv2-align train-clip [FLAVOR|YAML] [key=value ...]  the CLIP variant's post-pretraining from stage 2
    iv2-align eval retrieval ANNOTATIONS --model DIR    t2v / v2t R@1/5/10, ITM re-ranked (sim / dsl / match)
    iv2-align eval zero-shot ANNOTATIONS --model DIR    classification from class names, 16 prompt templates
    iv2-align embed INPUTS... --model DIR --output DIR  videos, images, audio (and --texts) into the shared space

Nothing here imports torch until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from iv2_data.command_line import EXIT_CODES_HELP
from iv2_data.command_line import HelpFormatter as _Formatter

PROG = "iv2-align"
# kept here so that --help needs no torch; a test holds them equal to iv2_align.ALIGN_FLAVORS / CLIP_FLAVORS
FLAVORS = ("tiny-synthetic", "tiny-synthetic-quick", "1b", "6b")
CLIP_FLAVORS = ("tiny-synthetic", "6b")




def _model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (a trained folder, or official weights)")
    group.add_argument("--model", help="stage-2 model folder (iv2-align train's export/stage2)")
    group.add_argument("--checkpoint", help="official stage-2 checkpoint file instead of --model")
    group.add_argument("--arch", default="internvideo2-stage2-1b", help="stage-2 architecture of --checkpoint")
    group.add_argument("--tokenizer", default="bert-large-uncased", help="HF BERT tokenizer of --checkpoint")
    group.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the model's)")
    group.add_argument("--size", type=int, default=None, help="frame size (default: the model's)")
    group.add_argument("--max-text-length", type=int, default=None, help="text length (default: the model's, 32)")
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    group.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.replace("iv2-align", prog), epilog=EXIT_CODES_HELP,
                                     formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, flavors, what in (("train", FLAVORS, "stage-2 training (masked, then unmasked phase)"),
                                ("train-clip", CLIP_FLAVORS, "the CLIP variant's post-pretraining")):
        p = sub.add_parser(name, help=what, formatter_class=_Formatter, description=(
            f"{what}. CONFIG is a flavor ({', '.join(flavors)}) or a YAML file (which may start from a flavor "
            "with 'flavor: NAME'); then dotted overrides such as train.output_dir=runs/x model.vision_init=DIR. "
            "Rerunning the same command resumes a killed run; a finished one is not trained again."))
        p.add_argument("config", nargs="?", default="tiny-synthetic", metavar="CONFIG",
                       help="flavor name or YAML file (default: tiny-synthetic)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
        p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")

    ev = sub.add_parser("eval", help="evaluate a trained model", formatter_class=_Formatter)
    ev_sub = ev.add_subparsers(dest="task", required=True, metavar="TASK")
    ret = ev_sub.add_parser("retrieval", help="text-video (audio, audio+video) retrieval with ITM re-ranking",
                            formatter_class=_Formatter)
    ret.add_argument("annotations", help="annotation file: video_text (video + caption/captions), audio_text or "
                                         "video_audio_text layout")
    ret.add_argument("--media", choices=("video", "audio", "audio_video"), default="video",
                     help="what is retrieved: video (ITM re-ranking), audio (ITC), audio_video (AVTM re-ranking)")
    ret.add_argument("--media-root", default=None, help="media paths are relative to this (default: the file's folder)")
    ret.add_argument("--k-test", type=int, default=128, help="re-rank each row's top k by ITM (0: ITC only)")
    ret.add_argument("--first-caption", action="store_true", help="one caption per video instead of all of them")
    ret.add_argument("--merge-duplicate-captions", action="store_true",
                     help="identical captions become one query whose ground truth is every video that has it")
    ret.add_argument("--output", "-o", default=None, help="write the metrics as JSON here")
    _model_arguments(ret)

    zs = ev_sub.add_parser("zero-shot", help="zero-shot classification from class names", formatter_class=_Formatter)
    zs.add_argument("annotations", help="video_label layout: video + label (class index or name)")
    zs.add_argument("--classes", default=None,
                    help="class names: a text file (one per line), 'synthetic' (the synthetic corpus' 32 classes), "
                         "or omitted: the records' label_name fields")
    zs.add_argument("--media-root", default=None, help="media paths are relative to this (default: the file's folder)")
    zs.add_argument("--output", "-o", default=None, help="write the metrics as JSON here")
    _model_arguments(zs)

    em = sub.add_parser("embed", help="embed media files (and texts) into the shared space", formatter_class=_Formatter)
    em.add_argument("inputs", nargs="*", help="media files or folders (videos, images, audio; searched recursively)")
    em.add_argument("--texts", default=None, help="a text file, one text per line, embedded into texts.safetensors")
    em.add_argument("--output", "-o", required=True, help="output folder (one .safetensors per input + manifest.jsonl)")
    em.add_argument("--kinds", default="video,image,audio", help="media kinds searched for in folders")
    em.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_arguments(em)
    return parser


# ------------------------------------------------------------------------------------------------ commands
def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _run_train(args: argparse.Namespace, clip: bool) -> int:
    from iv2_train import ConfigError, save_config

    if clip:
        from .clip_train import CLIP_TRAIN_FLAVORS as flavors
        from .clip_train import ClipTrainConfig as config_cls
        from .clip_train import train_clip as run
    else:
        from .train_config import ALIGN_FLAVORS as flavors
        from .train_config import AlignConfig as config_cls
        from .training import train as run
    from iv2_train import load_config

    try:
        cfg = load_config(config_cls, args.config, args.overrides, flavors=flavors)
    except (ConfigError, ValueError) as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            print(save_config(cfg, Path(tmp) / "config.yaml").read_text(), end="")
        return 0
    try:
        result = run(cfg)
    except KeyboardInterrupt:
        print(f"interrupted, {_steps_done(cfg.train.output_dir)} done, rerun to resume", file=sys.stderr)
        return 130
    finally:
        from iv2_train import shutdown_distributed

        shutdown_distributed()
    summary = {"output_dir": str(result.output_dir), "metrics": _headline(result.metrics)}
    if getattr(result, "model_dir", None) is not None:
        summary["model"] = str(result.model_dir)
    if getattr(result, "vision_encoder_dir", None) is not None:
        summary["vision_encoder"] = str(result.vision_encoder_dir)
    if getattr(result, "broken_samples", None):
        summary["broken_samples"] = result.broken_samples
    print(json.dumps(summary, indent=1))
    return 0


def _steps_done(output_dir: str) -> str:
    """'N steps' checkpointed under a run folder (phases summed), for the interruption message."""
    from iv2_train import list_checkpoints

    root = Path(output_dir)
    steps = 0
    for folder in [root, *sorted(p for p in root.glob("*") if p.is_dir())]:
        found = list_checkpoints(folder) if folder.is_dir() else []
        if found:
            steps += max(step for step, _ in found)
    return f"{steps} steps"


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    keys = ("t2v_r1", "v2t_r1", "chance_r1", "t2v_r5", "v2t_r5", "sim_t2v_r1", "sim_v2t_r1", "a2t_r1", "t2a_r1",
            "audio_chance_r1", "av_t2v_r1", "av_v2t_r1", "av_chance_r1", "loss_first", "loss_last")
    return {k: metrics[k] for k in keys if k in metrics}


def _load_model(args: argparse.Namespace):
    """``(model, tokenizer, preprocessing)`` from --model DIR or --checkpoint FILE --arch --tokenizer."""
    from .pretrained import Preprocessing, load_stage2

    if bool(args.model) == bool(args.checkpoint):
        raise _UsageError("give --model DIR (a trained stage-2 folder) or --checkpoint FILE (official weights)")
    if args.model:
        bundle = load_stage2(args.model, device=args.device)
        model, tokenizer, pre = bundle.model, bundle.tokenizer, bundle.preprocessing
    else:
        from transformers import AutoTokenizer

        from .checkpoint import load_checkpoint
        from .model import create_stage2_model

        model = create_stage2_model(args.arch)
        load_checkpoint(model, args.checkpoint)
        model = model.to(args.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        pre = Preprocessing(num_frames=model.cfg.vision.num_frames, img_size=model.cfg.vision.img_size)
    for field, value in (("num_frames", args.num_frames), ("img_size", args.size),
                         ("max_text_length", args.max_text_length)):
        if value is not None:
            setattr(pre, field, value)
    return model, tokenizer, pre


class _UsageError(Exception):
    pass


def _run_eval_retrieval(args: argparse.Namespace) -> int:
    from iv2_data import load_annotations

    from .data import AnnotationSplit, check_captions
    from .evaluate import RETRIEVAL_SETS, evaluate_sets, load_retrieval_set
    from .train_config import DataSection

    model, tokenizer, pre = _load_model(args)
    kind = RETRIEVAL_SETS[args.media][0]
    path = Path(args.annotations)
    records = load_annotations(path)
    check_captions(records, str(path))
    root = Path(args.media_root) if args.media_root else path.parent
    data = DataSection(audio_seconds=pre.audio_seconds, train_augment=False)
    split = AnnotationSplit(kind, str(path), root, train=list(records))
    item = load_retrieval_set(args.media, split, records, data, tokenizer, num_frames=pre.num_frames,
                              size=pre.img_size, max_length=pre.max_text_length,
                              all_captions=not args.first_caption, merge_duplicates=args.merge_duplicate_captions)
    metrics = evaluate_sets(model, [item], k_test=args.k_test, batch_size=args.batch_size)
    return _report(args, {"annotations": str(path), "media": args.media, "skipped": item.skipped,
                          "metrics": metrics}, failed=item.skipped > 0)


def _run_eval_zero_shot(args: argparse.Namespace) -> int:
    from iv2_data import AnnotationDataset, ResizeTransform, VideoReadConfig, load_annotations, sample_builder

    from .zero_shot import zero_shot_classify

    model, tokenizer, pre = _load_model(args)
    path = Path(args.annotations)
    records = load_annotations(path)
    classes = _class_names(args.classes, records, path)
    builder = sample_builder("video_label", classes=classes)
    video = VideoReadConfig(num_frames=pre.num_frames, size=pre.img_size, transform=ResizeTransform(pre.img_size))
    dataset = AnnotationDataset(records, args.media_root or path.parent, builder=builder, video=video)
    clips, labels, skipped = [], [], 0
    for index, record in enumerate(dataset.records):
        try:
            sample = dataset.sample(record, index, dataset.media_paths(record))
        except OSError as error:
            dataset.record_failure(str(record.get("video")), error)
            skipped += 1
            continue
        clips.append(sample["video"])
        labels.append(sample["label"])
    if not clips:
        return _fail(f"{path}: no readable video ({skipped} failed)")
    import torch

    result = zero_shot_classify(model, torch.stack(clips), classes, tokenizer, labels=labels,
                                max_length=pre.max_text_length, batch_size=args.batch_size)
    chance = round(100.0 / len(classes), 2)
    return _report(args, {"annotations": str(path), "classes": len(classes), "skipped": skipped,
                          "metrics": {**result.metrics, "chance_top1": chance}}, failed=skipped > 0)


def _class_names(spec: str | None, records: list[dict], path: Path) -> list[str]:
    if spec == "synthetic":
        from iv2_data import SYNTHETIC_CLASSES

        return list(SYNTHETIC_CLASSES)
    if spec:
        names = [line.strip() for line in Path(spec).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise _UsageError(f"--classes {spec}: no class names in the file")
        return names
    names = sorted({r["label_name"] for r in records if isinstance(r.get("label_name"), str)})
    if not names:
        raise _UsageError(f"{path}: records carry no label_name; give --classes FILE (one name per line)")
    return names


def _report(args: argparse.Namespace, document: dict, failed: bool) -> int:
    text = json.dumps(document, indent=1)
    if args.output:
        from iv2_data import atomic_write

        with atomic_write(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    if failed:
        print(f"{PROG}: {document['skipped']} input(s) could not be read and were skipped", file=sys.stderr)
    return 1 if failed else 0


def _run_embed(args: argparse.Namespace) -> int:
    from .embed import Stage2Embedder, embed_files

    if not args.inputs and not args.texts:
        raise _UsageError("nothing to embed: give media files/folders and/or --texts FILE")
    model, tokenizer, pre = _load_model(args)
    embedder = Stage2Embedder(model, tokenizer, pre, batch_size=args.batch_size, device=args.device)
    texts = []
    if args.texts:
        texts = [line.strip() for line in Path(args.texts).read_text(encoding="utf-8").splitlines() if line.strip()]
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    summary = embed_files(embedder, args.inputs, args.output, kinds=kinds, texts=texts, progress=not args.quiet)
    if summary.interrupted:
        print(f"interrupted, {summary.done + summary.skipped} done, rerun to resume", file=sys.stderr)
        return 130
    print(json.dumps({"embedded": summary.done, "already_done": summary.skipped, "failed": summary.failed,
                      "texts": summary.texts, "output": args.output}))
    if summary.failed:
        print(f"{PROG}: {summary.failed} input(s) failed; see {Path(args.output) / 'manifest.jsonl'}", file=sys.stderr)
    return 1 if summary.failed else 0


def main(argv: list[str] | None = None, *, prog: str = PROG) -> int:
    parser = build_parser(prog)
    words = list(sys.argv[1:] if argv is None else argv)
    # the DeepSpeed launcher adds --local_rank=N (the rank also comes from the environment, which is what counts)
    words = [w for w in words if not w.startswith(("--local_rank", "--local-rank"))]
    args = parser.parse_args(words)
    if args.command in ("eval", "embed") and args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        if args.command in ("train", "train-clip"):
            return _run_train(args, clip=args.command == "train-clip")
        if args.command == "eval":
            return _run_eval_retrieval(args) if args.task == "retrieval" else _run_eval_zero_shot(args)
        return _run_embed(args)
    except _UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        # the common mistakes (a missing file, a bad annotation, a wrong checkpoint) as one line, no traceback
        return _fail(f"{type(err).__name__}: {err}")


if __name__ == "__main__":
    sys.exit(main())
