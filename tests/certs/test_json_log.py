"""`python -m certs bootstrap|watch --log-format json`: each line certs writes is one JSON object (time, level,
logger, msg); the default stays the text line `DATE TIME certs MESSAGE` it always was."""
from __future__ import annotations

import json
import re

from tests.certs.cluster import run_cli_process, seeded_api


def test_bootstrap_writes_json_lines_when_asked_and_text_by_default():
    with seeded_api() as api:
        result = run_cli_process(api, "bootstrap", "--log-format", "json")
        assert result.returncode == 0, result.stderr
        documents = [json.loads(line) for line in result.stderr.splitlines()]
        assert documents and all(d["logger"] == "certs" and d["level"] == "INFO" for d in documents)
        assert any(d["msg"].startswith("new-ca: there is no CA yet") for d in documents)
        assert documents[-1]["msg"].startswith("done: ")
        again = run_cli_process(api, "bootstrap")
        assert again.returncode == 0, again.stderr
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} certs .+", line)
                   for line in again.stderr.splitlines()), again.stderr
        assert again.stderr.splitlines()[-1].split(" certs ", 1)[1].startswith("done: ")
