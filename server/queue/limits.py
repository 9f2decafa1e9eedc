"""Per-owner submission limits, enforced inside the enqueue transaction: a token bucket (jobs per
second, with a burst) and a cap on queued + processing jobs.

The state is a row per owner in the store (`rate_buckets`), so every API process sharing the
store enforces one limit. Hand-written rather than a rate-limit library because the bucket must
live in the job store and be updated in the same transaction as the jobs it admits (a refused
or failed enqueue spends nothing). The bucket is refilled and spent by one conditional UPDATE;
that UPDATE also locks the owner's row (PostgreSQL row lock, SQLite's write lock), so the count
of active jobs that follows cannot race another process's enqueue for the same owner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.queue.tables import ACTIVE, jobs, rate_buckets


@dataclass(frozen=True)
class SubmitLimits:
    """`rate` jobs per second refill up to `burst`; at most `max_active` queued + processing (0: no cap)."""

    rate: float = 0.0  # 0: no rate limit
    burst: float = 10.0
    max_active: int = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0 or self.max_active > 0


class LimitExceeded(Exception):
    """A submission over a limit: `kind` is `rate` or `active`; `retry_after` in whole seconds."""

    def __init__(self, kind: str, message: str, retry_after: int):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


def _refilled(limits: SubmitLimits, now: float) -> Any:
    grown = rate_buckets.c.tokens + (literal(now) - rate_buckets.c.updated_at) * literal(limits.rate)
    return case((grown > literal(limits.burst), literal(limits.burst)), else_=grown)


def take(conn: Any, owner: str, cost: int, limits: SubmitLimits, now: float) -> None:
    """Spend `cost` tokens and check the active cap for `owner`, or raise `LimitExceeded` (no change)."""
    if not limits.enabled:
        return
    if limits.rate > 0 and cost > limits.burst:
        raise _burst_refusal(cost, limits)
    spend = cost if limits.rate > 0 else 0
    # The owner's row first (a full bucket), without a savepoint: INSERT ... ON CONFLICT DO NOTHING.
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    conn.execute(dialect_insert(rate_buckets).values(owner=owner, tokens=float(limits.burst), updated_at=now)
                 .on_conflict_do_nothing(index_elements=["owner"]))
    refilled = _refilled(limits, now) if limits.rate > 0 else rate_buckets.c.tokens
    spent = conn.execute(
        update(rate_buckets).where(rate_buckets.c.owner == owner, refilled >= spend)
        .values(tokens=refilled - spend, updated_at=now)
    ).rowcount
    if not spent:
        raise _rate_refusal(_tokens(conn, owner, limits, now), spend, limits)
    refused = _active_refusal(conn, owner, cost, limits)
    if refused is not None:
        raise refused


def peek(conn: Any, owner: str, cost: int, limits: SubmitLimits, now: float) -> LimitExceeded | None:
    """What `take` would refuse now, without changing anything (checked before the start image is
    fetched, so a refused key does not make the server download anything); `take` still decides."""
    if not limits.enabled:
        return None
    if limits.rate > 0 and cost > limits.burst:
        return _burst_refusal(cost, limits)
    if limits.rate > 0:
        tokens = _tokens(conn, owner, limits, now)
        if tokens < cost:
            return _rate_refusal(tokens, cost, limits)
    return _active_refusal(conn, owner, cost, limits)


def _tokens(conn: Any, owner: str, limits: SubmitLimits, now: float) -> float:
    """The owner's bucket refilled to `now` (a full bucket when the owner has none yet)."""
    row = conn.execute(select(rate_buckets.c.tokens, rate_buckets.c.updated_at)
                       .where(rate_buckets.c.owner == owner)).first()
    if row is None:
        return limits.burst
    return min(limits.burst, row.tokens + max(0.0, now - row.updated_at) * limits.rate)


def _burst_refusal(cost: int, limits: SubmitLimits) -> LimitExceeded:
    return LimitExceeded("rate", f"This request asks for {cost} jobs at once; this key may submit at most "
                                 f"{limits.burst:g} at a time.", 1)


def _rate_refusal(tokens: float, cost: float, limits: SubmitLimits) -> LimitExceeded:
    wait = max(1, math.ceil((cost - tokens) / limits.rate))
    return LimitExceeded("rate", f"Too many submissions for this API key: at most {limits.rate * 60:g} jobs "
                                 f"per minute (bursts of {limits.burst:g}). Retry in {wait} s.", wait)


def _active_refusal(conn: Any, owner: str, cost: int, limits: SubmitLimits) -> LimitExceeded | None:
    if limits.max_active <= 0:
        return None
    active = conn.execute(select(func.count()).select_from(jobs)
                          .where(jobs.c.owner == owner, jobs.c.status.in_(ACTIVE))).scalar_one()
    if active + cost > limits.max_active:
        return LimitExceeded("active", f"This API key has {active} jobs queued or processing; the limit is "
                                       f"{limits.max_active}. Wait for some to finish (or cancel some).", 30)
    return None
