"""``iv2``: the one command line of the iv2 packages. Each sub-command hands over to the command line of the
package that owns it (:data:`COMMANDS`), named as typed (``iv2 extract: error: ...``); the exit codes are the
same everywhere (:mod:`iv2_data.command_line`). Printing help imports no torch.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PACKAGES = ("iv2-suite", "iv2-kernels", "iv2-data", "iv2-encoders", "iv2-train", "iv2-distill", "iv2-align", "iv2-chat")

EXIT_CODES_HELP = """exit codes (every iv2 command):
  0    done (every input finished, now or by an earlier run)
  1    the run failed, some inputs failed (recorded; the rest done), or nothing was found to do
  2    usage error: the arguments cannot work as given; nothing was read or written
  130  interrupted (Ctrl-C): finished work is kept; rerun the same command to resume"""


@dataclass(frozen=True)
class Command:
    """One ``iv2`` sub-command: ``target`` (``"module:function"``) is called as ``function(argv, prog=...)``
    and returns the exit code. ``argv`` is put before the user's arguments; ``prog`` is what the function
    names itself in usage and errors (default ``"iv2 NAME"``). ``package`` is the distribution that provides it
    (named when it is not installed)."""

    target: str
    help: str
    package: str
    argv: tuple[str, ...] = ()
    prog: str | None = None


# The sub-commands, in the order `iv2 --help` lists them. A package adds its command line here: a module with
# `main(argv=None, *, prog=...) -> int` and a fast `--help`.
COMMANDS: dict[str, Command] = {
    "demo": Command("iv2.demo:main", "the three stages learning on a CPU in minutes (synthetic data, report + "
                    "plots)", "iv2-suite"),
    "extract": Command("iv2_encoders.cli:main", "video features with an InternVideo2 encoder, one safetensors "
                       "file per video", "iv2-encoders", argv=("extract",), prog="iv2"),
    "models": Command("iv2_encoders.cli:main", "encoder names and released weight tags", "iv2-encoders",
                      argv=("models",), prog="iv2"),
    "data": Command("iv2_data.cli:main", "data tools: synth (a synthetic corpus), shard (webdataset shards), curate",
                    "iv2-data"),
    "distill": Command("iv2_distill.cli:main", "stage 1: distil two frozen teachers into a video encoder",
                       "iv2-distill"),
    "align": Command("iv2_align.cli:main", "stage 2: align video, audio, speech and text; retrieval", "iv2-align"),
    "chat": Command("iv2_chat.cli:main", "stage 3: video chat through a QFormer and an LLM; MC-QA", "iv2-chat"),
    "train": Command("iv2_train.cli:main", "training runs: show, plot, estimate memory", "iv2-train"),
    "versions": Command("iv2.cli:versions_main", "installed versions of the iv2 packages", "iv2-suite"),
}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def versions_main(argv: Sequence[str] | None = None, *, prog: str = "iv2 versions") -> int:
    """``iv2 versions``: one line per iv2 package."""
    import argparse

    argparse.ArgumentParser(prog=prog, description="Installed versions of the iv2 packages.", epilog=EXIT_CODES_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    for name, version in versions().items():
        print(f"{name:14s} {version or 'not installed'}")
    return 0


def help_text() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: iv2 COMMAND [ARGS...]",
        "",
        "InternVideo2 (arXiv 2403.15377) as installable packages: the encoder, data tools and the three training",
        "stages, behind one command.",
        "",
        "commands:",
        *(f"  {name:{width}s}  {command.help}" for name, command in COMMANDS.items()),
        "",
        "options:",
        "  -h, --help  show this help and exit",
        "  --version   show the version of iv2-suite and exit",
        "",
        'Run "iv2 COMMAND --help" for the options of a command, e.g. iv2 extract --help.',
        "",
        EXIT_CODES_HELP,
    ]
    return "\n".join(lines)


def _usage_error(message: str) -> int:
    print(f"usage: iv2 COMMAND [ARGS...]\niv2: error: {message}", file=sys.stderr)
    return 2


def resolve(name: str, command: Command) -> Callable[..., int] | str:
    """The function behind ``command``, or why it is not available (its package is not installed, or has no
    command line yet). Errors raised while importing an installed command line are not hidden."""
    module_name, _, function = command.target.partition(":")
    top = module_name.split(".")[0]
    if importlib.util.find_spec(top) is None:
        return f"this command needs {command.package}, which is not installed (pip install {command.package})"
    if importlib.util.find_spec(module_name) is None:
        try:
            version = md.version(command.package)
        except md.PackageNotFoundError:
            version = "?"
        return f"{command.package} {version} is installed but has no command line yet (no module {module_name})"
    return getattr(importlib.import_module(module_name), function)


def call(function: Callable[..., int], argv: list[str], prog: str) -> int:
    """Call a package's ``main`` so that it names itself ``prog``: passed as ``prog=`` when it takes one, else
    as ``sys.argv[0]`` (argparse's default program name) for the time of the call."""
    if "prog" in inspect.signature(function).parameters:
        return int(function(argv, prog=prog) or 0)
    saved = sys.argv[0] if sys.argv else None
    if sys.argv:
        sys.argv[0] = prog
    else:
        sys.argv.append(prog)
    try:
        return int(function(argv) or 0)
    finally:
        if saved is None:
            sys.argv.pop(0)
        else:
            sys.argv[0] = saved


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(help_text(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"iv2 (iv2-suite) {md.version('iv2-suite')}")
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, COMMANDS, n=2)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        what = "option" if name.startswith("-") else "command"
        return _usage_error(f"unknown {what} {name!r}{hint} (commands: {', '.join(COMMANDS)}; see iv2 --help)")
    function = resolve(name, command)
    if isinstance(function, str):
        print(f"iv2 {name}: error: {function}", file=sys.stderr)
        return 1
    return call(function, [*command.argv, *rest], command.prog or f"iv2 {name}")


if __name__ == "__main__":
    sys.exit(main())
