"""A tool result: ``content`` goes to the model, ``details`` to the channel formatter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one tool call produced.

    - ``name``: the tool's name (``read_file``, ``list_files``, a user tool).
    - ``arguments``: what the model asked for.
    - ``content``: the text the model sees.
    - ``is_error``: the tool failed; ``content`` says why in plain words.
    - ``details``: structured hints for display. Known keys: ``path`` (a file
      the tool read), ``language`` (for a fenced block), ``title`` (a short
      heading), ``entries`` (a listing).
    """

    name: str
    content: str
    arguments: dict[str, Any] = field(default_factory=dict)
    is_error: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    call_id: str = ""
