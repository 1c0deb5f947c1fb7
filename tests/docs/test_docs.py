"""The commands the README and docs/ show in code blocks are ones the CLI takes: every
``train_rl.py`` line (``python``, ``torchrun``) parses, its config validates and its env id is
registered; ``evaluate`` and ``analyze`` lines parse with their own options."""

from __future__ import annotations

import re
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


PLACEHOLDERS = {"S": "1", "N": "1000"}  # "--seed S", "--total-steps N" in the prose


def train_rl_argv(line: str) -> list[str] | None:
    """The arguments after ``train_rl.py`` in a shell line (comments and ``...`` dropped,
    placeholders filled in); None if the line does not run it."""
    tokens = shlex.split(line, comments=True)
    script = [i for i, token in enumerate(tokens) if token.endswith("train_rl.py")]
    if not script:
        return None
    return [PLACEHOLDERS.get(token, token) for token in tokens[script[0] + 1 :] if token != "..."]


def documented_commands() -> list[tuple[str, list[str], bool]]:
    """``(where, argv after train_rl.py, in a code block)`` of each command in the docs: the
    lines of code blocks that start with ``python`` or ``torchrun``, and the inline ones
    (`` `python train_rl.py ...` `` in the prose, which may break across lines)."""
    commands = []
    for path in DOCS:
        text = path.read_text()
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                argv = None
                if re.match(r"(\S+=\S+ )*(python|torchrun) ", line):
                    argv = train_rl_argv(line)
                if argv is not None:
                    commands.append((f"{path.name}: {line[:60]}", argv, True))
        for inline in re.findall(r"`((?:\S+=\S+ )?python train_rl\.py[^`]*)`", text):
            line = " ".join(inline.split())
            commands.append((f"{path.name} (inline): {line[:60]}", train_rl_argv(line), False))
    return commands


COMMANDS = documented_commands()


def test_the_docs_show_train_evaluate_and_analyze_commands() -> None:
    firsts = {argv[0] if argv else "" for _, argv, in_block in COMMANDS if in_block}
    assert {"", "--env", "--resume", "--fork", "evaluate", "analyze"} <= firsts
    assert sum(in_block for *_, in_block in COMMANDS) >= 15
    assert sum(not in_block for *_, in_block in COMMANDS) >= 15


@pytest.mark.parametrize(("where", "argv", "in_block"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_command_is_one_the_cli_takes(
    where: str, argv: list[str], in_block: bool
) -> None:
    """Parses and validates; the env ids of the code blocks are registered (the prose also
    names ids a user registers, such as docs/new_environment.md's example)."""
    if "--help" in argv:
        return
    if argv[:1] in (["evaluate"], ["analyze"]):
        module = evaluate if argv[0] == "evaluate" else analyze
        module.build_parser().parse_args(argv[1:])  # exits (status 2) on an unknown option
        return
    args = train_rl.build_parser().parse_args(argv)
    config, _ = train_rl.config_from_args(args)
    if getattr(args, "resume", None):
        return  # the rest comes from the run directory
    validate(config)
    if in_block and ":" not in config.env:  # module:id names a user's package
        assert config.env in gym.registry, config.env
