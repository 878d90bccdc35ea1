"""What one scrape of /metrics costs the event loop: `Metrics.render()` on a prepared `Stats`.

`python -m bench.metricscost STATE RENDERS` fills the counters and renders RENDERS times; STATE is `busy` (every
named query type over UDP and TCP, IPv4 and IPv6, every rcode, 3 upstreams answering with 4 rcodes each) or `flood`
(the same after one client asked for all 65,536 query types). Instructions per render, repeatable on a shared
machine: run it under callgrind with RENDERS=0 and RENDERS=N and divide the difference by N,

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m bench.metricscost busy 20   # "Collected"

and `--tree DIR` measures another checkout's cache/ (e.g. the code before a change) with the same counters.
"""
from __future__ import annotations

import argparse
import sys
import time

ROUTES = ("tcp://10.96.0.10:53", "udp://10.0.0.2:53", "udp://10.0.0.3:53")
TYPES = (1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 43, 46, 47, 48, 50, 64, 65, 255, 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("state", choices=("busy", "flood"))
    parser.add_argument("renders", type=int)
    parser.add_argument("--tree", help="a checkout whose cache/ to measure instead of this one")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    import cache.stats as stats_module
    from cache.limits import Limits
    from cache.metrics import Metrics
    from cache.store import Store

    labels = getattr(stats_module, "TYPE_LABELS", None)  # None: a tree that counted raw query types
    stats = stats_module.Stats()
    for proto in ("udp", "tcp"):
        for family in ("1", "2"):
            for qtype in range(65536) if args.state == "flood" else TYPES:
                key = qtype if labels is None else labels.get(qtype, stats_module.OTHER)
                stats.requests[(proto, family, key)] += 1
    for rcode in (0, 1, 2, 3, 4, 5, 16):
        stats.responses[rcode] += 1000
    stats.hits["success"] += 5
    stats.hits["denial"] += 5
    for to in ROUTES:
        stats.forward_requests[to] += 100
        for rcode, name in ((0, "NOERROR"), (2, "SERVFAIL"), (3, "NXDOMAIN"), (5, "REFUSED")):
            stats.forward_responses[(to, rcode)] += 10
            for seconds in (0.0003, 0.002, 0.05, 1.5):
                stats.forward_duration.observe((to, name), seconds)
        stats.healthcheck_failures[to] += 1
        stats.forward_spoofed[to] += 1
    for reason in ("shorter than a DNS header", "a response sent to us", "too many identical queries in flight",
                   "tcp connection limit", "tcp per-client connection limit", "tcp client not reading"):
        stats.dropped[reason] += 1
    for errortype in ("interfaceadd", "iptables", "iptables_lock", "configmap"):
        stats.setup_errors[errortype] += 0
    stats.config_reloads["ok"] += 1
    metrics = Metrics(stats, Store(Limits()))
    size, started = 0, time.perf_counter()
    for _ in range(args.renders):
        size = len(metrics.render()[0])
    if args.renders:
        took = (time.perf_counter() - started) / args.renders
        print(f"{args.state}: {size} bytes, {took * 1000:.2f} ms per render (wall time)", file=sys.stderr)


if __name__ == "__main__":
    main()
