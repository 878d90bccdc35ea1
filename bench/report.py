"""docs/bench/: report.md and PNG charts from the figures of one run (results.json).

The report names its harness (commits, dnsperf's version and every command line) and the command that produced it,
gives a summary table ready to paste into the README, and shows every figure round by round with its spread: a
ratio between two servers is taken within each round (they ran minutes apart at most) and reported as its median
with the lowest and highest round, so that a reader can tell a real difference from a lucky round.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

MIB = 1024.0
LOCALDNS = "localdns"
PEERS = ("dnsmasq", "unbound", "unbound-tcp", "kresd")
ORDER = (LOCALDNS, "localdns-py", "localdns-plain", *PEERS)


@dataclass(frozen=True)
class Metric:
    label: str
    scenario: str  # a key of a cache's "rounds"
    key: str
    digits: int
    lower_is_better: bool = True


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    count: int

    def text(self, digits: int, unit: str = "") -> str:
        middle = f"{self.median:,.{digits}f}{unit}"
        if self.count < 2:
            return middle
        return f"{middle} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"


def spread(values: list[float]) -> Spread | None:
    return Spread(statistics.median(values), min(values), max(values), len(values)) if values else None


def metrics(results: dict, detailed: bool = False) -> list[Metric]:
    out = [Metric("cache hits: server CPU µs / query", "hit", "cpu_us", 2),
           Metric("cache hits: QPS (dnsperf-bound)", "hit", "qps", 0, False),
           Metric("misses (unique names): server CPU µs / query", "miss", "cpu_us", 1),
           Metric("misses: QPS", "miss", "qps", 0, False)]
    for qps, _ in results["plan"].get("rates", []):
        out += [Metric(f"steady {qps:,} QPS: server CPU µs / query", f"rate {qps}", "cpu_us", 2),
                Metric(f"steady {qps:,} QPS: p50 ms", f"rate {qps}", "p50_ms", 3),
                Metric(f"steady {qps:,} QPS: p99 ms", f"rate {qps}", "p99_ms", 3)]
    if detailed:  # how often the server slept and was woken: at a moderate rate, once per query costs the most
        out += [Metric(f"steady {qps:,} QPS: wakeups / query", f"rate {qps}", "wakeups_per_query", 3)
                for qps, _ in results["plan"].get("rates", [])]
    return out


def by_round(cache: dict, metric: Metric) -> dict[int, float]:
    """round -> figure, for the rounds in which this server measured it."""
    out = {}
    for figures in cache.get("rounds", {}).get(metric.scenario, []):
        value = figures.get(metric.key)
        if isinstance(value, int | float) and not math.isnan(value):
            out[figures["round"]] = float(value)
    return out


def figure(caches: dict, name: str, metric: Metric) -> Spread | None:
    return spread(list(by_round(caches.get(name, {}), metric).values()))


def ratios(caches: dict, metric: Metric, theirs: str, ours: str = LOCALDNS) -> Spread | None:
    """ours ÷ theirs, round by round (only rounds where both were measured)."""
    a, b = by_round(caches.get(ours, {}), metric), by_round(caches.get(theirs, {}), metric)
    return spread([a[r] / b[r] for r in sorted(a.keys() & b.keys()) if b[r] > 0])


def _mib(caches: dict, name: str, key: str) -> float | None:
    value = caches.get(name, {}).get(key)
    return value / MIB if isinstance(value, int | float) else None


def _single_ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}×" if ours is not None and theirs else "–"


def _measured(caches: dict) -> list[str]:
    return [n for n in ORDER if n in caches and caches[n].get("rounds")]


def summary(results: dict) -> list[str]:
    """The table for the README: localdns's figure and its ratio to each peer, median (min–max) over rounds."""
    caches = results["caches"]
    peers = [p for p in PEERS if p in _measured(caches)]
    lines = ["| figure | localdns | " + " | ".join(f"÷ {p}" for p in peers) + " |",
             "|---" * (len(peers) + 2) + "|"]
    for metric in metrics(results):
        ours = figure(caches, LOCALDNS, metric)
        if ours is None:
            continue
        cells = [(r.text(2, "×") if (r := ratios(caches, metric, p)) else "–") for p in peers]
        lines.append(f"| {metric.label} | {ours.text(metric.digits)} | " + " | ".join(cells) + " |")
    for label, key in (("RSS idle MiB", "rss_idle_kib"), ("RSS with both caches full MiB", "rss_full_kib")):
        ours_mib = _mib(caches, LOCALDNS, key)
        if ours_mib is not None:
            cells = [_single_ratio(ours_mib, _mib(caches, p, key)) for p in peers]
            lines.append(f"| {label} | {ours_mib:.1f} | " + " | ".join(cells) + " |")
    return lines


def detail(results: dict, metric: Metric) -> list[str]:
    """Every server's figure in every round, its median, and localdns ÷ it per round."""
    caches = results["caches"]
    rounds = results["plan"].get("rounds", 1)
    names = [n for n in _measured(caches) if by_round(caches[n], metric)]
    if not names:
        return []
    lines = [f"**{metric.label}**", "",
             "| server | " + " | ".join(f"round {r + 1}" for r in range(rounds)) + " | median | localdns ÷ it |",
             "|---" * (rounds + 3) + "|"]
    for name in names:
        values = by_round(caches[name], metric)
        cells = [f"{values[r]:,.{metric.digits}f}" if r in values else "–" for r in range(rounds)]
        middle = statistics.median(values.values())
        ratio = ratios(caches, metric, name) if name != LOCALDNS else None
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {middle:,.{metric.digits}f}"
                     f" | {ratio.text(2, '×') if ratio else ''} |")
    return [*lines, ""]


def memory(results: dict) -> list[str]:
    caches = results["caches"]
    names = [n for n in ORDER if n in caches and "rss_idle_kib" in caches[n]]
    unbound = caches.get("unbound", {})
    lines = ["| server | RSS idle MiB | ÷ unbound | RSS both caches full MiB | ÷ unbound | RSS growth over the first "
             "miss run MiB |", "|---|---|---|---|---|---|"]
    for name in names:
        idle, full = _mib(caches, name, "rss_idle_kib"), _mib(caches, name, "rss_full_kib")
        growth = next((f.get("rss_growth_kib") for f in caches[name].get("rounds", {}).get("miss", [])), None)
        lines.append(f"| {name} | {idle:.1f} | {_single_ratio(idle, _mib(caches, 'unbound', 'rss_idle_kib'))} | "
                     f"{f'{full:.1f}' if full is not None else '–'} | "
                     f"{_single_ratio(full, _mib(caches, 'unbound', 'rss_full_kib')) if unbound else '–'} | "
                     f"{f'{growth / MIB:.1f}' if growth is not None else '–'} |")
    return lines


def _ratio_target(caches: dict, target: str, metric: Metric, peer: str,
                  limit: float = 1.0) -> tuple[str, str, bool | None]:
    r, ours, theirs = ratios(caches, metric, peer), figure(caches, LOCALDNS, metric), figure(caches, peer, metric)
    if r is None or ours is None or theirs is None:
        return (target, "not measured", None)
    return (target, f"{r.text(2, '×')} per round; medians {ours.median:.{metric.digits}f} vs "
            f"{theirs.median:.{metric.digits}f}", r.median <= limit)


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each goal of issue 16 (and the webhook's of issue 8); met is None when a figure
    is missing. A ratio target is met when the median of its per-round ratios is."""
    caches, hooks = results.get("caches", {}), results.get("webhook", {})
    steady = "rate 10000"
    out = [_ratio_target(caches, "cache hits: CPU per query ≤ dnsmasq's", Metric("", "hit", "cpu_us", 2), "dnsmasq"),
           _ratio_target(caches, "misses: CPU per query ≤ unbound's over TCP", Metric("", "miss", "cpu_us", 1),
                         "unbound-tcp"),
           _ratio_target(caches, "misses (moonshot): CPU per query ≤ kresd's", Metric("", "miss", "cpu_us", 1),
                         "kresd"),
           _ratio_target(caches, "steady 10,000 QPS: CPU per query ≤ dnsmasq's", Metric("", steady, "cpu_us", 2),
                         "dnsmasq")]
    p99 = Metric("", steady, "p99_ms", 3)
    peers = [(p, s) for p in PEERS if (s := figure(caches, p, p99)) is not None]
    ours = figure(caches, LOCALDNS, p99)
    if ours and peers:
        best = min(peers, key=lambda ps: ps[1].median)[0]
        out.append(_ratio_target(caches, f"steady 10,000 QPS: p99 within 20% of the best peer's ({best})", p99,
                                 best, 1.2))
    else:
        out.append(("steady 10,000 QPS: p99 within 20% of the best peer's", "not measured", None))
    idle = _mib(caches, LOCALDNS, "rss_idle_kib")
    out.append(("RSS idle ≤ 20 MiB", f"{idle:.1f} MiB" if idle else "not measured", idle <= 20 if idle else None))
    full, unbound_full = _mib(caches, LOCALDNS, "rss_full_kib"), _mib(caches, "unbound", "rss_full_kib")
    out.append(("RSS with both caches full ≤ unbound's",
                f"{full:.1f} vs {unbound_full:.1f} MiB" if full and unbound_full else "not measured",
                full <= unbound_full if full and unbound_full else None))
    hook, floor = hooks.get("webhook"), hooks.get("floor")
    if hook and floor and "per_second" in hook and "per_second" in floor:
        share = hook["per_second"] / floor["per_second"]
        out.append(("webhook ≥ 70% of the floor's admissions/s",
                    f"{hook['per_second']:,.0f}/s vs {floor['per_second']:,.0f}/s = {share:.0%}", share >= 0.7))
    if hook and "rate_p99_ms" in hook:
        out.append((f"webhook p99 < 5 ms at {hook['rate']:g} admissions/s", f"{hook['rate_p99_ms']:.2f} ms",
                    hook["rate_p99_ms"] < 5))
    return out


def harness(results: dict) -> list[str]:
    env, plan = results["environment"], results["plan"]
    versions, timeout = env["versions"], results["dnsperf_timeout"]
    rates = ", ".join(f"{qps:,} QPS for {seconds:g} s" for qps, seconds in plan.get("rates", []))
    lines = ["## Harness", "",
             f"- command, from the repository root: `{results['command']}`"
             f"{' (quick smoke run: short loads, not for comparison)' if plan['quick'] else ''}",
             f"- localdns: {versions.get('localdns')}; the harness (bench/): {versions.get('bench')}",
             f"- machine: {env['cpu']} ({env['cores']} cores), Linux {env['kernel']}; run {env['date']}, "
             f"{results.get('elapsed_seconds', '?')} s",
             f"- plan: {plan['rounds']} round(s), each visiting every cache in turn for {plan['hit_seconds']:g} s of "
             f"cache hits, then each fixed rate ({rates}), then {plan['miss_seconds']:g} s of unique names "
             f"({plan['miss_names']:,} per round, no round asks another's); then each cache alone is filled with "
             f"{plan['fill']:,} positive and {plan['fill']:,} NXDOMAIN names",
             f"- dnsperf {versions.get('dnsperf')}, pinned to core 1 (`taskset -c 1`); a query unanswered after "
             f"{timeout:g} s counts as lost and, in a percentile, as {timeout:g} s:",
             ""]
    commands = results.get("dnsperf_commands", {})
    if commands:
        lines += ["| scenario | dnsperf command |", "|---|---|"]
        lines += [f"| {scenario} | `{command}` |" for scenario, command in commands.items()]
        lines.append("")
    lines += ["Servers run pinned to core 0 (`taskset -c 0`); dnsperf and the upstream on core 1. CPU per query is "
              "the server's CPU time over the run (the sum of its threads' run time, /proc/PID/task/*/schedstat, in "
              "ns) divided by the answered queries. Every server forwards cluster.local to one upstream, dnsmasq "
              f"{versions.get('dnsmasq', '')} as kube-dns (authoritative, no cache, TTL 30 s); localdns and "
              "unbound-tcp ask it over TCP, dnsmasq, unbound and kresd over UDP. Absolute figures move with the "
              "host; the ratios within a round are what to compare.", ""]
    return lines


def markdown(results: dict) -> str:
    caches, hooks, env = results["caches"], results["webhook"], results["environment"]
    lines = ["# localdns benchmark", "", *harness(results)]
    if _measured(caches):
        lines += ["## Summary, ready to paste", "",
                  "localdns's figure and its ratio to each peer (below 1× means localdns uses less, or for QPS "
                  "serves less): the median over rounds, the lowest and highest round in brackets. Each ratio is "
                  "taken within a round.", "", *summary(results), ""]
    lines += ["## Targets (issue 16)", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in targets(results):
        lines.append(f"| {target} | {measured} | {'yes' if met else 'no' if met is False else '–'} |")
    lines += ["", "## DNS cache, round by round", "",
              "`localdns` runs as the image runs it, its hot path compiled with mypyc (tools/compile_cache.py); "
              "`localdns-py` is the same cache as plain Python, the fallback wherever it is not compiled. "
              "`localdns-plain` is the compiled cache with the batched listener switched off (`--no-udp-batch`). "
              "`unbound-tcp` is unbound with `tcp-upstream: yes`, the like-for-like peer on misses.", ""]
    for metric in metrics(results, detailed=True):
        lines += detail(results, metric)
    failed = {n: c["error"] for n, c in caches.items() if "error" in c}
    for name, error in failed.items():
        lines += [f"**{name} not measured**: {error}", ""]
    lines += ["### Memory", "", *memory(results), "",
              "![CPU per query](cache_cpu.png) ![latency at fixed rates](cache_latency.png) "
              "![memory](cache_memory.png)", ""]
    floor = {n: f for n, f in results.get("listener_floor", {}).items() if f.get("rounds")}
    if floor:
        hit_cpu = Metric("", "hit", "cpu_us", 2)
        lines += ["### The listener floor", "",
                  "bench/echo.py answers every query from its raw bytes and does nothing else, once with the batched "
                  "listener (recvmmsg/sendmmsg) and once with a plain uvloop datagram endpoint: what the I/O path "
                  "alone costs per query. What localdns costs above `echo-batched` is the resolver's hit path.", "",
                  "| | QPS | server CPU µs / query, median (min–max) |", "|---|---|---|"]
        for name, f in floor.items():
            qps = spread(list(by_round(f, Metric("", "hit", "qps", 0)).values()))
            used = spread(list(by_round(f, hit_cpu).values()))
            lines.append(f"| {name} | {qps.text(0) if qps else '–'} | {used.text(2) if used else '–'} |")
        lines.append("")
    lines += ["## Webhook", ""]
    if hooks:
        plan = results["plan"]
        lines += [f"`python -m webhook serve` against a minimal FastAPI endpoint that parses the review and allows it "
                  f"(bench/floor.py) on the same server settings (webhook.server), over HTTPS with "
                  f"{plan['connections']} keep-alive connections for {plan['webhook_seconds']:g} s, then an open-loop "
                  f"{plan['webhook_rate']:g} admissions/s (latency from when each review was due); both servers "
                  f"started, {plan.get('webhook_repeats', 1)} round(s) visiting them in turn, the best run of each "
                  f"shown (load from elsewhere on the host only makes a run worse).", "",
                  "| | admissions/s | p50 ms | p99 ms | server CPU ms / admission | p50 ms at fixed rate | "
                  "p99 ms at fixed rate | RSS MiB | errors |", "|---|---|---|---|---|---|---|---|---|"]
        for name in ("webhook", "floor"):
            h = hooks.get(name)
            if h and "per_second" in h:
                cpu = f"{h['cpu_ms']:.2f}" if h.get("cpu_ms") is not None else "–"
                lines.append(f"| {name} | {h['per_second']:,.0f} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | {cpu} | "
                             f"{h['rate_p50_ms']:.2f} | {h['rate_p99_ms']:.2f} | {h['rss_kib'] / MIB:.0f} | "
                             f"{h['errors']} |")
            elif h:
                lines.append(f"| {name} | not measured: {h.get('error', '')} | | | | | | | |")
        lines += ["", "![webhook](webhook.png)", ""]
    lines += ["## Versions", ""] + [f"- {k}: {v}" for k, v in env["versions"].items()] + [""]
    return "\n".join(lines)


def charts(results: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caches = results["caches"]
    names = _measured(caches)
    written = []

    def bars(filename: str, title: str, series: list[tuple[str, Metric | str]], ylabel: str) -> None:
        """Grouped bars of the median over rounds, with the lowest and highest round as an error bar; a str series
        is a single figure (RSS, KiB) without rounds."""
        fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
        width = 0.8 / len(series)
        for k, (label, what) in enumerate(series):
            medians, below, above = [], [], []
            for name in names:
                if isinstance(what, str):
                    value = _mib(caches, name, what)
                    s = Spread(value, value, value, 1) if value is not None else None
                else:
                    s = figure(caches, name, what)
                medians.append(s.median if s else float("nan"))
                below.append(s.median - s.low if s else 0)
                above.append(s.high - s.median if s else 0)
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(names))]
            drawn = ax.bar(xs, medians, width, yerr=[below, above], capsize=2, label=label)
            finite = [m for m in medians if not math.isnan(m)]
            ax.bar_label(drawn, fmt="%.2f" if finite and max(finite) < 100 else "%.0f", fontsize=6)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / filename)
        plt.close(fig)
        written.append(out / filename)

    if names:
        rates = [qps for qps, _ in results["plan"].get("rates", [])]
        bars("cache_cpu.png", "Server CPU per query, median and min–max over rounds (lower is better)",
             [("hits", Metric("", "hit", "cpu_us", 2)), ("misses", Metric("", "miss", "cpu_us", 1)),
              *((f"{qps:,} QPS", Metric("", f"rate {qps}", "cpu_us", 2)) for qps in rates)], "µs")
        bars("cache_latency.png", "p99 latency at fixed rates, median and min–max over rounds (lower is better)",
             [(f"{qps:,} QPS", Metric("", f"rate {qps}", "p99_ms", 3)) for qps in rates], "ms")
        bars("cache_memory.png", "RSS (lower is better)",
             [("idle", "rss_idle_kib"), ("both caches full", "rss_full_kib")], "MiB")
    hooks = {n: h for n, h in results.get("webhook", {}).items() if "per_second" in h}
    if hooks:
        fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3.2), dpi=110)
        order = [n for n in ("webhook", "floor") if n in hooks]
        colours = ["#1f77b4" if n == "webhook" else "#999999" for n in order]
        left.bar_label(left.bar(order, [hooks[n]["per_second"] for n in order], color=colours), fmt="%.0f", fontsize=8)
        left.set_title("admissions/s (higher is better)", fontsize=9)
        right.bar_label(right.bar(order, [hooks[n]["rate_p99_ms"] for n in order], color=colours), fmt="%.2f",
                        fontsize=8)
        right.axhline(5, color="red", linewidth=0.8, linestyle="--")
        right.set_title(f"p99 ms at {results['plan']['webhook_rate']:g}/s (target < 5)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "webhook.png")
        plt.close(fig)
        written.append(out / "webhook.png")
    return written


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(results))
    return [out / "report.md", out / "results.json", *charts(results, out)]
