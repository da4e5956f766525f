"""iv2-distill: stage-1 training, teacher-target caching, export and evaluation from a shell.

    iv2-distill train [FLAVOR|YAML] [key=value ...]          train (resumes from the newest checkpoint)
    iv2-distill cache-targets [FLAVOR|YAML] [key=value ...]  run the teachers once, store their targets
    iv2-distill teachers [FLAVOR|YAML] [key=value ...]       train the synthetic stand-in teachers
    iv2-distill export CHECKPOINT --output DIR               the student encoder alone, heads dropped
    iv2-distill eval ENCODER --annotations FILE              k-NN / linear-probe top-1 of frozen features

Nothing here imports torch before a command runs, so --help answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

PROG = "iv2-distill"
# Flavor names, kept here so that --help needs no import of the recipe (a test holds them equal).
FLAVOR_NAMES = ("tiny-synthetic", "tiny-synthetic-quick", "1b", "6b", "s14", "b14", "l14")
CONFIG_HELP = (f"a flavor ({', '.join(FLAVOR_NAMES)}) or a YAML file (which may start from one with "
               "'flavor: NAME'), then dotted overrides such as train.max_steps=100 data.batch_size=16 "
               "(default: tiny-synthetic)")


class UsageError(Exception):
    """A mistake in the command line or the config: exit code 2."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from iv2_data.command_line import EXIT_CODES_HELP, HelpFormatter

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.replace("iv2-distill", prog),
                                     epilog=EXIT_CODES_HELP, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    defaults = HelpFormatter

    for name, text in (
        ("train", "train the student (single process, torchrun or the deepspeed launcher)"),
        ("cache-targets", "run the teachers once over the training clips and store their targets "
                          "(resumable; the run's cache.dir)"),
        ("teachers", "train the synthetic stand-in teachers into teachers.image.path / teachers.video.path"),
    ):
        p = sub.add_parser(name, help=text, description=text, formatter_class=defaults)
        p.add_argument("config", nargs="?", default="tiny-synthetic", help=CONFIG_HELP)
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
        if name == "cache-targets":
            p.add_argument("--overwrite", action="store_true",
                           help="rebuild a cache that was made for other data, views or teachers")

    p = sub.add_parser("export", help="write the student encoder of a stage-1 checkpoint (heads dropped) as an "
                                      "iv2-encoders save_pretrained folder", formatter_class=defaults)
    p.add_argument("checkpoint", help="an official stage-1 file, a run folder, checkpoints/step_* or a weights file")
    p.add_argument("--output", required=True, help="the folder to write (config.json + model.safetensors)")
    p.add_argument("--model", default=None, help="the student architecture (e.g. internvideo2-1b); default: the "
                                                 "run's config.yaml next to the checkpoint")
    p.add_argument("--num-frames", type=int, default=None,
                   help="the checkpoint's frame count, when it differs from the architecture's")

    p = sub.add_parser("eval", help="k-NN and linear-probe top-1 of an encoder's frozen features",
                       formatter_class=defaults)
    p.add_argument("encoder", help="a save_pretrained folder, a run folder (its final encoder) or a checkpoint "
                                   "file (with --model)")
    p.add_argument("--annotations", required=True, help="labelled annotation file (e.g. the synthetic corpus' "
                                                        "video_label.json)")
    p.add_argument("--holdout-last", type=int, required=True,
                   help="the last N records are the queries; the others the k-NN bank / probe training set")
    p.add_argument("--label-keys", default="label", help="comma-separated record fields to classify by")
    p.add_argument("--feature", default="pooled", choices=("pooled", "cls", "mean"))
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--no-linear-probe", action="store_true")
    p.add_argument("--random-baseline", action="store_true",
                   help="also evaluate a randomly initialised encoder of the same architecture")
    p.add_argument("--model", default=None, help="architecture of a bare checkpoint file")
    p.add_argument("--media-root", default=None)
    p.add_argument("--output", default=None, help="also write the metrics to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": _train, "cache-targets": _cache_targets, "teachers": _teachers, "export": _export, "eval": _eval,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{_progress_note(args)}, rerun to resume", file=sys.stderr)
        return 130
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the common mistakes get one line; anything else is a bug worth its traceback
        if _is_expected(error):
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2 if type(error).__name__ == "ConfigError" else 1
        raise


def _is_expected(error: Exception) -> bool:
    names = {"ConfigError", "CheckpointError", "CacheMismatchError", "CacheIncompleteError", "AnnotationError",
             "TooManyBrokenSamples", "NonFiniteLossError", "MediaReadError", "VideoReadError"}
    return type(error).__name__ in names or isinstance(error, (FileNotFoundError, ValueError))


_last_config: list[Any] = []


def _progress_note(args: argparse.Namespace) -> str:
    """', N done' for an interrupted cache build (finished shards on record)."""
    if args.command != "cache-targets" or not _last_config:
        return ""
    from pathlib import Path

    manifest = Path(_last_config[0].cache.dir) / "manifest.jsonl"
    if not manifest.is_file():
        return ", 0 shards done"
    from iv2_data import JsonlManifest

    return f", {len(JsonlManifest(manifest, key='shard'))} shards done"


def _load(args: argparse.Namespace) -> Any:
    from iv2_train import ConfigError, load_config

    from .recipe import FLAVORS, DistillConfig

    try:
        cfg = load_config(DistillConfig, args.config, args.overrides, flavors=FLAVORS)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    _last_config[:] = [cfg]
    return cfg


def _train(args: argparse.Namespace) -> int:
    from .training import train

    result = train(_load(args))
    from iv2_train import get_rank, shutdown_distributed

    if get_rank() == 0:
        summary = {"output_dir": str(result.output_dir), "step": result.train.step,
                   "encoder": str(result.encoder_dir) if result.encoder_dir else None,
                   "metrics": {k: round(v, 4) for k, v in result.metrics.items()}}
        print(json.dumps(summary, indent=1))
    shutdown_distributed()
    return 0


def _cache_targets(args: argparse.Namespace) -> int:
    from iv2_train import get_rank, shutdown_distributed

    from .cache import build_target_cache

    cfg = _load(args)
    if not cfg.cache.dir:
        raise UsageError("cache.dir is empty: give the folder of the target cache (cache.dir=PATH)")
    report = build_target_cache(cfg, overwrite=args.overwrite, progress=cfg.train.logging.progress != "none")
    if get_rank() == 0:
        print(json.dumps({"cache": str(report.directory), "items": report.items, "shards": report.shards,
                          "built": report.built, "reused": report.reused, "failed": len(report.failed),
                          "seconds": round(report.seconds, 2)}, indent=1))
        for failure in report.failed[:20]:
            print(f"{PROG}: failed: {failure['path']}: {failure['error']}", file=sys.stderr)
    shutdown_distributed()
    return 1 if report.failed else 0


def _teachers(args: argparse.Namespace) -> int:
    from iv2_train import get_rank, shutdown_distributed

    from .synthetic_teachers import prepare_synthetic_teachers
    from .training import prepare_corpus

    cfg = _load(args)
    if not cfg.teachers.synthetic.enabled:
        raise UsageError("teachers.synthetic.enabled is false for this config: its teachers come from files")
    prepare_corpus(cfg)
    reports = prepare_synthetic_teachers(cfg)
    if get_rank() == 0:
        print(json.dumps({role: {"what": r["what"], "heldout_accuracy": r["heldout_accuracy"]}
                          for role, r in reports.items()}, indent=1))
    shutdown_distributed()
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_encoder

    result = export_encoder(args.checkpoint, args.output, model=args.model, num_frames=args.num_frames)
    print(json.dumps({"output": str(result.output), "source": str(result.source),
                      "dropped": len(result.load.dropped), "missing": result.load.missing}, indent=1))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from iv2_data import atomic_write

    from .evaluation import evaluate_encoder

    encoder = _load_encoder(args.encoder, args.model)
    options = {"media_root": args.media_root, "holdout_last": args.holdout_last,
               "label_keys": [k.strip() for k in args.label_keys.split(",") if k.strip()],
               "feature": args.feature, "k": args.k, "linear_probe": not args.no_linear_probe}
    metrics = evaluate_encoder(encoder, args.annotations, **options)
    if args.random_baseline:
        import torch

        from iv2_encoders import VideoEncoder

        torch.manual_seed(0)
        random = evaluate_encoder(VideoEncoder(encoder.cfg), args.annotations, **options)
        metrics.update({f"random_{k}": v for k, v in random.items() if not k.startswith(("chance", "queries", "bank"))})
    text = json.dumps({k: round(v, 2) for k, v in metrics.items()}, indent=1)
    print(text)
    if args.output:
        with atomic_write(Path(args.output), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


def _load_encoder(spec: str, model: str | None) -> Any:
    from pathlib import Path

    from iv2_encoders import create_model

    path = Path(spec)
    if (path / "final" / "encoder" / "config.json").is_file():  # a run folder
        path = path / "final" / "encoder"
    if (path / "config.json").is_file() and model is None:
        return create_model(pretrained=path)
    if model is None:
        raise UsageError(f"{spec} is not a save_pretrained folder or run folder: pass --model, its architecture")
    from .config import get_student_configs

    encoder_cfg = get_student_configs(model)[0]
    from iv2_encoders import VideoEncoder, load_checkpoint

    encoder = VideoEncoder(encoder_cfg)
    load_checkpoint(encoder, path)
    return encoder


if __name__ == "__main__":
    sys.exit(main())
