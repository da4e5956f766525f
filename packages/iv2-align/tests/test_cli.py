"""The command line: fast help without torch, exit codes, config errors as one line, flavors in sync."""

import subprocess
import sys

import pytest

from iv2_align import ALIGN_FLAVORS
from iv2_align.cli import CLIP_FLAVORS, FLAVORS, main


def test_help_is_fast_and_does_not_import_torch():
    code = ("import sys\nfrom iv2_align.cli import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "flavor name or YAML file" in done.stdout and "default: tiny-synthetic" in done.stdout


def test_flavor_lists_match_the_configs():
    from iv2_align.clip_train import CLIP_TRAIN_FLAVORS

    assert set(FLAVORS) == set(ALIGN_FLAVORS)
    assert set(CLIP_FLAVORS) == set(CLIP_TRAIN_FLAVORS)


def test_usage_errors_exit_2_with_one_line(capsys):
    assert main(["train", "tiny-synthetic", "train.optimizer.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "lrr" in err and "did you mean 'lr'" in err and "Traceback" not in err
    assert main(["train", "no-such-flavor"]) == 2
    assert "unknown config flavor" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "retrieval"])  # argparse: the annotation file is missing
    assert exit_info.value.code == 2
    assert main(["eval", "retrieval", "x.json"]) == 2  # neither --model nor --checkpoint
    assert "--model" in capsys.readouterr().err


def test_print_config_resolves_flavor_and_overrides(capsys):
    assert main(["train", "tiny-synthetic", "masked.steps=7", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7" in out and "internvideo2-stage2-tiny-av" in out


def test_missing_files_fail_with_one_line(capsys, tmp_path):
    assert main(["eval", "retrieval", str(tmp_path / "none.json"), "--model", str(tmp_path / "nomodel")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nomodel" in err
