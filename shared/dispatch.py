"""Handling several messages at once while keeping each saga's messages in order.

A consumer that handles one message at a time spends most of its time waiting for
PostgreSQL (eight round trips and a commit flush per event): its throughput is one
transaction's latency, inverted. `KeyedDispatcher` lets up to `limit` messages be
handled at the same time, each in its own transaction on its own pooled connection,
with one rule: messages with the same key (the order id, i.e. one saga) run strictly
one after another, in the order they arrived. Messages of different sagas touch
different rows, or lock the shared ones (stock, accounts) in a fixed order, so running
them side by side changes nothing but the waiting.

Invariants:
  * `submit` returns once the message is scheduled; it waits while `limit` messages
    are in flight (backpressure: the caller stops pulling from Kafka).
  * Work for key K starts only after the previous work for K finished (whatever its
    outcome); work for other keys never waits for K.
  * The caller acks each message when its own work finished, so acks come out of
    offset order: faust commits only the contiguous prefix of acked offsets, so a
    crash redelivers at most the `limit` messages in flight, and the inbox makes
    those redeliveries no-ops.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

__all__ = ["KeyedDispatcher"]


class KeyedDispatcher:
    """Runs up to `limit` (≥ 1, else ValueError) submitted works at once, one key's strictly one
    after another in submission order (the module's invariants)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._last: dict[Hashable, asyncio.Task] = {}
        self._running: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        """Works submitted and not finished yet."""
        return len(self._running)

    @property
    def free(self) -> int:
        """Slots free now: `submit` of this many does not wait."""
        return self.limit - len(self._running)

    async def wait_for_free_slot(self, timeout: float) -> None:
        """Return once a slot is free, or after `timeout` seconds."""
        if self.free > 0 or not self._running:
            return
        await asyncio.wait(set(self._running), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def join(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far has finished, at most `timeout` seconds
        (None: as long as it takes). True when nothing is left in flight."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._running:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(set(self._running), timeout=remaining)
        return True

    async def cancel(self) -> int:
        """Cancel everything in flight and wait for it to end; returns how many were cancelled.
        Cancelled work was not acked: its records are delivered again (to this consumer or
        another), and the inbox makes that a no-op if its transaction did commit."""
        running = set(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        return len(running)

    async def submit(self, key: Hashable, work: Callable[[], Awaitable[None]],
                     admit: Callable[[], bool] | None = None) -> bool:
        """Schedule `work()` after the previous work for `key`; wait first while `limit` are in flight.

        `admit`, if given, is asked once a slot is free (things may have changed while
        waiting for it): when it returns False nothing is scheduled and False is returned."""
        await self._slots.acquire()
        if admit is not None and not admit():
            self._slots.release()
            return False
        previous = self._last.get(key)
        task = asyncio.create_task(self._run(key, previous, work))
        self._last[key] = task
        self._running.add(task)
        return True

    async def _run(self, key: Hashable, previous: asyncio.Task | None, work: Callable[[], Awaitable[None]]) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait({previous})
            await work()
        finally:
            self._slots.release()
            current = asyncio.current_task()
            self._running.discard(current)
            if self._last.get(key) is current:
                del self._last[key]
