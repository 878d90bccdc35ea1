"""Every metric in one place, named as CoreDNS names them, so NodeLocal DNS dashboards and alerts keep working.

What is counted lives in `Stats` (stats.py); this module only renders it. The Prometheus text format (version
0.0.4) is written here rather than by prometheus-client: importing that package (it pulls in http.server, urllib,
email...) costs about 5 MB of RSS on every node, an eighth of the cache's memory budget. The tests parse this
output with prometheus-client's own parser.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .stats import Histogram, Stats
from .store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
              35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY"}


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, str(rcode))


class Metrics:
    """Renders one cache instance's metrics: counters from Stats, entry gauges and evictions from the store."""

    def __init__(self, stats: Stats, store: Store) -> None:
        self.stats, self.store = stats, store

    def render(self) -> tuple[bytes, str]:
        s = self.stats
        out: list[str] = []
        _family(out, "coredns_dns_requests_total", "counter", "Queries received.",
                [((("family", family), ("proto", proto), ("type", TYPE_NAMES.get(qtype, "other"))), n)
                 for (proto, family, qtype), n in list(s.requests.items())])
        _family(out, "coredns_dns_responses_total", "counter", "Responses sent, by rcode.",
                [((("rcode", rcode_name(rcode)),), n) for rcode, n in list(s.responses.items())])
        _labelled(out, "coredns_cache_hits_total", "counter", "Answers from the cache.", "type", s.hits)
        _family(out, "coredns_cache_misses_total", "counter", "Queries the cache could not answer.", [((), s.misses)])
        _family(out, "coredns_cache_prefetch_total", "counter", "Entries refreshed before they expired.",
                [((), s.prefetch)])
        _family(out, "coredns_cache_served_stale_total", "counter",
                "Expired answers served while upstreams failed.", [((), s.served_stale)])
        _labelled(out, "coredns_cache_evictions_total", "counter", "Entries evicted to stay within the size.",
                  "type", self.store.evictions)
        _labelled(out, "coredns_cache_entries", "gauge", "Entries in the cache.", "type", self.store.sizes())
        _labelled(out, "coredns_forward_requests_total", "counter", "Queries sent upstream.", "to",
                  s.forward_requests)
        _family(out, "coredns_forward_responses_total", "counter", "Upstream answers.",
                [((("rcode", rcode_name(rcode)), ("to", to)), n)
                 for (to, rcode), n in list(s.forward_responses.items())])
        _histogram(out, "coredns_forward_request_duration_seconds", "Duration of upstream exchanges.",
                   ("to", "rcode"), s.forward_duration)
        _labelled(out, "coredns_forward_healthcheck_failures_total", "counter",
                  "Failed upstream exchanges and health checks.", "to", s.healthcheck_failures)
        _family(out, "coredns_forward_healthcheck_broken_total", "counter", "Times every upstream of a zone was down.",
                [((), s.healthcheck_broken)])
        _labelled(out, "coredns_nodecache_setup_errors_total", "counter", "Node network setup errors.", "errortype",
                  s.setup_errors)
        _labelled(out, "localdns_forward_mismatched_answers_total", "counter",
                  "Upstream answers dropped: wrong ID or question.", "to", s.forward_spoofed)
        _labelled(out, "localdns_forward_bad_answers_total", "counter",
                  "Upstream answers not used (malformed, truncated, OPT out of place): SERVFAIL, not cached.", "zone",
                  s.bad_answers)
        _labelled(out, "localdns_dropped_queries_total", "counter", "Packets dropped without an answer.", "reason",
                  s.dropped)
        _family(out, "localdns_loops_detected_total", "counter", "Our own loop probe came back to us.",
                [((), s.loops_detected)])
        _labelled(out, "localdns_config_reloads_total", "counter", "Config file reloads.", "result", s.config_reloads)
        _family(out, "localdns_query_log_dropped_total", "counter", "Query log lines dropped by the rate limit.",
                [((), s.query_log_dropped)])
        if s.fallback_armed is not None:  # absent with --fallback-endpoints none
            _family(out, "localdns_fallback_armed", "gauge",
                    "1 when the node's fail-open rules send queries to kube-dns while no cache is bound.",
                    [((), s.fallback_armed)])
            _family(out, "localdns_fallback_endpoints", "gauge", "kube-dns endpoints the fail-open rules hold.",
                    [((), s.fallback_endpoints)])
            _family(out, "localdns_fallback_last_refresh_timestamp_seconds", "gauge",
                    "Unix time the fail-open endpoints were last resolved and programmed (0: never).",
                    [((), s.fallback_last_refresh)])
        return "".join(out).encode(), CONTENT_TYPE


def _histogram(out: list[str], name: str, doc: str, label_names: tuple[str, ...], histogram: Histogram) -> None:
    out.append(f"# HELP {name} {doc}\n# TYPE {name} histogram\n")
    for labels, (counts, total) in list(histogram.series.items()):
        base = tuple(zip(label_names, labels))
        cumulative = 0
        for bound, count in zip((*histogram.buckets, float("inf")), counts):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f"{name}_bucket{_labels((('le', le), *base))} {float(cumulative)!r}\n")
        out.append(f"{name}_count{_labels(base)} {float(cumulative)!r}\n")
        out.append(f"{name}_sum{_labels(base)} {float(total[0])!r}\n")


def _family(out: list[str], name: str, kind: str, doc: str,
            samples: Iterable[tuple[tuple[tuple[str, str], ...], float]]) -> None:
    out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")  # text format 0.0.4: the sample's own name
    for labels, value in samples:
        out.append(f"{name}{_labels(labels)} {float(value)!r}\n")


def _labelled(out: list[str], name: str, kind: str, doc: str, label: str, values: Mapping[Any, int]) -> None:
    _family(out, name, kind, doc, [(((label, str(key)),), n) for key, n in list(values.items())])


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    escaped = (f'{key}="{_escape(value)}"' for key, value in sorted(pairs))
    return "{" + ",".join(escaped) + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
