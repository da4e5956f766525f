"""The demo's stages, run in order, each recorded as finished in ``DIR/stages/<name>.json``.

A stage is the stage package's own training function on its ``synthetic_config`` (the flavor each package tunes
to learn on a CPU in minutes), pointed at the one corpus of this run and at the previous stage's encoder. A
finished stage is never rerun; a killed one resumes inside its package (iv2-train's exact resume). The report
(``report.json``, plots, ``report.md``) is rebuilt from the recorded stages at the end of every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iv2.demo.settings import CORPUS_FORMAT, HELD_OUT, DemoSettings, write_json
from iv2_data.command_line import Interrupted

log = logging.getLogger("iv2.demo")


@dataclass(frozen=True)
class Stage:
    name: str  # folder under the output and key in report.json
    title: str  # what the progress line and the report call it
    package: str
    configure: Callable[[DemoSettings, dict[str, dict[str, Any]]], Any]  # (settings, finished) -> stage config
    train: Callable[[DemoSettings, Any], dict[str, Any]]  # (settings, config) -> record
    needs: tuple[str, ...] = ()  # stages whose products this one starts from
    alone: bool = False  # nothing runs beside it (it runs on more threads than the demo's per-stage ones)


# ------------------------------------------------------------------------------------------------- helpers
def set_seeds(config: Any, seed: int) -> None:
    """Every ``seed`` field of a (nested) stage config: the corpus reads, teachers, caches, training."""
    if not dataclasses.is_dataclass(config):
        return
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "seed" and isinstance(value, int):
            setattr(config, field.name, seed)
        elif dataclasses.is_dataclass(value):
            set_seeds(value, seed)


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# The stage packages report rates the way their official evaluations print them, in percent (k-NN top-1 45.3,
# R@1 31.2); the demo's report keeps every rate as a fraction, as iv2-chat's MC-QA accuracy is.
_PERCENT_KEYS = {
    "stage1": r"^(random_)?(knn_top1|linear_top1|chance)_",
    "stage2": r"(^|_)(r\d+|r_mean|chance(_\w+)?)$",
}


def _fractions(metrics: dict[str, float], stage: str) -> dict[str, float]:
    """``metrics`` with the percentages of ``stage`` (see ``_PERCENT_KEYS``) divided by 100, the rest kept."""
    import re

    rate = re.compile(_PERCENT_KEYS[stage])
    return {k: v / 100 if rate.search(k) else v for k, v in metrics.items()}


def _relative(path: Any, root: Path) -> str | None:
    if path is None:
        return None
    path = Path(path)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def corpus_dir(settings: DemoSettings) -> Path:
    return settings.root / "corpus"


def write_corpus(settings: DemoSettings) -> Path:
    """The synthetic corpus all stages read: written once (files already there are kept, so an interrupted
    write resumes; ``corpus.json`` comes last and marks it whole). A corpus of older records (another
    ``CORPUS_VERSION``) is written again: its annotation files are replaced, its media kept."""
    from iv2_data.synthetic import corpus_is_current
    from iv2_data.synthetic import write_corpus as write

    root = corpus_dir(settings)
    if not corpus_is_current(root):
        write(root, settings.corpus_clips, seed=settings.seed, progress=True, **CORPUS_FORMAT)
    return root


# -------------------------------------------------------------------------------------------------- stages
def _configure_stage1(settings: DemoSettings, finished: dict[str, dict[str, Any]]) -> Any:
    import iv2_distill

    return iv2_distill.synthetic_config(settings.root / "stage1", corpus=corpus_dir(settings), quick=settings.quick)


def _train_stage1(settings: DemoSettings, cfg: Any) -> dict[str, Any]:
    import iv2_distill

    result = iv2_distill.train(cfg)
    return {"metrics": _fractions(_floats(result.metrics), "stage1"),
            "encoder_dir": _relative(result.encoder_dir, settings.root), "teachers": result.teachers}


def _configure_align(settings: DemoSettings, name: str, vision_init: str | None) -> Any:
    import iv2_align

    init = str(settings.root / vision_init) if vision_init else None
    return iv2_align.synthetic_config(settings.root / name, corpus=corpus_dir(settings), vision_init=init,
                                      quick=settings.quick)


def _train_align(settings: DemoSettings, cfg: Any) -> dict[str, Any]:
    import iv2_align

    result = iv2_align.train(cfg)
    return {"metrics": _fractions(_floats(result.metrics), "stage2"),
            "encoder_dir": _relative(result.encoder_dir, settings.root)}


def _configure_stage3(settings: DemoSettings, finished: dict[str, dict[str, Any]]) -> Any:
    import iv2_chat

    init = settings.root / finished["stage2"]["encoder_dir"]
    return iv2_chat.synthetic_config(settings.root / "stage3", corpus=corpus_dir(settings), vision_init=str(init),
                                     quick=settings.quick)


def _train_stage3(settings: DemoSettings, cfg: Any) -> dict[str, Any]:
    import iv2_chat

    result = iv2_chat.train(cfg)
    return {"metrics": _floats(result.metrics)}


STAGES: tuple[Stage, ...] = (
    Stage("stage1", "stage 1: distil two frozen teachers into a video encoder", "iv2-distill",
          _configure_stage1, _train_stage1),
    Stage("stage2", "stage 2: align video, audio and text (from the stage-1 encoder)", "iv2-align",
          lambda settings, finished: _configure_align(settings, "stage2", finished["stage1"]["encoder_dir"]),
          _train_align, needs=("stage1",)),
    Stage("stage2_random", "stage 2 ablation: the same alignment from a random encoder", "iv2-align",
          lambda settings, finished: _configure_align(settings, "stage2_random", None), _train_align),
    # iv2-chat's quick flavor runs on 2 threads (its 240-token LLM batches gain 1.2-1.3x from the second), which
    # a second job on the same cores makes 5-10x slower: nothing runs beside stage 3.
    Stage("stage3", "stage 3: QFormer + LoRA on a small LLM, video chat and MC-QA", "iv2-chat",
          _configure_stage3, _train_stage3, needs=("stage2",), alone=True),
)


def config_digest(config: Any, root: str | os.PathLike | None = None) -> str:
    """What identifies a stage's run: a hash of its whole config (flavor, sizes, paths, seeds) and of the
    corpus records' version (the same paths can hold other records). Paths inside ``root`` (the output folder)
    count relative to it: a finished demo folder that was moved or renamed is still finished."""
    import hashlib

    from iv2_data.synthetic import CORPUS_VERSION

    document = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    if root is not None:
        document = _under_root(document, os.fspath(root))
    document = {"config": document, "corpus_version": CORPUS_VERSION}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _under_root(value: Any, root: str) -> Any:
    """``value`` with every string that is ``root`` or a path inside it written as ``<output>/...``."""
    if isinstance(value, str):
        if value == root or value.startswith(root.rstrip(os.sep) + os.sep):
            return "<output>" + value[len(root.rstrip(os.sep)):]
        return value
    if isinstance(value, dict):
        return {key: _under_root(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_under_root(item, root) for item in value]
    return value


def stage_record_path(settings: DemoSettings, name: str) -> Path:
    return settings.root / "stages" / f"{name}.json"


def finished_stages(settings: DemoSettings) -> dict[str, dict[str, Any]]:
    """The stages recorded as finished in this output folder."""
    out = {}
    for stage in STAGES:
        path = stage_record_path(settings, stage.name)
        if path.is_file():
            out[stage.name] = json.loads(path.read_text())
    return out


def _forget(settings: DemoSettings, name: str, finished: dict[str, dict[str, Any]]) -> None:
    """Remove a stage's record and its folder (the demo's own): what it held is not this run's result."""
    stage_record_path(settings, name).unlink(missing_ok=True)
    finished.pop(name, None)
    shutil.rmtree(settings.root / name, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- run
def run_demo(settings: DemoSettings, *, stages: tuple[str, ...] | None = None, echo: Callable[[str], None] | None = None
             ) -> dict[str, Any]:
    """Run the demo's stages that are not finished yet, then write the report; returns ``report.json``'s
    content. ``stages``: only these (and what they need), e.g. ``("stage1",)``; the report covers what is
    finished."""
    echo = echo or (lambda line: print(line, flush=True))
    if not settings.threads:
        return _run(settings, stages, echo)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run(settings, stages, echo)
    finally:
        torch.set_num_threads(before)  # the caller's process (a notebook, a test run) gets its setting back


def _run(settings: DemoSettings, stages: tuple[str, ...] | None, echo: Callable[[str], None]) -> dict[str, Any]:
    from iv2.demo.report import write_report

    settings.claim()
    t0 = time.monotonic()
    echo(f"iv2 demo: {'quick, ' if settings.quick else ''}seed {settings.seed}, output {settings.root}")
    echo(f"[corpus] the synthetic corpus: {settings.corpus_clips} clips of {CORPUS_FORMAT['num_frames']} frames at "
         f"{CORPUS_FORMAT['size']} px, the last {HELD_OUT} held out in every stage")
    from iv2_data.synthetic import corpus_is_current

    record = settings.root / "stages" / "corpus.json"
    if record.is_file() and corpus_is_current(corpus_dir(settings)):  # an earlier run's: its time stays in the total
        corpus_seconds = float(json.loads(record.read_text())["seconds"])
    else:
        start = time.monotonic()
        write_corpus(settings)
        corpus_seconds = time.monotonic() - start
        write_json(record, {"seconds": corpus_seconds, "clips": settings.corpus_clips})
    finished = finished_stages(settings)
    wanted = _with_needs(stages) if stages else [s.name for s in STAGES]
    todo = [(number, stage) for number, stage in enumerate(STAGES, 1) if stage.name in wanted]
    ran: set[str] = set()
    try:
        with _Beside(settings, finished, ran, echo) as beside:
            side = _side_stages(settings, todo, finished)
            for number, stage in [(n, s) for n, s in todo if s.name in side]:
                prepared = _prepare(settings, number, stage, finished, ran, echo)
                if prepared is not None:
                    beside.start(number, stage, *prepared)
            for number, stage in [(n, s) for n, s in todo if s.name not in side]:
                prepared = _prepare(settings, number, stage, finished, ran, echo)
                if prepared is None:
                    continue
                cfg, digest = prepared
                if stage.alone:
                    beside.collect(wait=True)
                echo(f"[{number}/{len(STAGES)}] {stage.title} ({stage.package})")
                record = _timed_train(stage.train, settings, cfg)
                _record(settings, number, stage, record, digest, finished, ran, echo)
                for later in STAGES[number:]:  # results built on this stage's earlier product are no longer this run's
                    if later.name not in wanted and later.name in finished and set(later.needs) & ran:
                        echo(f"      {later.name}: its finished result started from the earlier {stage.name}; "
                             "removed (run it again with --stages)")
                        _forget(settings, later.name, finished)
                        ran.add(later.name)  # and so, in turn, what starts from it
                beside.collect()
            beside.collect(wait=True)
    except KeyboardInterrupt:  # counted after the stages beside were recorded or stopped
        raise Interrupted(f"{len(finished)} of {len(STAGES)} stages done") from None
    log.info("demo stages took %.0f s", time.monotonic() - t0)
    report = write_report(settings, finished, corpus_seconds=corpus_seconds, echo=echo)
    if beside.failed:
        from iv2_data.command_line import CommandError

        raise CommandError("; ".join(beside.failed) + "; the report covers the other stages, and a rerun runs it")
    return report


def _prepare(settings: DemoSettings, number: int, stage: Stage, finished: dict[str, dict[str, Any]], ran: set[str],
             echo: Callable[[str], None]) -> tuple[Any, str] | None:
    """The stage's config and its digest when it has to run (clearing an earlier result that is not this
    run's), None when it finished earlier with the same config."""
    cfg = stage.configure(settings, finished)
    set_seeds(cfg, settings.seed)
    digest = config_digest(cfg, settings.root)
    record = finished.get(stage.name)
    stale = record is not None and (record.get("config") != digest or any(n in ran for n in stage.needs))
    if record is not None and not stale:
        echo(f"[{number}/{len(STAGES)}] {stage.title}: finished earlier ({record['seconds']:.0f} s)")
        return None
    if stale:
        # Its package's config changed (e.g. a new flavor) or a stage it starts from ran again: the stage's
        # folder is this demo's own; it is cleared so that no earlier result is reported as this run's.
        why = "a stage it starts from ran again" if record.get("config") == digest else "its configuration changed"
        echo(f"[{number}/{len(STAGES)}] {stage.title}: finished earlier, but {why}: running it again")
        _forget(settings, stage.name, finished)
    return cfg, digest


def _timed_train(train: Callable[[DemoSettings, Any], dict[str, Any]], settings: DemoSettings, cfg: Any
                 ) -> dict[str, Any]:
    """A stage's record from its ``train``, with the seconds it took and the torch threads it ran with."""
    start = time.monotonic()
    record = train(settings, cfg)
    record["seconds"] = time.monotonic() - start
    record["threads"] = _threads()
    return record


def _record(settings: DemoSettings, number: int, stage: Stage, record: dict[str, Any], digest: str,
            finished: dict[str, dict[str, Any]], ran: set[str], echo: Callable[[str], None], note: str = "") -> None:
    record["config"] = digest
    write_json(stage_record_path(settings, stage.name), record)
    finished[stage.name] = record
    ran.add(stage.name)
    echo(f"[{number}/{len(STAGES)}] done in {record['seconds']:.0f} s{note}")


# ------------------------------------------------------------------------------------------ stages beside
def default_jobs(threads: int | None) -> int:
    """How many stages run at once by default: 2 when this process may use at least two CPUs per stage's
    ``threads`` (the demo's ablation beside the main line), else 1."""
    from iv2_train import usable_cpus

    return 2 if threads and usable_cpus() >= 2 * threads else 1


def _side_stages(settings: DemoSettings, todo: list[tuple[int, Stage]], finished: dict[str, dict[str, Any]]
                 ) -> set[str]:
    """The stages to run in worker processes beside the others: ones that start from no other stage and that
    no stage starts from (the random-init ablation), at most ``jobs - 1``, and only while some other stage is
    still to run here (alone, a stage runs in this process)."""
    jobs = settings.jobs if settings.jobs is not None else default_jobs(settings.threads)
    needed = {name for stage in STAGES for name in stage.needs}
    side = [s.name for _, s in todo if not s.needs and s.name not in needed][:max(0, jobs - 1)]
    if not any(s.name not in finished for _, s in todo if s.name not in side):
        return set()
    return set(side)


@dataclass
class _SideRun:
    number: int
    stage: Stage
    digest: str
    process: Any  # multiprocessing.Process
    results: Any  # the receiving end of its pipe
    log: Path


class _Beside:
    """Stages run in spawned worker processes (one each) while this process runs the others; each writes its
    output to ``DIR/<stage>/demo.log``. A stage's record is written when this process next looks (between its
    own stages, and at the end, where the time it waits for them counts as the stage's share of the total). One
    that fails is reported (``failed``) while the others carry on. On an error or Ctrl-C here, a stage still
    running there is stopped; its package resumes it on the next run."""

    def __init__(self, settings: DemoSettings, finished: dict[str, dict[str, Any]], ran: set[str],
                 echo: Callable[[str], None]) -> None:
        self.settings, self.finished, self.ran, self.echo = settings, finished, ran, echo
        self.running: dict[str, _SideRun] = {}
        self.failed: list[str] = []

    def __enter__(self) -> _Beside:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            if issubclass(exc[0], KeyboardInterrupt):
                for side in self.running.values():  # a Ctrl-C reached it too: it stops cleanly (tqdm's lock)
                    side.process.join(timeout=10)
            with contextlib.suppress(Exception):  # what finished there before this run stopped is kept
                self.collect(quiet=True)
        for side in self.running.values():
            side.process.terminate()
            side.process.join()
        self.running.clear()

    def start(self, number: int, stage: Stage, cfg: Any, digest: str) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
        results, sender = context.Pipe(duplex=False)
        log_path = self.settings.root / stage.name / "demo.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        process = context.Process(target=_train_beside, args=(sender, stage.train, self.settings, cfg, str(log_path)),
                                  name=f"iv2 demo {stage.name}")
        process.start()
        sender.close()
        self.running[stage.name] = _SideRun(number, stage, digest, process, results, log_path)
        self.echo(f"[{number}/{len(STAGES)}] {stage.title} ({stage.package}), beside the other stages; its "
                  f"output: {log_path}")

    def collect(self, *, wait: bool = False, quiet: bool = False) -> None:
        """Record the stages that have finished (with ``wait``: all of them, waiting for each; ``quiet``: this
        run is stopping for another reason, so a failure there, e.g. the same Ctrl-C, is not announced)."""
        for name, side in list(self.running.items()):
            if not (wait or side.results.poll()):
                continue
            start = time.monotonic()
            try:
                status, value = side.results.recv()
            except EOFError:  # it died without a word (killed, out of memory)
                side.process.join()
                status, value = "error", f"its process ended with exit code {side.process.exitcode}"
            side.process.join()
            del self.running[name]
            if status != "ok":  # the others carry on; the demo reports it after writing the report
                self.failed.append(f"{side.stage.name} failed beside the other stages ({value}); its output: "
                                   f"{side.log}")
                if not quiet:
                    self.echo(f"[{side.number}/{len(STAGES)}] failed: {value} (output: {side.log})")
                continue
            waited = time.monotonic() - start
            # what it added to this run's time: only the wait for it here (the rest ran beside other stages)
            value["wall_seconds"] = waited if wait else 0.0
            _record(self.settings, side.number, side.stage, value, side.digest, self.finished, self.ran, self.echo,
                    note=f" (beside the others; waited {waited:.0f} s for it)" if wait else " (beside the others)")


def _train_beside(sender: Any, train: Callable[[DemoSettings, Any], dict[str, Any]], settings: DemoSettings, cfg: Any,
                  log_path: str) -> None:
    """A stage in a worker process: its output (progress bars, messages) goes to ``log_path``; its record, or
    what went wrong, to ``sender``."""
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            if settings.threads:
                import torch

                torch.set_num_threads(settings.threads)
            sender.send(("ok", _timed_train(train, settings, cfg)))
        except BaseException as error:  # reported by the demo's process, with the traceback in the log
            import traceback

            traceback.print_exc()
            sender.send(("error", f"{type(error).__name__}: {error}"))
            raise SystemExit(1) from None


def _with_needs(stages: tuple[str, ...]) -> list[str]:
    """``stages`` and every stage they start from, in run order."""
    by_name = {s.name: s for s in STAGES}
    unknown = sorted(set(stages) - set(by_name))
    if unknown:
        raise ValueError(f"unknown demo stages {unknown}; the stages are {list(by_name)}")
    out: set[str] = set()
    todo = list(stages)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(by_name[name].needs)
    return [s.name for s in STAGES if s.name in out]


def _threads() -> int:
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    return os.cpu_count() or 1
