"""The loggers of the code under test, kept quiet while a target runs, with their errors kept: the resolver and the
webhook catch their own bugs so as to keep serving (and log them), so an error logged is a failure of the target
even when no exception escapes."""
from __future__ import annotations

import logging


class Errors(logging.Handler):
    """Collects the records at ERROR and above of the loggers it is attached to; the others are dropped."""

    def __init__(self, *loggers: str) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        for name in loggers:
            logger = logging.getLogger(name)
            logger.addHandler(self)
            logger.propagate = False  # no warning per bad input on stderr, millions of times

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def check(self) -> None:
        """Raise AssertionError with the first error logged since the last check."""
        records, self.records = self.records, []
        if records:
            first = records[0]
            trace = logging.Formatter().formatException(first.exc_info) if first.exc_info else ""
            raise AssertionError(f"{first.name} logged an error: {first.getMessage()}\n{trace}")
