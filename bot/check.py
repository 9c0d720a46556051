"""``chatlane check``: is the config valid, which channels are on, which models can answer.

It prints each channel's and provider's state with secrets masked and exits
0 when at least one way to chat works, 1 otherwise.

``--live`` also asks each configured platform and provider whether its
credentials work: every provider key lists the provider's models, and each
channel that is on runs its ``chatlane.checks`` entry point (the built-in ones
are in ``channels/live.py``). It exits 1 when one is refused or unreachable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.channel import adapter_classes
from bot.config import Config
from bot.registry import load_entry_points
from bot.runtime import AgentRuntime

CHECKS_GROUP = "chatlane.checks"
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Live:
    """What a platform said: ``ok`` True (works), False (refused), None (unreachable)."""

    name: str
    ok: bool | None
    detail: str

    @property
    def word(self) -> str:
        return {True: "works", False: "REFUSED", None: "UNREACHABLE"}[self.ok]


async def probe(
    method: str, url: str, *, headers: Mapping[str, str] | None = None, header: str | None = None
) -> Any:
    """``(status, JSON body)`` (and the response header ``header`` when asked); status None
    when the platform could not be reached. Errors name their kind only: a URL may hold a
    token."""
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, headers=dict(headers or {})) as response,
        ):
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            found: tuple[int | None, dict[str, Any]] = (response.status, body)
            extra = response.headers.get(header, "") if header else None
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        found, extra = (None, {"error": type(error).__name__}), ""
    return (*found, extra) if header else found


async def run_check(
    config: Config, env: Mapping[str, str] | None = None, *, live: bool = False
) -> int:
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
        _print_mcp(runtime)
        if live and not await _live(config, env, runtime):
            return 1
        return 0 if any_on else 1
    finally:
        await runtime.close()


async def _live(config: Config, env: Mapping[str, str], runtime: AgentRuntime) -> bool:
    """Print what each platform and provider says; False when one refused or was away."""
    results = [*await _providers(runtime)]
    checks = load_entry_points(CHECKS_GROUP)
    for cls in adapter_classes():
        check = checks.get(cls.name)
        if check is not None and cls.describe(config, env).enabled:
            results.append(await check(config, env))
    print("\nLive:")
    if not results:
        print("  nothing to ask: no provider key and no platform configured")
    for result in results:
        print(f"  {result.name}: {result.word}: {result.detail}")
    return all(result.ok for result in results)


async def _providers(runtime: AgentRuntime) -> list[Live]:
    """Each key of each provider lists the provider's models."""
    models = runtime.models
    results = []
    for name, provider in sorted(models.providers.items()):
        client = getattr(provider, "client", None)
        if client is None or not provider.info.needs_key:
            continue
        for profile in models.profiles.profiles_for(name):
            label = f"{name} (key {profile.id}, {profile.masked_key})"
            try:
                listed = [m.id async for m in client(profile.api_key).models.list()]
            except Exception as error:
                status = getattr(error, "status_code", None)
                if status in (401, 403):
                    detail = f"HTTP {status}: the key was refused; replace it"
                    results.append(Live(label, False, detail))
                else:
                    why = f"HTTP {status}" if status else type(error).__name__
                    results.append(Live(label, None, f"the model list failed ({why})"))
                continue
            results.append(Live(label, True, f"{len(listed)} model(s) listed"))
    return results


def _print_mcp(runtime: AgentRuntime) -> None:
    """Each MCP server (started with the runtime) and the tools it gave, or why it gave none."""
    servers = runtime.mcp.servers
    if not servers:
        return
    print("\nMCP servers:")
    for name, server in sorted(servers.items()):
        print(f"  {name} ({server.describe()}): {server.state}")
        if server.tools:
            print(f"    tools: {', '.join(server.tools)}")
