"""Real parts for the cache tests: dnsmasq on loopback as kube-dns, the cache as its own process (`python -m cache`).

Every process is started here and stopped by its PID; every port is a free one picked by the kernel.
dnsmasq runs with --keep-in-foreground, not --no-daemon: in --no-daemon (debug) mode it serves TCP connections in
its main process, so the cache's persistent upstream connection would stall every other query.
"""
from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.conftest import require_tool

# The tree `python -m cache` runs from: this checkout, or the compiled build LOCALDNS_TREE names (made by
# tools/compile_cache.py: `make test-compiled`), whose modules then serve this process's imports too.
ROOT = Path(os.environ.get("LOCALDNS_TREE") or Path(__file__).resolve().parents[2]).resolve()
if os.environ.get("LOCALDNS_TREE"):
    sys.path.insert(0, str(ROOT))

# The zone dnsmasq serves as kube-dns. auth-zone makes its negative answers carry an SOA (RFC 2308), as CoreDNS's do.
HOSTS = [
    "10.0.0.1 web.default.svc.cluster.local",
    "fd00::1 web.default.svc.cluster.local",
    "10.0.0.2 db.default.svc.cluster.local",
    "192.0.2.10 www.example.org",
    "192.0.2.11 coalesce.example.org",
    "192.0.2.12 stale.example.org",
] + [f"10.1.0.{i} big.default.svc.cluster.local" for i in range(1, 101)] \
  + [f"192.0.2.{100 + i} big.example.org" for i in range(1, 101)]

UPSTREAM_TTL = 60


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Dnsmasq:
    """auth=True: kube-dns for cluster.local (authoritative: negative answers carry the SOA); auth=False: the node's
    resolver for example.org (plain hosts answers, reached over UDP)."""

    def __init__(self, tmp: Path, auth: bool = True) -> None:
        self.binary = require_tool("dnsmasq")
        self.tmp = tmp
        self.port = free_port()
        self.log = tmp / f"dnsmasq-{self.port}.log"
        hosts = tmp / f"hosts-{self.port}"
        hosts.write_text("\n".join(HOSTS) + "\n")
        self.args = [
            self.binary, "--keep-in-foreground", f"--port={self.port}", "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", "--log-queries", f"--log-facility={self.log}",
            f"--auth-ttl={UPSTREAM_TTL}", f"--local-ttl={UPSTREAM_TTL}", "--pid-file=", "--user=root",
            "--cache-size=0",
            "--cname=alias.cluster.local,web.default.svc.cluster.local",
            "--cname=alias2.cluster.local,alias.cluster.local",
            "--srv-host=_http._tcp.web.default.svc.cluster.local,web.default.svc.cluster.local,80,0,10",
            "--txt-record=txt.default.svc.cluster.local,hello from kube-dns",
        ]
        if auth:
            self.args += ["--auth-server=ns.cluster.local,127.0.0.1", "--auth-zone=cluster.local,10.0.0.0/8,fd00::/8"]
        else:
            self.args += ["--local=/example.org/"]
        self.probe = "web.default.svc.cluster.local" if auth else "www.example.org"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Dnsmasq:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.proc.stderr.read().decode()}")
            try:
                dns.query.udp(dns.message.make_query(self.probe, "A"), "127.0.0.1", port=self.port, timeout=0.3)
                return self
            except (dns.exception.Timeout, OSError):
                continue
        raise RuntimeError("dnsmasq did not answer")

    def queries(self, name: str, qtype: str = "A") -> int:
        """How many queries for name reached dnsmasq (its query log)."""
        pattern = re.compile(rf"(?:query|auth)\[{qtype}\] {re.escape(name)} from", re.IGNORECASE)
        return sum(1 for line in self.log.read_text().splitlines() if pattern.search(line))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc.stderr.close()


class Cache:
    """`python -m cache` on 127.0.0.1 at a free port, with health and metrics on free ports."""

    def __init__(self, tmp: Path, *args: str, kube_dns: Dnsmasq | None = None, node_dns: Dnsmasq | None = None,
                 wait: bool = True, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.log = tmp / f"cache-{self.port}.log"
        argv = [sys.executable, "-m", "cache", "--listen", f"{host}:{self.port}",
                "--health", f"127.0.0.1:{self.health_port}", "--metrics", f"127.0.0.1:{self.metrics_port}",
                "--resolv-conf", "/dev/null", "--drain", "0", *args]
        if kube_dns is not None:
            argv += ["--kube-dns", f"127.0.0.1:{kube_dns.port}"]
        if node_dns is not None:
            argv += ["--forward", f"example.org=udp://127.0.0.1:{node_dns.port}"]
        self.argv = argv
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self._log_file, stderr=subprocess.STDOUT)
        if wait:
            self.wait_serving()

    def wait_serving(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cache exited {self.proc.returncode}: {self.output()}")
            if self.http("/ready")[0] == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"cache not ready: {self.output()}")

    def http(self, path: str, port: int | None = None) -> tuple[int, str]:
        url = f"http://127.0.0.1:{port or self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            # Not listening yet. (A port from free_port() is an ephemeral one: before the cache binds it, a
            # connect from the same port number meets itself and reads back its own request.)
            return 0, ""

    def metrics(self) -> dict[str, float]:
        """'name{labels}' -> value, from the Prometheus text."""
        status, body = self.http("/metrics", self.metrics_port)
        assert status == 200
        values = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def udp(self, query: dns.message.Message, timeout: float = 5, **kwargs) -> dns.message.Message:
        return dns.query.udp(query, "127.0.0.1", port=self.port, timeout=timeout, **kwargs)

    def tcp(self, query: dns.message.Message, timeout: float = 5) -> dns.message.Message:
        return dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=timeout)

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = stop_process(self.proc, sig)
        self._log_file.close()
        return code


@pytest.fixture(scope="module")
def kube_dns(tmp_path_factory):
    server = Dnsmasq(tmp_path_factory.mktemp("kubedns")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def node_dns(tmp_path_factory):
    server = Dnsmasq(tmp_path_factory.mktemp("nodedns"), auth=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cache(tmp_path_factory, kube_dns, node_dns):
    process = Cache(tmp_path_factory.mktemp("cache"), kube_dns=kube_dns, node_dns=node_dns)
    try:
        yield process
    finally:
        process.stop()


def raw_udp(port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    """Send raw bytes; the reply, or None when none came within timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


__all__ = ["Cache", "Dnsmasq", "free_port", "raw_udp", "stop_process"]
