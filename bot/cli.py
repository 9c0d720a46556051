"""The ``chatlane`` command: serve, worker, chat, check, webhooks set, migrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.channel import adapter_classes
from bot.config import Config, ConfigError, load_config

log = logging.getLogger("chatlane")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatlane", description="One LLM-backed bot on many chat channels."
    )
    parser.add_argument("--version", action="version", version=f"chatlane {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE", help="config file (default: config/config.yaml)")
        return p

    serve = with_config(sub.add_parser("serve", help="serve every configured channel over HTTP"))
    serve.add_argument("--host", default=None, help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="port (default $PORT or 8080)")
    with_config(sub.add_parser("worker", help="only answer stored messages (no HTTP)"))
    with_config(sub.add_parser("chat", help="chat in the terminal"))
    check = with_config(
        sub.add_parser("check", help="validate config; show channels and providers")
    )
    check.add_argument(
        "--live", action="store_true", help="ask each platform and provider if its credentials work"
    )
    init = sub.add_parser("init", help="write a commented config/config.yaml and .env.example")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    webhooks = with_config(sub.add_parser("webhooks", help="manage platform webhooks"))
    webhooks.add_argument(
        "action", choices=["set"], help="set: register each channel's webhook at $PUBLIC_URL"
    )
    migrate = with_config(
        sub.add_parser("migrate", help="copy the SQLite store into PostgreSQL ($DATABASE_URL)")
    )
    migrate.add_argument(
        "--sqlite",
        metavar="FILE",
        default=None,
        help="the SQLite file (default: chatlane.sqlite3 under $CHATLANE_DATA_DIR)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "init":
        return _init(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"chatlane: bad config\n{exc}", file=sys.stderr)
        return 2
    from bot.logs import setup_logging

    log_file = _chat_log() if args.command == "chat" else None
    setup_logging(extra_secret_names=_configured_secret_names(config), file=log_file)
    if log_file is not None:
        print(f"chatlane chat: the log goes to {log_file}", file=sys.stderr)
    handlers = {
        "serve": _serve,
        "worker": _worker,
        "chat": _chat,
        "check": _check,
        "webhooks": _webhooks,
        "migrate": _migrate,
    }
    try:
        code = handlers[args.command](config, args)
        sys.stdout.flush()  # a reader that left is found here, not at exit
        return code
    except ConfigError as exc:
        print(f"chatlane: bad config\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # ``chatlane check | head``: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere
        return 141  # 128 + SIGPIPE, as a writer killed by the signal


def _chat_log() -> Path | None:
    """Where the terminal chat logs (its screen is the conversation): ``chat.log`` in
    the data directory, or None (stderr) when that cannot be written."""
    from bot.config import data_dir

    path = data_dir(os.environ) / "chat.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        return None
    return path


def _configured_secret_names(config: Config) -> list[str]:
    names = [p.api_key_env for p in config.agent.auth_profiles]
    names += [p.api_key_env for p in config.providers.values() if p.api_key_env]
    return names


def _port(args: Any, config: Config) -> int:
    if args.port is not None:
        return int(args.port)
    if os.environ.get("PORT"):
        try:
            return int(os.environ["PORT"])
        except ValueError:
            raise ConfigError(
                f"PORT: {os.environ['PORT']!r} is not a number; set PORT=8080"
            ) from None
    return config.server.port or 8080


def _serve(config: Config, args: Any) -> int:
    from aiohttp import web

    from bot.datadir import unwritable
    from bot.server import create_app

    problem = unwritable()
    if problem and not os.environ.get("DATABASE_URL"):
        print(f"chatlane serve: {problem}", file=sys.stderr)
        return 2
    if problem:  # the store is PostgreSQL; only received media would be lost
        log.warning("%s; received media cannot be stored", problem)
    app = create_app(config=config)
    host = args.host or config.server.host
    port = _port(args, config)
    web.run_app(
        app,
        host=host,
        port=port,
        print=lambda _msg: log.info("listening on http://%s:%d", host, port),
        shutdown_timeout=min(config.server.shutdown_grace + 2, 28),
        access_log=None,
    )
    return 0


def _worker(config: Config, args: Any) -> int:
    """Refused without ``REDIS_URL``: a worker answers what web processes stored, and
    without shared lanes and storage it would sit on its own empty inbox, looking well
    (on a PaaS each process has its own disk). ``serve`` alone answers its messages."""
    from bot.worker import run_worker

    if not os.environ.get("REDIS_URL"):
        print(
            "chatlane worker: REDIS_URL is not set. A worker answers messages that "
            "'chatlane serve' processes stored, which needs Redis shared between them "
            "(and DATABASE_URL on a PaaS, whose disks are not shared). Set REDIS_URL, or "
            "run 'chatlane serve' alone: it answers its own messages.",
            file=sys.stderr,
        )
        return 2

    return asyncio.run(run_worker(config))


def _chat(config: Config, args: Any) -> int:
    """The installed channel that offers ``run_terminal`` runs the chat."""
    for cls in adapter_classes():
        if hasattr(cls, "run_terminal"):
            return int(asyncio.run(cls.run_terminal(config)))
    print("chatlane: no installed channel offers a terminal chat", file=sys.stderr)
    return 1


def _check(config: Config, args: Any) -> int:
    from bot.check import run_check

    return asyncio.run(run_check(config, live=bool(getattr(args, "live", False))))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatlane")
    except PackageNotFoundError:  # pragma: no cover (a source tree that was never installed)
        return "unknown"


def _init(args: Any) -> int:
    from pathlib import Path

    from bot.scaffold import write_examples

    try:
        written = write_examples(Path.cwd(), force=args.force)
    except FileExistsError as error:
        print(f"chatlane init: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print("next: copy .env.example to .env, fill in a key, then run: chatlane check --live")
    return 0


def _webhooks(config: Config, args: Any) -> int:
    """Every installed channel that offers ``set_webhook`` registers its webhook."""
    setters = [cls for cls in adapter_classes() if hasattr(cls, "set_webhook")]
    if not setters:
        print("chatlane: no installed channel registers webhooks", file=sys.stderr)
        return 1

    async def set_all() -> int:
        return max([int(await cls.set_webhook(config, os.environ)) for cls in setters])

    return asyncio.run(set_all())


def _migrate(config: Config, args: Any) -> int:
    import contextlib
    from pathlib import Path

    from bot.config import data_dir
    from bot.media import MediaStore
    from bot.storage.postgres_import import MigrateError, copy_sqlite, open_sqlite, target_url

    source = Path(args.sqlite) if args.sqlite else data_dir(os.environ) / "chatlane.sqlite3"
    try:
        url = target_url(os.environ)
        with contextlib.closing(open_sqlite(source)) as reader:
            media = MediaStore.default(os.environ)  # the photos and files the transcripts name
            files = [media.path(media_id) for media_id in media.local_ids()]
            copied = asyncio.run(copy_sqlite(reader, url, files))
    except MigrateError as error:
        print(f"chatlane migrate: {error}", file=sys.stderr)
        return 1
    print(f"copied {source} into PostgreSQL: {copied.describe()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
