"""What one query log line costs the cache (`--log-queries`): the answer's `send` wrapped, filtered, rate-checked,
formatted and written, in the text or the JSON format, every line to /dev/null.

`python -m bench.querylogcost FORMAT LINES` logs LINES answers (100 names, A with EDNS, one address each) the way the
resolver does. Instructions per line, repeatable on a shared machine: run it under callgrind with LINES=0 and
LINES=N and divide the difference by N,

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m bench.querylogcost json 20000  # "Collected"

The writer thread's work is counted too (callgrind runs every thread). `--tree DIR` measures another checkout's
cache/ (e.g. the code before a change; text only there if it has no JSON format).
"""
from __future__ import annotations

import argparse
import os
import sys

BATCH = 2000  # lines queued before the writer is made to drain them: fewer than the queue holds, so none dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("format", choices=("text", "json"))
    parser.add_argument("lines", type=int)
    parser.add_argument("--tree", help="a checkout whose cache/ to measure instead of this one")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)
    import dns.message
    import dns.rrset

    from cache.querylog import CLASSES, QueryLog
    from cache.stats import Stats

    pairs = []
    for index in range(100):
        query = dns.message.make_query(f"web-{index}.default.svc.cluster.local", "A", use_edns=0, payload=1232)
        reply = dns.message.make_response(query, recursion_available=True)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A", f"10.0.0.{index}"))
        pairs.append((query.to_wire(), reply.to_wire()))
    stats = Stats()
    with open(os.devnull, "w") as devnull:
        log = QueryLog(stats, rate=1e9, burst=10**9, stream=devnull)
        if args.format == "json":
            log.configure(frozenset(CLASSES), 1e9, 10**9, "json")
        addr = ("10.0.0.5", 41234)
        for start in range(0, args.lines, BATCH):
            for index in range(start, min(start + BATCH, args.lines)):
                data, reply = pairs[index % 100]
                log.watch(data, addr, lambda reply, addr: None, "udp")(reply, addr)
            log.close(timeout=60)
    if stats.query_log_dropped:
        raise SystemExit(f"{stats.query_log_dropped} lines dropped: the count is not per line")
    print(f"{args.lines} {args.format} lines logged")


if __name__ == "__main__":
    main()
