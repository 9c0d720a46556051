"""Keep long conversations within the model's context: count tokens, then compact."""

from bot.compaction.analyzer import TokenAnalyzer, TokenCounter, TokenEstimator
from bot.compaction.strategy import CompactionManager, CompactionStrategy, parse_strategy

__all__ = [
    "CompactionManager",
    "CompactionStrategy",
    "TokenAnalyzer",
    "TokenCounter",
    "TokenEstimator",
    "parse_strategy",
]
