"""`python -m bench [--quick] [--rounds N] [--only dns|webhook] [--out docs/bench]`: run every scenario, write the
report.

Everything the run needs is checked before the first scenario (bench/preflight.py). Loopback only; every server is
started by this process and stopped by its PID, every load is bounded in time.
"""
from __future__ import annotations

import argparse
import compileall
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench import dnsload, dnsperf, preflight, procs, report, servers, webhookload

ROOT = Path(__file__).resolve().parent.parent


def environment() -> dict:
    cpu = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    localdns, bench = _commit(), _commit("bench")
    versions = {
        "localdns": localdns,
        "bench": bench,
        "python": platform.python_version(),
        "uvloop": _module_version("uvloop"),
        "dnsperf": _dnsperf_version(),
        "dnsmasq": procs.version(["dnsmasq", "--version"]).replace("Dnsmasq version ", "").split("  ")[0],
        "unbound": _unbound_version(),
        "kresd": procs.version(["kresd", "--version"]).replace("Knot Resolver, version ", ""),
        "fastapi": _module_version("fastapi"),
        "uvicorn": _module_version("uvicorn"),
    }
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu,
            "cores": os.cpu_count(), "kernel": platform.release(), "versions": versions}


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _commit(path: str = ".") -> str:
    """The last commit that changed `path` (the whole tree by default), and whether the tree differs from it."""
    commit = _git("log", "-1", "--format=%h %cs", "--", path)
    if not commit:
        return "unknown (not a git checkout)"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", path)
    return f"{commit}{' + uncommitted changes' if changed else ''}"


def _module_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "not installed"


def _dnsperf_version() -> str:
    if shutil.which("dnsperf") is None:
        return "not installed"
    out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, timeout=10)
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("Version"):
            return line.split()[-1]
    return "unknown"


def _unbound_version() -> str:
    if shutil.which("unbound") is None:
        return "not installed"
    out = subprocess.run(["unbound", "-V"], capture_output=True, text=True, timeout=10)
    return out.stdout.splitlines()[0].replace("Version ", "") if out.stdout else "unknown"


CATALOGUE = {c.name: c for c in (servers.LOCALDNS, servers.LOCALDNS_PY, servers.LOCALDNS_PLAIN, *servers.PEERS)}
ON_COMPILED = {servers.LOCALDNS.name, servers.LOCALDNS_PLAIN.name}  # run from servers.COMPILED
DEFAULT_CACHES = ",".join(CATALOGUE)


def guarded(name: str, say, measure) -> dict:
    """One server failing must not lose the others' figures: its row says why instead."""
    try:
        return measure()
    except Exception as error:
        say(f"  {name} failed: {error}")
        return {"name": name, "error": str(error).splitlines()[0]}


def run_dns(results: dict, wanted: list[str], plan: dnsload.Plan, fill: int, work: Path, say) -> None:
    """The shared upstream; every cache started; the rounds visiting them in turn; then each filled, measured and
    stopped; then the listener floor. Every process stopped in any case."""
    names, hosts = servers.write_names(work, plan.miss_names, plan.rounds, fill)
    upstream, upstream_port = servers.start_upstream(work, hosts, work)
    say(f"upstream dnsmasq on 127.0.0.1:{upstream_port} (pid {upstream.pid})")
    running: list[dnsload.Running] = []
    commands: dict[str, str] = results["dnsperf_commands"]
    try:
        for name in wanted:
            cache = CATALOGUE[name]
            started = guarded(name, say, partial(dnsload.start, cache, upstream_port, work, work))
            if isinstance(started, dict):
                results["caches"][name] = started
            else:
                running.append(started)
                say(f"{name} started (pid {started.process.pid}), idle RSS "
                    f"{started.figures['rss_idle_kib'] / 1024:.1f} MiB")
        for round_ in range(plan.rounds):
            say(f"round {round_ + 1} of {plan.rounds}:")
            for server in running:
                for run in (dnsload.hit_run, dnsload.rate_runs, dnsload.miss_run):
                    guarded(server.cache.name, say, partial(run, server, names, plan, round_, say))
        for server in running:
            say(f"{server.cache.name}:")
            results["caches"][server.cache.name] = guarded(server.cache.name, say,
                                                           partial(dnsload.fill, server, names, plan, say))
            for scenario, command in server.commands.items():
                commands.setdefault(scenario, command)
            server.process.stop()
        say("listener floor (answers from raw bytes, no cache):")
        for echo in (servers.ECHO_BATCH, servers.ECHO_PLAIN):
            results["listener_floor"][echo.name] = guarded(echo.name, say, partial(
                dnsload.measure_hits, echo, names, plan, work, work, say))
    finally:
        for server in running:
            server.process.stop()
        upstream.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short loads (a few minutes): a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds of the interleaved scenarios (default 3, quick 1)")
    parser.add_argument("--only", choices=["dns", "webhook"], help="run one half only")
    parser.add_argument("--caches", default=DEFAULT_CACHES, help=f"comma list of caches to measure (default: "
                        f"{DEFAULT_CACHES})")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench"), help="report directory (default docs/bench)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs, configs)")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    wanted = [c.strip() for c in args.caches.split(",") if c.strip()]
    unknown = set(wanted) - set(CATALOGUE)
    if unknown:
        parser.error(f"unknown cache(s) {', '.join(sorted(unknown))}; choose from {', '.join(CATALOGUE)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    unmet = preflight.missing(preflight.for_bench(args.only != "webhook", args.only != "dns", wanted))
    if unmet:
        print(preflight.message(unmet), file=sys.stderr, flush=True)
        return 2
    plan = dnsload.QUICK if args.quick else dnsload.FULL
    if args.rounds is not None:
        plan = plan.with_rounds(args.rounds)
    fill = 12_000
    webhook_seconds, connections, rate, repeats = (3, 8, 200, 1) if args.quick else (10, 8, 200, 3)
    results: dict = {
        "command": _command_line(argv), "environment": environment(), "dnsperf_timeout": dnsperf.TIMEOUT,
        "dnsperf_commands": {},
        "plan": {"quick": args.quick, **plan.__dict__, "fill": fill, "webhook_seconds": webhook_seconds,
                 "connections": connections, "webhook_rate": rate, "webhook_repeats": repeats},
        "caches": {}, "listener_floor": {}, "webhook": {},
    }
    # The image ships bytecode (pip compiles on install); a server started from a source tree without it would
    # compile every module in memory at start and carry that in its RSS.
    for package in ("cache", "webhook", "certs", "bench"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    if ON_COMPILED & set(wanted) and args.only != "webhook":
        say(f"compiling the cache's hot path into {servers.COMPILED} (tools/compile_cache.py)")
        subprocess.run([sys.executable, str(ROOT / "tools" / "compile_cache.py"), str(servers.COMPILED)], check=True)
    work = Path(tempfile.mkdtemp(prefix="localdns-bench-"))
    started = time.monotonic()
    try:
        if args.only != "webhook":
            run_dns(results, wanted, plan, fill, work, say)
        if args.only != "dns":
            say("webhook and floor, interleaved:")
            measured = guarded("webhook", say, lambda: webhookload.measure(
                ["webhook", "floor"], work, work, webhook_seconds, connections, rate, repeats, say))
            results["webhook"] = measured if "error" not in measured else {
                name: {**measured, "name": name} for name in ("webhook", "floor")}
    finally:
        if args.keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_seconds"] = round(time.monotonic() - started)
    written = report.write(results, Path(args.out))
    say("\n".join(["", "Summary for the README (also in report.md):", "", *report.summary(results)]))
    say("\n" + "\n".join(f"{'met' if met else 'NOT met' if met is False else 'n/a'}: {t} ({m})"
                         for t, m, met in report.targets(results)))
    say(f"wrote {', '.join(str(p) for p in written)} in {results['elapsed_seconds']} s")
    return 0


def _command_line(argv: list[str] | None) -> str:
    """The command as typed from the repository root (the interpreter as a path relative to it when inside)."""
    python = sys.executable
    if Path(python).is_relative_to(ROOT):
        python = str(Path(python).relative_to(ROOT))
    return shlex.join([python, "-m", "bench", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
