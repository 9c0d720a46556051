"""Thinking modes: what a person sees of the model's reasoning.

- ``off``: nothing. Tags are still stripped, so reasoning never leaks.
- ``on``: the reasoning comes with the final reply, formatted for the channel
  (a collapsed quote on Telegram, a quote on Slack, a "Reasoning:" section
  in plain text); a channel may opt out (SMS does by default).
- ``stream``: the reasoning is sent as it arrives, as
  ``AgentEvent("thinking", {"content": ..., "mode": "stream"})``.

With ``on`` or ``stream`` the runtime also asks the model for native
reasoning where the provider supports it.
"""

from __future__ import annotations

from enum import Enum


class ThinkingMode(str, Enum):
    OFF = "off"
    ON = "on"
    STREAM = "stream"

    def __str__(self) -> str:
        return self.value

    @property
    def shows_reasoning(self) -> bool:
        return self is not ThinkingMode.OFF


def parse_thinking_mode(value: str | bool) -> ThinkingMode:
    """``off``/``on``/``stream`` in any case (YAML's booleans too); ValueError otherwise."""
    if value is True:
        return ThinkingMode.ON
    if value is False:
        return ThinkingMode.OFF
    try:
        return ThinkingMode(str(value).strip().lower())
    except ValueError:
        raise ValueError(f"unknown thinking mode {value!r}; use off, on or stream") from None
