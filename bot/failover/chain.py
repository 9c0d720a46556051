"""Model fallback chains: the primary model, then each fallback in order."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FallbackChain:
    """The primary model and its fallbacks, as ``provider/model`` references.

    ``FallbackChain("anthropic/claude-opus-4-5", ["openai/gpt-4"])``
    """

    primary: str
    fallbacks: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        seen: list[str] = []
        for ref in (self.primary, *self.fallbacks):
            if ref not in seen:
                seen.append(ref)
        return seen


class FallbackManager:
    def __init__(self, chain: FallbackChain) -> None:
        self.chain = chain

    def get_next_model(self, failed_model: str) -> str | None:
        """The model after ``failed_model`` in the chain; None at the end or when unknown."""
        models = self.chain.models
        if failed_model not in models:
            return None
        index = models.index(failed_model)
        return models[index + 1] if index + 1 < len(models) else None
