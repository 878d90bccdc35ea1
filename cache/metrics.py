"""Every metric in one place, named as CoreDNS names them, so NodeLocal DNS dashboards and alerts keep working.

What is counted lives in `Stats` (stats.py); this module only renders it. The Prometheus text format (version
0.0.4) is written here rather than by prometheus-client: importing that package (it pulls in http.server, urllib,
email...) costs about 5 MB of RSS on every node, an eighth of the cache's memory budget. The tests parse this
output with prometheus-client's own parser.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .stats import Histogram, Stats
from .store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, str(rcode))


class Metrics:
    """Renders one cache instance's metrics: counters from Stats, entry gauges and evictions from the store.

    A scrape runs on the event loop, between queries, so it must stay cheap: each series' name and labels are
    formatted once, the first time it is rendered, and a scrape only writes the numbers after them. The set of
    series is bounded (see stats.py), and so is that memory.
    """

    def __init__(self, stats: Stats, store: Store) -> None:
        self.stats, self.store = stats, store
        self._prefixes: dict[tuple[str, Any], str] = {}  # (metric, key in Stats) -> 'metric{labels} '
        self._bucket_prefixes: dict[tuple[str, Any], list[str]] = {}  # the same for each line of a histogram

    def render(self) -> tuple[bytes, str]:
        s = self.stats
        out: list[str] = []
        family = self._family
        family(out, "coredns_dns_requests_total", "counter", "Queries received.", s.requests,
               lambda key: (("family", key[1]), ("proto", key[0]), ("type", key[2])))
        family(out, "coredns_dns_responses_total", "counter", "Responses sent, by rcode.", s.responses,
               lambda rcode: (("rcode", rcode_name(rcode)),))
        family(out, "coredns_cache_hits_total", "counter", "Answers from the cache.", s.hits, _label("type"))
        family(out, "coredns_cache_misses_total", "counter", "Queries the cache could not answer.", {(): s.misses})
        family(out, "coredns_cache_prefetch_total", "counter", "Entries refreshed before they expired.",
               {(): s.prefetch})
        family(out, "coredns_cache_served_stale_total", "counter", "Expired answers served while upstreams failed.",
               {(): s.served_stale})
        family(out, "coredns_cache_evictions_total", "counter", "Entries evicted to stay within the size.",
               self.store.evictions, _label("type"))
        family(out, "coredns_cache_entries", "gauge", "Entries in the cache.", self.store.sizes(), _label("type"))
        family(out, "coredns_forward_requests_total", "counter", "Queries sent upstream.", s.forward_requests,
               _label("to"))
        family(out, "coredns_forward_responses_total", "counter", "Upstream answers.", s.forward_responses,
               lambda key: (("rcode", rcode_name(key[1])), ("to", key[0])))
        self._histogram(out, "coredns_forward_request_duration_seconds", "Duration of upstream exchanges.",
                        ("to", "rcode"), s.forward_duration)
        family(out, "coredns_forward_healthcheck_failures_total", "counter",
               "Failed upstream exchanges and health checks.", s.healthcheck_failures, _label("to"))
        family(out, "coredns_forward_healthcheck_broken_total", "counter", "Times every upstream of a zone was down.",
               {(): s.healthcheck_broken})
        family(out, "coredns_nodecache_setup_errors_total", "counter", "Node network setup errors.", s.setup_errors,
               _label("errortype"))
        family(out, "localdns_forward_mismatched_answers_total", "counter",
               "Upstream answers dropped: wrong ID or question.", s.forward_spoofed, _label("to"))
        family(out, "localdns_forward_bad_answers_total", "counter",
               "Upstream answers not used (malformed, truncated, OPT out of place): SERVFAIL, not cached.",
               s.bad_answers, _label("zone"))
        family(out, "localdns_dropped_queries_total", "counter", "Packets dropped without an answer.", s.dropped,
               _label("reason"))
        family(out, "localdns_tcp_connections", "gauge", "TCP client connections open.", {(): s.tcp_connections})
        family(out, "localdns_loops_detected_total", "counter", "Our own loop probe came back to us.",
               {(): s.loops_detected})
        family(out, "localdns_config_reloads_total", "counter", "Config file reloads.", s.config_reloads,
               _label("result"))
        family(out, "localdns_query_log_dropped_total", "counter", "Query log lines dropped by the rate limit.",
               {(): s.query_log_dropped})
        if s.fallback_armed is not None:  # absent with --fallback-endpoints none
            family(out, "localdns_fallback_armed", "gauge",
                   "1 when the node's fail-open rules send queries to kube-dns while no cache is bound.",
                   {(): s.fallback_armed})
            family(out, "localdns_fallback_endpoints", "gauge", "kube-dns endpoints the fail-open rules hold.",
                   {(): s.fallback_endpoints})
            family(out, "localdns_fallback_last_refresh_timestamp_seconds", "gauge",
                   "Unix time the fail-open endpoints were last resolved and programmed (0: never).",
                   {(): s.fallback_last_refresh})
        return "".join(out).encode(), CONTENT_TYPE

    def _family(self, out: list[str], name: str, kind: str, doc: str, values: Mapping[Any, float],
                labels: Callable[[Any], Labels] = lambda key: ()) -> None:
        """One metric: its HELP and TYPE, then a line per key of `values`, labelled by `labels(key)`."""
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")  # text format 0.0.4: the sample's own name
        prefixes = self._prefixes
        for key, value in list(values.items()):
            prefix = prefixes.get((name, key))
            if prefix is None:
                prefix = prefixes[(name, key)] = f"{name}{_labels(labels(key))} "
            out.append(f"{prefix}{value}\n")

    def _histogram(self, out: list[str], name: str, doc: str, label_names: tuple[str, ...],
                   histogram: Histogram) -> None:
        out.append(f"# HELP {name} {doc}\n# TYPE {name} histogram\n")
        for key, (counts, total) in list(histogram.series.items()):
            prefixes = self._bucket_prefixes.get((name, key))
            if prefixes is None:
                base = tuple(zip(label_names, key))
                prefixes = self._bucket_prefixes[(name, key)] = [
                    *(f"{name}_bucket{_labels((('le', _le(bound)), *base))} "
                      for bound in (*histogram.buckets, float("inf"))),
                    f"{name}_count{_labels(base)} ", f"{name}_sum{_labels(base)} "]
            cumulative = 0
            for prefix, count in zip(prefixes, counts):
                cumulative += count
                out.append(f"{prefix}{cumulative}\n")
            out.append(f"{prefixes[-2]}{cumulative}\n{prefixes[-1]}{total[0]!r}\n")


Labels = tuple[tuple[str, str], ...]


def _label(label: str) -> Callable[[Any], Labels]:
    """Labels for a Stats dict whose keys are one label's values."""
    return lambda key: ((label, str(key)),)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _labels(pairs: Labels) -> str:
    if not pairs:
        return ""
    escaped = (f'{key}="{_escape(value)}"' for key, value in sorted(pairs))
    return "{" + ",".join(escaped) + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
