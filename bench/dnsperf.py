"""Run dnsperf pinned to the load core, bounded in time, and read its figures."""
from __future__ import annotations

import math
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs

TIMEOUT = 2.0  # dnsperf's per-query timeout (s): a query unanswered this long counts as lost


@dataclass
class Result:
    sent: int = 0
    completed: int = 0
    lost: int = 0
    qps: float = 0.0
    avg_latency: float = 0.0  # seconds
    max_latency: float = 0.0
    run_time: float = 0.0
    latencies: list[float] = field(default_factory=list)  # with verbose=True: one per answered query
    argv: list[str] = field(default_factory=list)  # the command that ran

    @property
    def command(self) -> str:
        """The command as a reader would type it: the server's port and the work directory left out."""
        shown = list(self.argv)
        for i, arg in enumerate(shown[:-1]):
            if arg == "-p":
                shown[i + 1] = "PORT"
            elif arg == "-d":
                shown[i + 1] = Path(shown[i + 1]).name
        return " ".join(shown)

    def percentile(self, p: float) -> float:
        """p-th percentile latency, counting a lost query as TIMEOUT (what the client lived through)."""
        values = sorted(self.latencies + [TIMEOUT] * self.lost)
        if not values:
            return float("nan")
        return values[max(0, math.ceil(p / 100 * len(values)) - 1)]  # nearest rank


_NUMBERS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "run_time": re.compile(r"Run time \(s\):\s+([\d.]+)"),
}
_LATENCY = re.compile(r"Average Latency \(s\):\s+([\d.]+) \(min [\d.]+, max ([\d.]+)\)")
_VERBOSE_LINE = re.compile(rb"^> \S+ \S+ \S+ ([\d.]+)$", re.M)


def parse(text: str) -> Result:
    result = Result()
    for key, pattern in _NUMBERS.items():
        match = pattern.search(text)
        if match:
            setattr(result, key, type(getattr(result, key))(match.group(1)))
    match = _LATENCY.search(text)
    if match:
        result.avg_latency, result.max_latency = float(match.group(1)), float(match.group(2))
    return result


def run(port: int, datafile: Path, duration: float, *, qps: int | None = None, max_runs: int | None = None,
        verbose: bool = False, outstanding: int = 100) -> Result:
    """dnsperf against 127.0.0.1:port for at most `duration` seconds (and `max_runs` passes over the file)."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile), "-l", f"{duration:g}",
            "-q", str(outstanding), "-t", f"{TIMEOUT:g}"]
    if qps:
        argv += ["-Q", str(qps)]
    if max_runs:
        argv += ["-n", str(max_runs)]
    if verbose:
        argv.append("-v")
    with tempfile.TemporaryFile() as out:
        subprocess.run(procs.pinned(procs.LOAD_CORE, argv), stdout=out, stderr=subprocess.STDOUT,
                       timeout=duration + 30, check=False)
        out.seek(0)
        raw = out.read()
    text = raw.decode(errors="replace")
    tail = text[text.rfind("Statistics:"):] if "Statistics:" in text else text
    result = parse(tail)
    if result.sent == 0:
        raise RuntimeError(f"dnsperf sent nothing: {' '.join(argv)}\n{text[-2000:]}")
    if verbose:
        result.latencies = [float(m) for m in _VERBOSE_LINE.findall(raw)]
    result.argv = argv
    return result
