"""The command reference and README stay true to the commands."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
GENERATOR = runpy.run_path(str(ROOT / "docs" / "cli_reference.py"))


def test_the_command_reference_matches_the_help() -> None:
    written = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == GENERATOR["reference"](), "run `make docs` to refresh docs/cli.md"


@pytest.mark.parametrize("path", GENERATOR["commands"](GENERATOR["main"]))
def test_every_command_has_an_example(path: tuple[str, ...]) -> None:
    assert "Example:" in GENERATOR["help_text"](path)


def test_every_command_of_the_contract_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in GENERATOR["commands"](GENERATOR["main"]):
        assert f"solidarity {' '.join(path)}" in readme, path
