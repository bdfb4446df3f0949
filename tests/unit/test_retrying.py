"""shared/retrying.py: the waits are the ones the runtime documents, and `forever` retries only
what it is told to, for as long as it fails."""
from __future__ import annotations

import pytest
from tenacity import RetryCallState

from shared import retrying
from shared.consumer import RetryPolicy
from shared.errors import TransientError

pytestmark = pytest.mark.unit


def waits(strategy, attempts: int) -> list[float]:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    found = []
    for number in range(1, attempts + 1):
        state.attempt_number = number
        found.append(strategy(state))
    return found


def test_equal_jitter_waits_between_half_the_backoff_and_all_of_it():
    for _ in range(200):
        for number, wait in enumerate(waits(retrying.equal_jitter(0.25, 10.0), 10), start=1):
            cap = min(10.0, 0.25 * 2 ** (number - 1))
            assert cap / 2 <= wait <= cap


def test_the_consumers_policy_is_0_125_to_0_25_s_first_and_5_to_10_s_at_most():
    first, *_, last = waits(RetryPolicy().wait, 12)
    assert 0.125 <= first <= 0.25 and 5.0 <= last <= 10.0
    assert all(wait >= 0.1 for wait in waits(RetryPolicy().dead_letter_wait, 12))


def test_doubling_waits_double_up_to_the_cap():
    assert waits(retrying.doubling(0.2, 5.0), 7) == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


async def test_forever_retries_what_it_is_told_to_until_it_works_and_says_so_each_time():
    calls, said = [], []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise TransientError("connection refused")
        return "done"

    async for attempt in retrying.forever(retry_on=TransientError, wait=retrying.wait_fixed(0),
                                          on_retry=lambda state: said.append(state.attempt_number)):
        with attempt:
            result = await flaky()
    assert (result, len(calls), said) == ("done", 4, [1, 2, 3])


async def test_forever_lets_any_other_exception_pass_at_once():
    calls = []

    async def broken() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        async for attempt in retrying.forever(retry_on=TransientError, wait=retrying.wait_fixed(0)):
            with attempt:
                await broken()
    assert len(calls) == 1
