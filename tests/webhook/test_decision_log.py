"""Every admission's decision is logged at INFO, one line each (what a cluster admin greps for); WARNING drops those
lines. The CLI's cheap path writes exactly the line the logging module would."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time

import pytest

from tests.webhook.samples import pod
from tests.webhook.test_webhook_drain import REPO, accepts, free_port, read_response, tls_connect, wait_until
from webhook import logs
from webhook.review import review_for

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>\S+): (?P<message>.*)$")


def admit_over_https(port: int, ca, review: dict) -> dict:
    body = json.dumps(review).encode()
    with tls_connect(port, ca) as tls:
        tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, answer = read_response(tls)
    assert status == 200
    return json.loads(answer)["response"]


def admit_all_then_a_forged_version(process: subprocess.Popen, port: int, ca, reviews: list[dict],
                                    forged: str) -> None:
    """Once the webhook `process` listens: every review admitted (allowed), then a body whose apiVersion carries
    `forged` (refused with 400: the client's text reaches the log through the refusal line)."""
    wait_until(lambda: accepts(port) or process.poll() is not None, "the webhook to listen")
    for review in reviews:
        assert admit_over_https(port, ca, review)["allowed"] is True
    bad = json.dumps({**review_for(pod(), "shop"), "apiVersion": "admission.k8s.io/v1" + forged}).encode()
    with tls_connect(port, ca) as tls:
        tls.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(bad) + bad)
        assert read_response(tls)[0] == 400


def serve_and_admit(tls_files, level: str) -> str:
    """`python -m webhook serve` at a log level: admit one pod that is injected and one that opted out; its log."""
    port = free_port()
    env = {**os.environ, "LOCALDNS_LOG_LEVEL": level}
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key), "--drain-seconds", "1",
         "--networkpolicies", "off"],  # no cluster here: test_serve_networkpolicies.py serves with one
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_until(lambda: accepts(port) or process.poll() is not None, "the webhook to listen")
        assert process.poll() is None, process.stdout.read()
        assert "patch" in admit_over_https(port, tls_files.ca, review_for(pod("web"), "shop", uid="uid-injected"))
        opted_out = pod("batch", annotations={"localdns.io/inject": "disabled"})
        assert "patch" not in admit_over_https(port, tls_files.ca, review_for(opted_out, "shop", uid="uid-skipped"))
        process.terminate()
        assert process.wait(timeout=30) == 0
        return process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_each_decision_is_one_info_line_with_outcome_and_reason(tls_files):
    output = serve_and_admit(tls_files, "INFO")
    decisions = [LINE.match(line) for line in output.splitlines() if "uid=uid-" in line]
    assert all(decisions), output
    assert [(m["level"], m["name"], m["message"]) for m in decisions] == [
        ("INFO", "localdns.webhook",
         "uid=uid-injected pod=shop/web-* outcome=inject: injected nameservers=169.254.20.10 ndots=5"),
        ("INFO", "localdns.webhook", "uid=uid-skipped pod=shop/batch-* outcome=skip: pod opted out with "
                                     "annotation localdns.io/inject: 'disabled'"),
    ]


def test_warning_level_drops_the_per_admission_lines(tls_files):
    output = serve_and_admit(tls_files, "WARNING")
    assert "uid=uid-" not in output


def test_the_cheap_line_is_the_line_logging_writes():
    stream = io.StringIO()
    handler = logs.LineHandler(stream)
    record = logging.LogRecord("localdns.webhook", logging.INFO, __file__, 1, "uid=%s: %s", ("u1", "ünïcode"), None)
    handler.emit(record)
    handler.write_line("INFO", "localdns.webhook", "uid=u1: ünïcode")
    first, second = stream.getvalue().splitlines()
    assert LINE.match(first) and LINE.match(second)
    assert first[23:] == second[23:] == " INFO localdns.webhook: uid=u1: ünïcode"
    assert abs(time.mktime(time.strptime(first[:19], "%Y-%m-%d %H:%M:%S")) - record.created) < 2


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_info_line_writes_directly_only_where_the_line_handler_is_the_only_one(monkeypatch):
    stream = io.StringIO()
    logger = logging.getLogger(f"localdns.test-{os.getpid()}-{time.monotonic_ns()}")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(logs.LineHandler(stream))
    with monkeypatch.context() as patched:  # the direct path builds no record at all
        patched.setattr(logger, "handle", lambda record: pytest.fail("went through logging"))
        logs.info_line(logger, "straight to the line handler")
    assert LINE.match(stream.getvalue().strip())["message"] == "straight to the line handler"
    # Another handler (pytest's, an embedding program's) must see every record: then it goes through logging.
    other = Collect()
    logger.addHandler(other)
    logs.info_line(logger, "seen by every handler")
    assert other.messages == ["seen by every handler"]
    assert stream.getvalue().count("seen by every handler") == 1
    # So does a filter.
    logger.removeHandler(other)
    logger.addFilter(lambda record: record.getMessage() != "filtered out")
    logs.info_line(logger, "filtered out")
    assert "filtered out" not in stream.getvalue()


def test_the_cli_log_set_up_leaves_other_records_their_caller_and_thread():
    """`logs.configure` changes no process-wide logging switch: a program that embeds the webhook (or a library it
    logs through) still gets each record's file, line, function and thread."""
    code = """if True:
        import logging
        from webhook import logs

        logs.configure("INFO")
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("embedder").addHandler(handler)

        def work():
            logging.getLogger("embedder").warning("from work")

        work()
        [record] = records
        assert (record.funcName, record.filename, record.threadName) == ("work", "<string>", "MainThread"), vars(record)
        assert record.lineno == 12 and record.process and record.processName == "MainProcess", vars(record)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert re.match(LINE, done.stderr.strip()) and done.stderr.strip().endswith(" WARNING embedder: from work")
