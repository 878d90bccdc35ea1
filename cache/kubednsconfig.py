"""kube-dns's ConfigMap (`stubDomains`, `upstreamNameservers`) as a mounted directory (`--kube-dns-config DIR`).

Each key is read and judged on its own: a key whose new value is bad is logged with its name and ignored, and its
last good value stays in force; a missing key (or directory) means no stub domains, or no override of the node's
resolvers. The rules are kube-dns's own (kubernetes/dns pkg/dns/config), narrowed to what node-local-dns can forward
to: IP addresses with an optional port, never names, and at most three upstream nameservers.
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable

from .addresses import DNS_PORT, Address, parse_host_port

STUB_DOMAINS = "stubDomains"
UPSTREAM_NAMESERVERS = "upstreamNameservers"
KEYS = (STUB_DOMAINS, UPSTREAM_NAMESERVERS)
MAX_UPSTREAMS = 3  # kube-dns refuses more ("upstreamNameserver cannot have more than three entries")
MAX_VALUE_BYTES = 256 * 1024  # a ConfigMap holds at most 1 MiB in all; nothing sane comes near this for two keys
# Kubernetes' DNS-1123 subdomain, which kube-dns requires of a stub domain: lowercase, no trailing dot.
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")


def parse_nameserver(value: object) -> Address:
    """'1.2.3.4', '1.2.3.4:5353', 'fd00::53' or '[fd00::53]:5353' to a UDP upstream (TCP when an answer is
    truncated). ValueError says what is wrong."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    try:
        host, port = parse_host_port(value, DNS_PORT) if value.strip() else ("", 0)
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address with an optional port (names are not resolved: the "
                         "cache would depend on itself)") from None
    if not 0 < port < 65536 or ipaddress.ip_address(host).is_unspecified:
        raise ValueError(f"{value!r}: no server can be reached there")
    return Address("udp", host, port)


def parse_stub_domains(text: str, cluster_domain: str) -> dict[str, tuple[Address, ...]]:
    """`{"acme.local": ["1.2.3.4", "5.6.7.8:5353"]}` to zone -> upstreams."""
    document = _json(text)
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object of domain -> list of nameserver IPs")
    zones: dict[str, tuple[Address, ...]] = {}
    for domain, servers in document.items():
        if len(domain) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(domain):
            raise ValueError(f"domain {domain!r} is not a DNS-1123 subdomain (lowercase, no trailing dot)")
        if domain == cluster_domain.strip(".").lower():
            raise ValueError(f"domain {domain!r} is the cluster domain, which kube-dns answers")
        if not isinstance(servers, list) or not servers:
            raise ValueError(f"domain {domain!r}: expected a non-empty list of nameserver IPs")
        try:
            zones[domain] = tuple(parse_nameserver(server) for server in servers)
        except ValueError as error:
            raise ValueError(f"domain {domain!r}: {error}") from None
    return zones


def parse_upstream_nameservers(text: str) -> tuple[Address, ...]:
    """`["8.8.8.8", "8.8.4.4"]` to the upstreams that replace the node's resolv.conf for `.` (empty: no override)."""
    document = _json(text)
    if not isinstance(document, list):
        raise ValueError("expected a JSON list of nameserver IPs")
    if len(document) > MAX_UPSTREAMS:
        raise ValueError(f"{len(document)} nameservers; kube-dns allows at most {MAX_UPSTREAMS}")
    return tuple(parse_nameserver(server) for server in document)


def _json(text: str) -> object:
    import json  # here, not at the top: most nodes have no kube-dns ConfigMap, and json costs 0.14 MB of RSS
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None


def read_keys(directory: str) -> dict[str, bytes | str | None]:
    """Each key's bytes (None: absent; a str: why it cannot be read), all from one generation of a mounted ConfigMap.

    The kubelet writes a new generation into a fresh hidden directory and then renames the `..data` symlink onto
    it; reading through the resolved `..data` once keeps the two keys from two different generations. A plain
    directory (no `..data`) is read as it is."""
    base = directory
    data_link = os.path.join(directory, "..data")
    if os.path.islink(data_link):
        resolved = os.path.realpath(data_link)
        if os.path.isdir(resolved):  # else the link was swapped meanwhile, or the volume went: the top level
            base = resolved
    values: dict[str, bytes | str | None] = {}
    for key in KEYS:
        try:
            with open(os.path.join(base, key), "rb") as file:
                values[key] = file.read(MAX_VALUE_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            values[key] = None
        except OSError as error:  # unreadable: a bad value, so the last good one stays
            values[key] = f"cannot be read: {error.strerror or error}"
    return values


def _text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        raise ValueError(raw)
    if len(raw) > MAX_VALUE_BYTES:
        raise ValueError(f"longer than {MAX_VALUE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None


class KubeDnsConfig:
    """The stub domains and upstream nameservers in force, refreshed from `directory` by `refresh()`.

    `is_self(address)` says whether an address is one this cache answers on: a value that forwards there is bad
    (a loop), like any other bad value."""

    def __init__(self, directory: str, cluster_domain: str, is_self: Callable[[Address], bool]) -> None:
        self.directory, self.cluster_domain, self.is_self = directory, cluster_domain, is_self
        self.stub_domains: dict[str, tuple[Address, ...]] = {}
        self.upstreams: tuple[Address, ...] = ()
        self._seen: dict[str, bytes | str | None] = {key: None for key in KEYS}

    def refresh(self, force: bool = False) -> tuple[bool, list[str]]:
        """Read the directory; returns whether what is in force changed, and one problem per bad key
        (`key: why`), whose last good value was kept. `force`: judge every key again (the settings changed)."""
        changed, problems = False, []
        for key, raw in read_keys(self.directory).items():
            if raw == self._seen[key] and not force:
                continue
            self._seen[key] = raw
            try:
                if key == STUB_DOMAINS:
                    stubs = parse_stub_domains(_text(raw), self.cluster_domain) if raw is not None else {}
                    self._no_loop([a for servers in stubs.values() for a in servers])
                    changed |= stubs != self.stub_domains
                    self.stub_domains = stubs
                else:
                    upstreams = parse_upstream_nameservers(_text(raw)) if raw is not None else ()
                    self._no_loop(list(upstreams))
                    changed |= upstreams != self.upstreams
                    self.upstreams = upstreams
            except ValueError as error:
                problems.append(f"{key}: {error}")
        return changed, problems

    def _no_loop(self, targets: list[Address]) -> None:
        for target in targets:
            if self.is_self(target):
                raise ValueError(f"{target} is this cache's own listen address (a forwarding loop)")

    def describe(self) -> str:
        stubs = ", ".join(f"{zone} -> {' '.join(map(str, servers))}" for zone, servers in self.stub_domains.items())
        upstreams = " ".join(map(str, self.upstreams))
        return (f"stub domains: {stubs or 'none'}; upstream nameservers for '.': "
                f"{upstreams if upstreams else 'none (the resolv.conf)'}")
