"""Which metric names a PromQL expression reads, and which names localdns exports, so that the tests can prove that
every alert and dashboard panel reads a series that exists: a renamed metric must fail a test, not silence an alert.

Exported names come from the programs themselves: the cache's exposition as its daemon renders it, and the
webhook's registry as prometheus-client renders it (the TYPE lines name every family even before it has a sample).
"""
from __future__ import annotations

import re

# The fail-open fallback's gauges (issue 12; the cache exports them while --fallback-endpoints is not `none`).
FALLBACK_CONTRACT = frozenset({
    "localdns_fallback_armed",
    "localdns_fallback_endpoints",
    "localdns_fallback_last_refresh_timestamp_seconds",
})
# Series that come from elsewhere: Prometheus' own per-target `up`, and kube-state-metrics'.
EXTERNAL = frozenset({"up", "kube_pod_status_ready", "kube_pod_info"})

# PromQL words that are not metric names when they stand alone (binary operators, modifiers, literals).
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                      "offset", "inf", "nan"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$:])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects. Label matchers, strings, ranges, grouping label lists, function
    and aggregation names (an identifier followed by `(`), keywords and numbers (`5m`, `1e3`) are not names."""
    if "__name__" in expr:
        raise ValueError(f"selects by __name__, which this check cannot follow: {expr}")
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers (strings are gone, so no brace is quoted)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0)
        if word.lower() in KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def exposition_names(text: str) -> set[str]:
    """Every series name a scrape of this exposition can hold: samples, and each TYPE line's family (a histogram's
    _bucket/_count/_sum, a summary's _count/_sum) whether or not it has samples yet."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            suffixes = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}
            names.update(name + suffix for suffix in suffixes.get(kind.strip(), ("",)))
        elif line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def exported_names() -> set[str]:
    """What the cache and the webhook export today, rendered by their own code: the cache's metrics as its daemon
    wires them (built, never started), the webhook's registry."""
    from prometheus_client import generate_latest

    from cache import config
    from cache.daemon import Daemon
    from webhook.metrics import Metrics as WebhookMetrics

    settings, _ = config.load(["--listen=127.0.0.1:53", "--kube-dns=192.0.2.53"], environ={})
    cache_text = Daemon(settings, environ={}).metrics.render()[0].decode()
    webhook = WebhookMetrics()
    webhook.watch_networkpolicies()  # as serve does by default (--networkpolicies watch)
    webhook_text = generate_latest(webhook.registry).decode()
    return exposition_names(cache_text) | exposition_names(webhook_text)


def known_names() -> set[str]:
    """Names an alert or a dashboard may read."""
    return exported_names() | FALLBACK_CONTRACT | EXTERNAL
