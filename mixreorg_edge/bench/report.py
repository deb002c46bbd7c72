"""How benchmark scripts report: a table of result rows on the console and a JSON file `{"meta": ..., "rows": ...}`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_rows(title: str, rows: list[dict[str, Any]], columns: Sequence[str] | None = None,
               console: Console | None = None) -> None:
    """One table row per result row: `columns` (default: the first row's keys) in order, "-" where a row lacks one.
    The first column is left-aligned (a name), the others right-aligned (numbers)."""
    columns = list(columns or rows[0])
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(str(row.get(column, "-")) for column in columns))
    (console or Console(width=200)).print(table)


def write_results(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write `{"meta": meta, "rows": rows}` as indented JSON to `path` (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
