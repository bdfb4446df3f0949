"""Admission control at the edge: POST /orders refuses a saga the system would not finish well
inside its deadline, instead of letting the backlog grow until every saga misses it.

Past saturation an open system's queue grows without bound; once the wait crosses the
saga deadline (30 s), late sagas do their forward steps and then their compensations, and
goodput collapses to a fraction of saturation (BENCHMARKS.md, "Overload"). Refusing at
the door keeps the queue short: what is admitted finishes fast, what is refused is told
when to come back (503 with Retry-After), and nothing admitted is ever shed.

The rule is Little's law, L = λ·W, on two figures order_svc reads from its own database
every `MEASURE_INTERVAL_S` (`repository.saga_load`): L, the sagas in flight (placed in the last
`recent_s` seconds and not yet CONFIRMED or CANCELLED, every instance's), and λ, the sagas that
finished over the last `window_s` seconds, per second — the rate this machine is finishing
sagas at right now. A new saga is admitted while

    in flight  <  max(floor, λ × target)

so the expected time a new saga spends in the system, L/λ, stays under `target` seconds.
The limit follows the machine: a faster one finishes more per second and gets a higher
limit, with no constant tuned to this one. `floor` keeps a cold or idle system (λ ≈ 0)
open; when a participant is down nothing finishes, and the limit falls to `floor`: new
sagas are refused rather than left to run into their deadline.

Each admission counts as one more saga in flight until a reading includes it, so a burst
cannot overshoot the limit; and λ × the reading's age count as finished since, so a reading
that comes late (the timer behind a busy event loop) does not look like a pile of sagas.

L is the standing load, not the last reading: the fewest sagas in flight over the last
`standing_s` seconds (CoDel's rule for a standing queue, Nichols & Jacobson, "Controlling
Queue Delay", ACM Queue 2012). A pause of a fraction of a second — a garbage collection, a
checkpoint — piles sagas up for a moment and they drain right after; refusing then would
turn away orders the machine finishes in time. A load the machine cannot carry keeps L high
for the whole second and is refused.

A saga placed more than `recent_s` seconds ago and still in flight is not load: an admitted
saga finishes in about `target` seconds, so one that old waits on something that is down (it
ends at its deadline), and its events take no capacity meanwhile. Left in L, a few such sagas
would hold the door shut for everyone until their deadline.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "SagaLoad", "Refusal", "Overloaded", "MEASURE_INTERVAL_S"]

MEASURE_INTERVAL_S = 0.25
"""Seconds between two readings of the sagas in flight and finished (two indexed counts)."""

STANDING_S = 1.0
"""Seconds over which the fewest sagas in flight is the standing load (the module's note)."""

RECENT_S = 10.0
"""Sagas placed longer ago than this are not counted in flight (the module's last note): many
times what an admitted saga takes, a third of the deadline."""

RETRY_AFTER_RANGE_S = (1, 30)
"""Retry-After is at least 1 s (HTTP's unit) and at most the saga deadline's 30 s."""


@dataclass(frozen=True)
class SagaLoad:
    """One reading: sagas in flight now, and sagas finished over the last `window_s` seconds."""

    in_flight: int
    finished: int
    window_s: float

    @property
    def finishing_per_s(self) -> float:
        """λ: sagas finished per second over the window (0.0 for an empty window)."""
        return self.finished / self.window_s if self.window_s > 0 else 0.0


@dataclass(frozen=True)
class Refusal:
    """Why a saga was not admitted, and after how many whole seconds to try again."""

    in_flight: int
    limit: int
    finishing_per_s: float
    retry_after_s: int

    @property
    def detail(self) -> str:
        """The 503's one-line `detail`: the load, the limit and the Retry-After in seconds."""
        return (f"overloaded: {self.in_flight} sagas in flight, finishing {self.finishing_per_s:.0f}/s; "
                f"admitting at most {self.limit} at once keeps a new saga's expected time in the system "
                f"under the admission target; retry after {self.retry_after_s} s")


class Overloaded(Exception):
    """Raised where a new saga would start while admission refuses it; carries the Refusal."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


class Admission:
    """Decides, per POST /orders, whether one more saga may start (see the module's rule).

    `target_s`: the expected seconds a saga may spend in the system (L/λ), > 0.
    `floor`: sagas always admitted in flight, ≥ 1. `window_s`: seconds over which λ is read.
    `recent_s`: only sagas placed this recently count as in flight (see the module's note).
    `standing_s`: seconds of readings whose fewest sagas in flight is the standing load.
    `enabled` False admits everything (the measurement still runs, for /metrics)."""

    def __init__(self, *, target_s: float, floor: int, window_s: float = 2.0, recent_s: float = RECENT_S,
                 standing_s: float = STANDING_S, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if target_s <= 0 or floor < 1 or window_s <= 0 or recent_s <= 0 or standing_s < 0:
            raise ValueError("target_s, window_s and recent_s must be positive, standing_s not negative "
                             "and floor at least 1")
        self.target_s = target_s
        self.floor = floor
        self.window_s = window_s
        self.recent_s = recent_s
        self.standing_s = standing_s
        self.enabled = enabled
        self.clock = clock
        self.load: SagaLoad | None = None
        self._readings: deque[tuple[float, int, int]] = deque()
        """(when, sagas in flight, `admitted` then) of each reading of the last `standing_s` seconds."""
        self.admitted = 0
        self.refused = 0

    def observe(self, load: SagaLoad) -> None:
        """A new reading: it includes every saga admitted before it was taken."""
        now = self.clock()
        self.load = load
        self._readings.append((now, load.in_flight, self.admitted))
        while self._readings[0][0] < now - self.standing_s:
            self._readings.popleft()

    @property
    def limit(self) -> int:
        """Sagas that may be in flight at once now: max(floor, λ × target), whole sagas."""
        if self.load is None:
            return self.floor
        return max(self.floor, math.floor(self.load.finishing_per_s * self.target_s))

    @property
    def in_flight(self) -> int:
        """The standing sagas in flight (the module's note): over the readings of the last
        `standing_s` seconds, the fewest of (sagas in flight then + sagas admitted since − sagas
        expected to have finished since, at λ). Without the last term a reading that comes late
        (the timer behind a busy event loop) made the estimate grow by every admission and
        refused sagas with a dozen in flight; with it, a late reading estimates what it would
        have read. A stall in which nothing finishes shows in the next reading."""
        if not self._readings:
            return self.admitted
        now = self.clock()
        rate = self.load.finishing_per_s if self.load is not None else 0.0
        return max(0, round(min(count + self.admitted - admitted_then - rate * (now - when)
                                for when, count, admitted_then in self._readings)))

    def admit(self) -> Refusal | None:
        """None when one more saga may start (it is counted as in flight at once); otherwise the
        Refusal to answer with (503, Retry-After)."""
        in_flight, limit = self.in_flight, self.limit
        if not self.enabled or in_flight < limit:
            self.admitted += 1
            return None
        self.refused += 1
        rate = self.load.finishing_per_s if self.load is not None else 0.0
        # How long until enough of those in flight have finished for one more to fit, at today's rate.
        excess = in_flight - limit + 1
        wait = excess / rate if rate > 0 else RETRY_AFTER_RANGE_S[1]
        low, high = RETRY_AFTER_RANGE_S
        return Refusal(in_flight, limit, rate, min(high, max(low, math.ceil(wait))))
