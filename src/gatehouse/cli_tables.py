"""Tables and progress on the command line: rich on a terminal, plain text otherwise (so
scripts and tests read the same columns they always did)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TextIO


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (standard output) is a terminal a person reads."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table with columns padded to their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


#: Cell words shown in colour on a terminal.
_STYLES = {
    "yes": "green",
    "ok": "green",
    "healthy": "green",
    "active": "green",
    "no": "bold red",
    "unhealthy": "bold red",
    "revoked": "red",
    "expired": "red",
    "running": "green",
    "primary": "green",
    "stopped": "red",
    "exited": "bold red",
}


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str = "",
    stream: TextIO | None = None,
) -> None:
    """``rows`` under ``headers``: a rich table on a terminal, else :func:`plain_table`."""
    out = stream or sys.stdout
    out.write(render_table(headers, rows, title, interactive(out)))


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str = "",
    rich: bool | None = None,
) -> str:
    """The table as text: drawn with rich (colours and all) when ``rich`` (default: when
    standard output is a terminal), else :func:`plain_table`."""
    if not (interactive() if rich is None else rich):
        return plain_table(headers, rows)
    import io
    import shutil

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, header_style="bold", title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*(Text(cell, style=_STYLES.get(cell, "")) for cell in row))
    buffer = io.StringIO()
    width = shutil.get_terminal_size((120, 24)).columns
    Console(file=buffer, force_terminal=True, width=width).print(table)
    return buffer.getvalue()


class Progress(Protocol):
    def advance(self, done: int, note: str = "") -> None: ...


class _Plain:
    def advance(self, done: int, note: str = "") -> None:
        return None


class _Rich:
    def __init__(self, progress: object, task: object) -> None:
        self._progress = progress
        self._task = task

    def advance(self, done: int, note: str = "") -> None:
        self._progress.update(self._task, completed=done, note=note)  # type: ignore[attr-defined]


@contextmanager
def progress(description: str, total: int, stream: TextIO | None = None) -> Iterator[Progress]:
    """A progress bar for a long operation on a terminal (on standard error, so that
    standard output stays what scripts read); nothing otherwise."""
    err = stream or sys.stderr
    if total <= 0 or not interactive(err):
        yield _Plain()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(file=err),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total, note="")
        yield _Rich(bar, task)
