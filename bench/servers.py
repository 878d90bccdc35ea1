"""The DNS servers in the benchmark: the shared upstream (dnsmasq as kube-dns) and the caches compared.

Every cache forwards cluster.local to the same upstream, listens on 127.0.0.1 only, and runs pinned to the server
core. The upstream is authoritative for cluster.local (so NXDOMAIN carries a SOA, which makes it cacheable, RFC
2308), caches nothing itself, and answers with a 30 s TTL.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import procs

ZONE = "cluster.local"
HIT_NAMES = 100
TTL = 30


@dataclass(frozen=True)
class Names:
    """The query files and the names the upstream knows."""

    hits: Path  # 100 names, asked over and over
    misses: tuple[Path, ...]  # per round, unique names each asked once (no round asks another's)
    fill: Path  # more unique positive names than any cache's size cap
    negative: Path  # names that do not exist (NXDOMAIN with SOA), more than any negative cap


def write_names(work: Path, misses: int, rounds: int, fill: int) -> tuple[Names, Path]:
    """Query files for dnsperf and the upstream's hosts file holding every positive name."""
    hosts = work / "upstream.hosts"
    miss_files = tuple(work / f"misses-{r}.txt" for r in range(rounds))
    names = Names(work / "hits.txt", miss_files, work / "fill.txt", work / "negative.txt")
    positive = [(names.hits, "h", HIT_NAMES), (names.fill, "f", fill),
                *((path, f"m{r}x", misses) for r, path in enumerate(miss_files))]
    with open(hosts, "w") as out:
        for group, (_, prefix, count) in enumerate(positive):
            for i in range(count):
                out.write(f"10.{group}.{i // 250 % 250}.{i % 250 + 1} {prefix}{i}.{ZONE}\n")
    for path, prefix, count in (*positive, (names.negative, "nx", fill)):
        path.write_text("".join(f"{prefix}{i}.{ZONE} A\n" for i in range(count)))
    return names, hosts


def start_upstream(work: Path, hosts: Path, log_dir: Path) -> tuple[procs.Process, int]:
    """dnsmasq as kube-dns: authoritative for cluster.local from a hosts file, no cache, TTL 30 s, UDP and TCP.

    It runs on the load core: it is part of the environment, not of the server under test.
    """
    port = procs.free_port()
    argv = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
            f"--auth-zone={ZONE}", f"--auth-server=ns.{ZONE},127.0.0.1", f"--auth-ttl={TTL}",
            f"--local-ttl={TTL}", "--cache-size=0", f"--port={port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--pid-file=", "--log-facility=-", "--user=root", "--dns-forward-max=1000"]
    process = procs.start("upstream-dnsmasq", argv, log_dir, core=procs.LOAD_CORE)
    procs.wait_for_dns(process, port, f"h0.{ZONE}", timeout=120)  # it reads every name first: ~1M in the full run
    return process, port


@dataclass(frozen=True)
class Cache:
    """How to start one cache: `argv(work, port, upstream_port)` -> command line (config files written first)."""

    name: str
    binary: str
    install_hint: str
    argv: Callable[[Path, int, int], list[str]]
    env: dict[str, str] | None = None

    def installed(self) -> bool:
        return shutil.which(self.binary) is not None or os.path.exists(self.binary)


def localdns_argv(work: Path, port: int, upstream: int) -> list[str]:
    """Production defaults (caps, TTLs, prefetch, batching), health and metrics served as in a cluster but on
    loopback ports of their own; nothing outside cluster.local is asked, so no node resolver is needed."""
    return [sys.executable, "-m", "cache", "--listen", f"127.0.0.1:{port}", "--kube-dns", f"127.0.0.1:{upstream}",
            "--health", f"127.0.0.1:{procs.free_port()}", "--metrics", f"127.0.0.1:{procs.free_port()}",
            "--resolv-conf", "/dev/null", "--drain", "0"]


def dnsmasq_argv(work: Path, port: int, upstream: int) -> list[str]:
    return ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", f"--server=127.0.0.1#{upstream}",
            "--cache-size=10000", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--pid-file=", "--log-facility=-", "--user=root"]


def unbound_argv(work: Path, port: int, upstream: int, tcp: bool = False) -> list[str]:
    """One thread, iterator only (no validation), everything forwarded to the upstream; `tcp`: over TCP only
    (`tcp-upstream: yes`), as localdns asks kube-dns, so that the miss path is compared like for like."""
    config = work / "unbound.conf"
    config.write_text(f"""server:
  interface: 127.0.0.1
  port: {port}
  num-threads: 1
  do-daemonize: no
  use-syslog: no
  logfile: ""
  verbosity: 0
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: ""
  do-not-query-localhost: no
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  qname-minimisation: no
  domain-insecure: "{ZONE}"
  tcp-upstream: {"yes" if tcp else "no"}
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@{upstream}
""")
    return ["unbound", "-d", "-c", str(config)]


def kresd_argv(work: Path, port: int, upstream: int) -> list[str]:
    rundir = work / "kresd"
    rundir.mkdir(exist_ok=True)
    config = work / "kresd.conf"
    config.write_text(f"""net.listen('127.0.0.1', {port}, {{ kind = 'dns' }})
cache.open(100 * MB, 'lmdb://{rundir}/cache')
-- STUB: forward as a stub resolver, no DNSSEC validation (the upstream is kube-dns)
policy.add(policy.all(policy.STUB('127.0.0.1@{upstream}')))
""")
    return ["kresd", "-n", "-q", "-c", str(config), str(rundir)]


# localdns as the image runs it: the hot path compiled (tools/compile_cache.py builds COMPILED before the run). `-P`
# leaves the working directory (the sources) off sys.path, so `cache` is imported from COMPILED, on PYTHONPATH.
COMPILED = Path(__file__).resolve().parent.parent / "build" / "compiled"


def compiled_argv(work: Path, port: int, upstream: int) -> list[str]:
    python, _m, *rest = localdns_argv(work, port, upstream)
    return [python, "-P", "-m", *rest]


LOCALDNS = Cache("localdns", sys.executable, "the project itself: `make install`", compiled_argv,
                 env={"PYTHONPATH": str(COMPILED)})
LOCALDNS_PY = Cache("localdns-py", sys.executable, "the project itself", localdns_argv)
LOCALDNS_PLAIN = Cache("localdns-plain", sys.executable, "the project itself",
                       lambda work, port, upstream: [*compiled_argv(work, port, upstream), "--no-udp-batch"],
                       env={"PYTHONPATH": str(COMPILED)})
PEERS = [
    Cache("dnsmasq", "dnsmasq", "apt-get install dnsmasq (tools/install-system.sh)", dnsmasq_argv),
    Cache("unbound", "unbound", "apt-get install unbound (make bench)", unbound_argv),
    Cache("unbound-tcp", "unbound", "apt-get install unbound (make bench)",
          lambda work, port, upstream: unbound_argv(work, port, upstream, tcp=True)),
    Cache("kresd", "kresd", "apt-get install knot-resolver (make bench)", kresd_argv),
]


# The listener floor (bench/echo.py): no cache, the I/O path alone.
ECHO_BATCH = Cache("echo-batched", sys.executable, "the project itself",
                   lambda work, port, upstream: [sys.executable, "-m", "bench.echo", "--port", str(port)])
ECHO_PLAIN = Cache("echo-plain", sys.executable, "the project itself",
                   lambda work, port, upstream: [sys.executable, "-m", "bench.echo", "--port", str(port), "--plain"])
