"""The webhook scenarios: `python -m webhook serve` against the floor (bench/floor.py) on the same server settings.

Each server runs pinned to the server core, the load client (bench/httpload.py) to the other one.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import procs


def make_certs(work: Path) -> tuple[Path, Path, Path]:
    out = work / "tls"
    subprocess.run([sys.executable, "-m", "certs", "local", "--out", str(out), "--ip", "127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return out / "ca.crt", out / "tls.crt", out / "tls.key"


def _load(port: int, ca: Path, seconds: float, connections: int, rate: float | None = None) -> dict:
    argv = [sys.executable, "-m", "bench.httpload", "--port", str(port), "--ca", str(ca),
            "--seconds", f"{seconds:g}", "--connections", str(connections)]
    if rate:
        argv += ["--rate", f"{rate:g}"]
    done = subprocess.run(procs.pinned(procs.LOAD_CORE, argv), capture_output=True, text=True,
                          timeout=seconds + 60, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"load client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


SERVERS = {
    "webhook": lambda port, cert, key: [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1",
                                        "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key),
                                        "--drain-seconds", "1",
                                        # No cluster here: without a view to keep, the server is the admission path
                                        # alone, as the floor is (the view's cost per admission: docs/webhook.md).
                                        "--networkpolicies", "off"],
    "floor": lambda port, cert, key: [sys.executable, "-m", "bench.floor", "--port", str(port),
                                      "--tls-cert", str(cert), "--tls-key", str(key)],
}


def measure(names: list[str], work: Path, log_dir: Path, seconds: float, connections: int, rate: float,
            repeats: int = 1, say=print) -> dict[str, dict]:
    """Closed-loop throughput and open-loop latency at `rate` for each server, each the best of `repeats` runs
    (other load on a shared host only ever makes a run worse). All servers are started first and every round
    visits them in turn, so a burst of load from elsewhere falls on all of them alike."""
    ca, cert, key = make_certs(work)
    root = Path(__file__).resolve().parent.parent
    started: dict[str, tuple[procs.Process, int]] = {}
    try:
        for name in names:
            port = procs.free_port()
            started[name] = (procs.start(name, SERVERS[name](port, cert, key), log_dir, cwd=root), port)
        for process, port in started.values():
            procs.wait_for_tcp(process, port)
            _load(port, ca, 2, connections)  # warm: imports, first handshakes, caches
        closed_runs: dict[str, list[dict]] = {name: [] for name in started}
        fixed_runs: dict[str, list[dict]] = {name: [] for name in started}
        for _ in range(repeats):
            for name, (process, port) in started.items():
                before = process.cpu_seconds()
                closed = _load(port, ca, seconds, connections)
                closed["cpu_ms"] = ((process.cpu_seconds() - before) / closed["completed"] * 1e3
                                    if closed["completed"] else None)
                closed_runs[name].append(closed)
            for name, (_, port) in started.items():
                fixed_runs[name].append(_load(port, ca, seconds, connections, rate=rate))
        return {name: _figures(name, process, closed_runs[name], fixed_runs[name], rate, say)
                for name, (process, port) in started.items()}
    finally:
        for process, _ in started.values():
            process.stop()


def _figures(name: str, process: procs.Process, closed_runs: list[dict], fixed_runs: list[dict], rate: float,
             say=print) -> dict:
    closed = max(closed_runs, key=lambda r: r["per_second"])
    fixed = min(fixed_runs, key=lambda r: r["p99_ms"])
    errors = sum(r["errors"] for r in closed_runs + fixed_runs)
    say(f"  {name}: {closed['per_second']:,.0f} admissions/s (p50 {closed['p50_ms']:.2f} ms, "
        f"p99 {closed['p99_ms']:.2f} ms, {closed['cpu_ms']:.2f} ms CPU each); at {rate:g}/s "
        f"p50 {fixed['p50_ms']:.2f} ms, p99 {fixed['p99_ms']:.2f} ms; errors {errors}; answer {closed['sample']}")
    return {"name": name, "per_second": closed["per_second"], "p50_ms": closed["p50_ms"],
            "p99_ms": closed["p99_ms"], "cpu_ms": closed["cpu_ms"], "errors": errors, "rate": rate,
            "rate_p50_ms": fixed["p50_ms"], "rate_p99_ms": fixed["p99_ms"], "rate_max_ms": fixed["max_ms"],
            "rate_completed": fixed["completed"], "sample": closed["sample"], "rss_kib": process.rss_kib(),
            "runs": {"per_second": [r["per_second"] for r in closed_runs],
                     "rate_p99_ms": [r["p99_ms"] for r in fixed_runs]}}
