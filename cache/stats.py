"""What the cache counts, as plain ints and dicts that the hot path adds to (a prometheus-client counter takes a lock
per increment). Rendering them for Prometheus is metrics.py's job; nothing here knows the text format."""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# Upstream exchange durations, in seconds: 0.25 ms (a hit-fast kube-dns) to 8 s (beyond every timeout).
DURATION_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
                    2.048, 4.096, 8.192)


class Histogram:
    """A labelled histogram with fixed buckets (cumulative counts are computed when rendered)."""

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # labels -> (per bucket, [sum])

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1][0] += value


def _counts() -> defaultdict[Any, int]:
    return defaultdict(int)


@dataclass
class Stats:
    requests: defaultdict[tuple[str, str, int], int] = field(default_factory=_counts)  # (proto, family, qtype)
    responses: defaultdict[int, int] = field(default_factory=_counts)  # rcode
    hits: defaultdict[str, int] = field(default_factory=_counts)  # "success" / "denial"
    misses: int = 0
    prefetch: int = 0
    served_stale: int = 0
    dropped: defaultdict[str, int] = field(default_factory=_counts)  # reason
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
    query_log_dropped: int = 0  # query log lines over the rate limit, or with the writer stuck
    fallback_armed: int | None = None  # 1: the kernel's fail-open rules can act (>= 1 endpoint); None: fallback off
    fallback_endpoints: int = 0  # endpoints the fallback chains hold
    fallback_last_refresh: float = 0.0  # unix time the endpoints were last resolved and programmed
