"""The real PostgreSQL on 127.0.0.1:5432 (trust auth) for tests: a database of a test
module's own, created and dropped with it, and a proxy that can take it away.

``CHATLANE_TEST_POSTGRES`` points at another server (``postgresql://user@host:port``).
Without a server the tests that need one are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest

T = TypeVar("T")
SERVERS = ("postgresql://postgres@127.0.0.1:5432", "postgresql://root@127.0.0.1:5432")


async def _admin() -> tuple[str, asyncpg.Connection]:
    chosen = os.environ.get("CHATLANE_TEST_POSTGRES")
    servers = [chosen] if chosen else []
    errors = []
    for server in [*servers, *SERVERS]:
        try:
            return server, await asyncpg.connect(f"{server}/postgres", timeout=3)
        except (OSError, asyncpg.PostgresError) as error:
            errors.append(f"{server}: {error}")
    pytest.skip(f"no PostgreSQL to test against ({'; '.join(errors)})")


async def _create() -> tuple[str, str]:
    server, admin = await _admin()
    name = f"chatlane_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return server, name


async def _drop(name: str) -> None:
    _, admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run on a loop of its own, in a thread: a fixture asked for inside a test's loop
    cannot run one there."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh database's URL, dropped afterwards."""
    server, name = _run(_create())
    try:
        yield f"{server}/{name}"
    finally:
        _run(_drop(name))


async def truncate(url: str) -> None:
    """Empty every chatlane table (ids start again at 1), keeping the schema."""
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'chatlane%' "
            "AND tablename <> 'chatlane_schema'"
        )
        if tables:
            names = ", ".join(row[0] for row in tables)
            await connection.execute(f"TRUNCATE {names} RESTART IDENTITY")
    finally:
        await connection.close()


class Proxy:
    """A TCP relay in front of PostgreSQL: ``stop()`` is the database going away (every
    connection cut, new ones refused), ``start()`` its coming back on the same port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by the proxy's."""
        scheme, rest = database_url.split("://", 1)
        user, rest = rest.split("@", 1)
        name = rest.split("/", 1)[1]
        return f"{scheme}://{user}@127.0.0.1:{self.port}/{name}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        finally:
            self._writers -= {writer, upstream_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()
