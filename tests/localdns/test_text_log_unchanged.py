"""`--log-format text`, the default, writes every line byte for byte as the programs wrote it before the format was
shared: what `logging.basicConfig(format=...)` wrote for the cache, the webhook and certs (exceptions included),
and the cache's query log lines with the timestamp it formatted itself."""
from __future__ import annotations

import io
import logging
import sys
import time
from unittest import mock

import dns.message
import pytest

from cache.querylog import QueryLog, format_line
from cache.stats import Stats
from localdns.logformat import TEXT_FORMAT, LineHandler, TextFormatter

# The formats the programs passed to logging.basicConfig: the cache and the webhook, then certs.
BEFORE = ["%(asctime)s %(levelname)s %(name)s: %(message)s", "%(asctime)s certs %(message)s"]


def records() -> list[logging.LogRecord]:
    """Records made at the millisecond's end (.999, where the old formatter truncated), and one made now."""
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        failed = sys.exc_info()
    with mock.patch("time.time", return_value=1795752000.999), \
            mock.patch("time.time_ns", return_value=1795752000_999_000_000):
        at_the_end = logging.LogRecord("cache", logging.INFO, __file__, 1, "reloaded settings (%s)", ("SIGHUP",),
                                       None)
    return [at_the_end,
            logging.LogRecord("localdns.webhook", logging.ERROR, __file__, 1, "uid=%s: internal error", ("u",), failed),
            logging.LogRecord("certs", logging.WARNING, __file__, 1, "ünïcode %d%%", (5,), None)]


@pytest.mark.parametrize("fmt", BEFORE)
def test_each_programs_text_line_is_what_basic_config_wrote(fmt):
    assert TEXT_FORMAT == BEFORE[0]
    for made in records():
        assert TextFormatter(fmt).format(made) == logging.Formatter(fmt).format(made)


def test_the_direct_line_is_the_record_line():
    stream = io.StringIO()
    handler = LineHandler(stream)
    made = records()[0]
    handler.emit(made)
    assert stream.getvalue() == handler.formatter.line(made.created, "INFO", "cache", "reloaded settings (SIGHUP)") \
        + "\n" == logging.Formatter(TEXT_FORMAT).format(made) + "\n"


def old_timestamp(at: float) -> str:
    """The query log's own timestamp before the format was shared (cache/querylog.py `_timestamp`)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f",{int(at * 1000) % 1000:03d}"


def test_the_query_logs_text_line_is_unchanged(monkeypatch):
    query = dns.message.make_query("a\nb.example.org", "A", use_edns=0, payload=4096)
    reply = dns.message.make_response(query, recursion_available=True).to_wire()
    stream = io.StringIO()
    log = QueryLog(Stats(), stream=stream)
    monkeypatch.setattr(time, "time", lambda: 1795752000.5)
    log.watch(query.to_wire(), ("::1", 50759, 0, 0), lambda reply, addr: None, "udp")(reply, ("::1", 50759))
    log.close()
    [line] = stream.getvalue().splitlines()
    head, _, rest = line.partition(" INFO cache.query: ")
    assert head == old_timestamp(1795752000.5)
    duration = rest.split()[-2]
    assert rest == format_line(query.to_wire(), ("::1", 50759), "udp", reply, float(duration[:-1]), "cache")
    assert rest.startswith(f'[::1]:50759 - {query.id} "A IN a\\010b.example.org. udp {len(query.to_wire())} false '
                           f'4096" NOERROR qr,rd,ra {len(reply)} ')
