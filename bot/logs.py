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
from collections.abc import Callable, Iterable, Mapping
from json.encoder import encode_basestring as _string  # ensure_ascii=False's, in C
from pathlib import Path

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


class RepeatLimiter(logging.Filter):
    """At most ``per_second`` warnings (or worse) of one kind (logger, level and template, so
    ``"bad request from %s"`` is one kind whatever the address) in a second; the rest are
    counted, and the next line of that kind to pass says how many were left out. A crowd
    of bad clients then costs a few lines a second, not tens of thousands."""

    MOST_KINDS = 1000  # kinds remembered; older ones are forgotten past this

    def __init__(
        self,
        per_second: int = 10,
        clock: Callable[[], float] = time.monotonic,
        *,
        least: int = logging.WARNING,
    ) -> None:
        super().__init__()
        self.per_second = per_second
        self.clock = clock
        self.least = least  # below this level every line passes: it follows real traffic
        # kind -> [start of its current second, passed in it, left out since one last passed,
        # when one last passed]
        self.kinds: dict[tuple[str, int, object], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.least:
            return True
        now = self.clock()
        kind = (record.name, record.levelno, record.msg)
        seen = self.kinds.get(kind)
        if seen is None:
            if len(self.kinds) >= self.MOST_KINDS:
                self.kinds.clear()
            self.kinds[kind] = [now, 1, 0, now]
            return True
        if now - seen[0] >= 1:
            seen[0], seen[1] = now, 0
        if seen[1] >= self.per_second:
            seen[2] += 1
            return False
        seen[1] += 1
        if seen[2]:
            record.msg = (
                f"{record.getMessage()} ({int(seen[2])} more like this in the last "
                f"{now - seen[3]:.1f} s were not logged)"
            )
            record.args = None
            seen[2] = 0
        seen[3] = now
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
    env: Mapping[str, str] | None = None,
    extra_secret_names: Iterable[str] = (),
    *,
    file: Path | None = None,
) -> None:
    """Log to stderr, or to ``file`` (the terminal chat: its screen is the conversation)."""
    env = os.environ if env is None else env
    level = env.get("LOG_LEVEL", "INFO").upper()
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stderr)
        terminal = sys.stderr.isatty()
    else:
        handler = logging.FileHandler(file, encoding="utf-8")
        terminal = True  # text lines unless LOG_FORMAT=json: a person reads this file
    as_json = env.get("LOG_FORMAT", "").lower() == "json" or (
        env.get("LOG_FORMAT", "").lower() != "text" and not terminal
    )
    handler.setFormatter(
        JSONFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    handler.addFilter(RepeatLimiter())  # first: it keys on the message template
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
