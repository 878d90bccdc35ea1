"""A steady load of real glibc getaddrinfo lookups from the pod namespace, each one timed, for the fail-open tests.

`LookupLoad` starts one interpreter in the pod that calls socket.getaddrinfo (glibc, AF_UNSPEC: A and AAAA in
parallel from one socket, as applications do) for short names that go through the pod's search path, at a fixed
rate from a pool of threads, so a slow lookup never holds up the ones after it. It stops by itself after
`duration` seconds (and on SIGTERM) and writes every lookup's start, duration and result as JSON.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.topology import PYTHON, Topology

# svc-1/svc-2: found at the first search domain; db.other: NXDOMAIN at the first, found at the second.
NAMES = ("svc-1", "svc-2", "db.other")
EXPECTED = {"svc-1": "10.96.1.1", "svc-2": "10.96.1.2", "db.other": "10.96.2.1"}

LOAD = r"""
import concurrent.futures, json, signal, socket, sys, threading, time
rate, duration, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
names = sys.argv[4].split(",")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
results, lock = [], threading.Lock()
t0 = time.monotonic()

def lookup(name):
    started = time.monotonic()
    try:
        infos = socket.getaddrinfo(name, 80, socket.AF_UNSPEC, socket.SOCK_STREAM)
        outcome = sorted({info[4][0] for info in infos})
    except OSError as error:
        outcome = f"error: {error}"
    with lock:
        results.append((started - t0, time.monotonic() - started, name, outcome))

print("started", flush=True)
with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
    index = 0
    while not stop.is_set():
        due = t0 + index / rate
        if due - t0 > duration:
            break
        pause = due - time.monotonic()
        if pause > 0:
            stop.wait(pause)
        pool.submit(lookup, names[index % len(names)])
        index += 1
with open(out, "w") as f:
    json.dump(results, f)
"""


@dataclass
class Lookup:
    at: float  # seconds since the load started
    seconds: float
    name: str
    outcome: list[str] | str


class LookupLoad:
    def __init__(self, topo: Topology, name: str, rate: float = 60, duration: float = 30) -> None:
        self.topo, self.duration = topo, duration
        self.out = topo.workdir / f"lookups-{name}.json"
        self.process = topo.pod.popen(PYTHON, "-c", LOAD, str(rate), str(duration), str(self.out), ",".join(NAMES),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "started", self.process.stderr.read()
        self.started = time.monotonic()  # within a few ms of the child's own zero for `Lookup.at`

    def finish(self) -> list[Lookup]:
        """Wait for the load to end by itself (its duration), then read every lookup."""
        try:
            _, stderr = self.process.communicate(timeout=self.duration + 30)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        assert self.process.returncode == 0, stderr
        return [Lookup(*row) for row in json.loads(Path(self.out).read_text())]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def failures(lookups: list[Lookup]) -> list[Lookup]:
    """Lookups that did not return exactly the name's address (glibc only accepts answers from the address it
    asked, 169.254.20.10: an answer from anywhere else would have been a timeout, then a failure)."""
    return [lookup for lookup in lookups if lookup.outcome != [EXPECTED[lookup.name]]]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(lookups: list[Lookup]) -> str:
    seconds = [lookup.seconds for lookup in lookups]
    span = max(lookup.at for lookup in lookups) - min(lookup.at for lookup in lookups)
    return (f"{len(lookups)} lookups in {span:.1f}s ({len(lookups) / max(span, 1e-9):.0f}/s), "
            f"{len(failures(lookups))} failed, p50 {percentile(seconds, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(seconds, 0.99) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms")
