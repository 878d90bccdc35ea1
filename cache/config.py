"""Settings from flags and an optional YAML file with the same keys (long flag names without `--`).

Precedence: flags given on the command line, then the file, then the defaults. The file is re-read on change or
SIGHUP; a bad file keeps the settings in force and says why (`ConfigError`).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from . import wire
from .upstream import Address, parse_address

DEFAULT_PORT = 53
KUBE_DNS_ENV = "KUBE_DNS_UPSTREAM_SERVICE_HOST"
KUBE_DNS_PORT_ENV = "KUBE_DNS_UPSTREAM_SERVICE_PORT"
KUBE_DNS_ZONES = ("in-addr.arpa", "ip6.arpa")  # with the cluster domain: what node-local-dns sends to kube-dns
# Changing these needs a restart: they are sockets or node setup, which a reload must not drop.
RESTART_ONLY = ("listen", "allow_wildcard", "health", "metrics", "udp_batch", "setup_network", "interface_name",
                "interface_kind", "skip_teardown", "tcp_max_connections")


class ConfigError(ValueError):
    """Settings that cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class Settings:
    listen: tuple[str, ...] = ("169.254.20.10:53",)
    allow_wildcard: bool = False
    kube_dns: str | None = None
    forward: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    resolv_conf: str = "/etc/resolv.conf"
    health: str = ""  # "" = first listen IP, port 8080; "off" = none
    metrics: str = "0.0.0.0:9253"  # "off" = none
    config: str | None = None
    success_ttl: int = 30
    success_size: int = 9984
    denial_ttl: int = 5
    denial_size: int = 9984
    servfail_ttl: int = 5
    stale_for: int = 3600
    prefetch: int = 3
    upstream_timeout: float = 2.0
    drain: float = 5.0
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    udp_batch: bool = True
    setup_network: bool = False
    interface_name: str = "nodelocaldns"
    interface_kind: str = "dummy"
    skip_teardown: bool = False
    sync_interval: float = 60.0
    log_level: str = "info"

    # Derived views, validated by `check`.
    def listen_addresses(self) -> list[tuple[str, int]]:
        return [_host_port(text, "listen") for text in self.listen]

    def http_address(self, which: str) -> tuple[str, int] | None:
        value = getattr(self, which)
        if value == "off":
            return None
        if value == "" and which == "health":
            return (self.listen_addresses()[0][0], 8080)
        host, port = _host_port(value, which, default_port=None)
        return host, port

    def zones(self, environ: dict[str, str] | None = None) -> dict[str, list[Address]]:
        """Forward zone -> upstreams: node-local-dns's defaults, then each --forward replacing its zone."""
        environ = os.environ if environ is None else environ
        kube_dns = self.kube_dns
        if not kube_dns and environ.get(KUBE_DNS_ENV):
            kube_dns = f"{environ[KUBE_DNS_ENV]}:{environ.get(KUBE_DNS_PORT_ENV, DEFAULT_PORT)}"
        zones: dict[str, list[Address]] = {}
        if kube_dns:
            target = _address(kube_dns, "kube-dns", default_proto="tcp")
            target = Address("tcp", target.host, target.port)
            for zone in (self.cluster_domain, *KUBE_DNS_ZONES):
                zones[_zone(zone)] = [target]
        resolvers = read_resolv_conf(self.resolv_conf)
        if resolvers:
            zones["."] = [Address("udp", ip, DEFAULT_PORT) for ip in resolvers]
        for spec in self.forward:
            zone, sep, targets = spec.partition("=")
            if not sep or not targets:
                raise ConfigError(f"forward {spec!r}: expected ZONE=udp://IP:PORT[,tcp://IP:PORT...]")
            addresses = [_address(t, "forward") for t in targets.split(",") if t.strip()]
            if not addresses:
                raise ConfigError(f"forward {spec!r}: no upstream address")
            zones[_zone(zone)] = addresses
        if _zone(self.cluster_domain) not in zones:
            raise ConfigError(f"no upstream for {self.cluster_domain}: give --kube-dns IP[:PORT] (or set "
                              f"{KUBE_DNS_ENV}, as Kubernetes does for a kube-dns-upstream Service), or "
                              f"--forward {self.cluster_domain}=tcp://IP:PORT")
        return zones

    def check(self, environ: dict[str, str] | None = None) -> None:
        """Raise ConfigError unless these settings can run: addresses, sizes, and no forward loop to ourselves."""
        listen = self.listen_addresses()
        if not listen:
            raise ConfigError("listen: at least one IP:PORT")
        for host, port in listen:
            if ipaddress.ip_address(host).is_unspecified and not self.allow_wildcard:
                raise ConfigError(f"listen {host}:{port}: a wildcard address would answer on every address of the "
                                  "node (an open resolver on its public IP); name the addresses, or pass "
                                  "--allow-wildcard")
        for name in ("success_ttl", "success_size", "denial_ttl", "denial_size", "servfail_ttl", "stale_for",
                     "prefetch", "tcp_max_connections"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', '-')}: must not be negative")
        for name in ("upstream_timeout", "drain", "tcp_idle_timeout", "sync_interval"):
            if not getattr(self, name) > 0 and not (name == "drain" and self.drain == 0):
                raise ConfigError(f"{name.replace('_', '-')}: must be positive")
        self.http_address("health")
        self.http_address("metrics")
        for zone, targets in self.zones(environ).items():
            for target in targets:
                for host, port in listen:
                    same_host = host == target.host or ipaddress.ip_address(host).is_unspecified
                    if same_host and port == target.port:
                        raise ConfigError(f"forwarding loop: zone {zone} forwards to {target}, which is this "
                                          f"cache's own listen address {host}:{port}")


def _host_port(text: str, key: str, default_port: int | None = DEFAULT_PORT) -> tuple[str, int]:
    text = str(text).strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:
        host, port = text, ""
    else:
        host, port = text, ""
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
        number = int(port) if port else default_port
        if number is None or not 0 <= number < 65536:
            raise ValueError
    except (ValueError, TypeError):
        raise ConfigError(f"{key} {text!r}: expected IP:PORT (IPv6 as [::1]:53)") from None
    return host, number


def _address(text: str, key: str, default_proto: str = "udp") -> Address:
    try:
        return parse_address(text, default_proto)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None


def _zone(zone: str) -> str:
    zone = zone.strip().lower().rstrip(".")
    try:
        wire.encode_name(zone or ".")
    except (ValueError, UnicodeEncodeError):
        raise ConfigError(f"zone {zone!r}: not a DNS name") from None
    return zone or "."


def read_resolv_conf(path: str) -> list[str]:
    """The nameserver IPs of a resolv.conf (an unreadable file or no nameserver: none)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    servers = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                servers.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
            except ValueError:
                continue
    return servers


# ---- flags and file ----

_LISTS = {"listen", "forward"}
_HELP = {
    "listen": "IP:PORT to serve DNS on, UDP and TCP (repeatable)",
    "allow_wildcard": "allow 0.0.0.0 or :: in --listen (an open resolver on every address)",
    "kube_dns": f"kube-dns IP[:PORT], reached over TCP; unset: ${KUBE_DNS_ENV}",
    "forward": "ZONE=udp://IP:PORT[,tcp://IP:PORT...]: upstreams for a zone, longest suffix wins (repeatable)",
    "cluster_domain": "the cluster's DNS domain, forwarded to kube-dns",
    "resolv_conf": "file whose nameservers answer '.' (everything outside the cluster)",
    "health": "IP:PORT for /health and /ready ('' = first listen IP, port 8080; 'off')",
    "metrics": "IP:PORT for Prometheus /metrics ('off')",
    "config": "YAML file with the same keys as the flags; re-read on change and on SIGHUP",
    "success_ttl": "longest time a positive answer is cached (seconds)",
    "success_size": "most positive answers kept",
    "denial_ttl": "longest time NXDOMAIN/NODATA is cached (seconds)",
    "denial_size": "most negative answers kept",
    "servfail_ttl": "how long an upstream SERVFAIL is cached (seconds; 0 = not cached)",
    "stale_for": "how long past expiry an answer may be served when upstreams fail (seconds; 0 = never)",
    "prefetch": "hits within an entry's life that make it refreshed before it expires (0 = off)",
    "upstream_timeout": "seconds before a query with no upstream answer gets SERVFAIL",
    "drain": "seconds the sockets keep answering after SIGTERM (/ready says 503)",
    "tcp_idle_timeout": "seconds an idle TCP client connection stays open",
    "tcp_max_connections": "most TCP client connections at once",
    "udp_batch": "read and answer UDP in batches (recvmmsg/sendmmsg) when cache.batchio is available",
    "setup_network": "create the link-local interface and NOTRACK rules (needs CAP_NET_ADMIN)",
    "interface_name": "the interface --setup-network creates",
    "interface_kind": "its kind (dummy)",
    "skip_teardown": "leave interface and rules on exit",
    "sync_interval": "seconds between checks that the interface and rules are still there",
    "log_level": "debug, info, warning or error",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cache", description="localdns node-local DNS cache",
                                     argument_default=argparse.SUPPRESS)
    for f in fields(Settings):
        kwargs = {"help": f"{_HELP[f.name]} (default: {_show_default(f.default)})", "dest": f.name}
        if f.name in _LISTS:
            parser.add_argument(_flag(f.name), action="append", metavar="VALUE", **kwargs)
        elif f.type in ("bool", bool):
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        else:
            converter = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(_flag(f.name), type=converter, metavar=f.name.split("_")[-1].upper(), **kwargs)
    return parser


def _show_default(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(value) or "none"
    if value is None or value == "":
        return "none" if value is None else "''"
    return str(value)


def from_file(path: str) -> dict:
    """The file's settings as field names -> values; ConfigError says what is wrong with it."""
    import yaml  # only with --config: PyYAML and its C loader cost 1.3 MB of RSS on every node otherwise

    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as error:
        raise ConfigError(f"config {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path}: not YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"config {path}: expected a mapping of flag names to values")
    known = {f.name: f for f in fields(Settings)}
    values = {}
    for key, value in document.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in known or name == "config":
            raise ConfigError(f"config {path}: unknown key {key!r}")
        values[name] = _coerce(name, known[name].type, value, path)
    return values


def _coerce(name: str, kind, value, path: str):
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"config {path}: {name.replace('_', '-')} must be {expected}, not {value!r}")
    if name in _LISTS:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    kind = str(kind)
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and value != int(value)):
            raise bad("a number")
        return int(value) if kind == "int" else float(value)
    if value is None and "None" in kind:
        return None
    if not isinstance(value, (str, int)):
        raise bad("a string")
    return str(value)


def load(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> tuple[Settings, dict]:
    """Settings from argv (and its --config file), checked; also the explicit flags, for later reloads."""
    explicit = vars(build_parser().parse_args(argv))
    for name in _LISTS & explicit.keys():
        explicit[name] = tuple(explicit[name])
    settings = resolve(explicit, environ)
    return settings, explicit


def resolve(explicit: dict, environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then the config file, then the explicit flags; checked."""
    file_values = from_file(explicit["config"]) if explicit.get("config") else {}
    settings = replace(Settings(), **{**file_values, **explicit})
    settings.check(environ)
    return settings


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    return [name.replace("_", "-") for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]


__all__ = ["ConfigError", "Settings", "build_parser", "load", "read_resolv_conf", "resolve"]
