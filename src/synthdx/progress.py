"""Rich progress bars and stage timing shared by the CLI and experiment recipes."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
log = logging.getLogger("synthdx")


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append synthdx's log (stages, timings, training loss; never record text) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    previous = log.level
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    except BaseException as e:
        log.error("stopped: %s: %s", type(e).__name__, e)
        raise
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)
        handler.close()


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
        log.info("stage started: %s", name)
        t = time.time()
        try:
            yield
        finally:
            self.timings[name] = round(time.time() - t, 1)
            console.print(f"[green]{name}: {self.timings[name]:.1f} s")
            log.info("stage finished: %s (%.1f s)", name, self.timings[name])
