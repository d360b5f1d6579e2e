"""Progress bars (Rich): one bar for the jobs of a run, one for the epochs of a fold."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)  # progress and logs; results go to stdout (moakit.cli)


class RunProgress:
    """A no-op when disabled, so library calls stay quiet unless asked."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._jobs = None

    def __enter__(self) -> "RunProgress":
        if self.enabled and not console.is_terminal:  # a log file / pipe: one line per event, as it happens
            from moakit.progress_lines import LineProgress

            self._progress = LineProgress(console)
        elif self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def jobs(self, description: str, total: int) -> Callable[[], None]:
        """A bar over ``total`` jobs; returns a function that advances it."""
        if self._progress is None:
            return lambda: None
        task = self._progress.add_task(description, total=total, status="")
        return lambda: self._progress.advance(task)

    @contextlib.contextmanager
    def epochs(self, description: str, total: int) -> Iterator[Callable[[dict], None]]:
        """A transient bar over one fold's epochs; yields the on_epoch callback."""
        if self._progress is None:
            yield lambda record: None
            return
        task = self._progress.add_task(description, total=total, status="")

        def on_epoch(record: dict) -> None:
            # no judge rows (selection policy last): the training loss instead
            if record.get("valid_loss") is not None:
                status = f"valid {record['valid_loss']:.5f}"
            elif record.get("train_loss") is not None:
                status = f"train {record['train_loss']:.5f}"
            else:
                status = ""
            self._progress.update(task, advance=1, status=status)

        try:
            yield on_epoch
        finally:
            self._progress.remove_task(task)

    def log(self, message: str) -> None:
        if self.enabled:
            console.print(message, soft_wrap=True)


class GraphProgress:
    """A :class:`moakit.graph.Observer` that keeps one bar per model (its fold jobs, those
    finished before this run included) and an overall one, fed by the graph's events."""

    def __init__(self, progress: RunProgress, graph) -> None:
        self.progress = progress
        self.model_bars: dict[str, Callable[[], None]] = {}
        total = sum(t for _, t, _ in graph.models.values())
        done = sum(d for _, _, d in graph.models.values())
        self.overall = progress.jobs(f"all {len(graph.models)} model(s): fold jobs", total) if len(graph.models) > 1 \
            else (lambda: None)
        for _ in range(done):
            self.overall()
        for name, (label, model_total, model_done) in graph.models.items():
            self.model_bars[name] = progress.jobs(label, model_total)
            for _ in range(model_done):
                self.model_bars[name]()

    def on_start(self, node) -> None: ...

    def on_done(self, node, value) -> None:
        if node.kind == "fold":
            self.model_bars.get(node.model, lambda: None)()
            self.overall()

    def on_failed(self, node, error: str) -> None:
        self.progress.log(f"[red]failed[/red] {node.describe()} ({node.kind}): {error}")

    def on_skipped(self, node) -> None: ...
