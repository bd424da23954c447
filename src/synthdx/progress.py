"""Rich progress bars and stage timing shared by the CLI and experiment recipes."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def make_progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


class StageTimer:
    """Times named stages; `timings` ends up in metrics.json and the report."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        console.rule(f"[bold cyan]{name}")
        t = time.time()
        try:
            yield
        finally:
            self.timings[name] = round(time.time() - t, 1)
            console.print(f"[green]{name}: {self.timings[name]:.1f} s")
