"""From config to callable models: providers, auth profiles, rotation, the fallback chain.

Model references are ``provider/model``. The provider part names an installed
provider kind (``anthropic``, ``openai``, ``demo``, or a third party's: see
``bot.providers.kind``) or one declared under ``providers:``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.auth import AuthProfile, ProfileStore, RotationManager
from bot.auth.rotation import CooldownPolicy
from bot.config import Config, ConfigError
from bot.failover import FallbackChain
from bot.failover.runner import ModelRouter
from bot.providers import create_provider, provider_kinds
from bot.providers.base import Provider, ProviderInfo
from bot.thinking import StreamingThinkingExtractor

log = logging.getLogger(__name__)

DEMO_MODEL = "demo/chatlane-demo"


@dataclass
class ModelSetup:
    config: Config
    chain: FallbackChain
    providers: dict[str, Provider]
    profiles: ProfileStore
    rotation: RotationManager
    router: ModelRouter
    demo_reason: str | None = None

    def split(self, ref: str) -> tuple[str, str]:
        provider, _, model = ref.partition("/")
        return provider, model

    def check_ref(self, ref: str) -> None:
        provider, model = self.split(ref)
        if not model or provider not in self.providers:
            known = ", ".join(sorted(self.providers))
            raise ValueError(
                f"unknown model {ref!r}: write provider/model, provider one of {known}"
            )

    def chain_for(self, override: str | None) -> FallbackChain:
        if not override or override == self.chain.primary:
            return self.chain
        rest = [m for m in (self.chain.primary, *self.chain.fallbacks) if m != override]
        return FallbackChain(override, rest)

    def new_extractor(self) -> StreamingThinkingExtractor:
        return StreamingThinkingExtractor()

    def has_credentials(self, provider: str) -> bool:
        found = self.providers.get(provider)
        if found is None:
            return False
        return not found.info.needs_key or bool(self.profiles.profiles_for(provider))

    async def preload(self) -> None:
        """Import the SDKs the chain's providers use, in a thread: not in a turn.

        A chat that switches to a model of another kind (``/model``) imports its
        SDK on its first call, as before.
        """
        kinds = provider_kinds()
        for ref in (self.chain.primary, *self.chain.fallbacks):
            provider = self.providers.get(self.split(ref)[0])
            kind = kinds.get(provider.info.kind) if provider is not None else None
            if kind is not None and kind.sdk and kind.sdk not in sys.modules:
                await asyncio.to_thread(importlib.import_module, kind.sdk)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()


def build_model_setup(
    config: Config,
    *,
    model: str | None = None,
    fallbacks: Sequence[str] | None = None,
    auth_profiles: Sequence[AuthProfile] | None = None,
    demo_when_unconfigured: bool = False,
    env: Mapping[str, str] | None = None,
) -> ModelSetup:
    env = os.environ if env is None else env
    agent = config.agent
    timeout = agent.request_timeout
    kinds = provider_kinds()
    providers: dict[str, Provider] = {
        name: kind.create(ProviderInfo(name, name, needs_key=kind.needs_key), timeout=timeout)
        for name, kind in kinds.items()
    }
    entries = [p.model_dump() for p in agent.auth_profiles]
    for name, declared in config.providers.items():
        needs_key = declared.api_key_env is not None
        info = ProviderInfo(
            name,
            declared.type,
            base_url=declared.base_url,
            needs_key=needs_key,
            extra={"vision": declared.vision},
        )
        providers[name] = create_provider(info, timeout=timeout)
        if declared.api_key_env and not any(e["provider"] == name for e in entries):
            entries.append({"id": name, "provider": name, "api_key_env": declared.api_key_env})
    if auth_profiles is not None:
        profiles = ProfileStore(list(auth_profiles))
    else:
        default_env = {name: kind.env_key for name, kind in kinds.items() if kind.env_key}
        profiles = ProfileStore.from_config(entries, env, default_env=default_env)
    for ref in [model, *(fallbacks or ())]:
        if ref is not None and ref.partition("/")[0] not in providers:
            raise ConfigError(
                f"model {ref!r}: unknown provider {ref.partition('/')[0]!r}; declare it under "
                f"'providers:' or use one of: {', '.join(kinds)}"
            )
    primary = model or agent.model or _default_model(profiles)
    chain = FallbackChain(
        primary, list(fallbacks if fallbacks is not None else agent.fallback_models)
    )
    setup_demo_reason = None
    if demo_when_unconfigured and primary != DEMO_MODEL:
        refs = [chain.primary, *chain.fallbacks]
        usable = [r for r in refs if _usable(r, providers, profiles)]
        if not usable:
            names = sorted({r.partition("/")[0] for r in refs})
            setup_demo_reason = (
                f"no API key is set for {', '.join(names)}; answering with the offline demo model"
            )
            log.warning("chatlane: %s", setup_demo_reason)
            chain = FallbackChain(DEMO_MODEL, [])
    if chain.primary == DEMO_MODEL and setup_demo_reason is None:
        setup_demo_reason = "no AI provider is configured; answering with the offline demo model"
    cooldown = agent.cooldown
    rotation = RotationManager(
        profiles,
        policy=CooldownPolicy(
            backoff=tuple(cooldown.backoff_seconds),
            max_backoff=cooldown.max_seconds,
            billing=cooldown.billing_seconds,
            billing_max=cooldown.billing_max_seconds,
        ),
        sticky=agent.sticky_profiles,
        shared_models=frozenset([chain.primary, *chain.fallbacks]),
    )
    router = ModelRouter(providers, rotation)
    return ModelSetup(config, chain, providers, profiles, rotation, router, setup_demo_reason)


def _usable(ref: str, providers: Mapping[str, Provider], profiles: ProfileStore) -> bool:
    name = ref.partition("/")[0]
    provider = providers.get(name)
    return provider is not None and (
        not provider.info.needs_key or bool(profiles.profiles_for(name))
    )


def _default_model(profiles: ProfileStore) -> str:
    """The first kind (in name order) with a default model and a key, else the demo."""
    for name, kind in provider_kinds().items():
        if kind.default_model and profiles.profiles_for(name):
            return f"{name}/{kind.default_model}"
    return DEMO_MODEL
