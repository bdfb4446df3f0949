"""Acks leave in offset order, whatever order the handling finishes in."""
import pytest
from hypothesis import given, strategies as st

from shared.acks import OrderedAcks

pytestmark = pytest.mark.unit


class Message:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def test_a_later_message_finishing_first_waits_for_the_earlier_one():
    acked: list[int] = []
    acks = OrderedAcks(lambda m: acked.append(m.offset))
    five, six = Message(5), Message(6)
    acks.received("p0", five)
    acks.received("p0", six)

    assert acks.finished("p0", six) == 0
    assert acked == []
    assert acks.finished("p0", five) == 2
    assert acked == [5, 6]
    assert acks.waiting("p0") == 0


def test_partitions_do_not_wait_for_each_other():
    acked: list[tuple[str, int]] = []
    acks = OrderedAcks(lambda m: acked.append(m))
    a, b = Message(1), Message(1)
    acks.received("p0", a)
    acks.received("p1", b)
    acks.finished("p1", b)
    assert acked == [b]


@given(st.permutations(range(12)))
def test_acked_offsets_are_always_a_prefix_of_the_received_ones(finish_order):
    acked: list[int] = []
    acks = OrderedAcks(lambda m: acked.append(m.offset))
    messages = [Message(offset) for offset in range(12)]
    for message in messages:
        acks.received("p", message)
    for index in finish_order:
        acks.finished("p", messages[index])
        assert acked == list(range(len(acked)))
    assert acked == list(range(12))


def test_a_forgotten_partition_starts_afresh():
    acked: list[int] = []
    acks = OrderedAcks(lambda m: acked.append(m.offset))
    acks.received("p0", Message(1))
    acks.received("p1", Message(7))
    acks.forget("p0")
    assert acks.waiting("p0") == 0 and acks.waiting("p1") == 1
    again = Message(1)
    acks.received("p0", again)
    acks.finished("p0", again)
    assert acked == [1]
