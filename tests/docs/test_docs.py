"""The commands the README and docs/ show are ones the scripts take: every ``train_rl.py``
command (code blocks and inline, ``python`` or ``torchrun``) parses and its config validates,
with the code blocks' env ids registered; ``evaluate`` and ``analyze`` commands and those of
the ``benchmarks/`` scripts parse with their own options."""

from __future__ import annotations

import re
import runpy
import shlex
from pathlib import Path

import gymnasium as gym
import minigrid  # noqa: F401  (registers MiniGrid-*)
import pytest

import envs  # noqa: F401  (registers Lethe/*)
import train_rl
from agents import analyze, evaluate
from agents.config import validate

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = r"(?:train_rl|benchmarks/\w+)\.py"
#: placeholders of the prose: "--seed S", "--total-steps N", "--memories M"
PLACEHOLDERS = {"S": "1", "N": "1000", "M": "expire-span"}


def script_argv(line: str) -> tuple[str, list[str]] | None:
    """The script a shell line runs and its arguments (comments and ``...`` dropped,
    placeholders filled in); None if it runs none of ours."""
    tokens = shlex.split(line, comments=True)
    scripts = [i for i, token in enumerate(tokens) if re.fullmatch(SCRIPT, token)]
    if not scripts:
        return None
    argv = [PLACEHOLDERS.get(token, token) for token in tokens[scripts[0] + 1 :]]
    return tokens[scripts[0]], [token for token in argv if token != "..."]


def documented_commands() -> list[tuple[str, str, list[str], bool]]:
    """``(where, script, argv, in a code block)`` of each command in the docs: the lines of
    code blocks that start with ``python`` or ``torchrun``, and the inline ones (`` `python
    train_rl.py ...` `` in the prose, which may break across lines)."""
    commands = []
    for path in DOCS:
        text = path.read_text()
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                found = None
                if re.match(r"(\S+=\S+ )*(python|torchrun) ", line):
                    found = script_argv(line)
                if found:
                    commands.append((f"{path.name}: {line[:70]}", *found, True))
        for inline in re.findall(rf"`((?:\S+=\S+ )?python {SCRIPT}[^`]*)`", text):
            line = " ".join(inline.split())
            commands.append((f"{path.name} (inline): {line[:70]}", *script_argv(line), False))
    return commands


COMMANDS = documented_commands()


def test_the_docs_show_every_kind_of_command() -> None:
    train = [argv for _, script, argv, in_block in COMMANDS if script == "train_rl.py"]
    firsts = {argv[0] if argv else "" for argv in train}
    assert {"", "--env", "--resume", "--fork", "evaluate", "analyze"} <= firsts
    assert sum(in_block for *_, in_block in COMMANDS) >= 15
    assert sum(not in_block for *_, in_block in COMMANDS) >= 25
    benchmarks = {script for _, script, *_ in COMMANDS if script.startswith("benchmarks/")}
    assert {"benchmarks/learning.py", "benchmarks/train_throughput.py"} <= benchmarks


@pytest.mark.parametrize(
    ("where", "script", "argv", "in_block"), COMMANDS, ids=[c[0] for c in COMMANDS]
)
def test_documented_command_is_one_the_script_takes(
    where: str, script: str, argv: list[str], in_block: bool
) -> None:
    """Parses (an unknown option or a bad value exits with status 2) and, for training,
    validates; the env ids of the code blocks are registered (the prose also names ids a
    user registers, such as docs/new_environment.md's example)."""
    if "--help" in argv:
        return
    if script != "train_rl.py":
        runpy.run_path(str(ROOT / script))["build_parser"]().parse_args(argv)
        return
    if argv[:1] in (["evaluate"], ["analyze"]):
        module = evaluate if argv[0] == "evaluate" else analyze
        module.build_parser().parse_args(argv[1:])
        return
    args = train_rl.build_parser().parse_args(argv)
    config, _ = train_rl.config_from_args(args)
    if getattr(args, "resume", None):
        return  # the rest comes from the run directory
    validate(config)
    if in_block and ":" not in config.env:  # module:id names a user's package
        assert config.env in gym.registry, config.env
