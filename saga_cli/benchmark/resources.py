"""CPU seconds and peak memory of each component during a run, sampled with psutil every 0.5 s.

Components: postgres (the postmaster and every backend, walsender and helper it
forks), kafka, kafka-connect, the three services, and the benchmark process itself
(the load generator and its measurements).

CPU seconds: user + system time spent inside the sampling window. A process alive at
the start counts from its reading then, one born later from zero. PostgreSQL backends
come and go (a pooled connection may close mid-run): the time of a backend that exited
is in the postmaster's `children` times once it was reaped, so postgres's total is
Σ live backends (now − start) + Δ postmaster children − Σ start readings of the
backends that exited: exact, whatever the sampling missed.

Memory: the peak over the samples of the component's resident set. For postgres the
backends share the buffer pool, so summing RSS would count it once per backend; its
figure is the sum of PSS (proportional set size: shared pages divided among sharers),
read every 10 s (reading it costs the sampler far more than the rest).

The sampler's own cost (in the `bench` figure): about 2 ms of CPU per round, 80 ms per PSS round.
"""
from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

Finder = Callable[[], "psutil.Process | None"]

PSS_EVERY = 20
"""Read PSS (costly: the kernel walks each backend's page tables) every 20th sample, i.e. every 10 s."""


@dataclass
class _Tracked:
    baseline: float
    last: float


@dataclass
class ComponentUsage:
    """One component's use of the machine over the sampling window (the module's docstring): CPU
    seconds, peak memory in MiB (PSS for postgres, else RSS), processes seen, whether it ran."""

    name: str
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    processes: int = 0
    running: bool = False

    def as_json(self) -> dict:
        """{"cpu_s", "peak_rss_mb", "processes", "running"}, CPU to 0.01 s and memory to 0.1 MiB."""
        return {"cpu_s": round(self.cpu_s, 2), "peak_rss_mb": round(self.peak_rss_mb, 1),
                "processes": self.processes, "running": self.running}


@dataclass
class _Component:
    name: str
    find: Finder
    with_children: bool
    proportional: bool
    tracked: dict[int, _Tracked] = field(default_factory=dict)
    exited_baselines: float = 0.0
    children_baseline: float | None = None
    children_last: float = 0.0
    peak_bytes: float = 0.0
    root_pid: int | None = None
    rounds: int = 0


class ResourceSampler:
    """Samples the components in a background thread (psutil calls block) from `start()` to `stop()`."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._components: list[_Component] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started_at = 0.0
        self._self_cpu = 0.0
        self._self_peak = 0.0

    def add(self, name: str, find: Finder, *, with_children: bool = False, proportional: bool = False) -> None:
        """`find()` returns the component's main process (or None when it is not running)."""
        self._components.append(_Component(name, find, with_children, proportional))

    def start(self) -> None:
        """Take every component's first reading and start sampling every `interval` seconds in a thread."""
        self._started_at = time.monotonic()
        self._self_cpu = _own_cpu()
        for component in self._components:
            self._sample(component, first=True)
        self._thread = threading.Thread(target=self._run, name="bench-resources", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, ComponentUsage]:
        """Stop sampling, take the last readings; {component name: ComponentUsage}, "bench" (this process) included."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for component in self._components:
            self._sample(component)
        usage = {c.name: self._usage(c) for c in self._components}
        usage["bench"] = ComponentUsage("bench", _own_cpu() - self._self_cpu,
                                        max(self._self_peak, _own_rss()) / 2**20, 1, True)
        return usage

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            for component in self._components:
                self._sample(component)
            self._self_peak = max(self._self_peak, _own_rss())

    def _sample(self, component: _Component, first: bool = False) -> None:
        try:
            root = component.find()
        except Exception:
            root = None
        if root is None:
            return
        processes = [root]
        if component.with_children:
            processes += _children(root)
        component.rounds += 1
        proportional = component.proportional and (first or component.rounds % PSS_EVERY == 0)
        alive: set[int] = set()
        memory = 0.0
        for process in processes:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    cpu = times.user + times.system
                    if proportional:
                        memory += process.memory_full_info().pss
                    elif not component.proportional:
                        memory += process.memory_info().rss
                    if process is root and component.with_children:
                        children = times.children_user + times.children_system
                        if component.children_baseline is None or root.pid != component.root_pid:
                            component.children_baseline = children
                            component.root_pid = root.pid
                        component.children_last = children
                    born_before = process.create_time() <= time.time() - (time.monotonic() - self._started_at)
            except psutil.Error:
                continue
            alive.add(process.pid)
            tracked = component.tracked.get(process.pid)
            if tracked is None:
                component.tracked[process.pid] = _Tracked(cpu if (first or born_before) else 0.0, cpu)
            else:
                tracked.last = cpu
        for pid in [pid for pid in component.tracked if pid not in alive]:
            gone = component.tracked.pop(pid)
            if component.with_children:
                component.exited_baselines += gone.baseline
            else:  # nobody adds a lone process's last moments back: keep what was seen
                component.exited_baselines -= gone.last - gone.baseline
        if proportional or not component.proportional:
            component.peak_bytes = max(component.peak_bytes, memory)

    def _usage(self, component: _Component) -> ComponentUsage:
        live = sum(t.last - t.baseline for t in component.tracked.values())
        if component.with_children and component.children_baseline is not None:
            cpu = live + (component.children_last - component.children_baseline) - component.exited_baselines
        else:
            cpu = live - component.exited_baselines
        return ComponentUsage(component.name, max(cpu, 0.0), component.peak_bytes / 2**20,
                              len(component.tracked), bool(component.tracked))


def _children(root: psutil.Process) -> list[psutil.Process]:
    """The direct children of `root` (PostgreSQL's backends are the postmaster's): Linux lists them in
    /proc/PID/task/PID/children, far cheaper than psutil scanning every process for its parent."""
    try:
        with open(f"/proc/{root.pid}/task/{root.pid}/children") as listing:
            pids = [int(pid) for pid in listing.read().split()]
    except (OSError, ValueError):
        try:
            return root.children(recursive=True)
        except psutil.Error:
            return []
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return found


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _own_rss() -> float:
    try:
        return psutil.Process(os.getpid()).memory_info().rss
    except psutil.Error:
        return 0.0
