"""A client cannot forge log lines: every value it controls (uid, namespace, name, generateName, an annotation or
option quoted in a reason, an error message) is escaped, so each admission is exactly one line of the format."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from tests.webhook.samples import pod
from tests.webhook.test_decision_log import LINE, admit_all_then_a_forged_version
from tests.webhook.test_webhook_drain import REPO, free_port
from webhook import logs
from webhook.review import review_for

FORGED = "\n2026-01-01 00:00:00,000 INFO localdns.webhook: uid=forged pod=shop/x outcome=inject: injected"


def test_client_values_cannot_forge_a_line(tls_files):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key), "--drain-seconds", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    reviews = [
        review_for(pod("web" + FORGED), "shop", uid="u-generate-name"),  # issue 13: the generateName
        review_for(pod(), "shop", uid="u" + FORGED),
        review_for({**pod(), "metadata": {"name": "a b" + FORGED}}, "shop", uid="u-name"),
        # a reason that quotes an annotation, and one that carries the pod's own ndots option
        review_for(pod(annotations={"localdns.io/injected": "x" + FORGED}, dnsPolicy="None",
                       dnsConfig={"nameservers": ["169.254.20.10"]}), "shop", uid="u-annotation"),
        review_for(pod(dnsConfig={"options": [{"name": "ndots", "value": "2" + FORGED}]}), "shop", uid="u-option"),
        review_for(pod(annotations={"localdns.io/inject": "off\u2028\x1b[2J" + FORGED}), "shop", uid="u-controls"),
    ]
    try:
        admit_all_then_a_forged_version(process, port, tls_files.ca, reviews, FORGED)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    lines = output.splitlines()
    assert all(LINE.match(line) for line in lines), output
    assert not any("uid=forged" in line.split(": ", 1)[1][:11] for line in lines)
    admissions = [line for line in lines if " uid=" in line]
    assert len(admissions) == len(reviews), output
    assert sum("rejected admission request" in line for line in lines) == 1
    assert 'pod=shop/"web\\n2026-01-01 00:00:00,000 INFO localdns.webhook: uid=forged' in output


@given(st.text())
def test_an_escaped_value_is_one_token_and_an_escaped_text_one_line(value):
    token = logs.field(value)
    assert token.isprintable() and token.isascii()
    if token != value:  # quoted: nothing of it can end the token or the line, and it reads back exactly
        assert token.startswith('"') and json.loads(token) == value
    else:
        assert value and not any(char.isspace() or char in '"=/' for char in value)
    line = logs.text(value)
    assert line.isprintable() and len(line.splitlines()) <= 1
    assert line == value or not value.isprintable()
