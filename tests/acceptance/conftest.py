"""The `solidarity` command, run as an operator would, in a fresh folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SOLIDARITY = str(Path(sys.executable).parent / "solidarity")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Operator:
    """Runs `solidarity` in one folder with no settings but the defaults."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SOLIDARITY_")}

    def __call__(self, *args: str, check: int | None = 0) -> Result:
        done = subprocess.run(
            [SOLIDARITY, *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        result = Result(done.returncode, done.stdout, done.stderr)
        if check is not None:
            assert result.code == check, (
                f"solidarity {' '.join(args)} → {result.code}\n{result.err}"
            )
        return result

    @property
    def outbox(self) -> Path:
        return self.folder / "outbox"


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    shutil.copy(FIXTURES / "campaign_reference.toml", tmp_path / "campaign.toml")
    shutil.copy(FIXTURES / "messages_sample.csv", tmp_path / "messages.csv")
    return Operator(tmp_path)
