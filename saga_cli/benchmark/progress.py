"""The live line while a run goes on (on stderr, so `--json` keeps stdout to its one document)."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

from saga_cli.benchmark.load import LoadCounters


class Progress:
    """The run's live progress line on `console` (stderr): phase, sent, terminal, in flight, refused, failed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: RichProgress | None = None
        self._task = None
        self._started = 0.0
        self._seconds = 0.0
        self._phase = ""
        self._label = ""

    def start(self, label: str, rate: float, seconds: float) -> None:
        """Show the line for a run of `seconds` at `rate` orders per second, labelled `label`."""
        self._label, self._seconds, self._started = label, seconds, time.monotonic()
        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(f"{label} {rate:g}/s", total=seconds, figures="")

    def phase(self, name: str) -> None:
        """The phase the line names from now on ('warmup', 'measure', 'done')."""
        self._phase = name

    def update(self, counters: LoadCounters, terminal: int | None) -> None:
        """Refresh the figures from `counters` and `terminal` sagas (None: unknown, shown "?"); nothing
        before `start` or after `stop`."""
        if self._progress is None:
            return
        terminal_text = "?" if terminal is None else str(terminal)
        in_flight = "?" if terminal is None else str(max(counters.placed - terminal, 0) + counters.in_request)
        figures = (f"{self._phase:<7} sent {counters.sent} · terminal {terminal_text} · in flight {in_flight}"
                   + (f" · refused {counters.refused}" if counters.refused else "")
                   + (f" · [red]failed {counters.failed}[/red]" if counters.failed else ""))
        elapsed = min(time.monotonic() - self._started, self._seconds)
        self._progress.update(self._task, completed=elapsed, figures=figures)

    def note(self, text: str) -> None:
        """Print one dim line `<label>: text` above the progress line."""
        self.console.print(f"[dim]{self._label}: {text}[/dim]")

    def stop(self) -> None:
        """Stop the line (it stays on screen); stopping twice does nothing."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
