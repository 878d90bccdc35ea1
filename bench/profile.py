"""`python -m bench.profile miss|hit|steady`: where the localdns cache spends its time under one kind of load.

The cache runs as the benchmark runs it (`python -m cache` with bench/servers.py's flags, pinned to core 0, dnsmasq
as kube-dns over TCP); dnsperf loads it from core 1: unique names (misses), the same 100 names (hits), or the hit
names at a fixed rate (steady). Two records, each optional:

- a py-spy sampling profile of the loaded process as collapsed stacks (`profile-SCENARIO.txt`, one line per stack
  and its sample count; flamegraph.pl, inferno or speedscope draw it), and its summary (`profile-SCENARIO.md`):
  the functions with the most samples on top of the stack (self) and on the stack at all (total);
- with `--callgrind N`: the cache under valgrind's callgrind, instruction counts for exactly N queries
  (`callgrind-SCENARIO.out`, and instructions per query). Counts barely move with other load on the host, so two
  versions of the cache can be compared on a busy machine: run this in each checkout, or point `--tree` at each.
"""
from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import dnsperf, preflight, procs, servers
from bench.servers import ZONE

ROOT = Path(__file__).resolve().parent.parent
PROFILE_EXTRA = preflight.BENCH_EXTRA.replace("the `bench` extra", "py-spy, in the `bench` extra")
# pip puts py-spy beside the interpreter, which is on PATH only in an activated virtual environment.
PYSPY = str(Path(sys.executable).parent / "py-spy") if (Path(sys.executable).parent / "py-spy").exists() else "py-spy"
_FRAME_LINE = re.compile(r":\d+\)$")


@dataclass(frozen=True)
class Load:
    """One kind of load: which names, at what rate, and how many at once."""

    names: str  # "misses" or "hits"
    qps: int | None  # a fixed rate, or None: as fast as the cache answers (dnsperf keeps 100 in flight)


PREFILL = 10_000  # names asked before counting misses under callgrind: more than the default cap (9,984)
LOADS = {"miss": Load("misses", None), "hit": Load("hits", None), "steady": Load("hits", 10_000)}


# ---- reading py-spy's collapsed stacks (pure) ----

def function_of(frame: str) -> str:
    """'exchange (cache/tcpupstream.py:240)' -> 'exchange (cache/tcpupstream.py)': samples of one function add up
    whatever line they were on."""
    return _FRAME_LINE.sub(")", frame)


def summarise(collapsed: str) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, self samples per function, total samples per function) from collapsed stacks, one
    `frame;frame;...;leaf COUNT` line per stack. A function counts once per sample in total however often it
    recurs on that stack."""
    samples, own, total = 0, Counter[str](), Counter[str]()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        functions = [function_of(frame) for frame in stack.split(";")]
        samples += count
        own[functions[-1]] += count
        for function in set(functions):
            total[function] += count
    return samples, own, total


def summary_markdown(title: str, collapsed: str, top: int = 30) -> str:
    samples, own, total = summarise(collapsed)
    if not samples:
        return f"# {title}\n\nNo samples: was the process busy?\n"
    lines = [f"# {title}", "", f"{samples:,} samples of the process on a CPU (idle samples left out).", "",
             "## Self: on top of the stack", "", "| share | samples | function |", "|---|---|---|"]
    lines += [f"| {n / samples:.1%} | {n:,} | `{f}` |" for f, n in own.most_common(top)]
    lines += ["", "## Total: anywhere on the stack", "", "| share | samples | function |", "|---|---|---|"]
    lines += [f"| {n / samples:.1%} | {n:,} | `{f}` |" for f, n in total.most_common(top)]
    return "\n".join(lines) + "\n"


def callgrind_total(dump: str) -> int:
    """The instructions executed (Ir) in a callgrind dump: its `summary:` (or `totals:`) line."""
    for line in dump.splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError("no summary or totals line: not a callgrind dump")


# ---- running it ----

def _query_file(work: Path, source: Path, count: int, label: str) -> Path:
    """A query file of exactly `count` lines taken from `source`, over and over if it is shorter (the hit names)."""
    lines = source.read_text().splitlines()
    path = work / f"{label}-{count}.txt"
    path.write_text("".join(lines[i % len(lines)] + "\n" for i in range(count)))
    return path


def _start_cache(tree: Path, port: int, upstream: int, work: Path, extra: list[str],
                 wrapper: list[str] | None = None, wait: float = 20.0) -> procs.Process:
    argv = [*(wrapper or []), *servers.localdns_argv(work, port, upstream), *extra]
    process = procs.start("localdns", argv, work, cwd=tree)
    try:
        procs.wait_for_dns(process, port, f"h0.{ZONE}", timeout=wait)
    except BaseException:
        process.stop()
        raise
    return process


def _spawn_dnsperf(port: int, datafile: Path, seconds: float, load: Load, runs: int | None = None,
                   timeout: float = dnsperf.TIMEOUT, in_flight: int = 100) -> subprocess.Popen:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile), "-l", f"{seconds:g}", "-q",
            str(in_flight), "-t", f"{timeout:g}"]
    if load.qps:
        argv += ["-Q", str(load.qps)]
    if runs:
        argv += ["-n", str(runs)]
    return subprocess.Popen(procs.pinned(procs.LOAD_CORE, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(load: subprocess.Popen, bound: float) -> dnsperf.Result:
    out, _ = load.communicate(timeout=bound)
    return dnsperf.parse(out[out.rfind("Statistics:"):] if "Statistics:" in out else out)


def pyspy(scenario: str, load: Load, tree: Path, work: Path, out: Path, names: servers.Names, upstream: int,
          seconds: float, rate: int, flags: list[str], extra: list[str], say) -> None:
    port = procs.free_port()
    cache = _start_cache(tree, port, upstream, work, extra)
    try:
        dnsperf.run(port, names.hits, 5, max_runs=20)  # warm: the hit names cached
        collapsed = out / f"profile-{scenario}.txt"
        spy = [PYSPY, "record", "--pid", str(cache.pid), "--format", "raw", "--output", str(collapsed),
               "--rate", str(rate), "--duration", f"{seconds:g}", *flags]
        # First a short run without the profiler: CPU and wakeups per query as the bench sees them (py-spy's pauses
        # cost the process time and count as context switches). Misses: each run asks names of its own.
        files = names.misses if load.names == "misses" else (names.hits, names.hits)
        runs = 1 if load.names == "misses" else None
        before = (cache.cpu_seconds(), cache.wakeups())
        plain = dnsperf.run(port, files[0], 3, qps=load.qps, max_runs=runs)
        answered = max(plain.completed, 1)
        used, woken = cache.cpu_seconds() - before[0], cache.wakeups() - before[1]
        running = _spawn_dnsperf(port, files[1], seconds + 2, load, runs=runs)
        time.sleep(1.0)  # sample the load, not its start
        recorded = subprocess.run(procs.pinned(procs.LOAD_CORE, spy), capture_output=True, text=True,
                                  timeout=seconds + 60)
        result = _finish(running, seconds + 60)
        if recorded.returncode != 0 or not collapsed.exists():
            raise RuntimeError(f"py-spy failed: {recorded.stderr.strip()[-2000:]}")
        title = (f"localdns, {scenario}: without the profiler {plain.qps:,.0f} QPS, {used / answered * 1e6:.1f} µs "
                 f"of server CPU and {woken / answered:.2f} wakeups per query; profiled at {result.qps:,.0f} QPS "
                 f"({seconds:g} s at {rate} samples/s{', ' + ' '.join(flags) if flags else ''})")
        report = out / f"profile-{scenario}.md"
        report.write_text(summary_markdown(title, collapsed.read_text()))
        say(report.read_text())
        say(f"collapsed stacks: {collapsed}\nsummary: {report}")
    finally:
        cache.stop()


def _counted_load(load: Load, port: int, names: servers.Names, work: Path, count: int, warm: float) -> Path:
    """Warm the cache (and, for misses, fill it as a long run would) and write the file of the `count` queries to
    count."""
    dnsperf.run(port, names.hits, warm, max_runs=20)
    if load.names == "misses":
        # A cache as full as in a long run (its success map at its cap, so every new answer evicts one), and
        # then names it has never seen.
        dnsperf.run(port, _query_file(work, names.misses[0], PREFILL, "prefill"), 600, max_runs=1)
        return _query_file(work, names.misses[1], count, "misses")
    return _query_file(work, names.hits, count, "hits")


COUNTED_MISSES_IN_FLIGHT = 10


def _run_counted(port: int, datafile: Path, load: Load) -> dnsperf.Result:
    """Every query of the file once, slowly enough that none is lost under valgrind or strace (a lost one would
    change the count); steady loads at most 500 QPS, so that each datagram still arrives on its own. Misses with
    COUNTED_MISSES_IN_FLIGHT at once rather than 100: valgrind slows the cache some fifty times, and with 100 in
    flight a query's answer waited in the socket past its upstream deadline, so the cache asked again (2.2 upstream
    queries per miss, where the bench's runs send 1.0) and the count was that of a different workload."""
    slow = Load(load.names, min(load.qps, 500) if load.qps else None)
    in_flight = COUNTED_MISSES_IN_FLIGHT if load.names == "misses" else 100
    return _finish(_spawn_dnsperf(port, datafile, 3600, slow, runs=1, timeout=30, in_flight=in_flight), 3700)


def callgrind(scenario: str, load: Load, tree: Path, work: Path, out: Path, names: servers.Names, upstream: int,
              count: int, extra: list[str], say) -> None:
    """Instructions for exactly `count` queries, counted from after start-up and warm-up to the last answer."""
    dump = out / f"callgrind-{scenario}.out"
    for old in out.glob(f"{dump.name}*"):  # a dump left from an earlier run here would be read instead
        old.unlink()
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={dump}"]
    port = procs.free_port()
    cache = _start_cache(tree, port, upstream, work, extra, wrapper, wait=180.0)
    try:
        datafile = _counted_load(load, port, names, work, count, 30)
        subprocess.run(["callgrind_control", "--instr=on", str(cache.pid)], check=True, capture_output=True,
                       timeout=60)
        subprocess.run(["callgrind_control", "--zero", str(cache.pid)], check=True, capture_output=True, timeout=60)
        result = _run_counted(port, datafile, load)
        subprocess.run(["callgrind_control", "--dump", str(cache.pid)], check=True, capture_output=True, timeout=60)
        subprocess.run(["callgrind_control", "--instr=off", str(cache.pid)], check=True, capture_output=True,
                       timeout=60)
    finally:
        cache.stop(timeout=30)
    dumps = sorted(out.glob(f"callgrind-{scenario}.out.*"), key=lambda p: p.stat().st_mtime)
    dumps = [d for d in dumps if d.stat().st_size] or [dump]
    instructions = callgrind_total(dumps[0].read_text(errors="replace"))
    say(f"callgrind, {scenario}: {result.completed:,} of {count:,} queries answered, lost {result.lost}; "
        f"{instructions:,} instructions, {instructions / max(result.completed, 1):,.0f} per query "
        f"({dumps[0]}; callgrind_annotate {dumps[0]} for the C functions)")


def strace_counts(summary: str) -> Counter[str]:
    """Calls per system call from `strace -c`'s table (the rows between the dashes, `total` left out)."""
    counts = Counter[str]()
    for line in summary.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1] != "total" and fields[0][0].isdigit() and fields[3].isdigit():
            counts[fields[-1]] += int(fields[3])
    return counts


def syscalls(scenario: str, load: Load, tree: Path, work: Path, out: Path, names: servers.Names, upstream: int,
             count: int, extra: list[str], say) -> None:
    """System calls for exactly `count` queries (`strace -c -f` attached after warm-up): the kernel's share of a
    query that instruction counts leave out, as a count that does not depend on the host's load."""
    port = procs.free_port()
    cache = _start_cache(tree, port, upstream, work, extra)
    summary = out / f"syscalls-{scenario}.txt"
    try:
        datafile = _counted_load(load, port, names, work, count, 5)
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(summary), "-p", str(cache.pid)],
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # attached (strace says so on stderr; a second is plenty)
        result = _run_counted(port, datafile, load)
        tracer.send_signal(signal.SIGINT)
        tracer.communicate(timeout=60)
    finally:
        cache.stop(timeout=30)
    counts = strace_counts(summary.read_text())
    answered = max(result.completed, 1)
    top = ", ".join(f"{name} {n / answered:.3f}" for name, n in counts.most_common(8))
    say(f"syscalls, {scenario}: {result.completed:,} of {count:,} queries answered, lost {result.lost}; "
        f"{sum(counts.values()) / answered:.3f} system calls per query ({top}; {summary})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(LOADS))
    parser.add_argument("--seconds", type=float, default=20, help="py-spy: seconds of sampling (default 20)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy: samples per second (default 250)")
    parser.add_argument("--qps", type=int, help="steady: the fixed rate (default 10000)")
    parser.add_argument("--native", action="store_true", help="py-spy: C frames too (uvloop, libc, the interpreter; "
                        "unwinding them pauses the process longer, which slows it: lower --rate)")
    parser.add_argument("--nonblocking", action="store_true", help="py-spy: sample without pausing the process "
                        "(less overhead, a stack now and then torn; not with --native)")
    parser.add_argument("--no-pyspy", action="store_true", help="skip the sampling profile")
    parser.add_argument("--callgrind", type=int, metavar="N", help="count instructions for N queries under valgrind")
    parser.add_argument("--syscalls", type=int, metavar="N", help="count system calls for N queries (strace -c)")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="the checkout whose cache/ is profiled (default: this one)")
    parser.add_argument("--out", type=Path, help="where the records go (default: a new directory under /tmp)")
    parser.add_argument("cache_args", nargs="*", help="after --: more flags for python -m cache (--no-udp-batch)")
    args = parser.parse_args(argv)
    if args.native and args.nonblocking:
        parser.error("py-spy cannot read native stacks without pausing the process: --native or --nonblocking")
    load = LOADS[args.scenario]
    if args.qps and args.scenario == "steady":
        load = Load(load.names, args.qps)

    def say(text: str) -> None:
        print(text, flush=True)

    needs = [preflight.program("dnsperf", "the load", f"apt-get install dnsperf ({preflight.SYSTEM})"),
             preflight.program("dnsmasq", "the upstream (kube-dns)", f"apt-get install dnsmasq ({preflight.SYSTEM})"),
             preflight.program("taskset", "pinning", "apt-get install util-linux")]
    if not args.no_pyspy:
        needs.append(preflight.program(PYSPY, "the sampling profile", PROFILE_EXTRA))
    if args.callgrind:
        needs += [preflight.program(p, "instruction counts", "apt-get install valgrind")
                  for p in ("valgrind", "callgrind_control")]
    if args.syscalls:
        needs.append(preflight.program("strace", "system call counts", "apt-get install strace"))
    unmet = preflight.missing(needs)
    if unmet:
        print(preflight.message(unmet, "the profile"), file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix=f"localdns-profile-{args.scenario}-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="localdns-profile-work-"))
    # Unique names enough for the unprofiled run and the profiled one (at most ~15,000 misses/s), or for callgrind.
    misses = PREFILL
    if load.names == "misses":
        misses = max(0 if args.no_pyspy else int((args.seconds + 2) * 15_000), args.callgrind or 0,
                     args.syscalls or 0, PREFILL)
    names, hosts = servers.write_names(work, misses, 2, 0)
    upstream, upstream_port = servers.start_upstream(work, hosts, work)
    try:
        if not args.no_pyspy:
            pyspy(args.scenario, load, args.tree.resolve(), work, out, names, upstream_port, args.seconds, args.rate,
                  [f for f, on in (("--native", args.native), ("--nonblocking", args.nonblocking)) if on],
                  args.cache_args, say)
        if args.callgrind:
            callgrind(args.scenario, load, args.tree.resolve(), work, out, names, upstream_port, args.callgrind,
                      args.cache_args, say)
        if args.syscalls:
            syscalls(args.scenario, load, args.tree.resolve(), work, out, names, upstream_port, args.syscalls,
                     args.cache_args, say)
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)
    say(f"records in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
