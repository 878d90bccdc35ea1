"""The DNS scenarios: hits, fixed rate, misses, memory.

Hit and fixed-rate runs are interleaved: every cache is started (each idle, pinned to the server core), then the
hit load and the fixed-rate load visit them in turn, `hit_repeats` rounds, so that a burst of load from elsewhere on the host falls on all of them alike
instead of on whichever ran at that moment. The other scenarios then run one cache at a time, each stopped after.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import dnsperf, procs
from bench.servers import ZONE, Cache, Names

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plan:
    hit_seconds: float
    hit_repeats: int
    rate_seconds: float
    rate_qps: int
    miss_seconds: float
    fill_seconds: float  # bound for each fill pass (positive, negative)


FULL = Plan(hit_seconds=10, hit_repeats=3, rate_seconds=10, rate_qps=10_000, miss_seconds=10, fill_seconds=60)
QUICK = Plan(hit_seconds=3, hit_repeats=1, rate_seconds=3, rate_qps=10_000, miss_seconds=3, fill_seconds=30)


@dataclass
class Running:
    """One started server and its figures so far."""

    cache: Cache
    process: procs.Process
    port: int
    figures: dict
    hit_runs: list[tuple[float, dnsperf.Result]] = field(default_factory=list)
    rate_runs: list[tuple[float, dnsperf.Result]] = field(default_factory=list)


def _loaded(process: procs.Process, run) -> tuple[dnsperf.Result, float]:
    """Run a load; return its result and the server's CPU µs per answered query during it."""
    before = process.cpu_seconds()
    result = run()
    used = process.cpu_seconds() - before
    return result, (used / result.completed * 1e6 if result.completed else float("nan"))


def start(cache: Cache, upstream_port: int, work: Path, log_dir: Path) -> Running:
    """Start a server, wait until it answers, note its idle RSS and warm its cache with the hit names."""
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


def hit_run(running: Running, names: Names, plan: Plan, say=print) -> None:
    # Rounds are further apart than the names' 30 s TTL: warm again first, so that every cache is measured on hits
    # alone and not on the upstream's speed for the misses that start a round (UDP for some caches, TCP for ours).
    warm(running, names)
    result, cpu_us = _loaded(running.process, lambda: dnsperf.run(running.port, names.hits, plan.hit_seconds))
    running.hit_runs.append((cpu_us, result))
    say(f"  {running.cache.name} hits: {result.qps:,.0f} QPS, {cpu_us:.2f} µs CPU/query, "
        f"avg {result.avg_latency * 1e3:.3f} ms, max {result.max_latency * 1e3:.2f} ms, lost {result.lost}")


def hit_figures(running: Running) -> dict:
    """The median hit run by CPU per query, and every run's CPU for the spread."""
    cpu_us, result = sorted(running.hit_runs, key=lambda r: r[0])[len(running.hit_runs) // 2]
    return {"hit_qps": result.qps, "hit_cpu_us": cpu_us, "hit_cpu_us_all": [r[0] for r in running.hit_runs],
            "hit_avg_ms": result.avg_latency * 1e3, "hit_max_ms": result.max_latency * 1e3, "hit_lost": result.lost}


def rate_run(running: Running, names: Names, plan: Plan, say=print) -> None:
    """The hit names at a fixed rate, every query's latency kept (dnsperf -v); right after a hit run, so warm."""
    result, cpu_us = _loaded(running.process, lambda: dnsperf.run(running.port, names.hits, plan.rate_seconds,
                                                                   qps=plan.rate_qps, verbose=True))
    running.rate_runs.append((cpu_us, result))
    say(f"  {running.cache.name} at {plan.rate_qps} QPS: avg {result.avg_latency * 1e3:.3f} ms, "
        f"p99 {result.percentile(99) * 1e3:.3f} ms, lost {result.lost}")


def rate_figures(running: Running) -> dict:
    """The median fixed-rate run by p99, and every run's p99 for the spread."""
    runs = sorted(running.rate_runs, key=lambda r: r[1].percentile(99))
    cpu_us, result = runs[len(runs) // 2]
    return {"rate_qps": result.qps, "rate_avg_ms": result.avg_latency * 1e3,
            "rate_p50_ms": result.percentile(50) * 1e3, "rate_p99_ms": result.percentile(99) * 1e3,
            "rate_p99_ms_all": [r[1].percentile(99) * 1e3 for r in running.rate_runs],
            "rate_max_ms": result.max_latency * 1e3, "rate_lost": result.lost, "rate_cpu_us": cpu_us}


def rest(running: Running, names: Names, plan: Plan, say=print) -> dict:
    """Miss-heavy and fill, on one server after its hit and fixed-rate rounds."""
    process, port, name, figures = running.process, running.port, running.cache.name, running.figures
    figures.update(hit_figures(running))
    if running.rate_runs:
        figures.update(rate_figures(running))

    rss_before = process.rss_kib()
    result, cpu_us = _loaded(process, lambda: dnsperf.run(port, names.misses, plan.miss_seconds, max_runs=1))
    figures.update(miss_qps=result.qps, miss_completed=result.completed, miss_lost=result.lost,
                   miss_cpu_us=cpu_us, miss_rss_growth_kib=process.rss_kib() - rss_before)
    say(f"  {name} misses: {result.qps:,.0f} QPS, {cpu_us:.1f} µs CPU/query, lost {result.lost}, "
        f"RSS +{figures['miss_rss_growth_kib'] / 1024:.1f} MiB")

    for label, path in (("fill", names.fill), ("negative", names.negative)):
        result = dnsperf.run(port, path, plan.fill_seconds, max_runs=1)
        figures[f"{label}_completed"] = result.completed
        figures[f"{label}_lost"] = result.lost
    time.sleep(0.5)
    figures["rss_full_kib"] = process.rss_kib()
    say(f"  {name} RSS idle {figures['rss_idle_kib'] / 1024:.1f} MiB, full {figures['rss_full_kib'] / 1024:.1f} MiB "
        f"(filled {figures['fill_completed']} positive, {figures['negative_completed']} negative)")
    return figures


def measure_hits(cache: Cache, names: Names, plan: Plan, work: Path, log_dir: Path, say=print) -> dict:
    """Cache-hit load only (for the listener floor, which has no cache to fill and no upstream)."""
    running = start(cache, 0, work, log_dir)
    try:
        for _ in range(plan.hit_repeats):
            hit_run(running, names, plan, say)
        return {**running.figures, **hit_figures(running)}
    finally:
        running.process.stop()
