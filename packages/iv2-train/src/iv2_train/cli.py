"""iv2-train: look at training runs and plan them (training itself is each stage's command: iv2-distill
train, iv2-align train, iv2-chat train).

    iv2-train show RUN        step, checkpoints, last training and evaluation metrics of a run folder
    iv2-train plot RUN        re-draw RUN/plots/*.png from RUN/metrics.jsonl
    iv2-train estimate ...    per-GPU memory (and step time) of AdamW training: will it fit?

The exit codes (below) are those of every iv2 command; 1 also means the run folder or its metrics is
missing. Nothing here loads torch, so help and answers come fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iv2_data.command_line import EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, HelpFormatter

EXIT_MISSING = EXIT_FAILED  # the run folder or its metrics is missing


def build_parser(prog: str = "iv2-train") -> argparse.ArgumentParser:
    """The ``iv2-train`` parser; ``prog`` is the command as typed (``"iv2 train"`` through the umbrella)."""
    from importlib.metadata import version

    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.replace("iv2-train ", f"{prog} "), epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"iv2-train {version('iv2-train')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = sub.add_parser(
        "show", help="a run's step, checkpoints and last metrics", description="What a run folder holds: the "
        "step reached, its checkpoints, the final export and the newest training and evaluation metrics.",
        formatter_class=HelpFormatter, epilog=EXIT_CODES_HELP,
    )  # fmt: skip
    show.add_argument("run", metavar="RUN", type=Path, help="the run's output_dir")
    show.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    plot = sub.add_parser(
        "plot", help="re-draw a run's PNG plots", formatter_class=HelpFormatter, epilog=EXIT_CODES_HELP,
        description="One PNG per metric of RUN/metrics.jsonl (training and eval/ rows), against the step.",
    )  # fmt: skip
    plot.add_argument("run", metavar="RUN", type=Path, help="the run's output_dir")
    plot.add_argument("--output", type=Path, default=None, help="folder for the PNGs (default: RUN/plots)")

    est = sub.add_parser(
        "estimate", help="per-GPU memory (and step time) of AdamW training", formatter_class=HelpFormatter,
        epilog=EXIT_CODES_HELP,
        description="Model state (weights, gradients, AdamW state, split by ZeRO stage) plus, when the layer "
        "sizes --layers, --hidden and --seq-len are all given, activations. Without them the answer is about "
        "the model state alone and says so. A lower bound: allocator and communication buffers come on top.",
    )  # fmt: skip
    est.add_argument("--params", type=float, required=True, help="parameter count, e.g. 1e9")
    est.add_argument("--trainable", type=float, default=None, help="trainable parameters (default: all)")
    est.add_argument("--zero", type=int, default=1, choices=(0, 1, 2, 3), help="ZeRO stage")
    est.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs")
    est.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"), help="training precision")
    est.add_argument("--layers", type=int, default=0, help="transformer blocks (activations)")
    est.add_argument("--hidden", type=int, default=0, help="block width (activations)")
    est.add_argument("--seq-len", type=int, default=0, help="tokens per sample (activations)")
    est.add_argument("--heads", type=int, default=1, help="attention heads")
    est.add_argument("--mlp-ratio", type=float, default=4.0, help="MLP width / block width")
    est.add_argument("--micro-batch", type=int, default=1, help="samples per GPU per micro-step")
    est.add_argument("--checkpointing", action="store_true", help="activation checkpointing on every block")
    est.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU in GiB")
    est.add_argument("--peak-tflops", type=float, default=0.0, help="one GPU's dense peak, for a step time (0: none)")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "iv2-train") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "estimate":
        return _estimate(parser, args)
    if not args.run.is_dir():
        print(f"{prog} {args.command}: error: run folder not found: {args.run}", file=sys.stderr)
        return EXIT_MISSING
    if args.command == "plot":
        return _plot(args.run, args.output, f"{prog} plot")
    return _show(args.run, as_json=args.json)


def _estimate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .estimate import estimate_memory, estimate_step_time

    sizes = {"--layers": args.layers, "--hidden": args.hidden, "--seq-len": args.seq_len}
    given = [flag for flag, value in sizes.items() if value]
    if given and len(given) < len(sizes):
        missing = [flag for flag in sizes if flag not in given]
        parser.error(f"estimate: activations need --layers, --hidden and --seq-len; {', '.join(missing)} missing")
    shape = {
        "num_layers": args.layers,
        "hidden_size": args.hidden,
        "seq_len": args.seq_len,
        "activation_checkpointing": args.checkpointing,
    }
    result = estimate_memory(
        int(args.params),
        trainable_params=None if args.trainable is None else int(args.trainable),
        zero_stage=args.zero,
        world_size=args.gpus,
        precision=args.precision,
        micro_batch_size=args.micro_batch,
        num_heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        **shape,
    )
    print(result.table())
    verdict = "fits" if result.fits(args.gpu_gib) else "does NOT fit"
    if result.activations_counted:
        print(f"{verdict} in {args.gpu_gib:g} GiB (90% usable; a lower bound, real use is higher)")
    else:
        print(
            f"model state alone {verdict} in {args.gpu_gib:g} GiB (90% usable); activations NOT counted: "
            "give --layers, --hidden and --seq-len (and --micro-batch) to include them"
        )
    if args.peak_tflops > 0 and args.seq_len:
        timing = estimate_step_time(
            int(args.params),
            tokens_per_step=args.seq_len * args.micro_batch * args.gpus,
            world_size=args.gpus,
            peak_tflops=args.peak_tflops,
            **shape,
        )
        print(f"about {timing['seconds_per_step']:.2f} s per step at 40% utilisation")
    return EXIT_OK


def _plot(run: Path, output: Path | None, prog: str) -> int:
    from .metrics import plot_metrics

    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        print(f"{prog}: error: {metrics} not found (has the run logged a step yet?)", file=sys.stderr)
        return EXIT_MISSING
    written = plot_metrics(metrics, output or run / "plots")
    print(f"wrote {len(written)} plot(s) to {output or run / 'plots'}")
    return EXIT_OK


def run_summary(run: Path) -> dict[str, Any]:
    """What ``iv2-train show`` prints, as a dict."""
    from iv2_data.files import unfinished_writes

    from ._paths import list_checkpoints
    from .metrics import is_eval_record, is_train_record, read_metrics

    metrics_path = run / "metrics.jsonl"
    records = read_metrics(metrics_path) if metrics_path.is_file() else []
    last_train = next((r for r in reversed(records) if is_train_record(r)), {})
    last_eval = next((r for r in reversed(records) if is_eval_record(r)), {})
    checkpoints = list_checkpoints(run)
    final = run / "final" / "model.safetensors"
    partial = [p.name for p in unfinished_writes(run / "checkpoints")]
    return {
        "run": str(run),
        "max_steps": _max_steps(run / "config.yaml"),
        "checkpoint_step": checkpoints[-1][0] if checkpoints else 0,
        "logged_step": max((int(r.get("step", 0)) for r in records), default=0),
        "checkpoints": [{"step": step, "path": str(path), "bytes": _size(path)} for step, path in checkpoints],
        "partial_checkpoints": partial,
        "final_weights": str(final) if final.is_file() else None,
        "last_metrics": last_train,
        "last_eval": last_eval,
    }


def _show(run: Path, *, as_json: bool) -> int:
    summary = run_summary(run)
    if as_json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    total = summary["max_steps"]
    print(f"run              {summary['run']}")
    print(f"step             {summary['checkpoint_step']} checkpointed, {summary['logged_step']} logged" +
          (f", of {total}" if total else ""))  # fmt: skip
    if summary["checkpoints"]:
        for item in summary["checkpoints"]:
            print(f"checkpoint       {item['path']}  ({item['bytes'] / 2**20:.1f} MiB)")
    else:
        print("checkpoint       none")
    for name in summary["partial_checkpoints"]:
        print(f"partial          {name} (an interrupted write; removed when the run resumes)")
    print(f"final weights    {summary['final_weights'] or 'not written yet'}")
    for label, row in (("last metrics", summary["last_metrics"]), ("last eval", summary["last_eval"])):
        if row:
            values = "  ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k != "step")
            print(f"{label:<16} step {row.get('step')}: {values}")
        else:
            print(f"{label:<16} none")
    return EXIT_OK


def _max_steps(config_path: Path) -> int | None:
    """``max_steps`` of a saved run config (a TrainConfig, or a stage config with a ``train`` section)."""
    if not config_path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    for section in (data, data.get("train")):
        if isinstance(section, dict) and isinstance(section.get("max_steps"), int):
            return section["max_steps"]
    return None


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
