"""`python -m webhook serve --log-format json`: every line the webhook writes (its own, uvicorn's) is one JSON object
with time, level, logger and msg; each admission's line carries uid, namespace, pod, outcome, decision, dryRun and
reason as keys; a generateName holding newlines, control characters or a forged JSON record reads back exactly,
inside its one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.webhook.samples import pod
from tests.webhook.test_decision_log import admit_all_then_a_forged_version
from tests.webhook.test_webhook_cli import python_m_webhook
from tests.webhook.test_webhook_drain import REPO, free_port
from webhook.review import review_for

FORGED = '\n{"time": "2026-01-01T00:00:00.000000Z", "level": "INFO", "logger": "localdns.webhook", "msg": "forged"}'
HOSTILE_GENERATE_NAME = "web" + FORGED + "\r\x1b[2J\u2028\x85\x00-"


def test_every_line_is_json_and_admissions_carry_their_fields(tls_files):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key), "--drain-seconds", "1",
         "--networkpolicies", "off", "--log-format", "json"],  # after `serve`, as the Deployment's args are
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    reviews = [review_for(pod("web"), "shop", uid="u-injected"),
               review_for(pod("batch", annotations={"localdns.io/inject": "disabled"}), "shop", uid="u-skipped"),
               review_for({**pod(), "metadata": {"generateName": HOSTILE_GENERATE_NAME}}, "shop", uid="u-hostile")]
    try:
        admit_all_then_a_forged_version(process, port, tls_files.ca, reviews, FORGED)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    documents = [json.loads(line) for line in output.splitlines()]  # every line, uvicorn's start and stop too
    assert all({"time", "level", "logger", "msg"} <= document.keys() for document in documents), output
    assert not any(document["msg"] == "forged" for document in documents)
    assert any(document["logger"].startswith("uvicorn") for document in documents)
    admissions = [document for document in documents if "outcome" in document]
    assert [{key: document[key] for key in ("level", "logger", "uid", "namespace", "pod", "outcome", "decision",
                                            "dryRun")} for document in admissions] == [
        {"level": "INFO", "logger": "localdns.webhook", "uid": "u-injected", "namespace": "shop", "pod": "web-*",
         "outcome": "inject", "decision": "inject", "dryRun": False},
        {"level": "INFO", "logger": "localdns.webhook", "uid": "u-skipped", "namespace": "shop", "pod": "batch-*",
         "outcome": "skip", "decision": "skip", "dryRun": False},
        {"level": "INFO", "logger": "localdns.webhook", "uid": "u-hostile", "namespace": "shop",
         "pod": HOSTILE_GENERATE_NAME + "*", "outcome": "inject", "decision": "inject", "dryRun": False}]
    assert admissions[0]["msg"] == "uid=u-injected pod=shop/web-* outcome=inject: injected nameservers=169.254.20.10 " \
                                   "ndots=5"  # the text line's message, so a pipeline that shows only msg loses nothing
    assert admissions[1]["reason"] == "pod opted out with annotation localdns.io/inject: 'disabled'"
    [rejected] = [document for document in documents if document["msg"].startswith("rejected admission request")]
    assert rejected["level"] == "WARNING"


def test_an_unknown_log_format_is_one_clear_line():
    done = python_m_webhook("--log-format", "yaml", "audit")
    assert done.returncode == 2 and "unknown log format 'yaml'; use text or json" in done.stderr
    assert "Traceback" not in done.stderr
