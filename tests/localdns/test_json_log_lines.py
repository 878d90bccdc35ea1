"""`--log-format json` (localdns/logformat.py, the one formatter every program uses): one JSON object per line with
time (RFC 3339, UTC), level, logger, msg, the record's fields and an exception as one `error` string; whatever a
client puts in a value stays inside that line, and reads back as it was."""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re

from hypothesis import given
from hypothesis import strategies as st

from localdns.logformat import JSONFormatter, LineHandler

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def record(message: str, *args: object, fields: dict | None = None, exc_info=None) -> logging.LogRecord:
    made = logging.LogRecord("localdns.test", logging.WARNING, __file__, 1, message, args, exc_info)
    if fields is not None:
        made.fields = fields  # what `extra={"fields": ...}` sets
    return made


def test_a_record_is_one_object_with_time_level_logger_msg_and_its_fields():
    made = record("uid=%s: %s", "u1", "injected", fields={"namespace": "shop", "pod": "web-*", "dryRun": False})
    made.created = 1795752000.25  # 2026-11-27 04:00:00.25 UTC
    line = JSONFormatter().format(made)
    assert json.loads(line) == {"time": "2026-11-27T04:00:00.250000Z", "level": "WARNING", "logger": "localdns.test",
                                "msg": "uid=u1: injected", "namespace": "shop", "pod": "web-*", "dryRun": False}


def test_the_time_is_rfc3339_utc_and_the_moment_of_the_record():
    made = record("now")
    document = json.loads(JSONFormatter().format(made))
    assert RFC3339_UTC.fullmatch(document["time"])
    parsed = dt.datetime.fromisoformat(document["time"].replace("Z", "+00:00"))
    assert abs(parsed.timestamp() - made.created) < 1e-5


def test_fields_cannot_replace_the_base_keys():
    document = json.loads(JSONFormatter().format(record("real", fields={"msg": "forged", "level": "DEBUG", "x": 1})))
    assert (document["msg"], document["level"], document["x"]) == ("real", "WARNING", 1)


def test_an_exception_is_one_error_string_with_its_traceback():
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        import sys
        made = record("internal error, pod left unchanged", exc_info=sys.exc_info())
    line = JSONFormatter().format(made)
    assert "\n" not in line
    document = json.loads(line)
    assert document["msg"] == "internal error, pod left unchanged"
    assert document["error"].startswith("Traceback (most recent call last):")
    assert document["error"].endswith("RuntimeError: boom\nsecond line")


def test_the_handlers_direct_path_writes_what_emit_writes():
    stream = io.StringIO()
    handler = LineHandler(stream, "json")
    made = record("%s", "hello", fields={"pod": "web"})
    handler.emit(made)
    handler.write_line("WARNING", "localdns.test", "hello", {"pod": "web"})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {**first, "time": None} == {**second, "time": None}


# Every character a client can send: newlines, carriage returns, escape sequences, Unicode line and paragraph
# separators, NEL, lone surrogates (a JSON body may carry them), quotes and braces.
HOSTILE = ('web\n{"time": "2026-01-01T00:00:00Z", "level": "INFO", "msg": "forged"}'
           '\r\x1b[2J\u2028\u2029\x85\ud800"}')


@given(st.text() | st.just(HOSTILE), st.text() | st.just(HOSTILE))
def test_any_value_stays_inside_its_line_and_reads_back_as_it_was(message, value):
    stream = io.StringIO()
    handler = LineHandler(stream, "json")
    handler.emit(record("%s", message, fields={"pod": value}))
    handler.write_line("INFO", "localdns.test", message, {"pod": value})
    output = stream.getvalue()
    assert output.isascii()  # no raw control, separator or surrogate: any reader's idea of a line end is safe
    lines = output.splitlines()
    assert len(lines) == 2 and output.count("\n") == 2
    for line in lines:
        document = json.loads(line)
        assert (document["msg"], document["pod"]) == (message, value)
