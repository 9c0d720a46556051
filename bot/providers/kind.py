"""What a provider kind brings to the registry: one object per provider module.

A kind (``anthropic``, ``openai``, ``demo``, or a third party's) is a
``ProviderKind`` exported by its module and named by its entry point in the
``chatlane.providers`` group::

    [project.entry-points."chatlane.providers"]
    mistral = "my_package.mistral:KIND"

Its name is then a ``type:`` under ``providers:`` in the config, and a
provider of its own (``mistral/<model>``). The kind builds providers, turns
its SDK's exceptions into ``ProviderError`` (see ``bot.providers.classify``
for the shared HTTP part) and names its default key variable and model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.providers.base import Provider, ProviderInfo
from bot.providers.classify import classify
from bot.providers.errors import ProviderError


class ProviderFactory(Protocol):
    def __call__(self, info: ProviderInfo, *, timeout: float) -> Provider: ...


class ErrorClassifier(Protocol):
    def __call__(
        self, exc: BaseException, *, provider: str = "", model: str = ""
    ) -> ProviderError: ...


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """One provider kind.

    ``create(info, timeout=)`` builds a provider (``info.base_url`` set when the
    config names one); ``classify`` maps an exception the provider's SDK raised;
    ``env_key`` is the variable read for a key when no auth profiles are
    configured (None: none); ``default_model`` is the model (without the
    ``kind/`` prefix) used when no ``agent.model`` is set and this kind has a key;
    ``sdk`` is the module its providers import on first use, imported at start-up
    instead when a configured model is of this kind (``anthropic`` takes 1.7 s of CPU
    to import: in the first turn it would stall every other request that long).
    """

    name: str
    create: ProviderFactory
    classify: ErrorClassifier = classify
    env_key: str | None = None
    default_model: str | None = None
    needs_key: bool = True
    sdk: str | None = None
