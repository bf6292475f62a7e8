"""Printing helpers shared by the commands: JSON, aligned tables, times, masked secrets."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any, Iterable, Sequence


def print_json(value: Any) -> None:
    """Machine-readable output: stable (sorted) keys, one document on stdout."""
    json.dump(value, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "") -> None:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    rows = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    if not rows and empty:
        print(empty)
        return
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        print("  ".join(cells).rstrip())


def print_fields(fields: Sequence[tuple[str, Any]], *, indent: str = "") -> None:
    """``name  value`` lines with aligned values."""
    width = max((len(name) for name, _ in fields), default=0)
    for name, value in fields:
        print(f"{indent}{name.ljust(width)}  {'' if value is None else value}")


def mask_token(token: str | None) -> str | None:
    """The first 8 characters and an ellipsis: enough to tell tokens apart, not to use one."""
    if not token:
        return None
    return token[:8] + "…"


def format_time_ms(ms: int | None) -> str:
    if not ms:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def format_duration_s(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
