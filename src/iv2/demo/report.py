"""The demo's report: ``report.json`` (the keys of DESIGN.md's umbrella section, and more), PNG plots of every
loss and metric curve, a one-page ``report.md`` embedding them, and the summary table printed at the end."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from iv2.demo.settings import CORPUS_FORMAT, HELD_OUT, DemoSettings, write_json

TASKS = ("motion", "colour", "count", "identity")  # the corpus' MC-QA tasks (iv2_data.synthetic)
STAGE1_KEYS = ("colour", "object", "direction", "label")  # what the stage-1 k-NN probes, most learnable first
RETRIEVAL = (("t2v_r1", "text → video R@1"), ("v2t_r1", "video → text R@1"), ("t2a_r1", "text → audio R@1"),
             ("a2t_r1", "audio → text R@1"))
PLOT_RETRIEVAL = (("t2v_r1", "t2v R@1", 1), ("v2t_r1", "v2t R@1", 1), ("t2v_r5", "t2v R@5", 5),
                  ("v2t_r5", "v2t R@5", 5))
BUDGET_SECONDS = {"default": 15 * 60, "quick": 2 * 60}
# Said under the targets of a --quick run, whose numbers are judged against the default demo's targets.
QUICK_NOTE = ("The accuracy targets are the default demo's (`iv2 demo`, about 10 minutes). `--quick` runs the same "
              "path at a smaller size within 2 minutes, where stage 3 is expected to leave chance on held-out "
              "questions only narrowly: about a third right against a quarter, mostly on colour, the one task the "
              "quick encoder carries well (measured: iv2-chat README).")


# ---------------------------------------------------------------------------------------------- the numbers
def build_report(settings: DemoSettings, finished: dict[str, dict[str, Any]], *, corpus_seconds: float = 0.0
                 ) -> dict[str, Any]:
    """``report.json``'s content from the finished stages' records."""
    report: dict[str, Any] = {}
    for name, record in finished.items():
        report[name] = {**record["metrics"], "seconds": round(record["seconds"], 1)}
        if "wall_seconds" in record:  # it ran in a worker process beside the other stages
            report[name]["wall_seconds"] = round(record["wall_seconds"], 1)
    if "stage3" in report:
        report["stage3"].setdefault("chance", 0.25)
    if "stage2" in report and "stage2_random" in report:
        keys = [k for k, _ in RETRIEVAL if k in report["stage2"]] + ["t2v_r5", "v2t_r5"]
        report["ablation"] = {k: {"stage1_init": report["stage2"].get(k), "random_init": report["stage2_random"].get(k)}
                              for k in keys if k in report["stage2"]}
    # a stage that ran beside the others adds only the time waited for it (``wall_seconds``)
    report["seconds"] = round(corpus_seconds + sum(r.get("wall_seconds", r["seconds"]) for r in finished.values()), 1)
    report["targets"] = targets(report, quick=settings.quick)
    report["settings"] = settings.identity()
    report["about"] = describe(finished)
    report["versions"] = _versions()
    report["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return report


def targets(report: dict[str, Any], *, quick: bool) -> dict[str, dict[str, Any]]:
    """Issue 16's targets, each with its measured value and whether it holds (only for finished stages)."""
    out: dict[str, dict[str, Any]] = {}

    def check(name: str, value: float | None, goal: float, met: bool | None, rule: str) -> None:
        if value is not None:
            out[name] = {"value": value, "goal": goal, "rule": rule, "met": bool(met)}

    s1, s2, s3 = report.get("stage1", {}), report.get("stage2", {}), report.get("stage3", {})
    if "loss_first" in s1 and "loss_last" in s1:
        check("stage1_loss_halved", s1["loss_last"], s1["loss_first"] / 2, s1["loss_last"] < s1["loss_first"] / 2,
              "stage-1 loss ends below half its start")
    if "t2v_r1" in s2 and "chance_r1" in s2:
        check("stage2_t2v_r1", s2["t2v_r1"], 5 * s2["chance_r1"], s2["t2v_r1"] >= 5 * s2["chance_r1"],
              "t2v R@1 >= 5x chance on the held-out clips")
    if "mcqa_accuracy" in s3:
        check("stage3_mcqa", s3["mcqa_accuracy"], 0.6, s3["mcqa_accuracy"] >= 0.6, "MC-QA accuracy >= 60%")
    if "mcqa_accuracy_motion" in s3:
        chance = s3.get("chance", 0.25)
        check("stage3_motion", s3["mcqa_accuracy_motion"], chance, s3["mcqa_accuracy_motion"] > chance,
              "MC-QA motion (needs frame order) above chance")
    if all(k in report for k in ("stage1", "stage2", "stage2_random", "stage3")):
        budget = BUDGET_SECONDS["quick" if quick else "default"]
        check("total_seconds", report["seconds"], budget, report["seconds"] <= budget,
              f"whole demo <= {budget // 60} min")
    return out


def describe(finished: dict[str, dict[str, Any]]) -> dict[str, str]:
    """What each stage is, in a sentence (for report.md and report.json)."""
    about = {
        "corpus": (f"iv2-data's synthetic corpus: clips of {CORPUS_FORMAT['num_frames']} frames at "
                   f"{CORPUS_FORMAT['size']} px in which a coloured object (shape) moves in one of four directions "
                   "over a textured background, with an audio tone, captions, conversations and 4-way "
                   f"multiple-choice questions; the last {HELD_OUT} clips are held out in every stage."),
        "stage1": ("iv2-distill: a randomly initialised internvideo2-tiny student reconstructs, for the unmasked "
                   "tokens, the features of two frozen teachers trained briefly first on the training clips (an "
                   "image model on single frames, stand-in for InternVL-6B, and a VideoMAE on clips, stand-in for "
                   "VideoMAEv2-g), with the image teacher's attention choosing the visible tokens (semantic "
                   "masking); k-NN top-1 of its pooled features on the held-out clips against a random encoder."),
        "stage2": ("iv2-align: the stage-1 encoder, a small BERT-style text encoder with fusion layers and a small "
                   "BEATs audio encoder, aligned by VTC + VTM + MLM (and their audio variants), first with 80% of "
                   "the video tokens masked, then unmasked with the video encoder frozen; retrieval on the held-out "
                   "clips with ITM re-ranking."),
        "stage2_random": "the paper's ablation: the same stage 2 from a randomly initialised video encoder.",
        "stage3": ("iv2-chat: the stage-2 encoder's tokens (both its blocks, frozen) go through a QFormer and a "
                   "projection into a small random causal LM with LoRA, trained on the corpus' conversations and "
                   "multiple-choice questions; MC-QA accuracy on the held-out clips per task against chance (25%). "
                   "The corpus lists each question's options in the attribute's order (distractors drawn at "
                   "random), not shuffled: for motion and count a letter follows from its option's text, for "
                   "colour and identity the option is one of four in a fixed order. A random LM learns the video "
                   "within minutes, but not to point from a shuffled option's text to its letter (with shuffled "
                   "options: 40.6% by letter, 60.5% by option text, measured)."),
    }
    teachers = finished.get("stage1", {}).get("teachers")
    if teachers:
        about["teachers"] = json.dumps(teachers, default=str)
    return about


def _versions() -> dict[str, str]:
    out = {}
    for name in ("iv2-suite", "iv2-data", "iv2-encoders", "iv2-train", "iv2-distill", "iv2-align", "iv2-chat", "torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


# -------------------------------------------------------------------------------------------------- plots
def metric_files(root: Path, stage: str) -> list[Path]:
    """Every iv2-train ``metrics.jsonl`` a stage wrote (teachers, phases, the run itself), in path order."""
    return sorted((root / stage).rglob("metrics.jsonl"))


def write_plots(settings: DemoSettings, finished: dict[str, dict[str, Any]], report: dict[str, Any]) -> dict[str, Path]:
    """Per-run PNGs of every logged curve (``plots/curves/<stage>/<run>/``, iv2-train's plotter), one loss
    figure per stage and ``plots/summary.png`` (the three stages' results on one page)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from iv2_train import plot_metrics

    root = settings.root
    plots = root / "plots"
    written: dict[str, Path] = {}
    for stage in finished:
        for path in metric_files(root, stage):
            run = path.parent.relative_to(root / stage)
            plot_metrics(path, plots / "curves" / stage / run)
        figure = _loss_figure(plt, root, stage)
        if figure is not None:
            out = plots / f"{stage}_loss.png"
            figure.savefig(out, dpi=100)
            plt.close(figure)
            written[f"{stage}_loss"] = out
    fig = _summary_figure(plt, root, report)
    out = plots / "summary.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    written["summary"] = out
    return written


def _loss_curves(root: Path, stage: str) -> list[tuple[str, list[float], list[float]]]:
    from iv2_train import read_metrics

    curves = []
    for path in metric_files(root, stage):
        rows = [row for row in read_metrics(path) if "loss" in row and "step" in row]  # the training rows
        if rows:
            label = str(path.parent.relative_to(root / stage)).replace("runs/", "")
            curves.append((label, [row["step"] for row in rows], [row["loss"] for row in rows]))
    return curves


def _loss_figure(plt: Any, root: Path, stage: str) -> Any:
    curves = _loss_curves(root, stage)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for label, xs, ys in curves:
        ax.plot(xs, ys, lw=1.1, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{stage}: training loss of every run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _summary_figure(plt: Any, root: Path, report: dict[str, Any]) -> Any:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    # stage 1: the student's loss (the run that exports the encoder: the longest curve not under teachers/)
    ax = axes[0]
    curves = [c for c in _loss_curves(root, "stage1") if not c[0].startswith("teachers")]
    for label, xs, ys in curves:
        ax.plot(xs, ys, lw=1.2, label=f"student ({label})")
    s1 = report.get("stage1", {})
    title = "stage 1: distillation loss"
    if "loss_first" in s1:
        title += f" ({s1['loss_first']:.2f} → {s1['loss_last']:.2f})"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    # stage 2: video-text retrieval from the stage-1 init vs a random init, chance dashed (audio: the table)
    ax = axes[1]
    s2, s2r = report.get("stage2", {}), report.get("stage2_random", {})
    keys = [(k, label, at) for k, label, at in PLOT_RETRIEVAL if k in s2 or k in s2r]
    width = 0.38
    for shift, (run, name) in zip((-width / 2, width / 2), ((s2, "stage-1 init"), (s2r, "random init"))):
        ax.bar([i + shift for i in range(len(keys))], [100 * run.get(k, 0.0) for k, _, _ in keys], width, label=name)
    if "chance_r1" in s2:
        for i, (_, _, at) in enumerate(keys):  # chance of R@k: k / candidates
            ax.hlines(100 * min(1.0, at * s2["chance_r1"]), i - width, i + width, colors="k", linestyles="--", lw=1,
                      label="chance" if i == 0 else None)
    ax.set_xticks(range(len(keys)), [label for _, label, _ in keys], fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("stage 2: held-out video-text retrieval (ITM re-ranked)", fontsize=10)
    ax.legend(fontsize=8)
    # stage 3: MC-QA accuracy per task
    ax = axes[2]
    s3 = report.get("stage3", {})
    names = [t for t in TASKS if f"mcqa_accuracy_{t}" in s3] + (["all"] if "mcqa_accuracy" in s3 else [])
    keys = [f"mcqa_accuracy_{t}" if t != "all" else "mcqa_accuracy" for t in names]
    content = [k.replace("mcqa_accuracy", "mcqa_accuracy_content", 1) for k in keys]
    both = all(k in s3 for k in content)
    width = 0.38 if both else 0.8
    ax.bar([i - (width / 2 if both else 0) for i in range(len(names))], [100 * s3[k] for k in keys], width,
           color="tab:green", label="letter (official rule)")
    if both:
        ax.bar([i + width / 2 for i in range(len(names))], [100 * s3[k] for k in content], width,
               color="tab:olive", label="option text")
    ax.axhline(100 * s3.get("chance", 0.25), color="k", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy %")
    ax.set_title("stage 3: held-out MC-QA per task", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(f"iv2 demo ({'quick, ' if report['settings']['quick'] else ''}seed {report['settings']['seed']}, "
                 f"{report['seconds']:.0f} s)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------- tables
def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(stage, measure, value, against) rows for the printed table and report.md."""
    rows: list[tuple[str, str, str, str]] = []

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    s1 = report.get("stage1")
    if s1:
        rows.append(("1 distill", "loss first → last", f"{s1.get('loss_first', float('nan')):.3f} → "
                     f"{s1.get('loss_last', float('nan')):.3f}", "target: below half the start"))
        for key in STAGE1_KEYS:
            if f"knn_top1_{key}" in s1:
                rows.append(("1 distill", f"k-NN top-1 {key}", pct(s1[f"knn_top1_{key}"]),
                             f"random encoder {pct(s1.get(f'random_knn_top1_{key}'))}, chance "
                             f"{pct(s1.get(f'chance_{key}'))}"))
    for name, label in (("stage2", "2 align"), ("stage2_random", "2 ablation (random init)")):
        s2 = report.get(name)
        if not s2:
            continue
        for key, text in RETRIEVAL:
            if key in s2:
                chance = s2.get("chance_r1") if key in ("t2v_r1", "v2t_r1") else s2.get("audio_chance_r1")
                rows.append((label, text, pct(s2[key]), f"chance {pct(chance)}" if chance is not None else ""))
    s3 = report.get("stage3")
    if s3:
        chance = pct(s3.get("chance", 0.25))
        if "mcqa_accuracy" in s3:
            rows.append(("3 chat", "MC-QA accuracy (letter, official rule)", pct(s3["mcqa_accuracy"]),
                         f"chance {chance}, target 60%"))
        if "mcqa_accuracy_content" in s3:
            rows.append(("3 chat", "MC-QA by option text", pct(s3["mcqa_accuracy_content"]), f"chance {chance}"))
        for task in TASKS:
            if f"mcqa_accuracy_{task}" in s3:
                content = s3.get(f"mcqa_accuracy_content_{task}")
                text = "" if content is None else f" (option text {pct(content)})"
                rows.append(("3 chat", f"MC-QA {task}", pct(s3[f"mcqa_accuracy_{task}"]) + text, f"chance {chance}"))
    return rows


def print_summary(report: dict[str, Any], echo: Callable[[str], None]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"iv2 demo — {report['seconds']:.0f} s", title_justify="left")
    for column in ("stage", "measure", "value", "against"):
        table.add_column(column)
    for row in summary_rows(report):
        table.add_row(*row)
    console = Console(width=110, record=True, force_terminal=False)
    with console.capture() as capture:
        console.print(table)
        for check in report["targets"].values():
            console.print(f"{'✓' if check['met'] else '✗'} {check['rule']}: {check['value']:.4g} "
                          f"(goal {check['goal']:.4g})")
        if report["settings"].get("quick") and report["targets"]:
            console.print(QUICK_NOTE)
    echo(capture.get().rstrip())


# ------------------------------------------------------------------------------------------------ markdown
def write_markdown(settings: DemoSettings, report: dict[str, Any], plots: dict[str, Path]) -> Path:
    root = settings.root
    lines = [f"# iv2 demo report ({'quick' if settings.quick else 'default'}, seed {settings.seed})", "",
             f"Whole run: {report['seconds']:.0f} s. Versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", "",
             f"![summary]({plots['summary'].relative_to(root)})", "",
             "| stage | measure | value | against |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in summary_rows(report)]
    lines += ["", "## Targets", ""]
    lines += [f"- {'met' if c['met'] else '**not met**'}: {c['rule']} — {c['value']:.4g} (goal {c['goal']:.4g})"
              for c in report["targets"].values()]
    if settings.quick and report["targets"]:
        lines += ["", QUICK_NOTE]
    lines += ["", "## What ran", ""]
    for key in ("corpus", "stage1", "stage2", "stage2_random", "stage3"):
        if key == "corpus" or key in report:
            seconds = f" ({report[key]['seconds']:.0f} s)" if key in report else ""
            if "wall_seconds" in report.get(key, {}):
                seconds = (f" ({report[key]['seconds']:.0f} s beside the other stages, of which the run waited "
                           f"{report[key]['wall_seconds']:.0f} s)")
            lines.append(f"- **{key}**{seconds}: {report['about'][key]}")
    lines += ["", "## Loss curves", ""]
    for key, path in plots.items():
        if key != "summary":
            lines += [f"![{key}]({path.relative_to(root)})", ""]
    lines += ["Every logged loss and metric curve, one PNG each: `plots/curves/<stage>/<run>/`.", ""]
    path = root / "report.md"
    from iv2_data.files import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path


def write_report(settings: DemoSettings, finished: dict[str, dict[str, Any]], *, corpus_seconds: float = 0.0,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    report = build_report(settings, finished, corpus_seconds=corpus_seconds)
    plots = write_plots(settings, finished, report)
    report["plots"] = {k: str(p.relative_to(settings.root)) for k, p in plots.items()}
    write_json(settings.root / "report.json", report)
    write_markdown(settings, report, plots)
    print_summary(report, echo)
    echo(f"report: {settings.root / 'report.md'} (numbers: {settings.root / 'report.json'})")
    return report
