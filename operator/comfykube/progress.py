"""The CLI's progress display: a rich progress bar on a terminal, quiet otherwise."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from comfykube.pipeline import PipelineEvent


class TerminalProgress:
    """Shows pipeline events as one progress bar on stderr (when `enabled`)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task("starting", total=None)

    def __enter__(self) -> TerminalProgress:
        if self.enabled:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.enabled:
            self._bar.stop()

    async def report(self, event: PipelineEvent) -> None:
        """Pipeline reporter: update the bar's text and steps."""
        if not self.enabled:
            return
        text = event.phase.value
        if event.queue_position:
            text += f" (position {event.queue_position})"
        if event.message:
            text += f": {event.message}"
        if event.progress and event.progress.max:
            self._bar.update(
                self._task, description=text, total=event.progress.max, completed=event.progress.value
            )
        else:
            self._bar.update(self._task, description=text)
