"""Charging the tokens of work done outside an HTTP request (a batch's lines) to the principal it runs as.

The quota middleware opens a usage ledger per live request and charges its tokens once the response is
sent. A batch's lines run later, in a job, with no request around them, so without this their model
calls would go unmetered and a batch would be a way around a token budget. :meth:`BackgroundCharger.metering`
gives each line the same ledger the middleware gives a request (the provider boundary fills it) and
charges the tokens to the principal the job runs as, in the same counters the middleware uses, so a
line costs the owner's token budget exactly what the same request sent live would.

Requests are not counted per line: the batch's create request was counted when it was made, and a batch
is paced by ``batches.concurrency``, not by the client. With auth off, live budgets belong to the client
address, which a job does not have, so lines of an anonymous batch are not charged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from underlay.core.identity import ANONYMOUS, current_principal
from underlay.core.quotas.config import QuotaConfig
from underlay.core.quotas.counters import Counters, KVCounters, QuotaBackendError, RedisCounters
from underlay.core.quotas.limiter import QuotaLimiter, Subject
from underlay.core.quotas.usage import UsageLedger, ledger_var
from underlay.core.storage.kvstore import KVStore

log = logging.getLogger("underlay.quotas")


class BackgroundCharger:
    def __init__(self, config: QuotaConfig, kvstore: KVStore) -> None:
        self._redis = RedisCounters(config.url) if config.backend == "redis" else None
        counters: Counters = self._redis or KVCounters(kvstore)
        self._limiter = QuotaLimiter(config, counters)

    @asynccontextmanager
    async def metering(self) -> AsyncIterator[UsageLedger]:
        """A ledger for the calls made inside; its tokens are charged on the way out (even on error)."""
        ledger = UsageLedger()
        token = ledger_var.set(ledger)
        try:
            yield ledger
        finally:
            ledger_var.reset(token)
            await self._charge(ledger.tokens)

    async def charge(self, tokens: int) -> None:
        """Charge ``tokens`` used outside any call made here (a batch an upstream ran) to the principal."""
        await self._charge(tokens)

    async def _charge(self, tokens: int) -> None:
        principal = current_principal()
        if tokens <= 0 or principal.id == ANONYMOUS.id:
            return
        subject = Subject.principal(principal.id, dict(principal.attributes))
        try:
            await self._limiter.charge(subject, tokens)
        except QuotaBackendError as exc:  # the line is done; losing its charge must not lose the line
            log.warning("could not charge %d batch tokens to %s: %s", tokens, subject.label, exc)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()
