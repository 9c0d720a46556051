"""Chat commands, the same on every channel: /new (/reset), /status, /think, /model, /help.

They are answered without the model. ``handle_command`` returns the reply
text, or None when the message is not a command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.thinking import ThinkingMode

if TYPE_CHECKING:
    from bot.runtime import AgentRuntime

HELP = (
    "Commands:\n"
    "/new or /reset: start a new conversation\n"
    "/status: model, keys and context use\n"
    "/think off|on|stream: show the model's reasoning\n"
    "/model [provider/model]: show or switch the model (/model default to go back)"
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


async def handle_command(runtime: AgentRuntime, session_id: str, text: str) -> str | None:
    parsed = parse_command(text)
    if parsed is None:
        return None
    name, arg = parsed
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
        try:
            await runtime.set_model(session_id, arg)
        except ValueError as exc:
            return str(exc)
        return f"Model set to {arg} for this chat."
    return format_status(await runtime.status(session_id))


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
