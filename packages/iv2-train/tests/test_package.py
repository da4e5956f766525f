from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import iv2_train


def test_public_api_is_exported() -> None:
    for name in iv2_train.__all__:
        assert getattr(iv2_train, name) is not None, name
    for name in ("Trainer", "TrainConfig", "load_config", "all_gather_with_grad", "estimate_memory", "freeze",
                 "MetaLoader", "Strategy", "DeepSpeedStrategy", "EvaluationConfig", "check_config"):  # fmt: skip
        assert name in iv2_train.__all__
    assert callable(iv2_train.freeze)  # the function, not a submodule of the same name


def test_the_type_checking_imports_list_the_same_names_as_the_lazy_table() -> None:
    # __init__ keeps two lists (the runtime table, the static imports for IDEs): they must agree.
    tree = ast.parse(Path(iv2_train.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
    static = {
        alias.name: node.module for node in ast.walk(block) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert static == dict(iv2_train._EXPORTS)


def test_import_stays_light() -> None:
    # torch, DeepSpeed, matplotlib and rich are imported only on the paths that use them.
    code = (
        "import sys, iv2_train; "
        "print(','.join(m for m in ('torch', 'deepspeed', 'matplotlib', 'rich', 'tensorboard') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_console_script_is_declared() -> None:
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["iv2-train"] == "iv2_train.cli:main"
