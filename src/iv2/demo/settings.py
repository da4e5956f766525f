"""What a demo run is made of, and the check that a rerun into the same folder asks for the same thing."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iv2_data.command_line import OutputConflict

# The corpus every stage reads (iv2_data.write_corpus); the last HELD_OUT clips are evaluation-only in all stages.
CORPUS_CLIPS = {"default": 768, "quick": 256}
CORPUS_FORMAT = {"num_frames": 8, "size": 64, "fps": 8}
HELD_OUT = 64


class SettingsConflict(OutputConflict):
    """The output folder holds a demo run made with other settings (a usage error: exit 2)."""


@dataclass(frozen=True)
class DemoSettings:
    """One demo run. ``output``: where everything goes (the corpus, each stage's run, plots, the report);
    ``quick``: the same path at a smaller size (≤ 2 min); ``seed``: the corpus and every stage's seed (a run is
    deterministic for a seed); ``threads``: torch's intra-op threads (None: torch's default; 1 by default: the
    tiny models gain little from a second thread, and on a busy 2-core machine two threads cost the stages 5-7x
    their CPU time waiting for each other, measured in iv2-align's and iv2-chat's READMEs; stage 3 runs on its
    iv2-chat flavor's threads, 2 for ``quick``, with no stage beside it); ``jobs``: stages
    run at once: with 2 the random-init ablation runs in a spawned worker process beside the main line; None:
    2 where this process may use two CPUs per stage's threads, else 1 (the command line's default). 1 here: a
    script that calls ``run_demo`` at its top level, without an ``if __name__ == "__main__":`` guard, would be
    run again by a spawned process. Neither changes a result: each stage runs alone in its process with its own
    seeds."""

    output: str = "runs/demo"
    quick: bool = False
    seed: int = 0
    threads: int | None = 1
    jobs: int | None = 1

    @property
    def root(self) -> Path:
        return Path(self.output)

    @property
    def corpus_clips(self) -> int:
        return CORPUS_CLIPS["quick" if self.quick else "default"]

    def identity(self) -> dict[str, Any]:
        """What decides the results (not where they go, nor the thread or job count)."""
        return {"quick": self.quick, "seed": self.seed, "corpus_clips": self.corpus_clips, **CORPUS_FORMAT,
                "held_out": HELD_OUT}

    def claim(self) -> None:
        """Record these settings in ``output/demo.json``, or check them against the ones recorded there: a
        folder made with other settings is refused, never mixed into this run's report."""
        path = self.root / "demo.json"
        if path.is_file():
            try:
                recorded = json.loads(path.read_text())
            except ValueError as error:
                raise SettingsConflict(f"{path} is not a demo settings file ({error}); use another --output") from None
            if recorded != self.identity():
                differ = ", ".join(f"{k}={recorded.get(k)!r} there, {v!r} now" for k, v in self.identity().items()
                                   if recorded.get(k) != v)
                raise SettingsConflict(f"{self.root} holds a demo run with other settings ({differ}); use another "
                                       "--output, or --fresh to start over there")
            return
        write_json(path, self.identity())

    def replace(self, **changes: Any) -> DemoSettings:
        return dataclasses.replace(self, **changes)


def write_json(path: Path, document: Any) -> None:
    """``document`` as indented JSON, written all at once (a killed demo never leaves half a file)."""
    from iv2_data.files import atomic_write

    with atomic_write(path, "w") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")
