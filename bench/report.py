"""docs/bench/: report.md (the table, the targets, the machine) and PNG charts, from the figures of one run."""
from __future__ import annotations

import json
import math
from pathlib import Path

MIB = 1024.0
LOCALDNS = "localdns"
PEER_NAMES = ("dnsmasq", "unbound", "kresd")


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _ratio(ours, theirs) -> str:
    if not ours or not theirs or any(isinstance(v, float) and math.isnan(v) for v in (ours, theirs)):
        return "–"
    if abs(theirs) < 1e-9:
        return "–"
    return f"{ours / theirs:.2f}×"


def _best_peer(caches: dict, key: str, lower_is_better: bool = True) -> tuple[str, float] | None:
    values = [(name, caches[name][key]) for name in PEER_NAMES if name in caches and key in caches[name]]
    values = [(n, v) for n, v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    return (min if lower_is_better else max)(values, key=lambda nv: nv[1])


DNS_ROWS = [  # (label, key, scale, digits, lower is better)
    ("cache-hit QPS (100 names, dnsperf -q 100)", "hit_qps", 1, 0, False),
    ("cache-hit server CPU µs / answered query", "hit_cpu_us", 1, 2, True),
    ("cache-hit avg latency ms", "hit_avg_ms", 1, 3, True),
    ("cache-hit max latency ms", "hit_max_ms", 1, 2, True),
    ("fixed rate: avg latency ms", "rate_avg_ms", 1, 3, True),
    ("fixed rate: p99 latency ms", "rate_p99_ms", 1, 3, True),
    ("fixed rate: server CPU µs / query", "rate_cpu_us", 1, 2, True),
    ("miss-heavy QPS (unique names)", "miss_qps", 1, 0, False),
    ("miss-heavy RSS growth MiB", "miss_rss_growth_kib", 1 / MIB, 1, True),
    ("miss-heavy server CPU µs / query", "miss_cpu_us", 1, 1, True),
    ("RSS idle MiB", "rss_idle_kib", 1 / MIB, 1, True),
    ("RSS with caches full MiB", "rss_full_kib", 1 / MIB, 1, True),
]


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target of issue 8; met is None when a figure is missing."""
    caches, hooks = results.get("caches", {}), results.get("webhook", {})
    ours = caches.get(LOCALDNS, {})
    out = []
    dnsmasq = caches.get("dnsmasq", {})
    if "hit_cpu_us" in ours and "hit_cpu_us" in dnsmasq:
        out.append(("cache-hit CPU per query ≤ dnsmasq's",
                    f"{ours['hit_cpu_us']:.2f} µs vs {dnsmasq['hit_cpu_us']:.2f} µs",
                    ours["hit_cpu_us"] <= dnsmasq["hit_cpu_us"]))
    else:
        out.append(("cache-hit CPU per query ≤ dnsmasq's", "not measured", None))
    best = _best_peer(caches, "rate_p99_ms")
    if "rate_p99_ms" in ours and best:
        out.append((f"p99 at {results['plan']['rate_qps']:,} QPS ≤ best peer's",
                    f"{ours['rate_p99_ms']:.3f} ms vs {best[0]} {best[1]:.3f} ms", ours["rate_p99_ms"] <= best[1]))
    else:
        out.append(("p99 at fixed rate ≤ best peer's", "not measured", None))
    if "rss_full_kib" in ours:
        out.append(("RSS with both caches full ≤ 40 MiB", f"{ours['rss_full_kib'] / MIB:.1f} MiB",
                    ours["rss_full_kib"] <= 40 * MIB))
    else:
        out.append(("RSS with both caches full ≤ 40 MiB", "not measured", None))
    hook, floor = hooks.get("webhook"), hooks.get("floor")
    if hook and floor and "per_second" in hook and "per_second" in floor:
        share = hook["per_second"] / floor["per_second"]
        out.append(("webhook ≥ 70% of the floor's admissions/s",
                    f"{hook['per_second']:,.0f}/s vs {floor['per_second']:,.0f}/s = {share:.0%}", share >= 0.7))
    else:
        out.append(("webhook ≥ 70% of the floor's admissions/s", "not measured", None))
    if hook and "rate_p99_ms" in hook:
        out.append((f"webhook p99 < 5 ms at {hook['rate']:g} admissions/s", f"{hook['rate_p99_ms']:.2f} ms",
                    hook["rate_p99_ms"] < 5))
    else:
        out.append(("webhook p99 < 5 ms at 200 admissions/s", "not measured", None))
    return out


def markdown(results: dict) -> str:
    caches, hooks, env, plan = results["caches"], results["webhook"], results["environment"], results["plan"]
    names = [n for n in (LOCALDNS, "localdns-plain", *PEER_NAMES) if n in caches and "hit_qps" in caches[n]]
    lines = [
        "# localdns benchmark", "",
        f"Run {env['date']} on {env['cpu']} ({env['cores']} cores), Linux {env['kernel']}, "
        f"with `{results['command']}`{' (quick smoke run: short loads, not for comparison)' if plan['quick'] else ''}.",
        "Servers run pinned to core 0 (`taskset -c 0`); dnsperf, the upstream and the HTTP client run on core 1."
        " The cache-hit and fixed-rate runs visit the caches in turn, round after round (all started, only the one"
        " under load busy), so that load from elsewhere on the host falls on all of them alike; the other scenarios run one"
        " cache at a time. CPU per query is the server's utime+stime (/proc/PID/stat) over the run divided by the"
        " answered queries. Absolute figures move with the host; the ratios, from the same run, are what to"
        " compare.", "",
        "## Targets", "", "| target | measured | met |", "|---|---|---|",
    ]
    for target, measured, met in targets(results):
        lines.append(f"| {target} | {measured} | {'yes' if met else 'no' if met is False else '–'} |")
    lines += ["", "## DNS cache", "",
              f"Upstream: dnsmasq {env['versions'].get('dnsmasq', '')} as kube-dns (authoritative for cluster.local, "
              f"no cache, TTL 30 s). Hit load: {plan['hit_seconds']:g} s × {plan['hit_repeats']} rounds (the "
              f"median run by CPU is shown), each warmed first. Fixed rate, right after each hit run: dnsperf -Q "
              f"{plan['rate_qps']} for {plan['rate_seconds']:g} s (the median run by p99 is shown), p99 from every query's latency (dnsperf -v; a lost query counts as "
              f"{results['dnsperf_timeout']:g} s). Miss-heavy: "
              f"{plan['miss_seconds']:g} s of unique names. Full: then {plan['fill']:,} more positive and "
              f"{plan['fill']:,} NXDOMAIN names (above every size cap: ours 9,984 + 9,984, dnsmasq 10,000).", ""]
    if names:
        lines.append("| | " + " | ".join(names) + " | localdns vs dnsmasq | localdns vs best peer |")
        lines.append("|---" * (len(names) + 3) + "|")
        for label, key, scale, digits, lower in DNS_ROWS:
            cells = [_fmt(caches[n][key] * scale if caches[n].get(key) is not None else None, digits) for n in names]
            ours = caches.get(LOCALDNS, {}).get(key)
            dnsmasq = caches.get("dnsmasq", {}).get(key)
            best = _best_peer(caches, key, lower)
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {_ratio(ours, dnsmasq)} | "
                         f"{_ratio(ours, best[1]) + ' (' + best[0] + ')' if best and ours else '–'} |")
    failed = {n: c["error"] for n, c in caches.items() if "error" in c}
    for name, error in failed.items():
        lines.append(f"\n**{name} not measured**: {error}")
    lines += ["", "`localdns-plain` is the same cache with the batched listener switched off (`--no-udp-batch`): "
              "one recvfrom/sendto per query on the event loop. A ratio below 1× means localdns uses less (or, for "
              "QPS, serves less).", "",
              "![CPU per cache-hit query](cache_cpu.png) ![latency at a fixed rate](cache_latency.png) "
              "![memory](cache_memory.png)", ""]
    floor = {n: f for n, f in results.get("listener_floor", {}).items() if "hit_cpu_us" in f}
    if floor:
        lines += ["### The listener floor", "",
                  "bench/echo.py answers every query from its raw bytes and does nothing else, once with the batched "
                  "listener (recvmmsg/sendmmsg) and once with a plain uvloop datagram endpoint: what the I/O path "
                  "alone costs per query. What localdns costs above `echo-batched` is the resolver's hit path.", "",
                  "| | QPS | server CPU µs / query |", "|---|---|---|"]
        for name, f in floor.items():
            lines.append(f"| {name} | {f['hit_qps']:,.0f} | {f['hit_cpu_us']:.2f} |")
        lines.append("")
    lines += ["## Webhook", ""]
    if hooks:
        lines += [f"`python -m webhook serve` against a minimal FastAPI endpoint that parses the review and allows it "
                  f"(bench/floor.py) on the same server settings (webhook.server), over HTTPS with "
                  f"{plan['connections']} keep-alive connections for {plan['webhook_seconds']:g} s, then an open-loop "
                  f"{plan['webhook_rate']:g} admissions/s (latency from when each review was due); both servers started, "
                  f"{plan.get('webhook_repeats', 1)} round(s) visiting them in turn, the best run of each shown "
                  f"(load from elsewhere on the host only makes a run worse).", "",
                  "| | admissions/s | p50 ms | p99 ms | server CPU ms / admission | p50 ms at fixed rate | "
                  "p99 ms at fixed rate | RSS MiB | errors |", "|---|---|---|---|---|---|---|---|---|"]
        for name in ("webhook", "floor"):
            h = hooks.get(name)
            if h and "per_second" in h:
                lines.append(f"| {name} | {h['per_second']:,.0f} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | "
                             f"{_fmt(h['cpu_ms'])} | {h['rate_p50_ms']:.2f} | {h['rate_p99_ms']:.2f} | "
                             f"{h['rss_kib'] / MIB:.0f} | {h['errors']} |")
            elif h:
                lines.append(f"| {name} | not measured: {h.get('error', '')} | | | | | | | |")
        lines += ["", "![webhook](webhook.png)", ""]
    lines += ["## Versions", ""] + [f"- {k}: {v}" for k, v in env["versions"].items()] + [""]
    return "\n".join(lines)


def charts(results: dict, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caches = {n: c for n, c in results["caches"].items() if "hit_qps" in c}
    names = [n for n in (LOCALDNS, "localdns-plain", *PEER_NAMES) if n in caches]
    colours = ["#1f77b4" if n.startswith(LOCALDNS) else "#999999" for n in names]
    written = []

    def bars(filename: str, title: str, series: list[tuple[str, str, float]], ylabel: str) -> None:
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
        width = 0.8 / len(series)
        for k, (label, key, scale) in enumerate(series):
            values = [caches[n].get(key, float("nan")) * scale for n in names]
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(names))]
            drawn = ax.bar(xs, values, width, label=label if len(series) > 1 else None,
                           color=colours if len(series) == 1 else None)
            ax.bar_label(drawn, fmt="%.2f" if max(values) < 100 else "%.0f", fontsize=7)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if len(series) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / filename)
        plt.close(fig)
        written.append(out / filename)

    if names:
        bars("cache_cpu.png", "Server CPU per cache-hit query (lower is better)",
             [("hit", "hit_cpu_us", 1)], "µs")
        bars("cache_latency.png", f"Latency at {results['plan']['rate_qps']:,} QPS (lower is better)",
             [("avg", "rate_avg_ms", 1), ("p99", "rate_p99_ms", 1)], "ms")
        bars("cache_memory.png", "RSS (lower is better)",
             [("idle", "rss_idle_kib", 1 / MIB), ("caches full", "rss_full_kib", 1 / MIB)], "MiB")
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
