"""Benchmark: ``iv2_train.plot_metrics`` (one figure and line redrawn per metric, fixed margins) against the
way it drew before (a new figure per metric laid out by ``tight_layout``), side by side on the same metrics.

The metrics file is written here: ``--train`` curves of ``--steps`` points (loss-like, lr, grad norm) and
``--evals`` evaluation metrics of ``--eval-points`` points each, like a stage-2 phase of the demo (42 metrics,
most of them evaluations). Both columns write the same number of PNGs into temporary folders.

    python benchmarks/train_plots.py [--train 10] [--evals 32] [--steps 120] [--eval-points 1] [--repeats 3]

Why: the demo's report drew ~210 such plots, 13 s of a 76 s ``iv2 demo --quick`` (2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from iv2_train import plot_metrics
from iv2_train.metrics import _metric_series


def write_metrics(path: Path, train: int, evals: int, steps: int, eval_points: int) -> None:
    every = max(1, steps // eval_points)
    with path.open("w") as fh:
        for step in range(1, steps + 1):
            row: dict[str, float] = {"step": step}
            row.update({f"loss_{i}": 5.0 * math.exp(-step / (20 + i)) + 0.1 for i in range(train)})
            if step % every == 0:
                row.update({f"eval/metric_{i}": 0.01 * ((step * (i + 3)) % 97) for i in range(evals)})
            fh.write(json.dumps(row) + "\n")


def plot_per_figure(metrics_path: Path, output_dir: Path) -> list[Path]:
    """The previous drawing: a figure per metric, ``tight_layout``, closed after saving."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _metric_series(metrics_path)  # the same points as plot_metrics: only the drawing differs
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, (xs, ys) in sorted(series.items()):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(xs, ys, lw=1.2, marker="o" if len(xs) <= 50 else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = output_dir / (key.replace("/", "_") + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def seconds(fn, metrics: Path, repeats: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            count = len(fn(metrics, Path(out)))
            times.append(time.perf_counter() - start)
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10)
    parser.add_argument("--evals", type=int, default=32)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--eval-points", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        write_metrics(metrics, args.train, args.evals, args.steps, args.eval_points)
        seconds(plot_metrics, metrics, 1)  # import matplotlib and its fonts outside the timings
        before, n_before = seconds(plot_per_figure, metrics, args.repeats)
        after, n_after = seconds(plot_metrics, metrics, args.repeats)
    assert n_before == n_after, (n_before, n_after)
    print(f"{n_after} plots ({args.train} train curves of {args.steps} points, {args.evals} evaluations of "
          f"{args.eval_points}), median of {args.repeats}")
    print("| drawing | seconds | ms / plot | speed-up |")
    print("|---|---|---|---|")
    print(f"| a figure per metric, tight_layout (before) | {before:.2f} | {1000 * before / n_before:.0f} | 1.00x |")
    print(f"| plot_metrics (one figure redrawn) | {after:.2f} | {1000 * after / n_after:.0f} | "
          f"{before / after:.2f}x |")


if __name__ == "__main__":
    main()
