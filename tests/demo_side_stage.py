"""A stand-in demo stage that a spawned worker process can import (``test_demo.py``'s tests of stages run beside
the others): its ``cfg`` is a plain dict, its ``train`` a module-level function."""

import json
import os
import time


def train(settings, cfg):
    if cfg.get("fail"):
        raise ValueError(f"stand-in {cfg['name']} failed on purpose")
    time.sleep(cfg.get("sleep", 0.0))
    run_dir = settings.root / cfg["name"] / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(1, 6):
            f.write(json.dumps({"step": step, "loss": 4.0 / step, "lr": 1e-3}) + "\n")
    print(f"stand-in {cfg['name']} in process {os.getpid()}")
    return {"metrics": dict(cfg["metrics"]), "encoder_dir": f"{cfg['name']}/encoder", "pid": os.getpid()}
