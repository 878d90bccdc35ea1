"""Log set-up for the CLI: one line per record on stderr, `2026-11-27 04:00:00,123 INFO localdns.webhook: ...`, or
with `--log-format json` one JSON object per line (localdns/logformat.py: the format every localdns program shares,
the one import from outside webhook/ besides the NetworkPolicy view's client).

The webhook writes a line for every admission, so a line's cost is part of an admission's cost (through the
standard machinery about a tenth of its server CPU). Two things make it cheap without changing a character of the
output, and without touching the logging module's process-wide switches (an embedding program keeps its own):
- the time is formatted once per second;
- `info_line` writes a message (and, in JSON, its fields) straight to the CLI's handler when that handler is the
  only place the record would go (no filters, no other handler: the case `python -m webhook serve` sets up), without
  building a LogRecord, so none of the record's caller, thread and process lookups happen. Under any other logging
  set-up (tests' caplog, an embedding program's handlers) it is plain `logger.info`. The webhook's other lines
  (start, stop, certificate reloads, rejected requests) are rare and take the standard path.

Every value a client controls (uid, namespace, pod name, generateName, a reason quoting an annotation, an error
message) goes through `field` or `text` before it is written: a record stays one line, and a value cannot pose as
another field or as a line of its own (a newline in `generateName` reaches admission: validation comes after it).
In JSON the raw values are keys of their own (namespace, pod, uid, outcome, ...): json.dumps escapes them.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from localdns.logformat import LineHandler
from localdns.logformat import configure as _configure

# What a value may hold to be written bare in `key=value`: what uids, namespaces and pod names are made of.
_BARE = re.compile(r"[A-Za-z0-9._:@+-]+").fullmatch


def field(value: str) -> str:
    """A client's value as one token of a line: as it is when plain, else in double quotes with JSON's escapes
    (so spaces, quotes, '=' and '/' stay inside the token, and control characters and non-ASCII are escaped)."""
    return value if _BARE(value) else json.dumps(value)


def text(value: str) -> str:
    """Free text (a reason, a message) kept on one line: each non-printable character (newlines, escape
    sequences, Unicode line separators, lone surrogates) written as its JSON escape."""
    if value.isprintable():
        return value
    return "".join(char if char.isprintable() else json.dumps(char)[1:-1] for char in value)


def _sole_line_handler(logger: logging.Logger) -> LineHandler | None:
    """The LineHandler that alone would receive an INFO record of `logger`, if that is how logging is set up."""
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None or type(handler) is not LineHandler or handler.filters or \
                    handler.level > logging.INFO:
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


def info_line(logger: logging.Logger, message: str, fields: Mapping[str, Any] | None = None) -> None:
    """`logger.info(message)` with structured `fields` (keys of their own in JSON; the text line is `message`
    alone), cheaper where the CLI set logging up. Call only when INFO is enabled for `logger`."""
    handler = _sole_line_handler(logger)
    if handler is not None:
        try:
            handler.write_line("INFO", logger.name, message, fields)
            return
        except Exception:  # let logging report a broken stream its own way
            pass
    logger.info("%s", message, extra={"fields": fields})


def configure(level: str, log_format: str = "text", stream: TextIO = sys.stderr) -> None:
    """Send every logger's records at `level` or above to `stream`, one line each in `log_format` (text or json),
    like logging.basicConfig; ValueError for an unknown level or format."""
    _configure(level, log_format, stream)
