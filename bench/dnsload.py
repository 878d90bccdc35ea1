"""The DNS scenarios: cache hits, fixed rates, misses, and memory with both caches full.

Every cache is started first (each idle, pinned to the server core). Then `rounds` rounds each visit every cache in
turn for its hit run, its fixed-rate runs and its miss run, so that a burst of load from elsewhere on the host falls
on all of them alike instead of on whichever ran at that moment, and a ratio between two servers can be taken round
by round: its spread over the rounds tells a real difference from a lucky round. Then each cache, one at a time, is
filled past its size caps (RSS with both caches full) and stopped.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench import dnsperf, procs
from bench.servers import ZONE, Cache, Names

ROOT = Path(__file__).resolve().parent.parent
HIT, MISS = "hit", "miss"


def rate_scenario(qps: int) -> str:
    return f"rate {qps}"


@dataclass(frozen=True)
class Plan:
    rounds: int
    hit_seconds: float
    rates: tuple[tuple[int, float], ...]  # (queries per second, seconds) of each fixed-rate level
    miss_seconds: float
    miss_names: int  # unique names per round (each round asks its own, so every one is a miss everywhere)
    fill_seconds: float  # bound for each fill pass (positive, negative)

    def with_rounds(self, rounds: int) -> Plan:
        return Plan(rounds, self.hit_seconds, self.rates, self.miss_seconds, self.miss_names, self.fill_seconds)


FULL = Plan(rounds=3, hit_seconds=10, rates=((1_000, 10), (10_000, 10), (50_000, 5)), miss_seconds=10,
            miss_names=300_000, fill_seconds=60)
QUICK = Plan(rounds=1, hit_seconds=3, rates=((1_000, 2), (10_000, 2), (50_000, 2)), miss_seconds=3,
             miss_names=30_000, fill_seconds=30)


@dataclass
class Running:
    """One started server and its figures so far."""

    cache: Cache
    process: procs.Process
    port: int
    figures: dict
    rounds: dict[str, list[dict]] = field(default_factory=dict)  # scenario -> its figures, one dict per round
    commands: dict[str, str] = field(default_factory=dict)  # scenario -> the dnsperf command (port left out)


def _loaded(running: Running, scenario: str, round_: int, run: Callable[[], dnsperf.Result]) -> dict:
    """Run a load and keep this round's figures: dnsperf's, and the server's CPU µs and wakeups (voluntary context
    switches) per answered query."""
    process = running.process
    before, woken = process.cpu_seconds(), process.wakeups()
    result = run()
    used, woken = process.cpu_seconds() - before, process.wakeups() - woken
    running.commands.setdefault(scenario, result.command)
    answered = result.completed or None
    figures = {"round": round_, "qps": result.qps, "completed": result.completed, "lost": result.lost,
               "cpu_us": used / answered * 1e6 if answered else None,
               "wakeups_per_query": woken / answered if answered else None,
               "avg_ms": result.avg_latency * 1e3, "max_ms": result.max_latency * 1e3}
    if result.latencies:
        figures.update(p50_ms=result.percentile(50) * 1e3, p99_ms=result.percentile(99) * 1e3)
    running.rounds.setdefault(scenario, []).append(figures)
    return figures


def start(cache: Cache, upstream_port: int, work: Path, log_dir: Path) -> Running:
    """Start a server, wait until it answers, note its idle RSS."""
    port = procs.free_port()
    cache_work = work / cache.name
    cache_work.mkdir(exist_ok=True)
    env = {**os.environ, **cache.env} if cache.env else None
    process = procs.start(cache.name, cache.argv(cache_work, port, upstream_port), log_dir, env=env, cwd=ROOT)
    try:
        procs.wait_for_dns(process, port, f"h0.{ZONE}")
        time.sleep(1.0)
        return Running(cache, process, port, {"name": cache.name, "rss_idle_kib": process.rss_kib()})
    except BaseException:
        process.stop()
        raise


def warm(running: Running, names: Names) -> None:
    dnsperf.run(running.port, names.hits, 5, max_runs=20)  # every hit name cached


def hit_run(running: Running, names: Names, plan: Plan, round_: int, say=print) -> None:
    # Rounds are further apart than the names' 30 s TTL: warm again first, so that every cache is measured on hits
    # alone and not on the upstream's speed for the misses that start a round (UDP for some caches, TCP for ours).
    warm(running, names)
    f = _loaded(running, HIT, round_, lambda: dnsperf.run(running.port, names.hits, plan.hit_seconds))
    say(f"  {running.cache.name} hits: {f['qps']:,.0f} QPS, {f['cpu_us']:.2f} µs CPU/query, "
        f"avg {f['avg_ms']:.3f} ms, max {f['max_ms']:.2f} ms, lost {f['lost']}")


def rate_runs(running: Running, names: Names, plan: Plan, round_: int, say=print) -> None:
    """The hit names at each fixed rate, every query's latency kept (dnsperf -v)."""
    for qps, seconds in plan.rates:
        warm(running, names)
        f = _loaded(running, rate_scenario(qps), round_,
                    partial(dnsperf.run, running.port, names.hits, seconds, qps=qps, verbose=True))
        say(f"  {running.cache.name} at {qps:,} QPS: {f['cpu_us']:.2f} µs CPU/query, p50 {f['p50_ms']:.3f} ms, "
            f"p99 {f['p99_ms']:.3f} ms, lost {f['lost']}")


def miss_run(running: Running, names: Names, plan: Plan, round_: int, say=print) -> None:
    """This round's unique names, each asked once: every query goes to the upstream (TCP for localdns and
    unbound-tcp, UDP for the others)."""
    rss_before = running.process.rss_kib()
    f = _loaded(running, MISS, round_, lambda: dnsperf.run(running.port, names.misses[round_ % len(names.misses)],
                                                           plan.miss_seconds, max_runs=1))
    f["rss_growth_kib"] = running.process.rss_kib() - rss_before
    say(f"  {running.cache.name} misses: {f['qps']:,.0f} QPS, {f['cpu_us']:.1f} µs CPU/query, lost {f['lost']}, "
        f"RSS +{f['rss_growth_kib'] / 1024:.1f} MiB")


def fill(running: Running, names: Names, plan: Plan, say=print) -> dict:
    """More positive and negative names than any cache's size cap, then the RSS with both caches full; returns
    every figure of this server (the rounds included)."""
    figures = running.figures
    for label, path in (("fill", names.fill), ("negative", names.negative)):
        result = dnsperf.run(running.port, path, plan.fill_seconds, max_runs=1)
        running.commands.setdefault(label, result.command)
        figures[f"{label}_completed"] = result.completed
        figures[f"{label}_lost"] = result.lost
    time.sleep(0.5)
    figures["rss_full_kib"] = running.process.rss_kib()
    say(f"  {running.cache.name} RSS idle {figures['rss_idle_kib'] / 1024:.1f} MiB, full "
        f"{figures['rss_full_kib'] / 1024:.1f} MiB (filled {figures['fill_completed']} positive, "
        f"{figures['negative_completed']} negative)")
    return {**figures, "rounds": running.rounds}


def measure_hits(cache: Cache, names: Names, plan: Plan, work: Path, log_dir: Path, say=print) -> dict:
    """Cache-hit load only (for the listener floor, which has no cache to fill and no upstream)."""
    running = start(cache, 0, work, log_dir)
    try:
        for round_ in range(plan.rounds):
            hit_run(running, names, plan, round_, say)
        return {**running.figures, "rounds": running.rounds}
    finally:
        running.process.stop()
