"""Keep long conversations within the model's context: count tokens, then compact."""

from bot.compaction.analyzer import TokenAnalyzer
from bot.compaction.strategy import CompactionManager, CompactionStrategy, parse_strategy

__all__ = ["CompactionManager", "CompactionStrategy", "TokenAnalyzer", "parse_strategy"]
