"""Processes under test: start pinned to a core, wait until they answer, read their CPU time and RSS, stop by PID."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CORE, LOAD_CORE = 0, 1  # the server under test on one core, its load generator on the other


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (bind port 0, as every test here does)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def pinned(core: int, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") else list(argv)


@dataclass
class Process:
    """A started process; `stop()` ends it by its PID (TERM, then KILL after a bound)."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """CPU time of the process: the sum of its threads' run time in nanoseconds (/proc/PID/task/*/schedstat),
        or, where the kernel has no schedstat, utime + stime from /proc/PID/stat in clock ticks (10 ms: too coarse
        for a 10 s run at 1,000 QPS, which costs the server a few hundred ms)."""
        total, seen = 0, False
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
                seen = True
            except (OSError, ValueError, IndexError):  # a thread that just exited
                continue
        if seen:
            return total / 1e9
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def wakeups(self) -> int:
        """Voluntary context switches of all its threads: each is a sleep (in epoll_wait, say) ended by a wakeup."""
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
            except (OSError, ValueError):  # a thread that just exited
                continue
        return total

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)


def start(name: str, argv: Sequence[str], log_dir: Path, core: int | None = SERVER_CORE,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> Process:
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "wb")
    command = pinned(core, argv) if core is not None else list(argv)
    popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=cwd, start_new_session=True)
    log.close()
    return Process(name, popen, log_path)


def wait_for_dns(process: Process, port: int, qname: str, timeout: float = 20.0) -> None:
    """Until the server answers `qname` over UDP on 127.0.0.1:port (any rcode), or fail saying why."""
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(qname, "A")
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.log_tail()}")
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            return
        except (dns.exception.Timeout, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not answer on 127.0.0.1:{port} within {timeout} s:\n{process.log_tail()}")


def wait_for_tcp(process: Process, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not listen on 127.0.0.1:{port} within {timeout} s:\n{process.log_tail()}")


def version(argv: Sequence[str]) -> str:
    """First line of a tool's version output, or 'not installed'."""
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"
