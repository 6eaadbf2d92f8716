"""The tests' databases: a throwaway PostgreSQL server, and SQL that runs on either engine.

Unless ``SOLIDARITY_TEST_POSTGRES_URL`` names a server to use, :func:`postgres_server`
makes a cluster of its own in a temporary folder with Debian's ``initdb`` and ``pg_ctl``
(the Makefile installs them), listening on 127.0.0.1 on a free port, and removes it at
the end: ``make test`` needs no server set up beforehand. One template database is
migrated once; each test gets a copy of it (``CREATE DATABASE … TEMPLATE``, fast),
dropped after.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url

from delivery.store import Store
from delivery.store.engine import make_engine, migrate

ENV_URL = "SOLIDARITY_TEST_POSTGRES_URL"
BINARIES = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"  # the cluster's superuser, and the system user that runs it as root
# Durability buys nothing for a cluster thrown away at the end, and costs seconds.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
# UTF-8 text in the C locale, which sorts by code point as SQLite does; no fsync at set-up.
INITDB = ("-E", "UTF8", "--locale=C", "--no-sync")
FOLDER_PREFIX = "solidarity-pg-"
OWNER = "owner.pid"  # the test session's process: a folder whose owner is gone is swept
LOG = "server.log"


def sql(store: Store, query: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run ``query`` (``:name`` parameters) on the store's own engine, in one transaction.

    For tests that reach under the store to arrange a state: the same text runs on SQLite
    and PostgreSQL, where opening the SQLite file with ``sqlite3`` would not.
    """
    with store.engine.begin() as conn:
        result = conn.execute(text(query), params)
        return [tuple(row) for row in result] if result.returns_rows else []


@dataclass(kw_only=True)
class PostgresServer:
    """A server the tests may create and drop databases on, with a migrated template."""

    url: str  # the maintenance database, as a superuser
    admin: psycopg.Connection[Any]
    template: str = ""
    prefix: str = field(default_factory=lambda: f"t_{secrets.token_hex(3)}")
    _numbers: Iterator[int] = field(default_factory=itertools.count)
    _engines: dict[str, list[Engine]] = field(default_factory=dict)

    def url_of(self, name: str) -> str:
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def _run(self, statement: pgsql.Composable) -> None:
        self.admin.execute(statement)

    def prepare_template(self) -> None:
        """Migrate one database to be copied for every test: its schema, and no id key."""
        self.template = f"{self.prefix}_template"
        self._run(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(self.template)))
        engine = make_engine(self.url_of(self.template))
        try:
            migrate(engine)
        finally:
            engine.dispose()

    def create(self, *, copy_of: str | None = None, empty: bool = False) -> str:
        """A fresh copy of the template (or of ``copy_of``, or an empty database); its URL."""
        name = f"{self.prefix}_{next(self._numbers)}"
        source = "template0" if empty else self.template
        if copy_of is not None:
            source = make_url(copy_of).database or ""
            self._close_engines(source)  # a template must have no connections
        self._run(
            pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                pgsql.Identifier(name), pgsql.Identifier(source)
            )
        )
        self._engines.setdefault(name, [])
        return self.url_of(name)

    def drop(self, name: str) -> None:
        """Close what the test left open on ``name``, then drop it whatever still holds it."""
        self._close_engines(name)
        self._engines.pop(name, None)
        statement = pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        self._run(statement.format(pgsql.Identifier(name)))

    def _close_engines(self, name: str) -> None:
        for engine in self._engines.get(name, []):
            engine.dispose()

    def track(self, conn: Connection) -> None:
        """Remember every engine opened on one of our databases, to close it at the drop.

        Tests seldom close their stores; a pooled psycopg connection collected unclosed
        is a ResourceWarning, which this suite turns into an error.
        """
        engines = self._engines.get(conn.engine.url.database or "")
        if conn.dialect.name == "postgresql" and engines is not None and conn.engine not in engines:
            engines.append(conn.engine)


@dataclass(kw_only=True)
class Databases:
    """Empty databases on one engine for one test, each removed at the end."""

    engine: str  # "sqlite" or "postgresql"
    folder: Path
    server: PostgresServer | None = None
    _made: list[str] = field(default_factory=list)

    def new(self, name: str = "outbox", *, unmigrated: bool = False) -> str:
        """A URL to a database with no data; SQLite's is ``NAME/solidarity.db`` in the folder.

        PostgreSQL's already has the schema (copied from the template) unless ``unmigrated``.
        """
        if self.server is None:
            return f"sqlite:///{self.folder / name / 'solidarity.db'}"
        url = self.server.create(empty=unmigrated)
        self._made.append(url)
        return url

    def copy(self, url: str, name: str) -> str:
        """A copy of the (closed) database at ``url``: the same installation, twice."""
        if self.server is None:
            source = Path(make_url(url).database or "").parent
            shutil.copytree(source, self.folder / name)
            return self.new(name)
        copied = self.server.create(copy_of=url)
        self._made.append(copied)
        return copied

    def close(self) -> None:
        if self.server is not None:
            for url in self._made:
                self.server.drop(make_url(url).database or "")


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """The server ``SOLIDARITY_TEST_POSTGRES_URL`` names, or a throwaway cluster of our own."""
    given = os.environ.get(ENV_URL)
    server_url = _given(given) if given else _throwaway_cluster()
    with server_url as url:
        admin = psycopg.connect(_libpq_url(url), autocommit=True)
        server = PostgresServer(url=url, admin=admin)
        event.listen(Engine, "engine_connect", server.track)
        try:
            server.prepare_template()
            yield server
        finally:
            event.remove(Engine, "engine_connect", server.track)
            for name in [*server._engines, server.template]:
                if name:
                    server.drop(name)
            admin.close()


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq reads it (no ``+psycopg`` driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def find_binaries(root: Path = BINARIES) -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` with ``initdb`` and ``pg_ctl``; fails if none."""
    found = [
        bin_dir
        for bin_dir in root.glob("*/bin")
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file()
    ]
    if not found:
        pytest.fail(
            f"PostgreSQL's initdb and pg_ctl are not under {root}/*/bin: install Debian's"
            f" `postgresql` package (`make test` does), or set {ENV_URL} to a server's URL",
            pytrace=False,
        )
    return max(found, key=lambda p: _version(p.parent.name))


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _throwaway_cluster() -> Iterator[str]:
    """initdb a cluster in a temporary folder, start it on a free port, remove it after.

    PostgreSQL refuses to run as root: as root (CI is), the cluster belongs to the
    ``postgres`` system user that Debian's package creates, and runs as it.
    """
    bin_dir = find_binaries()
    _sweep_orphans(bin_dir)
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    data, sockets = folder / "data", folder / "sockets"
    try:
        (folder / OWNER).write_text(str(os.getpid()))
        sockets.mkdir()
        if os.geteuid() == 0:
            account = _system_user()
            for path in (folder, sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        _run(folder, bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "-A", "trust", *INITDB)
        port = _start(folder, bin_dir)
        try:
            yield f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
        finally:
            _run(folder, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _start(folder: Path, bin_dir: Path) -> int:
    """Start the server on a free port: three tries, in case another process took the port."""
    for attempt in range(3):
        port = _free_port()
        settings = {"listen_addresses": "127.0.0.1", "port": str(port), **FAST}
        settings["unix_socket_directories"] = str(folder / "sockets")
        options = " ".join(f"-c {key}={shlex.quote(value)}" for key, value in settings.items())
        pg_ctl = [bin_dir / "pg_ctl", "-D", folder / "data", "-l", folder / LOG]
        try:
            _run(folder, *pg_ctl, "-w", "-t", "60", "-o", options, "start")
        except pytest.fail.Exception:
            if attempt == 2:
                raise
            continue
        return port
    raise AssertionError("unreachable")


def _sweep_orphans(bin_dir: Path) -> None:
    """Stop and remove the clusters of earlier sessions that were killed before their end."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = int((folder / OWNER).read_text())
            os.kill(owner, 0)
            continue  # its session still runs
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not ours to judge
        if (folder / "data" / "postmaster.pid").exists():
            stop = [bin_dir / "pg_ctl", "-D", folder / "data", "-m", "immediate", "-w", "stop"]
            _run(folder, *stop, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError:
        pytest.fail(
            f"no `{SUPERUSER}` system user to run PostgreSQL as (it refuses to run as root):"
            " Debian's `postgresql` package creates it (`make test` installs the package)",
            pytrace=False,
        )


def _run(folder: Path, *command: object, check: bool = True) -> None:
    """Run a PostgreSQL program in ``folder`` (as ``postgres`` when we are root)."""
    as_postgres = ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []
    argv = [*as_postgres, *(str(c) for c in command)]
    done = subprocess.run(
        argv, cwd=folder, env=_server_env(), capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        log = folder / LOG
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(
            f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}{tail}",
            pytrace=False,
        )


def _server_env() -> Mapping[str, str]:
    """The environment without the client's PG* variables, and a locale the server accepts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"LC_ALL": "C", "LANG": "C"})
    return env
