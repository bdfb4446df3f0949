"""When a freshly started stack is warm enough to measure: its JVMs' JIT compilers have settled.

Kafka and Kafka Connect run on the JVM. For the first half minute or so under load their
just-in-time compilers turn the hot paths into machine code, and while they do, the two JVMs
take about half a core more than they will once warm (on the 2-core machine of
BENCHMARKS.md: Connect ~600 ms of CPU per second in its first 40 s at 100 sagas/s, ~280 once
warm). A run measured on a cold stack measures the compilers, not the saga: right after
`saga up`, `saga bench --rate 100` finished 72–90 sagas/s where a warm stack finishes 100.

So the warm-up is not a fixed time only: after `--warmup` seconds the load goes on until the
compiler threads of every JVM found (`C1 CompilerThre…`, `C2 CompilerThre…` in
/proc/<pid>/task/*/comm) used less than `SETTLED_SHARE` of one core over the last
`WINDOW_S` seconds, for at most `LONGEST_S` more seconds. A warm stack passes at once; a JVM
that cannot be seen (another machine, a container) is not waited for.
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["JitWatch", "SETTLED_SHARE", "WINDOW_S", "LONGEST_S"]

SETTLED_SHARE = 0.05
"""A JVM is warm when its compiler threads use less than this share of one core (5 %, 50 ms of
CPU per second): about what a warm broker's compilers still use at 100 sagas/s (20–25 ms/s
measured), well under a cold Connect's (300 ms/s and more)."""

WINDOW_S = 5.0
"""Seconds over which the compilers' share is taken."""

LONGEST_S = 120.0
"""Most seconds of warm-up beyond `--warmup` spent waiting for the compilers."""

_COMPILER_THREAD_PREFIXES = ("C1 CompilerThre", "C2 CompilerThre")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def compiler_cpu_s(pid: int, proc: str = "/proc") -> float | None:
    """CPU seconds the JIT compiler threads of process `pid` have used so far (user + system),
    from /proc/<pid>/task/*/stat; None when the process or /proc cannot be read."""
    tasks = f"{proc}/{pid}/task"
    try:
        tids = os.listdir(tasks)
    except OSError:
        return None
    ticks = 0
    for tid in tids:
        try:
            with open(f"{tasks}/{tid}/stat") as stat:
                text = stat.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = text[text.index("(") + 1:text.rindex(")")]
        if name.startswith(_COMPILER_THREAD_PREFIXES):
            fields = text[text.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _CLOCK_TICKS


@dataclass
class JitWatch:
    """Follows the compiler threads of the JVMs `find` names ({component: () → pid or None}).

    Call `settled()` about once a second during the warm-up: True once every JVM seen used less
    than `settled_share` of a core for compiling over the last `window_s` seconds (and always
    True when no JVM can be seen). `busiest()` names the JVM still compiling most, for the
    progress line."""

    find: dict[str, Callable[[], int | None]]
    settled_share: float = SETTLED_SHARE
    window_s: float = WINDOW_S
    clock: Callable[[], float] = time.monotonic
    read: Callable[[int], float | None] = compiler_cpu_s
    _samples: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    _shares: dict[str, float] = field(default_factory=dict)

    def settled(self) -> bool:
        """Sample each JVM once; True when each one's compiling share over a full window is below
        `settled_share` (a JVM with less than a window of samples is not settled yet)."""
        now = self.clock()
        verdicts: list[bool] = []
        for name, pid in self._pids():
            used = self.read(pid)
            if used is None:
                continue
            samples = self._samples.setdefault(name, deque())
            samples.append((now, used))
            while len(samples) > 1 and samples[1][0] <= now - self.window_s:
                samples.popleft()
            first_at, first_used = samples[0]
            if now - first_at < self.window_s:
                verdicts.append(False)
                continue
            self._shares[name] = (used - first_used) / (now - first_at)
            verdicts.append(self._shares[name] < self.settled_share)
        return all(verdicts)

    def busiest(self) -> tuple[str, float] | None:
        """(component, share of a core) of the JVM whose compilers were busiest at the last
        `settled()`, or None before a full window."""
        if not self._shares:
            return None
        name = max(self._shares, key=self._shares.__getitem__)
        return name, self._shares[name]

    def _pids(self) -> Iterable[tuple[str, int]]:
        for name, find in self.find.items():
            try:
                pid = find()
            except Exception:  # a component that cannot be looked up is not waited for
                continue
            if pid is not None:
                yield name, pid
