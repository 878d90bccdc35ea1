"""Log set-up for the CLI: one line per record on stderr, `2026-11-27 04:00:00,123 INFO localdns.webhook: ...`.

The webhook writes a line for every admission, so a line's cost is part of an admission's cost (through the
standard machinery about a tenth of its server CPU). Two things make it cheap without changing a character of the
output, and without touching the logging module's process-wide switches (an embedding program keeps its own):
- the time is formatted once per second;
- `info_line` writes a message straight to the CLI's handler when that handler is the only place the record would
  go (no filters, no other handler: the case `python -m webhook serve` sets up), without building a LogRecord, so
  none of the record's caller, thread and process lookups happen. Under any other logging set-up (tests' caplog,
  an embedding program's handlers) it is plain `logger.info`. The webhook's other lines (start, stop, certificate
  reloads, rejected requests) are rare and take the standard path.

Every value a client controls (uid, namespace, pod name, generateName, a reason quoting an annotation, an error
message) goes through `field` or `text` before it is written: a record stays one line, and a value cannot pose as
another field or as a line of its own (a newline in `generateName` reaches admission: validation comes after it).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

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


class LineFormatter(logging.Formatter):
    """FORMAT, with the date and time formatted once per second (records of the same second share it)."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._stamp = ""
        self._msec_format = self.default_msec_format or "%s,%03d"

    def stamp(self, created: float) -> str:
        """`asctime` for a Unix time: `2026-11-27 04:00:00,123`."""
        second = int(created)
        if second != self._second:  # callers hold the handler's lock: no race on the cache
            self._stamp = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        return self._msec_format % (self._stamp, (created - second) * 1000)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)


class LineHandler(logging.StreamHandler[TextIO]):
    """The CLI's handler: LineFormatter lines on a stream."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.formatter: LineFormatter = LineFormatter()

    def write_line(self, level_name: str, logger_name: str, message: str) -> None:
        """Exactly the line `emit` writes for such a record, without the record."""
        self.acquire()
        try:
            self.stream.write(f"{self.formatter.stamp(time.time())} {level_name} {logger_name}: {message}"
                              f"{self.terminator}")
            self.flush()
        finally:
            self.release()


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


def info_line(logger: logging.Logger, message: str) -> None:
    """`logger.info(message)`, cheaper where the CLI set logging up. Call only when INFO is enabled for `logger`."""
    handler = _sole_line_handler(logger)
    if handler is not None:
        try:
            handler.write_line("INFO", logger.name, message)
            return
        except Exception:  # let logging report a broken stream its own way
            pass
    logger.info("%s", message)


def configure(level: str, stream: TextIO = sys.stderr) -> None:
    """Send every logger's records at `level` or above to `stream`, one line each (like logging.basicConfig)."""
    logging.basicConfig(level=level.upper(), handlers=[LineHandler(stream)])
