"""The cache's log format is a key of its --config file (the localdns-cache-config ConfigMap), switched by a reload
without a restart: from the next line on, the daemon's lines and the query log's are in the new format; a bad value
is refused with a clear line and the format in force stays."""
from __future__ import annotations

import json
import time

import dns.message

from tests.cache.conftest import Cache


def wait_reloads(cache: Cache, result: str, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while cache.metrics().get(f'localdns_config_reloads_total{{result="{result}"}}', 0) < count:
        assert time.monotonic() < deadline, cache.output()
        time.sleep(0.1)


def new_lines(cache: Cache, seen: int, until: str, timeout: float = 10) -> list[str]:
    """The lines written after the first `seen`, once one of them holds `until`."""
    deadline = time.monotonic() + timeout
    while True:
        lines = cache.output().splitlines()[seen:]
        if any(until in line for line in lines):
            return lines
        assert time.monotonic() < deadline, cache.output()
        time.sleep(0.05)


def test_the_format_follows_the_config_file(tmp_path, kube_dns):
    config = tmp_path / "cache.yaml"
    config.write_text("log-queries: true\nlog-format: text\n")
    cache = Cache(tmp_path, "--config", str(config), kube_dns=kube_dns)
    query = dns.message.make_query("web.default.svc.cluster.local", "A")
    try:
        cache.udp(query)
        text = new_lines(cache, 0, "cache.query")
        assert " INFO cache.query: 127.0.0.1:" in text[-1]
        seen = len(cache.output().splitlines())

        config.write_text("log-queries: true\nlog-format: json\n")
        wait_reloads(cache, "ok", 1)
        cache.udp(query)
        switched = [json.loads(line) for line in new_lines(cache, seen, '"cache.query"')]
        assert [d["msg"] for d in switched if d["logger"] == "cache"] == ["reloaded settings (config file changed)"]
        [answer] = [d for d in switched if d["logger"] == "cache.query"]
        assert (answer["name"], answer["source"]) == ("web.default.svc.cluster.local.", "cache")
        seen += len(switched)

        config.write_text("log-queries: true\nlog-format: yaml\n")
        wait_reloads(cache, "failed", 1)
        cache.udp(query)
        refused = [json.loads(line) for line in new_lines(cache, seen, '"cache.query"')]  # still JSON
        assert any(d["level"] == "ERROR" and "log-format: 'yaml': expected text or json" in d["msg"] for d in refused)
        seen += len(refused)

        config.write_text("log-queries: true\nlog-format: text\n")
        wait_reloads(cache, "ok", 2)
        cache.udp(query)
        back = new_lines(cache, seen, "cache.query")
        assert back[-1].split(" ", 2)[2].startswith("INFO cache.query: 127.0.0.1:")
    finally:
        cache.stop()


def test_the_level_follows_the_config_file(tmp_path, kube_dns):
    """`log-level` is switched by a reload too (it was read once at start and silently kept); a level the logging
    module does not have is refused, and the level in force stays."""
    config = tmp_path / "cache.yaml"
    config.write_text("log-level: info\n")
    cache = Cache(tmp_path, "--config", str(config), kube_dns=kube_dns)
    try:
        config.write_text("log-level: warning\n")
        wait_reloads(cache, "ok", 1)
        config.write_text("log-level: loud\n")
        wait_reloads(cache, "failed", 1)
        assert "log-level: 'loud': expected debug, info, warning, error" in cache.output()
        config.write_text("log-level: warning\n# a change that is not one of level\n")
        wait_reloads(cache, "ok", 2)
        # At warning, the INFO line of each reload is not written; the refusal (ERROR) is.
        assert cache.output().count("reloaded settings") == 0, cache.output()
        config.write_text("log-level: info\n")
        wait_reloads(cache, "ok", 3)
        new_lines(cache, 0, "reloaded settings")
    finally:
        cache.stop()
