"""The node's NOTRACK/ACCEPT rules as data, and the few iptables calls that ensure or remove them.

The rule table is the one node-local-dns installs: traffic to and from the cache's listen IPs on the DNS port
skips conntrack (raw NOTRACK) and is accepted before any other filter rule (filter ACCEPT), each rule prepended
and tagged with a comment so `iptables-save` shows whose it is. `rules_for()` is pure; `Iptables` runs the
node's own backend binary (legacy or nft, detected as kube-proxy's iptables-wrapper does) with `-w`, and holds
the xtables lock around a whole batch of changes.
"""
from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import SetupError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

COMMENT_PREFIX = "localdns"
DEFAULT_LOCK_PATH = "/run/xtables.lock"
LOCK_WAIT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Rule:
    """One rule: where it goes and its match/target arguments (without -t/-I/-C/-D)."""

    family: int  # 4 or 6: iptables or ip6tables
    table: str
    chain: str
    args: tuple[str, ...]

    def describe(self) -> str:
        tool = "iptables" if self.family == 4 else "ip6tables"
        return f"{tool} -t {self.table} {self.chain} {' '.join(self.args)}"


def rules_for(addresses: Iterable[IPAddress], dns_port: int, health_port: int | None) -> list[Rule]:
    """The rules for the listen addresses, in the order they are ensured (each one prepended)."""
    rules: list[Rule] = []
    for address in addresses:
        for proto in ("tcp", "udp"):
            rules += [
                _rule(address, "raw", "PREROUTING", proto, "to", dns_port, "NOTRACK",
                      "skip conntrack for queries to the cache"),
                _rule(address, "filter", "INPUT", proto, "to", dns_port, "ACCEPT", "accept queries to the cache"),
                _rule(address, "raw", "OUTPUT", proto, "from", dns_port, "NOTRACK",
                      "skip conntrack for answers from the cache"),
                _rule(address, "filter", "OUTPUT", proto, "from", dns_port, "ACCEPT", "accept answers from the cache"),
                _rule(address, "raw", "OUTPUT", proto, "to", dns_port, "NOTRACK",
                      "skip conntrack for host-network queries to the cache"),
            ]
        if health_port is not None:
            rules += [
                _rule(address, "raw", "OUTPUT", "tcp", "to", health_port, "NOTRACK",
                      "skip conntrack for health checks"),
                _rule(address, "raw", "OUTPUT", "tcp", "from", health_port, "NOTRACK",
                      "skip conntrack for health answers"),
            ]
    return rules


def _rule(address: IPAddress, table: str, chain: str, proto: str, direction: str, port: int, target: str,
          why: str) -> Rule:
    """One rule matching `proto` packets to (or from) `address` on `port`, tagged with a comment saying why."""
    host, port_flag = ("-d", "--dport") if direction == "to" else ("-s", "--sport")
    args = (host, str(address), "-p", proto, "-m", proto, port_flag, str(port),
            "-m", "comment", "--comment", f"{COMMENT_PREFIX}: {why}", "-j", target)
    return Rule(address.version, table, chain, args)


# --- backend detection ------------------------------------------------------------------------------------------

_KUBELET_CHAINS = re.compile(r"^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\b", re.MULTILINE)

SaveRunner = Callable[[str, Sequence[str]], str]  # (binary, args) -> stdout, "" when it cannot run


def detect_backend(save: SaveRunner) -> str:
    """'legacy' or 'nft': the backend this node's kubelet/kube-proxy use, the way iptables-wrapper decides.

    kubelet (1.17+) creates KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY in the mangle table of the backend it uses;
    nft is checked first (cheap with `-t mangle`). Without those chains, the backend holding more rules wins (older
    clusters); a tie, an empty node or nothing readable means nft, today's default.
    """
    for binary in ("iptables-nft-save", "ip6tables-nft-save"):
        if _KUBELET_CHAINS.search(save(binary, ("-t", "mangle"))):
            return "nft"
    # Asking iptables-legacy-save for one table would create that table in the kernel; read them all.
    legacy_outputs = [save(binary, ()) for binary in ("iptables-legacy-save", "ip6tables-legacy-save")]
    if any(_KUBELET_CHAINS.search(output) for output in legacy_outputs):
        return "legacy"
    legacy_rules = sum(_count_rules(output) for output in legacy_outputs)
    nft_rules = sum(_count_rules(save(binary, ())) for binary in ("iptables-nft-save", "ip6tables-nft-save"))
    return "legacy" if legacy_rules > nft_rules else "nft"


def _count_rules(save_output: str) -> int:
    return sum(1 for line in save_output.splitlines() if line.startswith("-"))


def run_save(binary: str, args: Sequence[str]) -> str:
    path = shutil.which(binary)
    if path is None:
        return ""
    try:
        done = subprocess.run([path, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("backend detection: %s could not run: %s", binary, exc)
        return ""
    if done.returncode != 0:
        # Legacy tables exist but cannot be read: typically CAP_NET_RAW is missing, and the detection may then
        # pick nft on a legacy node. Say so once, at start.
        log.warning("backend detection: %s failed (%s); on nodes whose iptables is legacy the cache needs "
                    "CAP_NET_RAW", binary, done.stderr.strip() or f"exit {done.returncode}")
        return ""
    return done.stdout


# --- the xtables lock ---------------------------------------------------------------------------------------------

def lock_path() -> str:
    # The same variable iptables itself reads, so a test (or an odd distribution) can move both together.
    return os.environ.get("XTABLES_LOCKFILE") or DEFAULT_LOCK_PATH


@contextmanager
def xtables_lock(path: str | None = None, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the xtables lock (flock) that iptables and kube-proxy take, waiting at most `wait` seconds."""
    path = path or lock_path()
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SetupError(f"cannot open the xtables lock {path}: {exc}", "iptables_lock") from exc
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SetupError(
                        f"the xtables lock {path} is held by another program for more than {wait:g}s "
                        "(kube-proxy, a CNI plugin or an admin's iptables); will retry at the next sync",
                        "iptables_lock") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing drops the flock


# --- running iptables ---------------------------------------------------------------------------------------------

class Iptables:
    """Checks, inserts and deletes `Rule`s with the node's backend binaries (`iptables-nft`, `ip6tables-legacy`...)."""

    def __init__(self, backend: str) -> None:
        if backend not in ("legacy", "nft"):
            raise ValueError(f"unknown iptables backend {backend!r}")
        self.backend = backend

    @classmethod
    def detect(cls) -> Iptables:
        return cls(detect_backend(run_save))

    def binary(self, family: int) -> str:
        return f"{'iptables' if family == 4 else 'ip6tables'}-{self.backend}"

    def exists(self, rule: Rule) -> bool:
        return self._run(rule, "-C", check_only=True)

    def insert(self, rule: Rule) -> None:
        self._run(rule, "-I")

    def delete(self, rule: Rule) -> None:
        self._run(rule, "-D")

    def _run(self, rule: Rule, op: str, check_only: bool = False) -> bool:
        binary = self.binary(rule.family)
        path = shutil.which(binary)
        if path is None:
            raise SetupError(f"{binary} not found on PATH; install the iptables package (Debian: iptables) "
                                f"in the image, or the node's {self.backend} backend is missing", "iptables")
        # -I with no position prepends; -w waits for the lock where this backend takes it (legacy).
        command = [path, "-w", str(int(LOCK_WAIT_SECONDS)), "-t", rule.table, op, rule.chain, *rule.args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SetupError(f"{shlex.join(command)} could not run: {exc}", "iptables") from exc
        if done.returncode == 0:
            return True
        stderr = done.stderr.strip()
        # `-C` exits 1 with "does a matching rule exist" when the rule is absent; anything else is a real failure.
        if check_only and done.returncode == 1 and ("matching rule" in stderr or "No chain" in stderr or not stderr):
            return False
        if done.returncode == 4 or "xtables lock" in stderr:
            raise SetupError(f"{shlex.join(command)}: {stderr}", "iptables_lock")
        raise SetupError(f"{shlex.join(command)} exited {done.returncode}: {stderr or '(no message)'}", "iptables")
