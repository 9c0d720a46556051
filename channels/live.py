"""``chatlane check --live`` for the built-in channels: ask each platform whether its
credentials work. Declared in the ``chatlane.checks`` entry point group (one function
per channel name, ``async (config, env) -> Live``), so a third-party channel adds its own.

Each asks the platform's cheapest "who am I" call with the configured token: Telegram
``getMe`` and ``getWebhookInfo``, Slack ``auth.test`` (and the scopes it reports), the
Twilio account and the sending number, Discord ``users/@me`` (and the application's
message-content intent). Secrets never appear in what they say.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from bot.check import Live, probe
from bot.config import Config

TELEGRAM_BASE = "https://api.telegram.org"
SLACK_BASE = "https://slack.com/api/"
TWILIO_BASE = "https://api.twilio.com"
DISCORD_BASE = "https://discord.com/api/v10"
MESSAGE_CONTENT_INTENT = (1 << 18) | (1 << 19)  # GATEWAY_MESSAGE_CONTENT(_LIMITED)


async def telegram(config: Config, env: Mapping[str, str]) -> Live:
    base = (env.get("TELEGRAM_API_BASE_URL") or TELEGRAM_BASE).rstrip("/")
    token = env.get("TELEGRAM_BOT_TOKEN", "")
    status, me = await probe("POST", f"{base}/bot{token}/getMe")
    if status is None:
        return Live("telegram", None, f"Telegram API unreachable ({me.get('error')})")
    if not me.get("ok"):
        return Live(
            "telegram",
            False,
            f"getMe refused the token (HTTP {status}: {me.get('description', '')}); "
            "copy the token from @BotFather into TELEGRAM_BOT_TOKEN",
        )
    name = me["result"].get("username", "?")
    _, hook = await probe("POST", f"{base}/bot{token}/getWebhookInfo")
    info = hook.get("result") if isinstance(hook.get("result"), dict) else {}
    webhook = info.get("url") or "no webhook (long polling)"
    detail = f"@{name}; webhook: {webhook}"
    if info.get("last_error_message"):
        detail += f"; last delivery error: {info['last_error_message']}"
    if info.get("pending_update_count"):
        detail += f"; {info['pending_update_count']} update(s) waiting"
    return Live("telegram", True, detail)


async def slack(config: Config, env: Mapping[str, str]) -> Live:
    base = env.get("SLACK_API_BASE_URL") or SLACK_BASE
    url = base.rstrip("/") + "/auth.test"
    headers = {"Authorization": f"Bearer {env.get('SLACK_BOT_TOKEN', '')}"}
    status, body, scopes = await probe("POST", url, headers=headers, header="x-oauth-scopes")
    if status is None:
        return Live("slack", None, f"Slack API unreachable ({body.get('error')})")
    if not body.get("ok"):
        return Live(
            "slack",
            False,
            f"auth.test refused the token ({body.get('error', f'HTTP {status}')}); "
            "use the Bot User OAuth Token (xoxb-) from the app's OAuth page",
        )
    detail = f"{body.get('user', '?')} in {body.get('team', body.get('team_id', '?'))}"
    if scopes:
        wanted = {"app_mentions:read", "chat:write", "files:read", "im:history"}
        missing = wanted - set(scopes.split(","))
        detail += f"; scopes {scopes}"
        if missing:
            detail += f"; missing {', '.join(sorted(missing))} (add them and reinstall the app)"
    return Live("slack", True, detail)


async def sms(config: Config, env: Mapping[str, str]) -> Live:
    base = (env.get("TWILIO_API_BASE_URL") or TWILIO_BASE).rstrip("/")
    sid = env.get("TWILIO_ACCOUNT_SID", "")
    pair = f"{sid}:{env.get('TWILIO_AUTH_TOKEN', '')}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    status, account = await probe("GET", f"{base}/2010-04-01/Accounts/{sid}.json", headers=headers)
    if status is None:
        return Live("sms", None, f"Twilio API unreachable ({account.get('error')})")
    if status != 200:
        return Live(
            "sms",
            False,
            f"the Twilio account refused the credentials (HTTP {status}: "
            f"{account.get('message', '')}); check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        )
    detail = f"account {account.get('friendly_name', '?')} ({account.get('status', '?')})"
    number = env.get("TWILIO_FROM_NUMBER")
    if number and not env.get("TWILIO_MESSAGING_SERVICE_SID"):
        path = f"/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json?PhoneNumber={quote(number)}"
        _, numbers = await probe("GET", base + path, headers=headers)
        if not numbers.get("incoming_phone_numbers"):
            return Live(
                "sms",
                False,
                f"{detail}; {number} is not a number of this account (fix TWILIO_FROM_NUMBER)",
            )
        detail += f"; sends from {number}"
    return Live("sms", account.get("status", "active") == "active", detail)


async def discord(config: Config, env: Mapping[str, str]) -> Live:
    base = (env.get("DISCORD_API_BASE_URL") or DISCORD_BASE).rstrip("/")
    headers = {"Authorization": f"Bot {env.get('DISCORD_BOT_TOKEN', '')}"}
    status, me = await probe("GET", f"{base}/users/@me", headers=headers)
    if status is None:
        return Live("discord", None, f"Discord API unreachable ({me.get('error')})")
    if status != 200:
        return Live(
            "discord",
            False,
            f"users/@me refused the token (HTTP {status}); "
            "reset the bot token on the Developer Portal's Bot page into DISCORD_BOT_TOKEN",
        )
    detail = f"{me.get('username', '?')} (id {me.get('id', '?')})"
    _, app = await probe("GET", f"{base}/oauth2/applications/@me", headers=headers)
    flags: Any = app.get("flags")
    if isinstance(flags, int):
        content = "on" if flags & MESSAGE_CONTENT_INTENT else "off (DMs and mentions only)"
        detail += f"; message-content intent {content}"
    return Live("discord", True, detail)
