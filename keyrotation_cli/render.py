"""Output: rich tables and colour on a terminal, plain aligned text otherwise, JSON with --json.

rich decides colour by itself (NO_COLOR, TERM=dumb, not a TTY: none); the plain form is ours, so a pipe
or a log gets columns separated by two spaces and nothing else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


def is_tty() -> bool:
    return console.is_terminal


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value) or "-"
    return str(value)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table: rich on a terminal, else plain columns (a header line, then one line per row)."""
    cells = [[text(c) for c in row] for row in rows]
    if is_tty():
        grid = Table(title=title, title_justify="left", header_style="bold")
        for column in columns:
            grid.add_column(column, overflow="fold")
        for row in cells:
            grid.add_row(*row)
        console.print(grid)
        return
    if title:
        print(title)
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    for row in [list(columns), *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def line(message: str, style: str | None = None) -> None:
    if is_tty() and style:
        console.print(message, style=style, markup=False)
    else:
        print(message, flush=True)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`name: value` lines, names aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        line(f"{key.ljust(width)}  {text(value)}")


def fail(message: str) -> None:
    """The one-line reason of a non-zero exit, on stderr."""
    if errors.is_terminal:
        errors.print(f"keyrotation: {message}", style="red", markup=False)
    else:
        sys.stderr.write(f"keyrotation: {message}\n")
