"""``iv2 demo``: InternVideo2's progressive recipe, stages 1 → 2 → 3, learning on a laptop CPU in minutes.

>>> from iv2.demo import DemoSettings, run_demo
>>> report = run_demo(DemoSettings(output="runs/demo", quick=True))
>>> report["stage2"]["t2v_r1"], report["stage2"]["chance_r1"]

Every stage runs the stage package's own training (``iv2_distill.train``, ``iv2_align.train``,
``iv2_chat.train``) on the synthetic corpus of iv2-data; this package only chains them, keeps track of what is
finished and writes the report. Importing it loads no torch (``iv2 demo --help`` stays fast).
"""

from __future__ import annotations

from iv2.demo.cli import build_parser, main
from iv2.demo.settings import DemoSettings, SettingsConflict
from iv2_data.lazy import lazy_exports

__all__ = ["DemoSettings", "SettingsConflict", "build_parser", "main", "run_demo"]


# run_demo imports the stage packages (torch) only when it is looked up
__getattr__, __dir__ = lazy_exports(__name__, {"run_demo": "pipeline"})
