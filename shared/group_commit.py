"""Group commit: the events handled at the same moment share one transaction.

Under load a service spends most of a handled event's cost on what every transaction
pays whatever it holds: taking a pooled connection, BEGIN, COMMIT and its WAL flush, one
round trip per outbox row. `GroupCommit` gathers the events submitted while the previous
batch was running and handles them together with `UnitOfWork.handle_batch`: one inbox
statement, each handler in turn, one pipelined outbox statement, one commit.

    group = GroupCommit(uow)
    tx = await group.handle(envelope, handlers)   # BatchAborted: handle it on its own

Invariants:
  * Nothing waits to fill a batch: an event submitted while no batch runs starts one at
    once (a batch of one at low load); events submitted while a batch runs form the next,
    up to `max_batch`.
  * Per-saga order is the caller's: `KeyedDispatcher` starts a saga's next event only after
    the previous one finished, so one saga never has two events in one batch, and its
    events commit in the order they arrived, across batches.
  * All or nothing per batch: when any event of a batch fails, the whole transaction rolls
    back and every event of it gets BatchAborted; the caller handles each on its own, so one
    event's failure (a poison event, a deadlock, the database going away) never fails or
    reorders its neighbours, and each gets its own outcome (handled, retried, dead-lettered).
  * `handle` returns only after the batch's commit: the caller acks the record after that.
  * At most `runners` batches run at once (one by default: batches of one service never
    wait on each other's row locks, so they cannot deadlock each other).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from shared.uow import Envelope, Handler, Transaction, UnitOfWork

__all__ = ["BatchAborted", "GroupCommit", "MAX_BATCH"]

log = logging.getLogger(__name__)

MAX_BATCH = 64
"""Events in one transaction at most: enough to amortise its fixed cost (a batch of 64 pays
a sixty-fourth of a commit per event), few enough that a batch that aborts, and is then
handled one by one, costs little."""


class BatchAborted(Exception):
    """The batch this event was in rolled back (this event's failure or another's): nothing
    of it is committed, and the event is to be handled on its own. `cause` says why."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"the batch rolled back: {type(cause).__name__}: {cause}")
        self.cause = cause


@dataclass
class _Submitted:
    envelope: Envelope
    handlers: Mapping[type, Handler]
    outcome: asyncio.Future


class GroupCommit:
    """Handles events submitted at the same time in shared transactions over `uow`."""

    def __init__(self, uow: UnitOfWork, *, max_batch: int = MAX_BATCH, runners: int = 1) -> None:
        if max_batch < 1 or runners < 1:
            raise ValueError("max_batch and runners must be at least 1")
        self.uow = uow
        self.max_batch = max_batch
        self.runners = runners
        self._queue: list[_Submitted] = []
        self._running: set[asyncio.Task] = set()
        self.batches = 0
        """Batches run so far (committed or not)."""
        self.aborted = 0
        """Batches rolled back so far."""

    async def handle(self, envelope: Envelope, handlers: Mapping[type, Handler]) -> Transaction | None:
        """Handle `envelope` in the next batch and return what `UnitOfWork.handle` would have,
        once the batch committed. BatchAborted when the batch rolled back."""
        submitted = _Submitted(envelope, handlers, asyncio.get_running_loop().create_future())
        self._queue.append(submitted)
        if len(self._running) < self.runners:
            task = asyncio.create_task(self._run_batches())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await submitted.outcome  # cancelling the wait cancels only this event's future

    async def _run_batches(self) -> None:
        """Run batches until nothing is waiting. A batch runs to its end even when the records
        that wait for it are cancelled (a rebalance): its commit stands, and their redelivery
        is a duplicate the inbox recognises. The runner leaves `_running` in the same step as it
        finds the queue empty: were it left to the task's done callback, which runs a step
        later, an event submitted in between would find a runner that is already gone, and
        wait until some later event started one."""
        try:
            await self._run_queued()
        finally:
            self._running.discard(asyncio.current_task())

    async def _run_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            self.batches += 1
            try:
                results = await self.uow.handle_batch([(item.envelope, item.handlers) for item in batch])
            except Exception as error:  # the whole batch rolled back: each event goes on alone
                self.aborted += 1
                if len(batch) > 1:
                    log.info("a batch of %d events rolled back (%s: %s); handling them one by one",
                             len(batch), type(error).__name__, error)
                for item in batch:
                    _settle(item.outcome, error=BatchAborted(error))
                continue
            except BaseException as error:  # cancelled with the process: nobody waits any more
                for item in batch:
                    _settle(item.outcome, error=BatchAborted(error))
                raise
            for item, result in zip(batch, results):
                _settle(item.outcome, result=result)


def _settle(outcome: asyncio.Future, *, result: Transaction | None = None, error: BaseException | None = None) -> None:
    if outcome.done():
        return
    if error is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(result)

