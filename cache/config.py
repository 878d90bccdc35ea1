"""Settings from flags and an optional YAML file with the same keys (long flag names without `--`).

Precedence: flags given on the command line, then the file, then the defaults. The file is re-read on change or
SIGHUP; a bad file keeps the settings in force and says why (`SettingsError`).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from localdns.logformat import parse_format

from . import wire
from .addresses import DNS_PORT, Address, parse_address, parse_host_port
from .kubednsconfig import KubeDnsConfig
from .limits import Limits
from .netsetup.fallback import parse_fallback
from .querylog import parse_classes
from .tcpclients import PRESSURE_IDLE_TIMEOUT

KUBE_DNS_ENV = "KUBE_DNS_UPSTREAM_SERVICE_HOST"
KUBE_DNS_PORT_ENV = "KUBE_DNS_UPSTREAM_SERVICE_PORT"
KUBE_DNS_ZONES = ("in-addr.arpa", "ip6.arpa")  # with the cluster domain: what node-local-dns sends to kube-dns
# The levels --log-level accepts, by the logging module's names (any case).
LOG_LEVELS = ("debug", "info", "warning", "error")

# Changing these needs a restart: they are sockets or node setup, which a reload must not drop.
RESTART_ONLY = ("listen", "allow_wildcard", "health", "metrics", "udp_batch", "setup_network", "interface_name",
                "interface_kind", "skip_teardown", "tcp_max_connections", "tcp_max_connections_per_client",
                "tcp_idle_timeout", "fallback_endpoints", "remove_startup_taint")


class SettingsError(ValueError):
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
    limits: Limits = field(default_factory=Limits)  # its fields are flags and keys of their own, like these
    drain: float = 5.0
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    tcp_max_connections_per_client: int = 100
    udp_batch: bool = True
    setup_network: bool = False
    interface_name: str = "nodelocaldns"
    interface_kind: str = "dummy"
    skip_teardown: bool = False
    sync_interval: float = 60.0
    fallback_endpoints: str = "none"  # NAME | IP[,IP...] | none (cache/endpoints.py)
    remove_startup_taint: bool = False  # cache/starttaint.py
    log_level: str = "info"
    log_format: str = "text"  # text or json (localdns/logformat.py); the query log's lines too
    kube_dns_config: str | None = None  # a mounted kube-dns ConfigMap: stubDomains, upstreamNameservers
    log_queries: bool = False
    log_queries_class: str = "all"  # all, or a comma list of success, denial, error (CoreDNS's log classes)
    log_queries_rate: int = 100  # query log lines per second, on average
    log_queries_burst: int = 1000  # and at most this many at once

    # Derived views, validated by `check`.
    def listen_addresses(self) -> list[tuple[str, int]]:
        return [_host_port(text, "listen", DNS_PORT) for text in self.listen]

    def http_address(self, which: str) -> tuple[str, int] | None:
        value = getattr(self, which)
        if value == "off":
            return None
        if value == "" and which == "health":
            return (self.listen_addresses()[0][0], 8080)
        host, port = _host_port(value, which, default_port=None)
        return host, port

    def zones(self, environ: Mapping[str, str] | None = None,
              kube_dns_config: KubeDnsConfig | None = None) -> dict[str, list[Address]]:
        """Forward zone -> upstreams: node-local-dns's defaults, then the kube-dns ConfigMap (its upstream
        nameservers replace the resolv.conf's, its stub domains add zones), then each --forward replacing its zone:
        what is set for this cache wins over what is set for the cluster's DNS."""
        env: Mapping[str, str] = os.environ if environ is None else environ
        kube_dns = self.kube_dns
        if not kube_dns and env.get(KUBE_DNS_ENV):
            kube_dns = f"{env[KUBE_DNS_ENV]}:{env.get(KUBE_DNS_PORT_ENV, DNS_PORT)}"
        zones: dict[str, list[Address]] = {}
        if kube_dns:
            target = _address(kube_dns, "kube-dns", default_proto="tcp")
            target = Address("tcp", target.host, target.port)
            for zone in (self.cluster_domain, *KUBE_DNS_ZONES):
                zones[_zone(zone)] = [target]
        resolvers = read_resolv_conf(self.resolv_conf)
        if resolvers:
            zones["."] = [Address("udp", ip, DNS_PORT) for ip in resolvers]
        if kube_dns_config is not None:
            if kube_dns_config.upstreams:
                zones["."] = list(kube_dns_config.upstreams)
            for zone, servers in kube_dns_config.stub_domains.items():
                zones[zone] = list(servers)
        for spec in self.forward:
            zone, sep, targets = spec.partition("=")
            if not sep or not targets:
                raise SettingsError(f"forward {spec!r}: expected ZONE=udp://IP:PORT[,tcp://IP:PORT...]")
            addresses = [_address(t, "forward") for t in targets.split(",") if t.strip()]
            if not addresses:
                raise SettingsError(f"forward {spec!r}: no upstream address")
            zones[_zone(zone)] = addresses
        if _zone(self.cluster_domain) not in zones:
            raise SettingsError(f"no upstream for {self.cluster_domain}: give --kube-dns IP[:PORT] (or set "
                              f"{KUBE_DNS_ENV}, as Kubernetes does for a kube-dns-upstream Service), or "
                              f"--forward {self.cluster_domain}=tcp://IP:PORT")
        return zones

    def check(self, environ: Mapping[str, str] | None = None) -> None:
        """Raise SettingsError unless these settings can run: addresses, sizes, and no forward loop to ourselves."""
        listen = self.listen_addresses()
        if not listen:
            raise SettingsError("listen: at least one IP:PORT")
        for host, port in listen:
            if ipaddress.ip_address(host).is_unspecified and not self.allow_wildcard:
                raise SettingsError(f"listen {host}:{port}: a wildcard address would answer on every address of the "
                                  "node (an open resolver on its public IP); name the addresses, or pass "
                                  "--allow-wildcard")
        problems = self.limits.problems()
        if problems:
            raise SettingsError("; ".join(problems))
        if self.tcp_max_connections < 0:
            raise SettingsError("tcp-max-connections: must not be negative")
        if self.tcp_max_connections_per_client < 1:
            raise SettingsError("tcp-max-connections-per-client: must be positive (at most tcp-max-connections "
                                "applies anyway)")
        try:
            parse_classes(self.log_queries_class)
        except ValueError as error:
            raise SettingsError(f"log-queries-class: {error}") from None
        if self.log_level.lower() not in LOG_LEVELS:
            raise SettingsError(f"log-level: {self.log_level!r}: expected {', '.join(LOG_LEVELS)}")
        try:
            parse_format(self.log_format)
        except ValueError as error:
            raise SettingsError(f"log-format: {error}") from None
        if self.log_queries_rate < 1 or self.log_queries_burst < 1:
            raise SettingsError("log-queries-rate and log-queries-burst: at least 1")
        for name in ("drain", "tcp_idle_timeout", "sync_interval"):
            if not getattr(self, name) > 0 and not (name == "drain" and self.drain == 0):
                raise SettingsError(f"{name.replace('_', '-')}: must be positive")
        self.http_address("health")
        self.http_address("metrics")
        try:
            parse_fallback(self.fallback_endpoints)
        except ValueError as error:
            raise SettingsError(f"fallback-endpoints: {error}") from None
        for zone, targets in self.zones(environ).items():
            for target in targets:
                if self.is_own_address(target):
                    raise SettingsError(f"forwarding loop: zone {zone} forwards to {target}, which is this "
                                        "cache's own listen address")

    def is_own_address(self, target: Address) -> bool:
        """Whether queries sent to `target` would reach this cache itself (a forwarding loop)."""
        return any((host == target.host or ipaddress.ip_address(host).is_unspecified) and port == target.port
                   for host, port in self.listen_addresses())


def _host_port(text: str, key: str, default_port: int | None) -> tuple[str, int]:
    try:
        return parse_host_port(text, default_port)
    except ValueError as error:
        raise SettingsError(f"{key} {error}") from None


def _address(text: str, key: str, default_proto: str = "udp") -> Address:
    try:
        return parse_address(text, default_proto)
    except ValueError as error:
        raise SettingsError(f"{key}: {error}") from None


def _zone(zone: str) -> str:
    zone = zone.strip().lower().rstrip(".")
    try:
        wire.encode_name(zone or ".")
    except (ValueError, UnicodeEncodeError):
        raise SettingsError(f"zone {zone!r}: not a DNS name") from None
    return zone or "."


def read_resolv_conf(path: str) -> list[str]:
    """The nameserver IPs of a resolv.conf (an unreadable file or no nameserver: none)."""
    try:
        with open(path) as file:
            lines = file.read().splitlines()
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
    "tcp_idle_timeout": f"seconds an idle TCP client connection stays open ({PRESSURE_IDLE_TIMEOUT:g} while more "
                        "than half of --tcp-max-connections are in use)",
    "tcp_max_connections": "most TCP client connections at once (then a new one replaces the longest idle one)",
    "tcp_max_connections_per_client": "most TCP connections at once from one client address",
    "udp_batch": "read and answer UDP in batches (recvmmsg/sendmmsg) where the kernel and libc offer them",
    "setup_network": "create the link-local interface and NOTRACK rules (needs CAP_NET_ADMIN)",
    "interface_name": "the interface --setup-network creates",
    "interface_kind": "its kind (dummy)",
    "skip_teardown": "leave interface and rules on exit",
    "sync_interval": "seconds between checks that the interface and rules are still there",
    "fallback_endpoints": "with --setup-network, where queries go while no cache is bound: NAME (a headless "
                          "Service with kube-dns's selector, resolved through kube-dns every --sync-interval), "
                          "IP[,IP...] (IPVS: kube-dns's ClusterIP), or none",
    "remove_startup_taint": "once ready, remove the taint startup-taint.cluster-autoscaler.kubernetes.io/localdns "
                            "from this node ($NODE_NAME), through the API server with the pod's token",
    "log_level": "debug, info, warning or error",
    "log_format": "text (one line per record) or json (one JSON object per line: time, level, logger, msg, fields); "
                  "re-read on reload",
    "kube_dns_config": "directory of a mounted kube-dns ConfigMap (keys stubDomains, upstreamNameservers, "
                       "kube-dns's JSON); re-read on change",
    "log_queries": "log one line per answer (CoreDNS's common log format, then cache or upstream)",
    "log_queries_class": "answers to log: all, or a comma list of success, denial (NXDOMAIN, NODATA), error",
    "log_queries_rate": "query log lines per second on average; the rest are dropped and counted",
    "log_queries_burst": "query log lines allowed at once after a quiet spell",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_fields() -> list[Field[Any]]:
    """Every flag and config key: the Settings fields, with `limits` standing for the Limits fields."""
    return [*(f for f in fields(Settings) if f.name != "limits"), *fields(Limits)]


LIMIT_NAMES = frozenset(f.name for f in fields(Limits))


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized without `shutil`: argparse makes one for every add_argument, and its own imports
    shutil for the terminal's width, and shutil brings zlib, bz2 and lzma (0.5 MB of RSS for the daemon's life)."""

    def __init__(self, prog: str) -> None:
        try:
            width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
        except (ValueError, OSError):
            width = 80
        super().__init__(prog, width=width - 2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cache", description="localdns node-local DNS cache",
                                     argument_default=argparse.SUPPRESS, formatter_class=_HelpFormatter)
    for f in option_fields():
        help_text = f"{_HELP[f.name]} (default: {_show_default(f.default)})"
        if f.name in _LISTS:
            parser.add_argument(_flag(f.name), action="append", metavar="VALUE", help=help_text, dest=f.name)
        elif f.type in ("bool", bool):
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, help=help_text, dest=f.name)
        else:
            converter = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(_flag(f.name), type=converter, metavar=f.name.split("_")[-1].upper(),
                                help=help_text, dest=f.name)
    return parser


def _show_default(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(value) or "none"
    if value is None or value == "":
        return "none" if value is None else "''"
    return str(value)


def from_file(path: str) -> dict[str, Any]:
    """The file's settings as field names -> values; SettingsError says what is wrong with it."""
    import yaml  # only with --config: PyYAML and its C loader cost 1.3 MB of RSS on every node otherwise

    try:
        with open(path) as file:
            document = yaml.safe_load(file.read()) or {}
    except OSError as error:
        raise SettingsError(f"config {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise SettingsError(f"config {path}: not YAML: {error}") from None
    if not isinstance(document, dict):
        raise SettingsError(f"config {path}: expected a mapping of flag names to values")
    known = {f.name: f for f in option_fields()}
    values = {}
    for key, value in document.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in known or name == "config":
            raise SettingsError(f"config {path}: unknown key {key!r}")
        values[name] = _coerce(name, known[name].type, value, path)
    return values


def _coerce(name: str, kind: object, value: object, path: str) -> object:
    def bad(expected: str) -> SettingsError:
        return SettingsError(f"config {path}: {name.replace('_', '-')} must be {expected}, not {value!r}")
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


def load(argv: list[str] | None = None,
         environ: Mapping[str, str] | None = None) -> tuple[Settings, dict[str, Any]]:
    """Settings from argv (and its --config file), checked; also the explicit flags, for later reloads."""
    explicit = vars(build_parser().parse_args(argv))
    for name in _LISTS & explicit.keys():
        explicit[name] = tuple(explicit[name])
    settings = resolve(explicit, environ)
    return settings, explicit


def resolve(explicit: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then the config file, then the explicit flags; checked."""
    file_values = from_file(explicit["config"]) if explicit.get("config") else {}
    values = {**file_values, **explicit}
    limits = Limits(**{name: value for name, value in values.items() if name in LIMIT_NAMES})
    settings = replace(Settings(), limits=limits,
                       **{name: value for name, value in values.items() if name not in LIMIT_NAMES})
    settings.check(environ)
    return settings


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    return [name.replace("_", "-") for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]


__all__ = ["Settings", "SettingsError", "build_parser", "load", "read_resolv_conf", "resolve"]
