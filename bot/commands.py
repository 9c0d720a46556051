"""Chat commands, the same on every channel: /new (/reset), /status, /think, /model, /help.

They are answered without the model. ``handle_command`` returns the reply
text, or None when the message is not a command.

``/model X`` takes only the configured chain (``agent.model``,
``agent.fallback_models``) and ``agent.allowed_models``, and only a model
whose provider has a key: one person cannot send the bot's shared keys to a
model the operator did not choose. In group chats, the commands that change
the chat for everyone (``/new``, ``/model X``, ``/think X``) need the sender
in ``channels.<name>.admins``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.inbound import InboundMessage
from bot.thinking import ThinkingMode

if TYPE_CHECKING:
    from bot.runtime import AgentRuntime

ADMIN_ONLY = "In a group chat only the bot's admins can change that."

HELP = (
    "Commands:\n"
    "/new or /reset: start a new conversation\n"
    "/status: model, keys and context use\n"
    "/think off|on|stream: show the model's reasoning\n"
    "/model [provider/model]: show or switch the model (/model default to go back)\n"
    "(in group chats, /new, /think and /model need an admin)"
)


def parse_command(text: str) -> tuple[str, str] | None:
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2:
        return None
    head, _, rest = stripped.partition(" ")
    name = head[1:].split("@", 1)[0].lower()  # Telegram: /status@my_bot
    if name not in {"new", "reset", "status", "think", "model", "help", "start"}:
        return None
    return name, rest.strip()


async def handle_command(
    runtime: AgentRuntime,
    session_id: str,
    text: str,
    *,
    message: InboundMessage | None = None,
) -> str | None:
    """``message``: the inbound message the command came in (its chat and sender decide
    who may change what); without it the command is answered as in a direct chat."""
    parsed = parse_command(text)
    if parsed is None:
        return None
    name, arg = parsed
    changes = name in ("new", "reset") or (name in ("think", "model") and bool(arg))
    if changes and message is not None and not _may_change(runtime, message):
        return ADMIN_ONLY
    if name in ("new", "reset"):
        await runtime.reset(session_id)
        return "Started a new conversation."
    if name in ("help", "start"):
        return HELP
    if name == "think":
        if not arg:
            mode = await runtime.session_thinking_mode(session_id)
            return f"Thinking mode: {mode.value}. Use /think off, /think on or /think stream."
        try:
            mode = ThinkingMode(arg.lower())
        except ValueError:
            return "Use /think off, /think on or /think stream."
        await runtime.set_thinking_mode(session_id, mode)
        return f"Thinking mode set to {mode.value}."
    if name == "model":
        if not arg:
            status = await runtime.status(session_id)
            return f"Model: {status['session']['model']}"
        if arg.lower() in ("default", "reset"):
            await runtime.set_model(session_id, None)
            return f"Model back to the default: {runtime.model}."
        refused = model_refusal(runtime, arg)
        if refused:
            return refused
        await runtime.set_model(session_id, arg)
        return f"Model set to {arg} for this chat."
    return format_status(await runtime.status(session_id))


def selectable_models(runtime: AgentRuntime) -> list[str]:
    """What ``/model`` may choose: the configured chain, then ``agent.allowed_models``."""
    chain = runtime.models.chain
    found = [chain.primary, *chain.fallbacks, *runtime.config.agent.allowed_models]
    return list(dict.fromkeys(found))


def model_refusal(runtime: AgentRuntime, ref: str) -> str | None:
    """Why ``/model ref`` is refused, or None when it may be chosen."""
    choices = selectable_models(runtime)
    if ref not in choices:
        return f"{ref!r} is not one of this bot's models. Choose one of: {', '.join(choices)}."
    provider = ref.partition("/")[0]
    if not runtime.models.has_credentials(provider):
        return f"{ref} cannot be used: no API key is set for {provider}."
    return None


def _may_change(runtime: AgentRuntime, message: InboundMessage) -> bool:
    if not message.group:
        return True
    admins = runtime.config.channel(message.channel).admins
    names = {message.sender_id}
    if message.sender_name:
        names |= {message.sender_name, "@" + message.sender_name.lstrip("@")}
    return any(admin in names for admin in admins)


def format_status(status: dict[str, Any]) -> str:
    session = status.get("session") or {}
    lines = [f"Model: {session.get('model', status['model'])}"]
    if status.get("fallbacks"):
        lines.append("Fallbacks: " + ", ".join(status["fallbacks"]))
    if status.get("demo"):
        lines.append(f"Demo mode: {status['demo']}")
    lines.append(f"Thinking: {session.get('thinking_mode', status['thinking_mode'])}")
    if "tokens" in session:
        lines.append(f"Context: {session['tokens']:,} of {session['max_tokens']:,} tokens")
    for profile in status.get("profiles", []):
        lines.append(f"Key {profile['id']} ({profile['provider']}): {profile['state']}")
    return "\n".join(lines)
