"""Training progress on stderr, with rich (the library the CLI prints with): in a terminal one live
display holding an epoch bar and a batch bar; elsewhere (CI logs, pipes, files) no bars, one plain
line per epoch. Either way each finished epoch leaves one line.

    with TrainProgress("tfc-w1a1", epochs=40, done=0) as bars:
        for b in bars.batches(n): ...
        bars.epoch_done("epoch 1/40: ...")
"""
from __future__ import annotations

from typing import Iterator


class TrainProgress:
    """The bars of one training run; a context manager that always removes its live display."""

    def __init__(self, name: str, epochs: int, done: int, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.name, self.epochs, self.done = name, epochs, done
        self._bars = None

    def __enter__(self) -> "TrainProgress":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=self.console, transient=True)
            self._bars.start()
            self._epoch = self._bars.add_task(f"train {self.name}", total=self.epochs, completed=self.done)
            self._batch = self._bars.add_task("  batches", total=None)
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def batches(self, n: int) -> Iterator[int]:
        """range(n), advancing the batch bar."""
        if self._bars is not None:
            self._bars.reset(self._batch, total=n)
        for b in range(n):
            yield b
            if self._bars is not None:
                self._bars.advance(self._batch)

    def epoch_done(self, line: str) -> None:
        """One finished epoch: its line (above the bars in a terminal), and the epoch bar advances."""
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        if self._bars is not None:
            self._bars.advance(self._epoch)
