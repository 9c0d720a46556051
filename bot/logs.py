"""Logging: JSON lines when not on a terminal (or ``LOG_FORMAT=json``), and no secrets ever.

Every record passes through ``RedactSecrets``, which replaces the value of
each secret environment variable (API keys, tokens, signing secrets, and
any variable a config ``*_env`` key names) with ``[redacted]``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring as _string  # ensure_ascii=False's, in C

SECRET_HINTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH", "SID")
turn_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("turn_id", default=None)
"""The turn being answered (``inbox-<id>``, the stored message's id), set per turn task."""
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The HTTP request being handled: the platform's ``X-Request-ID`` or one of our own."""


def secret_values(env: Mapping[str, str], extra_names: Iterable[str] = ()) -> set[str]:
    names = {n for n in env if any(h in n.upper() for h in SECRET_HINTS)} | set(extra_names)
    names |= {n for n in ("REDIS_URL", "DATABASE_URL") if "@" in env.get(n, "")}
    return {env[n] for n in names if n in env and len(env[n]) >= 6}


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: set[str]) -> None:
        super().__init__()
        self.secrets = sorted(secrets, key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = self._clean(message)
        record.args = None
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object a line, as ``json.dumps`` writes it (non-ASCII kept), put together
    field by field with json's own string escaping: through a dict and the encoder it
    cost three times as much, on every message the webhooks store."""

    _second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        line = (
            f'{{"time": "{self._second[1]}.{int(record.msecs):03d}Z", '
            f'"level": {_string(record.levelname.lower())}, "logger": {_string(record.name)}, '
            f'"message": {_string(record.getMessage())}'
        )
        request, turn = request_id.get(), turn_id.get()
        if request:
            line += f', "request": {_string(request)}'
        if turn:
            line += f', "turn": {_string(turn)}'
        if record.exc_info:
            line += f', "exception": {_string(self.formatException(record.exc_info))}'
        return line + "}"


def setup_logging(
    env: Mapping[str, str] | None = None, extra_secret_names: Iterable[str] = ()
) -> None:
    env = os.environ if env is None else env
    level = env.get("LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    as_json = env.get("LOG_FORMAT", "").lower() == "json" or (
        env.get("LOG_FORMAT", "").lower() != "text" and not sys.stderr.isatty()
    )
    handler.setFormatter(
        JSONFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    handler.addFilter(RedactSecrets(secret_values(env, extra_secret_names)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    # What no formatter here prints, gathered for every record all the same: the caller's
    # file and line (a frame walk), thread and process (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Channels quiet their own SDKs' loggers.
    for noisy in ("httpx", "httpx2", "aiohttp.access", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
