"""Progress as plain lines, for a stderr that is a file or a pipe (a batch job's log).

A Rich progress bar redraws itself in place; written to a file it appears only when the run
ends. :class:`LineProgress` has the calls :class:`moakit.progress.RunProgress` makes of a
Rich ``Progress`` and writes one timestamped line per event instead, flushed at once:
a fold starting, a fold finished (epochs, last loss, seconds), a job bar advancing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class _Task:
    description: str
    total: int | None
    completed: int = 0
    status: str = ""
    start: float = field(default_factory=time.perf_counter)


class LineProgress:
    """The subset of ``rich.progress.Progress`` that RunProgress uses, as log lines."""

    def __init__(self, console) -> None:
        self.console = console
        self.tasks: dict[int, _Task] = {}
        self._next = 0
        self._start = time.perf_counter()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _line(self, text: str) -> None:
        elapsed = time.perf_counter() - self._start
        self.console.print(f"{time.strftime('%H:%M:%S')} [{elapsed:7.1f} s] {text}", soft_wrap=True,
                           highlight=False, markup=False)
        file = getattr(self.console, "file", None)
        if file is not None and hasattr(file, "flush"):
            file.flush()

    def add_task(self, description: str, total: int | None = None, status: str = "", **_) -> int:
        task_id = self._next
        self._next += 1
        self.tasks[task_id] = _Task(description, total, status=status)
        if total is None:  # a fold's epochs: say it starts
            self._line(f"{description}: started")
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self.tasks[task_id]
        task.completed += int(advance)
        if task.total is not None:  # a bar of jobs: each one done is a line
            self._line(f"{task.description}: {task.completed}/{task.total} done")

    def update(self, task_id: int, advance: float | None = None, status: str | None = None, **_) -> None:
        task = self.tasks[task_id]
        if advance:
            task.completed += int(advance)
        if status is not None:
            task.status = status

    def remove_task(self, task_id: int) -> None:
        task = self.tasks.pop(task_id)
        seconds = time.perf_counter() - task.start
        status = f", {task.status}" if task.status else ""
        self._line(f"{task.description}: {task.completed} epoch(s){status}, {seconds:.1f} s")
