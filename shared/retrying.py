"""Retries and waits of the runtime, through one library (tenacity).

    async for attempt in forever(retry_on=TransientError, wait=equal_jitter(0.25, 10.0), on_retry=log_it):
        with attempt:
            await do_it()

Every loop of the services that tries again — a transaction through a database outage, a
dead letter that must be kept, the first connection to Kafka or PostgreSQL — is one of
these: it never gives up (a service keeps trying for as long as a dependency is away,
and says so in its log and readiness), and it waits longer each time, up to a cap.
"""
from __future__ import annotations

from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential,
    wait_fixed,
    wait_random_exponential,
)
from tenacity.wait import wait_base

__all__ = ["forever", "equal_jitter", "doubling", "wait_fixed", "RetryCallState"]


def equal_jitter(base: float, cap: float) -> wait_base:
    """Seconds before the n-th retry: uniform in [c/2, c] with c = min(cap, base·2^(n-1)) —
    half fixed, half random, so retries spread out yet always span at least half the backoff
    ("equal jitter": Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
    With base 0.25 and cap 10: 0.125–0.25 s, 0.25–0.5 s, … then 5–10 s."""
    return (wait_exponential(multiplier=base / 2, max=cap / 2)
            + wait_random_exponential(multiplier=base / 2, max=cap / 2))


def doubling(first: float, cap: float) -> wait_base:
    """Seconds before the n-th retry: first·2^(n-1), at most `cap` (no jitter: one process
    waiting for a server to come up)."""
    return wait_exponential(multiplier=first, max=cap)


def forever(*, retry_on: type[BaseException] | tuple[type[BaseException], ...], wait: wait_base,
            on_retry: Callable[[RetryCallState], None] | None = None) -> AsyncRetrying:
    """Attempts that go on while they raise `retry_on`, waiting `wait` between them and calling
    `on_retry` (with tenacity's RetryCallState: `attempt_number`, `outcome.exception()`)
    before each wait. Any other exception passes at once, unchanged; there is no last attempt."""
    return AsyncRetrying(retry=retry_if_exception_type(retry_on), wait=wait, stop=stop_never,
                         before_sleep=on_retry, reraise=True)
