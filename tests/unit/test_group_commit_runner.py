"""GroupCommit's runner: an event submitted at any moment is handled (shared/group_commit.py).

The database is not what these tests are about (tests/integration/test_group_commit.py runs
batches against PostgreSQL): a recording stand-in for UnitOfWork.handle_batch answers."""
from __future__ import annotations

import asyncio

import pytest

from shared.group_commit import GroupCommit

pytestmark = pytest.mark.unit


class RecordingUnitOfWork:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def handle_batch(self, items):
        self.batches.append([envelope for envelope, _ in items])
        await asyncio.sleep(0)
        return [f"tx:{envelope}" for envelope, _ in items]


async def test_an_event_submitted_as_the_last_batch_ends_is_handled():
    # The caller of the last batch's event resumes before the finished runner's task has
    # reported itself done; an event it submits right then must start a runner of its own.
    uow = RecordingUnitOfWork()
    group = GroupCommit(uow)

    assert await group.handle("a", {}) == "tx:a"
    second = await asyncio.wait_for(group.handle("b", {}), timeout=2.0)

    assert second == "tx:b"
    assert uow.batches == [["a"], ["b"]]


async def test_events_submitted_in_a_chain_each_right_after_the_previous_one_are_all_handled():
    uow = RecordingUnitOfWork()
    group = GroupCommit(uow)

    async def chain(name: str, length: int) -> list[str]:
        return [await group.handle(f"{name}{i}", {}) for i in range(length)]

    results = await asyncio.wait_for(asyncio.gather(chain("x", 50), chain("y", 50), chain("z", 50)), timeout=5.0)

    assert [len(r) for r in results] == [50, 50, 50]
    assert sum(len(batch) for batch in uow.batches) == 150
    assert not group._running and not group._queue
