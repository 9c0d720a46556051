"""Telegram's look: Markdown to text plus entities, split at 4096 UTF-16 units.

telegramify-markdown does the conversion: it emits plain text and
``MessageEntity`` offsets in UTF-16 units, so there is no escaping to get
wrong (MarkdownV2 and HTML parse modes reject a whole message for one bad
character), and its splitter clips entities at part boundaries, so a code
block split in two stays a code block in both parts. Reasoning goes first,
as an expandable (collapsed) blockquote.
"""

from __future__ import annotations

from typing import Any

import telegramify_markdown

from bot.formatting import utf16_len

TELEGRAM_LIMIT = 4096


def render_telegram(
    markdown: str, *, reasoning: str | None = None, limit: int = TELEGRAM_LIMIT
) -> list[dict[str, Any]]:
    """Parts as ``{"text": ..., "entities": [MessageEntity dicts]}``, each within ``limit``."""
    text, entities = telegramify_markdown.convert(markdown) if markdown.strip() else ("", [])
    entity_dicts = [e.to_dict() for e in entities]
    if reasoning and reasoning.strip():
        head = f"Reasoning:\n{reasoning.strip()}"
        shift = utf16_len(head) + (2 if text else 0)
        quote = {"type": "expandable_blockquote", "offset": 0, "length": utf16_len(head)}
        for entity in entity_dicts:
            entity["offset"] += shift
        text = f"{head}\n\n{text}" if text else head
        entity_dicts = [quote, *entity_dicts]
    if not text.strip():
        return []
    rebuilt = [telegramify_markdown.MessageEntity(**e) for e in entity_dicts]
    parts = telegramify_markdown.split_entities(text, rebuilt, limit)
    return [
        {"text": part_text, "entities": [e.to_dict() for e in part_entities]}
        for part_text, part_entities in parts
    ]
