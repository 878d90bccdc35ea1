"""How every localdns program writes its log (`--log-format`): `text`, one line per record as the programs always
wrote it (`2026-11-27 04:00:00,123 INFO localdns.webhook: ...`), or `json`, one JSON object per line for Loki,
Elasticsearch or Cloud Logging:

    {"time": "2026-11-27T04:00:00.123456Z", "level": "INFO", "logger": "localdns.webhook", "msg": "...", ...}

`msg` is the text line's message, so nothing is lost where a pipeline shows only `msg`; the record's structured
fields (`extra={"fields": {...}}`: a query's name and rcode, an admission's namespace and pod) follow as keys of
their own, and an exception is one `error` string. json.dumps escapes every control character and every non-ASCII
one, so no value, however hostile, can end a line early (for any reader's idea of a line end) or pose as a key.

The standard library only: the cache, the webhook and certs all import this module, and none of them may pay for
more (the cache's RSS, the admission server's independence: tests/test_layout.py).
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

FORMATS = ("text", "json")
_BASE_KEYS = frozenset(("time", "level", "logger", "msg", "error"))
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_format(value: str) -> str:
    """'text' or 'json'; ValueError says what is accepted."""
    if value not in FORMATS:
        raise ValueError(f"{value!r}: expected text or json")
    return value


class _Seconds:
    """A timestamp's part up to the second, formatted once per second (records of a second share it)."""

    def __init__(self, format_second: Any) -> None:
        self._format = format_second
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> tuple[str, float]:
        second = int(created)
        if second != self._second:  # callers hold the handler's lock (or own the stream): no race on the cache
            self._text = self._format(created)
            self._second = second
        return self._text, created - second


class TextFormatter(logging.Formatter):
    """The text format (`TEXT_FORMAT` unless a program has its own), with the date and time formatted once per
    second; `line` writes the line `format` would for a record, without the record."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._line_format = fmt
        self._msec_format = self.default_msec_format or "%s,%03d"
        self._seconds = _Seconds(lambda created: time.strftime(self.default_time_format, self.converter(created)))

    def stamp(self, created: float) -> str:
        """`asctime` for a Unix time: `2026-11-27 04:00:00,123` (local time, as logging writes it)."""
        text, fraction = self._seconds(created)
        return self._msec_format % (text, fraction * 1000)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def line(self, created: float, level: str, logger: str, message: str,
             fields: Mapping[str, Any] | None = None) -> str:
        return self._line_format % {"asctime": self.stamp(created), "levelname": level, "name": logger,
                                    "message": message}


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time (RFC 3339, UTC, microseconds), level, logger, msg, the record's `fields`,
    and `error` (the traceback) when the record carries an exception."""

    def __init__(self) -> None:
        import json  # only where JSON is asked for: the cache's text logs do without it (0.14 MB of RSS)

        super().__init__()
        self._dumps = json.dumps
        self._seconds = _Seconds(lambda created: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)))

    def rfc3339(self, created: float) -> str:
        """`2026-11-27T04:00:00.123456Z`."""
        text, fraction = self._seconds(created)
        return f"{text}.{int(fraction * 1_000_000):06d}Z"

    def line(self, created: float, level: str, logger: str, message: str,
             fields: Mapping[str, Any] | None = None, error: str | None = None) -> str:
        if fields and fields.keys() & _BASE_KEYS:  # a field cannot pose as one of these
            fields = {key: value for key, value in fields.items() if key not in _BASE_KEYS}
        document: dict[str, Any] = {"time": self.rfc3339(created), "level": level, "logger": logger, "msg": message,
                                    **(fields or {})}
        if error:
            document["error"] = error
        return self._dumps(document, default=str)  # ASCII: no raw U+2028, NEL or lone surrogate either

    def format(self, record: logging.LogRecord) -> str:
        error = None
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text or record.stack_info:
            error = "\n".join(part for part in (record.exc_text, record.stack_info) if part)
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         getattr(record, "fields", None), error)


def formatter(log_format: str, text_format: str = TEXT_FORMAT) -> TextFormatter | JSONFormatter:
    return JSONFormatter() if parse_format(log_format) == "json" else TextFormatter(text_format)


class LineHandler(logging.StreamHandler[TextIO]):
    """The programs' handler: one line per record on a stream, in the format chosen (and switchable: `use`)."""

    def __init__(self, stream: TextIO, log_format: str = "text", text_format: str = TEXT_FORMAT) -> None:
        super().__init__(stream)
        self.text_format = text_format
        self.formatter: TextFormatter | JSONFormatter = formatter(log_format, text_format)

    def use(self, log_format: str) -> None:
        """Switch the format from the next record on (the cache's config reload)."""
        chosen = formatter(log_format, self.text_format)
        self.acquire()
        try:
            self.formatter = chosen
        finally:
            self.release()

    def write_line(self, level: str, logger: str, message: str, fields: Mapping[str, Any] | None = None) -> None:
        """Exactly the line `emit` writes for such a record, without making the record."""
        self.acquire()
        try:
            self.stream.write(self.formatter.line(time.time(), level, logger, message, fields) + self.terminator)
            self.flush()
        finally:
            self.release()


def configure(level: int | str, log_format: str = "text", stream: TextIO = sys.stderr,
              text_format: str = TEXT_FORMAT, force: bool = False) -> LineHandler:
    """Send every logger's records at `level` or above to `stream`, one line each (as logging.basicConfig does);
    ValueError for an unknown level or format."""
    handler = LineHandler(stream, log_format, text_format)
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler], force=force)
    return handler


def use(log_format: str) -> None:
    """Switch every LineHandler of the root logger to `log_format`."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LineHandler):
            handler.use(log_format)
