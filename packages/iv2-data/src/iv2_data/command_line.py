"""What every iv2 command line shares: exit codes, the help format, one-line errors and Ctrl-C.

The tools of every package (``iv2-data``, ``iv2-encoders``, ``iv2-train``, the stage commands and the umbrella
``iv2``) follow one convention, so that scripts can rely on it:

====  =======================================================================================================
code  meaning
====  =======================================================================================================
0     done: every input is finished (now or by an earlier run)
1     the run failed, some inputs failed (each recorded, the rest done), or nothing was found to work on
2     usage: the arguments cannot work as given (argparse errors, an unknown model, a conflict with what an
      output folder already holds); nothing was read or written
130   interrupted (Ctrl-C); what finished is kept, the same command resumes
====  =======================================================================================================

Errors a user can fix are one line, ``PROG: error: MESSAGE``, naming the file, argument or key; set
``IV2_TRACEBACK=1`` to see the traceback as well. Nothing here imports torch: help stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "HelpFormatter",
    "Interrupted",
    "OutputConflict",
    "non_negative_int",
    "positive_int",
    "run_command",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what shells report for a Ctrl-C

EXIT_CODES_HELP = """exit codes:
  0    done (every input finished, now or by an earlier run)
  1    the run failed, some inputs failed (recorded; the rest done), or nothing was found to do
  2    usage error: the arguments cannot work as given; nothing was read or written
  130  interrupted (Ctrl-C): finished work is kept; rerun the same command to resume"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (line breaks kept); ``(default: X)`` after options whose default
    means something (not None, False or a help text that already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or default is None
            or default is False  # `0 in (None, False)` is True: a default of 0 is still worth showing
            or default == argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 1 (``--batch-size 0`` is a usage error naming the option)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse ``type``: a whole number >= 0."""
    return _whole_number(text, 0)


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
    return value


class CommandError(Exception):
    """A failure to report as one line, ``PROG: error: MESSAGE``, with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class OutputConflict(ValueError):
    """An output folder holds work made with other settings than the run asks for. A usage error (exit 2):
    the message names the differing settings; another output folder (or a flag to recompute) resolves it."""

    code = EXIT_USAGE


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that knows what was finished before it (``done``, e.g. ``"3 of 10 videos done"``)."""

    def __init__(self, done: str = "") -> None:
        super().__init__(done)
        self.done = done


def run_command(prog: str, command: Callable[[], int | None]) -> int:
    """Run ``command`` and turn what it raises into the exit codes above, one-line messages on stderr:
    :class:`CommandError` and :class:`OutputConflict` → their code; other ``OSError`` / ``ValueError`` (a
    missing file, a refused checkpoint, a read-only folder...) → 1; Ctrl-C → 130 ("interrupted, N done;
    rerun the same command to resume")."""
    try:
        return int(command() or EXIT_OK)
    except KeyboardInterrupt as interrupt:
        done = getattr(interrupt, "done", "")
        print(f"{prog}: interrupted{', ' + done if done else ''}; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CommandError, OSError, ValueError) as error:
        if os.environ.get("IV2_TRACEBACK"):
            raise
        print(f"{prog}: error: {describe(error)}", file=sys.stderr)
        return getattr(error, "code", EXIT_FAILED)


def describe(error: BaseException) -> str:
    """One line for an error: its message, or for an ``OSError`` without one (``PermissionError(13, ...)``
    raised by the OS) the reason and the file."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    text = str(error) or type(error).__name__
    if isinstance(error, KeyError) and text.startswith(("'", '"')):
        text = text[1:-1]  # KeyError quotes its message
    return " ".join(text.split())
