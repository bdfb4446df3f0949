"""Acks in offset order, whatever order the handling finishes in.

When several messages of one partition are handled at once (shared/dispatch.py),
they finish out of order. Faust commits "the contiguous run of acked offsets", but
its check for a hole at the head of that run is off by one and skipped entirely
before a partition's first commit — so acking offset 6 while 5 is still in flight
could commit past 5, and a crash then would lose 5. `OrderedAcks` never lets that
happen: it acks a message only when every earlier message of its partition (in the
order they were received) has finished and been acked.

Invariant: for each partition, the set of acked offsets is always a prefix of the
offsets received; so any offset Kafka commits is one below which everything is done.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["OrderedAcks"]


class OrderedAcks:
    """Acks each partition's messages in the order received, whatever order they finish in (the
    module's invariant); `ack(message)` is called once per message."""

    def __init__(self, ack: Callable[[Any], object]) -> None:
        self._ack = ack
        # partition -> (message id -> finished?) in the order received
        self._pending: dict[Hashable, OrderedDict[int, bool]] = {}
        self._messages: dict[int, Any] = {}

    def received(self, partition: Hashable, message: Any) -> None:
        """Register a message before its handling starts (in the order they arrive)."""
        self._pending.setdefault(partition, OrderedDict())[id(message)] = False
        self._messages[id(message)] = message

    def finished(self, partition: Hashable, message: Any) -> int:
        """Mark a message's handling finished; ack it and every finished message after it
        that is no longer waiting on an earlier one. Returns how many were acked now."""
        queue = self._pending[partition]
        queue[id(message)] = True
        acked = 0
        while queue:
            head, done = next(iter(queue.items()))
            if not done:
                break
            queue.popitem(last=False)
            self._ack(self._messages.pop(head))
            acked += 1
        return acked

    def waiting(self, partition: Hashable) -> int:
        """Messages of `partition` received but not yet acked."""
        return len(self._pending.get(partition, ()))

    def forget(self, partition: Hashable) -> None:
        """Drop what is known about `partition` (it was revoked after its messages finished)."""
        for message_id in self._pending.pop(partition, {}):
            self._messages.pop(message_id, None)
