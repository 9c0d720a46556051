"""Reasoning: extract it from tags, stream it safely, and decide who sees it."""

from bot.thinking.extractor import StreamingThinkingExtractor, ThinkingExtractor
from bot.thinking.modes import ThinkingMode, parse_thinking_mode

__all__ = [
    "StreamingThinkingExtractor",
    "ThinkingExtractor",
    "ThinkingMode",
    "parse_thinking_mode",
]
