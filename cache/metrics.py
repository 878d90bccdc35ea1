"""Every metric in one place, named as CoreDNS names them, so NodeLocal DNS dashboards and alerts keep working.

The hit path only adds to plain ints and dicts in `Stats` (a prometheus-client counter takes a lock per
increment); a collector turns them into metric families when Prometheus scrapes.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 16: "BADVERS"}
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
              35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY"}


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, str(rcode))


@dataclass
class Stats:
    requests: defaultdict = field(default_factory=lambda: defaultdict(int))  # (proto, family, qtype) -> n
    responses: defaultdict = field(default_factory=lambda: defaultdict(int))  # rcode -> n
    hits: defaultdict = field(default_factory=lambda: defaultdict(int))  # "success"/"denial" -> n
    misses: int = 0
    prefetch: int = 0
    served_stale: int = 0
    dropped: defaultdict = field(default_factory=lambda: defaultdict(int))  # reason -> n
    forward_requests: defaultdict = field(default_factory=lambda: defaultdict(int))  # upstream -> n
    forward_responses: defaultdict = field(default_factory=lambda: defaultdict(int))  # (upstream, rcode) -> n
    forward_spoofed: defaultdict = field(default_factory=lambda: defaultdict(int))  # upstream -> n
    healthcheck_failures: defaultdict = field(default_factory=lambda: defaultdict(int))  # upstream -> n
    healthcheck_broken: int = 0  # every upstream of a zone was down at once
    setup_errors: defaultdict = field(default_factory=lambda: defaultdict(int))  # errortype -> n
    loops_detected: int = 0
    config_reloads: defaultdict = field(default_factory=lambda: defaultdict(int))  # "ok"/"failed" -> n


class Metrics:
    """The registry of one cache instance: counters from Stats, entry gauges from the store, one histogram."""

    def __init__(self, stats: Stats, entry_sizes: Callable[[], dict[str, int]],
                 evictions: Callable[[], dict[str, int]]) -> None:
        self.stats = stats
        self.registry = CollectorRegistry(auto_describe=True)
        self.forward_duration = Histogram(
            "coredns_forward_request_duration_seconds", "Duration of upstream exchanges.", ["to", "rcode"],
            registry=self.registry, buckets=(0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
                                             0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192))
        self._collector = _StatsCollector(stats, entry_sizes, evictions)
        self.registry.register(self._collector)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _StatsCollector:
    def __init__(self, stats: Stats, entry_sizes: Callable[[], dict[str, int]],
                 evictions: Callable[[], dict[str, int]]) -> None:
        self.stats, self.entry_sizes, self.evictions = stats, entry_sizes, evictions

    def collect(self) -> Iterator:
        s = self.stats
        requests = CounterMetricFamily("coredns_dns_requests", "Queries received.", labels=["proto", "family", "type"])
        for (proto, family, qtype), n in list(s.requests.items()):
            requests.add_metric([proto, family, TYPE_NAMES.get(qtype, "other")], n)
        yield requests
        yield _counter("coredns_dns_responses", "Responses sent, by rcode.", "rcode",
                       {rcode_name(k): v for k, v in list(s.responses.items())})
        yield _counter("coredns_cache_hits", "Answers from the cache.", "type", dict(s.hits))
        yield _plain("coredns_cache_misses", "Queries the cache could not answer.", s.misses)
        yield _plain("coredns_cache_prefetch", "Entries refreshed before they expired.", s.prefetch)
        yield _plain("coredns_cache_served_stale", "Expired answers served while upstreams failed.", s.served_stale)
        yield _counter("coredns_cache_evictions", "Entries evicted to stay within the size.", "type", self.evictions())
        entries = GaugeMetricFamily("coredns_cache_entries", "Entries in the cache.", labels=["type"])
        for kind, n in self.entry_sizes().items():
            entries.add_metric([kind], n)
        yield entries
        yield _counter("coredns_forward_requests", "Queries sent upstream.", "to", dict(s.forward_requests))
        responses = CounterMetricFamily("coredns_forward_responses", "Upstream answers.", labels=["to", "rcode"])
        for (to, rcode), n in list(s.forward_responses.items()):
            responses.add_metric([to, rcode_name(rcode)], n)
        yield responses
        yield _counter("coredns_forward_healthcheck_failures", "Failed upstream exchanges and health checks.", "to",
                       dict(s.healthcheck_failures))
        yield _plain("coredns_forward_healthcheck_broken", "Times every upstream of a zone was down.",
                     s.healthcheck_broken)
        yield _counter("localdns_forward_mismatched_answers", "Upstream answers dropped: wrong ID or question.",
                       "to", dict(s.forward_spoofed))
        yield _counter("localdns_dropped_queries", "Packets dropped without an answer.", "reason", dict(s.dropped))
        yield _counter("coredns_nodecache_setup_errors", "Node network setup errors.", "errortype",
                       dict(s.setup_errors))
        yield _plain("localdns_loops_detected", "Our own loop probe came back to us.", s.loops_detected)
        yield _counter("localdns_config_reloads", "Config file reloads.", "result", dict(s.config_reloads))


def _counter(name: str, doc: str, label: str, values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in values.items():
        family.add_metric([str(key)], n)
    return family


def _plain(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
