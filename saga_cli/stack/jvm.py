"""Launching the stack's JVMs (the broker and the Connect worker) with sized heaps and file logging."""
from __future__ import annotations

import re
from pathlib import Path

from saga_cli.stack.config import StackSettings


def render(template: Path, target: Path, **values: object) -> None:
    """Fill the {{name}} placeholders of a config template from connect/."""
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    if re.search(r"\{\{\w+\}\}", text):
        raise ValueError(f"unfilled placeholder in {template}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def java_command(settings: StackSettings, java: str, component: str, heap: str, main_class: str, *args: str) -> list[str]:
    """The command that runs `main_class` with `args` on the stack's class path: a fixed `heap` (e.g.
    "768m"), G1 with 20 ms pause target, exit on out of memory, logging to <log_dir>/<component>.log."""
    log_file = settings.log_dir / f"{component}.log"
    return [
        java,
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dsaga.component={component}",
        f"-Dsaga.home={settings.home}",
        f"-Dlog4j2.configurationFile={settings.connect_dir / 'log4j2.xml'}",
        f"-Dsaga.log.file={log_file}",
        "-cp",
        f"{settings.lib_dir}/*",
        main_class,
        *args,
    ]
