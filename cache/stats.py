"""What the cache counts, as plain ints and dicts that the hot path adds to (a prometheus-client counter takes a lock
per increment). Rendering them for Prometheus is metrics.py's job; nothing here knows the text format."""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

# Query types counted under their own name (CoreDNS's list, about); every other type is counted as OTHER, so a client
# asking for all 65,536 types adds one series, not 65,536. Every label of every metric has such a bounded set of
# values, and keys are made of label values as they are counted: the page is as small as the set of labels allows.
TYPE_LABELS: Final = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
               35: "NAPTR", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 64: "SVCB", 65: "HTTPS",
               251: "IXFR", 252: "AXFR", 255: "ANY"}
OTHER: Final = "other"

# Upstream exchange durations, in seconds: 0.25 ms (a hit-fast kube-dns) to 8 s (beyond every timeout).
DURATION_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
                    2.048, 4.096, 8.192)


class Histogram:
    """A labelled histogram with fixed buckets (cumulative counts are computed when rendered)."""

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # labels -> (per bucket, [sum])

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        self.add(self.series_of(labels), value)

    def series_of(self, labels: tuple[str, ...]) -> tuple[list[int], list[float]]:
        """The series of these labels, made on first use. A caller that observes often keeps it and calls `add`,
        so that no key is built and hashed per observation."""
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        return series

    def add(self, series: tuple[list[int], list[float]], value: float) -> None:
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1][0] += value


def _counts() -> defaultdict[Any, int]:
    return defaultdict(int)


@dataclass
class Stats:
    requests: defaultdict[tuple[str, str, str], int] = field(default_factory=_counts)  # (proto, family, type label)
    responses: defaultdict[int, int] = field(default_factory=_counts)  # rcode: 0-15 from a header, or BADVERS
    hits: defaultdict[str, int] = field(default_factory=_counts)  # "success" / "denial"
    misses: int = 0
    prefetch: int = 0
    served_stale: int = 0
    dropped: defaultdict[str, int] = field(default_factory=_counts)  # reason: a fixed string from the code
    forward_requests: defaultdict[str, int] = field(default_factory=_counts)  # upstream
    forward_responses: defaultdict[tuple[str, int], int] = field(default_factory=_counts)  # (upstream, rcode)
    forward_duration: Histogram = field(default_factory=Histogram)  # labels (upstream, rcode name)
    forward_spoofed: defaultdict[str, int] = field(default_factory=_counts)  # upstream
    bad_answers: defaultdict[str, int] = field(default_factory=_counts)  # zone: upstream answers not used
    healthcheck_failures: defaultdict[str, int] = field(default_factory=_counts)  # upstream
    healthcheck_broken: int = 0  # every upstream of a zone was down at once
    setup_errors: defaultdict[str, int] = field(default_factory=_counts)  # errortype
    loops_detected: int = 0
    config_reloads: defaultdict[str, int] = field(default_factory=_counts)  # "ok" / "failed"
    tcp_connections: int = 0  # client connections open now (a gauge)
    query_log_dropped: int = 0  # query log lines over the rate limit, or with the writer stuck
    fallback_armed: int | None = None  # 1: the kernel's fail-open rules can act (>= 1 endpoint); None: fallback off
    fallback_endpoints: int = 0  # endpoints the fallback chains hold
    fallback_last_refresh: float = 0.0  # unix time the endpoints were last resolved and programmed
