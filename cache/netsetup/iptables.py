"""The node's NOTRACK/ACCEPT rules as data, and the few iptables calls that ensure or remove them.

The rule table is the one node-local-dns installs: traffic to and from the cache's listen IPs on the DNS port
skips conntrack (raw NOTRACK) and is accepted before any other filter rule (filter ACCEPT), each rule prepended
and tagged with a comment so `iptables-save` shows whose it is. Two additions of ours: the port-unreachable a node
sends when no cache is bound skips conntrack too (so a node that drops INVALID in OUTPUT still tells the client at
once), and with the fail-open fallback (netsetup/fallback.py) the pods' NOTRACK applies only while a cache socket is
bound, and a nat jump sends what is left to kube-dns. `rules_for()` is pure; `Iptables` runs the node's own backend
binary (legacy or nft, detected as kube-proxy's iptables-wrapper does) with `-w`, and holds the xtables lock around
a whole batch of changes.
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
FALLBACK_CHAIN = "LOCALDNS-FALLBACK"  # nat table, iptables and ip6tables alike: the DNATs to kube-dns


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


def rules_for(addresses: Iterable[IPAddress], dns_port: int, health_port: int | None,
              fallback: bool = False) -> list[Rule]:
    """The rules for the listen addresses, in the order they are ensured (each one prepended).

    With `fallback`, a pod's query skips conntrack only while a socket is bound to its address and port
    (`-m socket --nowildcard`: the cache's, not a wildcard listener's); otherwise conntrack tracks it and the nat
    jump hands it to the fallback chain, whose DNAT sends it to kube-dns (conntrack only NATs tracked packets).
    """
    rules: list[Rule] = []
    for address in addresses:
        for proto in ("tcp", "udp"):
            if fallback:
                rules.append(_rule(address, "raw", "PREROUTING", proto, "to", dns_port, "NOTRACK",
                                   "skip conntrack for queries while a cache is bound",
                                   ("-m", "socket", "--nowildcard")))
            else:
                rules.append(_rule(address, "raw", "PREROUTING", proto, "to", dns_port, "NOTRACK",
                                   "skip conntrack for queries to the cache"))
            rules += [
                _rule(address, "filter", "INPUT", proto, "to", dns_port, "ACCEPT", "accept queries to the cache"),
                _rule(address, "raw", "OUTPUT", proto, "from", dns_port, "NOTRACK",
                      "skip conntrack for answers from the cache"),
                _rule(address, "filter", "OUTPUT", proto, "from", dns_port, "ACCEPT", "accept answers from the cache"),
                _rule(address, "raw", "OUTPUT", proto, "to", dns_port, "NOTRACK",
                      "skip conntrack for host-network queries to the cache"),
            ]
            if fallback:
                rules.append(_rule(address, "nat", "PREROUTING", proto, "to", dns_port, FALLBACK_CHAIN,
                                   "send queries to kube-dns while no cache is bound"))
        rules.append(_port_unreachable_rule(address))
        if health_port is not None:
            rules += [
                _rule(address, "raw", "OUTPUT", "tcp", "to", health_port, "NOTRACK",
                      "skip conntrack for health checks"),
                _rule(address, "raw", "OUTPUT", "tcp", "from", health_port, "NOTRACK",
                      "skip conntrack for health answers"),
            ]
    return rules


def _rule(address: IPAddress, table: str, chain: str, proto: str, direction: str, port: int, target: str,
          why: str, matches: tuple[str, ...] = ()) -> Rule:
    """One rule matching `proto` packets to (or from) `address` on `port`, tagged with a comment saying why."""
    host, port_flag = ("-d", "--dport") if direction == "to" else ("-s", "--sport")
    args = (host, str(address), "-p", proto, "-m", proto, port_flag, str(port), *matches,
            "-m", "comment", "--comment", f"{COMMENT_PREFIX}: {why}", "-j", target)
    return Rule(address.version, table, chain, args)


def _port_unreachable_rule(address: IPAddress) -> Rule:
    """The node's "port unreachable" from `address` (no cache bound) skips conntrack. The query it answers was not
    tracked, so conntrack would call the error INVALID, and a node that drops INVALID in OUTPUT (many hardened ones
    do) would leave the client waiting its whole timeout (glibc: 5 s) instead of moving on at once."""
    icmp = (("-p", "icmp", "-m", "icmp", "--icmp-type", "port-unreachable") if address.version == 4 else
            ("-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "port-unreachable"))
    args = ("-s", str(address), *icmp, "-m", "comment", "--comment",
            f"{COMMENT_PREFIX}: skip conntrack for port unreachable while no cache is bound", "-j", "NOTRACK")
    return Rule(address.version, "raw", "OUTPUT", args)


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
        done = self._call(rule.family, ("-t", rule.table, "-C", rule.chain, *rule.args), absent_ok=True)
        return done.returncode == 0

    def insert(self, rule: Rule) -> None:
        self._call(rule.family, ("-t", rule.table, "-I", rule.chain, *rule.args))  # no position: prepended

    def delete(self, rule: Rule) -> None:
        self._call(rule.family, ("-t", rule.table, "-D", rule.chain, *rule.args))

    # --- whole chains (the fallback's DNATs) ---

    def chain_rules(self, family: int, table: str, chain: str) -> list[str] | None:
        """The chain's rules as `-S` prints them (`-A CHAIN ...`), or None when the chain does not exist."""
        done = self._call(family, ("-t", table, "-S", chain), absent_ok=True)
        if done.returncode != 0:
            return None
        return [line for line in done.stdout.splitlines() if line.startswith("-A ")]

    def ensure_chain(self, family: int, table: str, chain: str) -> None:
        if self.chain_rules(family, table, chain) is None:
            self.replace_chain(family, table, chain, [])

    def replace_chain(self, family: int, table: str, chain: str, rules: Sequence[Sequence[str]]) -> None:
        """Create the chain or replace its rules in one restore transaction: packets see the old rules or the new,
        never a chain half rewritten. `--noflush` keeps every other chain; naming this one flushes it."""
        lines = [f"*{table}", f":{chain} - [0:0]", *(_restore_line(chain, args) for args in rules), "COMMIT"]
        binary = f"{self.binary(family)}-restore"
        self._execute(binary, ("--noflush",), stdin="\n".join(lines) + "\n")

    def delete_chain(self, family: int, table: str, chain: str) -> bool:
        """Flush and delete the chain (no rule may still jump to it); False when it was not there."""
        if self.chain_rules(family, table, chain) is None:
            return False
        self._call(family, ("-t", table, "-F", chain))
        self._call(family, ("-t", table, "-X", chain))
        return True

    # --- running the binaries ---

    def _call(self, family: int, args: Sequence[str], absent_ok: bool = False) -> subprocess.CompletedProcess[str]:
        return self._execute(self.binary(family), args, absent_ok=absent_ok)

    def _execute(self, binary: str, args: Sequence[str], stdin: str | None = None,
                 absent_ok: bool = False) -> subprocess.CompletedProcess[str]:
        """Run one iptables binary; SetupError on failure. With `absent_ok`, "no such rule/chain" is an answer
        (exit 1), not a failure."""
        path = shutil.which(binary)
        if path is None:
            raise SetupError(f"{binary} not found on PATH; install the iptables package (Debian: iptables) "
                             f"in the image, or the node's {self.backend} backend is missing", "iptables")
        # -w waits for the lock where this backend takes it (legacy).
        command = [path, "-w", str(int(LOCK_WAIT_SECONDS)), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, input=stdin,
                                  timeout=COMMAND_TIMEOUT_SECONDS)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SetupError(f"{shlex.join(command)} could not run: {exc}", "iptables") from exc
        if done.returncode == 0:
            return done
        stderr = done.stderr.strip()
        if absent_ok and _says_absent(done.returncode, stderr):
            return done
        if done.returncode == 4 or "xtables lock" in stderr:
            raise SetupError(f"{shlex.join(command)}: {stderr}", "iptables_lock")
        hint = ""
        if "socket" in stderr or "statistic" in stderr:
            hint = ("; the fail-open fallback needs the kernel's xt_socket and xt_statistic matches "
                    "(or run with --fallback-endpoints none)")
        raise SetupError(f"{shlex.join(command)} exited {done.returncode}: {stderr or '(no message)'}{hint}",
                         "iptables")


def _restore_line(chain: str, args: Sequence[str]) -> str:
    """One `-A` line of iptables-restore input, which knows double quotes only."""
    for arg in args:
        if '"' in arg or "\n" in arg:
            raise ValueError(f"cannot pass {arg!r} to iptables-restore")
    return " ".join(f'"{arg}"' if not arg or " " in arg else arg for arg in ("-A", chain, *args))


def _says_absent(returncode: int, stderr: str) -> bool:
    """iptables' ways of saying "no such rule" or "no such chain" (a jump to a missing chain included), as opposed
    to a failure such as a match the kernel lacks."""
    if returncode == 1:
        return not stderr or any(sign in stderr for sign in ("matching rule", "No chain", "incompatible"))
    return returncode == 2 and ("does not exist" in stderr or f"load target `{FALLBACK_CHAIN}'" in stderr)
