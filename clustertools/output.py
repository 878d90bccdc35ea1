"""Printing results: aligned plain-text tables for people, JSON or YAML for scripts.

Structured output is the same data the table is drawn from, so a script never parses the table.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], show_headers: bool = True) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded (it may be long prose)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells if show_headers else cells[1:]:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def emit(data: dict[str, Any], fmt: str, render_text: Callable[[dict[str, Any]], str],
         out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    elif fmt == "yaml":
        out.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    else:
        text = render_text(data)
        out.write(text + ("" if text.endswith("\n") else "\n"))
    out.flush()


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else (words or word + 's')}"
