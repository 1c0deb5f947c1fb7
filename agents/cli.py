"""What the command-line entry points share: the name the user typed, and one-line errors.

`pip install lethe-rl` installs the CLI as the command ``lethe-train``; from a checkout it is
``python train_rl.py``. Usage lines, errors and the resume hint name whichever was used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

#: the console script `pyproject.toml` installs
INSTALLED = "lethe-train"


def prog() -> str:
    """The program name for usage lines and errors: ``lethe-train`` or ``train_rl.py``."""
    return INSTALLED if Path(sys.argv[0]).name == INSTALLED else "train_rl.py"


def command() -> str:
    """The command line that starts the CLI again (in a hint such as how to resume)."""
    return INSTALLED if prog() == INSTALLED else "python train_rl.py"


def relaunch(distributed: bool) -> str:
    """`command`, or under torchrun the launch that starts it again on every process.

    torchrun runs a Python script, so the installed command goes through ``--no-python``.
    """
    if not distributed:
        return command()
    target = f"--no-python {INSTALLED}" if prog() == INSTALLED else "train_rl.py"
    return f"torchrun --nproc_per_node ... {target}"


class OneLineParser(argparse.ArgumentParser):
    """Bad options are answered in one line (no usage block), exit status 2. Options are
    spelled out: a prefix such as ``--num-env`` is an error, not a silent ``--num-envs``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_subcommand(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    body: Callable[[argparse.Namespace], int],
) -> int:
    """A subcommand's exit status: `body` of the parsed arguments, or 0 for ``--help``, or 2
    with one line on stderr for a bad option or a `agents.config.ConfigError` from `body`."""
    from agents.config import ConfigError

    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad option (2, one line already printed)
        return int(stop.code or 0)
    try:
        return body(args)
    except ConfigError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
