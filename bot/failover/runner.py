"""One model call that survives: rotate keys within a model, then fall back along the chain.

For each model of the chain, in order: take the next usable key of its
provider (a provider with every key cooling is skipped without a request),
stream the call, and on a failure decide by its reason:

- a key's problem (rate_limit, overloaded, timeout, auth, billing): the key
  rests (see ``RotationManager``) and the next key of the same provider is
  tried, then the next model;
- the model's or provider's problem (server, connection, not_found): the next
  model;
- bad_request, refusal, context_overflow: raised at once; another model would
  fail the same way (context overflow is the runtime's to compact);
- a cancel (``asyncio.CancelledError``) propagates and marks nothing.

Once visible output (text or a tool call) has come from an attempt, a later
failure of that attempt is raised, not retried elsewhere: the person has seen
half an answer, and the runtime says so. Each switch of model yields a
``Failover``; when the chain is exhausted, ``FailoverError`` carries every
attempt and the soonest time a key is back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass

from bot.auth.rotation import RotationManager
from bot.failover.chain import FallbackChain
from bot.failover.errors import FailoverError, FailoverReason, ProviderError
from bot.providers.base import Delta, ModelRequest, Provider, TextDelta, ToolCallDelta

log = logging.getLogger(__name__)

KEY_REASONS = {
    FailoverReason.RATE_LIMIT,
    FailoverReason.OVERLOADED,
    FailoverReason.TIMEOUT,
    FailoverReason.AUTH,
    FailoverReason.BILLING,
}


@dataclass(frozen=True, slots=True)
class Failover:
    from_model: str
    to_model: str
    reason: FailoverReason


class ModelRouter:
    def __init__(self, providers: Mapping[str, Provider], rotation: RotationManager) -> None:
        self.providers = providers
        self.rotation = rotation

    async def stream(
        self,
        chain: FallbackChain,
        build_request: Callable[[str], ModelRequest],
        *,
        session_id: str | None = None,
    ) -> AsyncGenerator[Delta | Failover, None]:
        attempts: list[ProviderError] = []
        # The model the turn is labelled with until a switch: the primary, even when it
        # is skipped without a request (its keys resting), so that skip is a switch too.
        previous: str | None = chain.models[0] if chain.models else None
        for ref in chain.models:
            provider_name, _, model = ref.partition("/")
            provider = self.providers.get(provider_name)
            if provider is None:
                attempts.append(
                    ProviderError(
                        FailoverReason.NOT_FOUND,
                        f"no provider named {provider_name!r}",
                        provider=provider_name,
                        model=model,
                    )
                )
                continue
            tried: set[str] = set()
            while True:
                profile_id: str | None = None
                api_key: str | None = None
                if provider.info.needs_key:
                    try:
                        profile = await self.rotation.acquire(provider_name, session_id)
                    except ProviderError as error:
                        if not tried:  # the model was skipped without a request
                            error.model = model
                            attempts.append(error)
                        break
                    if profile.id in tried:
                        break
                    tried.add(profile.id)
                    profile_id, api_key = profile.id, profile.api_key
                if previous is not None and previous != ref and attempts:
                    yield Failover(previous, ref, attempts[-1].reason)
                previous = ref
                shown = False
                try:
                    deltas = provider.stream(build_request(model), api_key)
                    async with aclosing(deltas):  # closed at once if our caller stops
                        async for delta in deltas:
                            if not shown and (
                                isinstance(delta, ToolCallDelta)
                                or (isinstance(delta, TextDelta) and delta.text)
                            ):
                                shown = True
                            yield delta
                except ProviderError as error:
                    error.profile_id = profile_id
                    error.model = error.model or model
                    if profile_id is not None and error.reason in KEY_REASONS:
                        await self.rotation.report_failure(profile_id, error)
                    log.warning(
                        "model call failed: %s (%s), key %s",
                        ref,
                        error.reason.value,
                        profile_id or "-",
                    )
                    if shown or not error.should_failover:
                        raise
                    attempts.append(error)
                    if error.reason in KEY_REASONS and provider.info.needs_key:
                        continue
                    break
                else:
                    if profile_id is not None:
                        await self.rotation.report_success(profile_id)
                    return
        waits = [a.retry_after for a in attempts if a.retry_after is not None]
        raise FailoverError(attempts, retry_after=min(waits) if waits else None)
