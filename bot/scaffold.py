"""``chatlane init``: a commented ``config/config.yaml`` and a ``.env.example`` to start from."""

from __future__ import annotations

from pathlib import Path

CONFIG = """\
# chatlane configuration. Every key is optional; docs/configuration.md lists them all.
# Any key can also come from the environment: CHATLANE__AGENT__MODEL=openai/gpt-4o.
# Secrets never go here: put them in the environment (see .env.example).

agent:
  # provider/model; without any API key the bot runs on an offline demo model.
  model: anthropic/claude-sonnet-4-6
  # Tried in order when the model fails (rate limits, outages, billing).
  fallback_models: [openai/gpt-4o]
  system_prompt: >-
    You are a helpful assistant that chats with people over messaging apps.
    Answer clearly and concisely.
  thinking_mode: "off"        # off | on | stream
  show_tool_results: summary  # off | summary | full
  workspace: ./workspace      # the only folder the file tools may read

channels:
  # A channel is on when its credentials are in the environment. allow_from: who may
  # talk to the bot (empty: everyone); rate_limit_per_minute: per sender (0: no limit).
  telegram: {allow_from: []}
  sms: {allow_from: [], rate_limit_per_minute: 10}

server:
  shutdown_grace: 25          # seconds running turns get to finish on SIGTERM
"""

ENV = """\
# Copy to .env (never commit it) or set these in your PaaS dashboard.
# Models: one of these, or neither for the offline demo model.
ANTHROPIC_API_KEY=
OPENAI_API_KEY=

# The public https origin (webhooks, Twilio signatures). Unset: Telegram long-polls.
PUBLIC_URL=

# Channels: each is on when its credentials are set.
TELEGRAM_BOT_TOKEN=
TELEGRAM_WEBHOOK_SECRET=
SLACK_BOT_TOKEN=
SLACK_SIGNING_SECRET=
TWILIO_ACCOUNT_SID=
TWILIO_AUTH_TOKEN=
TWILIO_FROM_NUMBER=
DISCORD_BOT_TOKEN=

# Storage: PostgreSQL for durable state, Redis for lanes across processes.
# Unset: SQLite under CHATLANE_DATA_DIR (./data).
DATABASE_URL=
REDIS_URL=

# Protects GET /metrics (Prometheus) with a bearer token.
CHATLANE_METRICS_TOKEN=
"""


def write_examples(folder: Path, *, force: bool = False) -> list[Path]:
    """Write ``config/config.yaml`` and ``.env.example`` under ``folder``; refuses to
    overwrite an existing file unless ``force``. Returns the files written."""
    targets = {folder / "config" / "config.yaml": CONFIG, folder / ".env.example": ENV}
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        names = ", ".join(str(path) for path in existing)
        raise FileExistsError(f"{names} already exists; use --force to overwrite")
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(targets)
