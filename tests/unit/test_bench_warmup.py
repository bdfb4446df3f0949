"""The bench's warm-up waits for the JVMs' JIT compilers to settle (saga_cli/benchmark/warmup.py)."""
from __future__ import annotations

import os

from saga_cli.benchmark.warmup import JitWatch, compiler_cpu_s

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(tid: int, name: str, utime: int, stime: int) -> str:
    # /proc/<pid>/task/<tid>/stat: pid (comm) state ppid … utime is field 14, stime 15
    rest = ["S", "1"] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 30
    return f"{tid} ({name}) " + " ".join(rest) + "\n"


def _fake_proc(root, pid: int, threads: dict[str, tuple[int, int]]) -> None:
    for tid, (name, (utime, stime)) in enumerate(threads.items(), start=pid):
        task = root / str(pid) / "task" / str(tid)
        task.mkdir(parents=True, exist_ok=True)
        (task / "stat").write_text(_stat(tid, name, utime, stime))


def test_only_the_compiler_threads_cpu_is_counted(tmp_path):
    _fake_proc(tmp_path, 100, {
        "C2 CompilerThre": (3 * TICKS, 1 * TICKS),
        "C1 CompilerThre": (TICKS, 0),
        "data-plane-kafk": (50 * TICKS, 9 * TICKS),
        "java (x) y": (7 * TICKS, 0),  # a name with parentheses and spaces
    })

    assert compiler_cpu_s(100, proc=str(tmp_path)) == 5.0


def test_a_process_that_is_gone_reads_as_none(tmp_path):
    assert compiler_cpu_s(4242, proc=str(tmp_path)) is None


class FakeJvms:
    """Compiler CPU seconds per pid, moved by hand, and a clock."""

    def __init__(self):
        self.now = 0.0
        self.used = {1: 0.0, 2: 0.0}

    def run(self, seconds: float, shares: dict[int, float]) -> None:
        for pid, share in shares.items():
            self.used[pid] += share * seconds
        self.now += seconds


def _watch(jvms: FakeJvms, pids=None) -> JitWatch:
    pids = pids or {"kafka": 1, "kafka-connect": 2}
    return JitWatch({name: (lambda pid=pid: pid) for name, pid in pids.items()},
                    clock=lambda: jvms.now, read=lambda pid: jvms.used.get(pid))


def test_not_settled_before_a_whole_window():
    jvms = FakeJvms()
    watch = _watch(jvms)
    assert not watch.settled()
    jvms.run(4.0, {1: 0.0, 2: 0.0})
    assert not watch.settled()
    jvms.run(1.0, {1: 0.0, 2: 0.0})
    assert watch.settled()


def test_a_jvm_still_compiling_holds_the_warm_up_and_is_named():
    jvms = FakeJvms()
    watch = _watch(jvms)
    watch.settled()
    for _ in range(10):
        jvms.run(1.0, {1: 0.02, 2: 0.40})
        assert not watch.settled()
    assert watch.busiest()[0] == "kafka-connect"
    assert 0.39 < watch.busiest()[1] < 0.41
    for _ in range(4):
        jvms.run(1.0, {1: 0.02, 2: 0.01})
        assert not watch.settled()  # the window still holds compiling seconds
    jvms.run(1.0, {1: 0.02, 2: 0.01})
    assert watch.settled()


def test_each_jvm_must_settle():
    jvms = FakeJvms()
    watch = _watch(jvms)
    watch.settled()
    jvms.run(5.0, {1: 0.10, 2: 0.0})
    assert not watch.settled()
    assert watch.busiest() == ("kafka", 0.1)


def test_jvms_that_cannot_be_seen_are_not_waited_for():
    jvms = FakeJvms()
    nobody = JitWatch({"kafka": lambda: None, "kafka-connect": lambda: 99},
                      clock=lambda: jvms.now, read=lambda pid: None)
    assert nobody.settled()


def test_a_lookup_that_fails_is_not_waited_for():
    def broken():
        raise PermissionError("no access")

    watch = JitWatch({"kafka": broken}, read=lambda pid: 0.0)
    assert watch.settled()
