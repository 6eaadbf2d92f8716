"""Write the command reference (docs/cli.md) from the commands' own --help."""

from __future__ import annotations

import sys

import click
from click.testing import CliRunner

from delivery.cli import main


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(commands(command, path))
    return found


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="solidarity", terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output.rstrip("\n")


def reference() -> str:
    parts = [
        "# Command reference\n",
        "Generated from `--help` by `make docs`; a test checks it matches the commands.\n",
        "## solidarity\n",
        "```\n" + help_text(()) + "\n```\n",
    ]
    for path in commands(main):
        parts.append(f"## solidarity {' '.join(path)}\n")
        parts.append("```\n" + help_text(path) + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(reference())
