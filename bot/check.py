"""``chatlane check``: is the config valid, which channels are on, which models can answer.

It prints each channel's and provider's state with secrets masked and exits
0 when at least one way to chat works, 1 otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bot.channel import adapter_classes
from bot.config import Config
from bot.runtime import AgentRuntime


async def run_check(config: Config, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    where = config.source or "built-in defaults (no config file found)"
    print(f"Config: {where}: valid")
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True, env=env)
    try:
        await runtime.start()
        models = runtime.models
        print("\nModels:")
        chain = [models.chain.primary, *models.chain.fallbacks]
        for index, ref in enumerate(chain):
            role = "primary" if index == 0 else f"fallback {index}"
            state = "ready" if models.has_credentials(ref.partition("/")[0]) else "no API key"
            print(f"  {role}: {ref} ({state})")
        if models.demo_reason:
            print(f"  note: {models.demo_reason}")
        print("\nProviders:")
        for name, provider in sorted(models.providers.items()):
            base = provider.info.base_url or "default endpoint"
            keys = len(models.profiles.profiles_for(name))
            need = "no key needed" if not provider.info.needs_key else f"{keys} key(s)"
            print(f"  {name} ({provider.info.kind}): {base}, {need}")
        print("\nAuth profiles:")
        profiles = models.rotation.status()
        if not profiles:
            print("  none (set ANTHROPIC_API_KEY or OPENAI_API_KEY, or agent.auth_profiles)")
        for profile in profiles:
            print(
                f"  {profile['id']} ({profile['provider']}, key {profile['key']}): "
                f"{profile['state']}"
            )
        print("\nChannels:")
        any_on = False
        for cls in adapter_classes():
            state = cls.describe(config, env)
            any_on = any_on or state.enabled
            print(f"  {state.name}: {'on' if state.enabled else 'off'} ({state.detail})")
        print(
            f"\nStorage: {type(runtime.storage).__name__}: "
            f"{'reachable' if await runtime.storage.ping() else 'UNREACHABLE'}"
        )
        return 0 if any_on else 1
    finally:
        await runtime.close()
