"""Fixtures every tier may use: the databases, on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import Databases, PostgresServer, postgres_server

ENGINES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, started the first time a test asks for it."""
    with postgres_server() as server:
        yield server


def _databases(request: pytest.FixtureRequest, folder: Path) -> Iterator[Databases]:
    engine = str(request.param)
    server = request.getfixturevalue("postgres") if engine == "postgresql" else None
    made = Databases(engine=engine, folder=folder, server=server)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=ENGINES)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    """Empty databases for one test, on each engine in turn (``[sqlite]``, ``[postgresql]``)."""
    yield from _databases(request, tmp_path)


@pytest.fixture
def database_url(databases: Databases) -> str:
    """An empty database for one test: SQLite's where the settings put it by default, in
    the test's outbox; PostgreSQL's a fresh copy of the session's migrated template."""
    return databases.new()


@pytest.fixture(scope="module", params=ENGINES)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database shared by the tests of one module, on each engine in turn."""
    for made in _databases(request, tmp_path_factory.mktemp("database")):
        yield made.new()
