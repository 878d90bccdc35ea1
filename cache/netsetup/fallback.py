"""The fail-open fallback, planned: what `--fallback-endpoints` means, and the DNATs of the fallback chain.

While no cache socket is bound to a listen address, the pods' queries to it are tracked by conntrack (the raw
NOTRACK only applies while a socket is bound, iptables.rules_for) and the nat jump sends them to the chain planned
here, which spreads them over kube-dns's endpoints; conntrack's reverse NAT makes the answers come from the listen
address as usual. The chain outlives the cache: the last endpoints programmed stay until a cache programs others or
the node is torn down. Everything here is pure; NodeNetwork applies it.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

OFF = "none"
# iptables.COMMENT_PREFIX starts it, as every rule of ours (a test holds them together). Not imported from there:
# the settings parse the flag with this module, and iptables' imports (shutil) cost every cache 0.4 MB of RSS.
DNAT_COMMENT = "localdns: fallback to kube-dns endpoint"


@dataclass(frozen=True)
class FallbackSpec:
    """`--fallback-endpoints`: off, a DNS name the cache resolves (A and AAAA) through kube-dns at every sync, or
    fixed addresses (IPVS clusters, where kube-dns's ClusterIP is local to every node and can be the target)."""

    name: str | None = None
    addresses: tuple[IPAddress, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.name is not None or bool(self.addresses)


def parse_fallback(value: str) -> FallbackSpec:
    """`none`, `NAME`, or `IP[,IP...]`; ValueError says what is wrong."""
    text = value.strip()
    if text.lower() in (OFF, ""):
        return FallbackSpec()
    parts = [part.strip() for part in text.split(",")]
    addresses = []
    for part in parts:
        try:
            addresses.append(ipaddress.ip_address(part.strip("[]")))
        except ValueError:
            break
    else:
        unusable = [a for a in addresses if a.is_unspecified or a.is_loopback or a.is_multicast]
        if unusable:
            raise ValueError(f"{unusable[0]} cannot receive DNAT'd queries from pods")
        return FallbackSpec(addresses=tuple(dict.fromkeys(addresses)))
    if len(parts) > 1 or not _is_dns_name(text):
        raise ValueError(f"{value!r}: expected none, a DNS name (the headless Service, e.g. "
                         "localdns-kube-dns.kube-system.svc.cluster.local) or IP[,IP...]")
    return FallbackSpec(name=text.rstrip(".").lower())


def _is_dns_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and all(re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?", label)
                                     for label in labels)


def by_family(endpoints: Iterable[IPAddress]) -> dict[int, list[IPAddress]]:
    """Endpoints per address family, each list sorted: the same set always gives the same rules."""
    families: dict[int, list[IPAddress]] = {4: [], 6: []}
    for endpoint in set(endpoints):
        families[endpoint.version].append(endpoint)
    return {family: sorted(found, key=int) for family, found in families.items()}


def dnat_rules(endpoints: Sequence[IPAddress]) -> list[tuple[str, ...]]:
    """The fallback chain of one family: each new flow DNATed to one endpoint, evenly.

    Rule i of n takes every (n-i)th flow that reaches it (`-m statistic --mode nth`, which nft runs as numgen), so
    each endpoint gets 1/n of the flows; the last rule takes the rest. The port stays (53). Only a flow's first
    packet passes nat rules: conntrack sends the rest of the flow, and the answers, the same way.
    """
    count = len(endpoints)
    rules = []
    for index, endpoint in enumerate(endpoints):
        spread = ("-m", "statistic", "--mode", "nth", "--every", str(count - index), "--packet", "0")
        rules.append((*(spread if index < count - 1 else ()),
                      "-m", "comment", "--comment", f"{DNAT_COMMENT} {endpoint}",
                      "-j", "DNAT", "--to-destination", str(endpoint)))
    return rules


def endpoints_in(chain_rules: Iterable[str]) -> list[IPAddress]:
    """The DNAT targets of a chain as `iptables -S` prints it, in rule order."""
    found = []
    for line in chain_rules:
        words = line.split()
        if "--to-destination" not in words[:-1]:
            continue
        target = words[words.index("--to-destination") + 1]
        if target.startswith("["):  # [v6]:port
            target = target[1:].partition("]")[0]
        elif target.count(":") == 1:  # v4:port
            target = target.partition(":")[0]
        try:
            found.append(ipaddress.ip_address(target))
        except ValueError:
            continue
    return found
