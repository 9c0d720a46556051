"""The Redis client every Redis user of chatlane shares the make of (storage, lanes,
the rate counter), and running Lua scripts on it: by their SHA (``run_script``), or
several in one trip (``run_scripts``).

``redis_client`` builds a bounded, blocking pool that rides out a short outage, with
``_QuickSend`` connections (a command that fits the socket's buffer is sent without
``asyncio.wait_for``); ``redis_tls`` reads the TLS options of a ``rediss://`` URL from
the environment.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

DEFAULT_MAX_CONNECTIONS = 64

try:  # redis-py 7.1 and later
    from redis.driver_info import DriverInfo

    # What every connection tells the server (CLIENT SETINFO), worked out once: left to
    # redis-py, each new connection reads the package metadata again (about 1 ms of CPU),
    # and a pool grows by a connection per concurrent command under a burst.
    _DRIVER: dict[str, Any] = {"driver_info": DriverInfo()}
except ImportError:  # earlier ones work the version out once, when the module loads
    _DRIVER = {}
_SHAS: dict[str, str] = {}


async def run_script(
    client: aioredis.Redis, source: str, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """A Lua script by its SHA (EVALSHA), as redis-py's ``Script`` does: the source goes
    over the wire only the first time a server sees it, not with every call."""
    sha = _SHAS.get(source)
    if sha is None:
        sha = _SHAS[source] = hashlib.sha1(source.encode()).hexdigest()
    try:
        return await client.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        return await client.eval(source, len(keys), *keys, *args)


ScriptCall = tuple[str, Sequence[str], Sequence[Any]]
"""A Lua script with its keys and arguments, to run alone or with others (``run_scripts``)."""

_COMPOSED: dict[tuple[tuple[str, ...], str], str] = {}


def _composed(sources: tuple[str, ...], when: str = "") -> str:
    """One script that runs ``sources`` in order, each as a function given its own KEYS
    and ARGV (the parameters shadow the globals), and returns their results as a list.
    ARGV starts with each script's number of keys and arguments. With ``when``, a
    script after the first runs only if it holds of ``prev`` (the result before); its
    result is then false (a nil reply)."""
    found = _COMPOSED.get((sources, when))
    if found is None:
        run = "results[i] = script(keys, args)"
        if when:
            run = f"""if i == 1 or (function(prev) return {when} end)(results[i - 1]) then
    results[i] = script(keys, args)
  else
    results[i] = false
  end"""
        functions = "".join(
            f"local function script{i}(KEYS, ARGV)\n{source}\nend\n"
            for i, source in enumerate(sources)
        )
        scripts = ", ".join(f"script{i}" for i in range(len(sources)))
        found = _COMPOSED[(sources, when)] = f"""{functions}
local scripts = {{{scripts}}}
local k, a, results = 0, 2 * #scripts, {{}}
for i, script in ipairs(scripts) do
  local nk, na = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local keys, args = {{}}, {{}}
  for j = 1, nk do keys[j] = KEYS[k + j] end
  for j = 1, na do args[j] = ARGV[a + j] end
  k, a = k + nk, a + na
  {run}
end
return results
"""
    return found


async def run_scripts(
    client: aioredis.Redis, calls: Sequence[ScriptCall], *, when: str = ""
) -> list[Any]:
    """Several scripts in one trip, run in order and atomically (one script made of
    them): a turn's transcript write and its leaving of the lanes, say. Each runs in a
    function of its own, with its own KEYS and ARGV, so their locals never clash. Their
    results, in order. ``when``: a Lua condition on ``prev``, the result of the script
    before, for each script after the first to run at all (None in its place if not):
    a turn's read of its transcript only once its lanes are granted, say."""
    if len(calls) == 1 and not when:
        return [await run_script(client, *calls[0])]
    counts: list[Any] = []
    keys: list[str] = []
    args: list[Any] = []
    for _, call_keys, call_args in calls:
        counts += [len(call_keys), len(call_args)]
        keys.extend(call_keys)
        args.extend(call_args)
    source = _composed(tuple(call[0] for call in calls), when)
    return list(await run_script(client, source, keys, [*counts, *args]))


CERT_REQS = ("none", "optional", "required")
# Variable -> redis-py's keyword, for ``rediss://`` URLs.
TLS_FILES = {
    "REDIS_SSL_CA_CERTS": "ssl_ca_certs",
    "REDIS_SSL_CERTFILE": "ssl_certfile",
    "REDIS_SSL_KEYFILE": "ssl_keyfile",
}


def redis_tls(env: Mapping[str, str]) -> dict[str, Any]:
    """TLS options for a ``rediss://`` URL from the environment: ``REDIS_SSL_CERT_REQS``
    (``none`` for a server with a self-signed certificate, as Heroku Redis has;
    ``optional``; ``required``, the default), ``REDIS_SSL_CA_CERTS`` (a CA bundle to
    verify against), ``REDIS_SSL_CERTFILE`` and ``REDIS_SSL_KEYFILE`` (a client
    certificate)."""
    options: dict[str, Any] = {
        keyword: env[name] for name, keyword in TLS_FILES.items() if env.get(name)
    }
    reqs = env.get("REDIS_SSL_CERT_REQS", "").strip().lower()
    if reqs:
        if reqs not in CERT_REQS:
            raise ValueError(
                f"REDIS_SSL_CERT_REQS: {reqs!r} is not one of {', '.join(CERT_REQS)}; "
                "use none for a server with a self-signed certificate (Heroku Redis)"
            )
        options["ssl_cert_reqs"] = reqs
        if reqs == "none":  # nothing is verified, so neither is the name
            options["ssl_check_hostname"] = False
    return options


class _QuickSend(AbstractConnection):
    """redis-py's connection, sending a command that fits the transport's buffer without
    ``asyncio.wait_for``. redis-py wraps every send in it when ``socket_timeout`` is set
    (its default is 5 s), and on Python 3.11 ``wait_for`` starts a task for each: about
    0.6 ms of CPU an answered message with two processes on Redis (``python -m
    bench.load --only "1x Redis x2"``, four alternating pairs: 8.8 against 9.45 ms), and
    two more event-loop turns a command. A write the buffer takes whole never waits
    (``drain`` returns at once), so the timeout has nothing to bound; a larger one still
    goes through ``wait_for``, and reads keep their timeout."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        if not timeout or not self.is_connected:
            return await super().send_packed_command(command, check_health)
        if isinstance(command, str):
            command = command.encode()
        parts = [command] if isinstance(command, bytes) else list(command)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]  # (a PING, with the timeout)
        writer = getattr(self, "_writer", None)  # (a private attribute: absent, go slow)
        if not self.is_connected or not _fits(writer, sum(len(part) for part in parts)):
            return await super().send_packed_command(parts, check_health=False)
        self.socket_timeout = None  # read by the send alone: restored before any read
        try:
            await super().send_packed_command(parts, check_health=False)
        finally:
            self.socket_timeout = timeout


def _fits(writer: asyncio.StreamWriter | None, size: int) -> bool:
    """Whether ``size`` more bytes keep the writer's transport under its high-water mark,
    so that ``drain()`` will not wait."""
    try:
        transport = writer.transport if writer is not None else None
        if transport is None or transport.is_closing():
            return False
        high = transport.get_write_buffer_limits()[1]
        return bool(transport.get_write_buffer_size() + size <= high)
    except (AttributeError, NotImplementedError):  # a transport that cannot say
        return False


class _Connection(_QuickSend, aioredis.Connection):
    """``_QuickSend`` over TCP."""


class _SSLConnection(_QuickSend, aioredis.SSLConnection):
    """``_QuickSend`` over TLS (``rediss://``)."""


class _UnixConnection(_QuickSend, aioredis.UnixDomainSocketConnection):
    """``_QuickSend`` over a Unix socket (``unix://``)."""


_QUICK: dict[type[AbstractConnection], type[AbstractConnection]] = {
    aioredis.Connection: _Connection,
    aioredis.SSLConnection: _SSLConnection,
    aioredis.UnixDomainSocketConnection: _UnixConnection,
}


def redis_client(
    url: str, *, max_connections: int | None = None, tls: Mapping[str, Any] | None = None
) -> aioredis.Redis:
    """A client that rides out a short outage (a failover, a restart): each command is
    retried on a lost connection for about five seconds before the error is raised.

    Its pool is bounded (``max_connections``) and blocking: when every connection is
    busy a command waits for one instead of failing with "Too many connections", so a
    burst slows down rather than losing claims and renewals. ``tls`` (``redis_tls``)
    applies to ``rediss://`` URLs only."""
    secure = url.lower().startswith("rediss://")
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        **(dict(tls or {}) if secure else {}),
        max_connections=max_connections or DEFAULT_MAX_CONNECTIONS,
        timeout=10,
        decode_responses=True,
        health_check_interval=15,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=8),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionError],
        **_DRIVER,
    )
    # (the URL picks the class: TCP, TLS or a Unix socket)
    pool.connection_class = _QUICK.get(pool.connection_class, pool.connection_class)
    return aioredis.Redis.from_pool(pool)
