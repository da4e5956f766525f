"""``python -m torch.distributed.run --nproc-per-node 2 _distill_train_run.py ROOT CORPUS TEACHERS key=value ...``:
the tiny training run of the tests under several processes."""

import sys
from pathlib import Path

from _distill_runs import tiny_config

from iv2_distill import train
from iv2_train import shutdown_distributed

if __name__ == "__main__":
    root, corpus, teachers, *overrides = sys.argv[1:]
    train(tiny_config(Path(root), Path(corpus), Path(teachers), *overrides))
    shutdown_distributed()
