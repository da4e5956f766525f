"""``iv2 demo``: the command line (help imports no torch)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence

from iv2_data.command_line import EXIT_CODES_HELP, HelpFormatter, positive_int, run_command

DESCRIPTION = """\
InternVideo2's progressive recipe on a CPU in minutes, no GPU and no download: the synthetic corpus of iv2-data
(written on first use), then
  stage 1 (iv2-distill)  a tiny video encoder distils two small frozen teachers (trained first, targets cached);
                         k-NN of its features on held-out clips vs a random encoder
  stage 2 (iv2-align)    that encoder + a small BERT-style text encoder + a small BEATs, VTC + VTM + MLM,
                         masked then unmasked; held-out retrieval, and the same from a random encoder (ablation)
  stage 3 (iv2-chat)     QFormer + LoRA on a small random LLM; held-out multiple-choice QA per task
Writes OUTPUT/report.json, OUTPUT/report.md and PNG plots of every curve, prints a summary. A killed demo
continues from its last finished stage when rerun with the same options."""


def build_parser(prog: str = "iv2 demo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EXIT_CODES_HELP,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--output", "-o", default="runs/demo", metavar="DIR",
                        help="folder for the corpus, every stage's run, the plots and the report")
    parser.add_argument("--quick", action="store_true",
                        help="the same path at a smaller size (about 2 minutes; what the tests run)")
    parser.add_argument("--seed", type=int, default=0, help="the corpus' and every stage's seed")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch intra-op threads per stage (the tiny models gain little from more; stage 3 "
                             "runs on its flavor's, 2 with --quick, and alone)")
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="stages run at once: 2 runs the random-init ablation in a worker process beside the "
                             "main line (default: 2 where there are two CPUs per stage's --threads, else 1)")
    parser.add_argument("--stages", nargs="+", default=None, metavar="STAGE",
                        choices=("stage1", "stage2", "stage2_random", "stage3"),
                        help="run only these stages (and the ones they need); the report covers what is finished")
    parser.add_argument("--fresh", action="store_true",
                        help="delete what an earlier demo left in --output and start over")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "iv2 demo") -> int:
    args = build_parser(prog).parse_args(argv)

    def command() -> int:
        from iv2.demo.pipeline import run_demo
        from iv2.demo.settings import DemoSettings

        settings = DemoSettings(output=args.output, quick=args.quick, seed=args.seed, threads=args.threads,
                                jobs=args.jobs)
        if args.fresh and settings.root.exists():
            if not (settings.root / "demo.json").is_file():
                print(f"{prog}: error: --fresh refuses to delete {settings.root}: it holds no demo run "
                      "(no demo.json)", file=sys.stderr)
                return 2
            shutil.rmtree(settings.root)
        # Targets that are not met are a result (printed and in the report), not a failure of the run.
        run_demo(settings, stages=tuple(args.stages) if args.stages else None)
        return 0

    return run_command(prog, command)
