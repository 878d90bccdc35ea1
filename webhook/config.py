"""Webhook settings: defaults, environment variables and an optional YAML file, checked once at start.

Precedence, lowest first: built-in defaults, the YAML file named by `LOCALDNS_CONFIG`, then the individual
`LOCALDNS_*` variables (so a Deployment can override one key of a shared file). Every value is validated here, so
a bad setting stops the webhook at start with a message naming the variable or key, never at the first admission.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from webhook.resolvconf import is_dns1123_label, is_dns1123_subdomain

# Kubernetes does not validate option values, but glibc and musl both cap ndots at 15.
MAX_NDOTS = 15
# kube-apiserver refuses request bodies over 3 MiB, so a Pod fits in that; an AdmissionReview wraps it with a
# little metadata. Anything far beyond is not a review and is refused before it is buffered.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# On SIGTERM, in-flight requests get this long; below Kubernetes' default 30 s grace period, so the drain ends
# before the kubelet's SIGKILL.
DEFAULT_DRAIN_SECONDS = 25


@dataclass(frozen=True)
class ServerLimits:
    """What one client may hold of the server, so that slow or hostile clients cannot exhaust its memory (the
    Deployment's limit is 256Mi; docs/webhook.md, "Limits", gives the measurements behind each figure).

    kube-apiserver keeps up to 25 idle keep-alive connections per webhook host and opens more in bursts; each of its
    requests arrives within milliseconds. A connection costs about 50 KiB idle or mid-head, up to about 0.5 MiB when
    a client sends a large burst of body."""

    # Connections open at once, counted from accept (before TLS) to close. When all are taken, the one that has
    # waited longest for its client (handshake, request head or body, or idle) is closed to make room.
    max_connections: int = 128
    handshake_seconds: float = 10.0  # accept to the end of the TLS handshake
    header_seconds: float = 10.0  # a request's first byte to the end of its head
    body_seconds: float = 10.0  # the end of the head to the end of the body
    idle_seconds: float = 5.0  # before a connection's first request and between requests (uvicorn's keep-alive)
    max_head_bytes: int = 16 * 1024  # request line and headers (431 beyond)
    # Request bodies held in memory at once, across requests: each request may hold BODY_ALLOWANCE_BYTES, what it
    # holds beyond that is taken from this budget; a body that finds it spent gets 503.
    body_budget_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_head_bytes", "body_budget_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("handshake_seconds", "header_seconds", "body_seconds", "idle_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be above 0, got {getattr(self, name)}")


DEFAULT_LIMITS = ServerLimits()
# The body every request may hold without drawing on the shared budget: kube-apiserver's pods are a few KiB.
BODY_ALLOWANCE_BYTES = 64 * 1024


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names it and what is accepted."""


@dataclass(frozen=True)
class DNSOption:
    """One resolver option as a pod's `dnsConfig.options` item: `name` with an optional `value`."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> DNSOption:
        name, sep, value = text.strip().partition(":")
        return cls(name.strip(), value.strip() if sep else None)

    def as_pod_option(self) -> dict[str, str]:
        return {"name": self.name} if self.value is None else {"name": self.name, "value": self.value}

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class Settings:
    local_ip: str = "169.254.20.10"
    cluster_domain: str = "cluster.local"
    ndots: int = 5
    extra_options: tuple[DNSOption, ...] = ()
    fallback_nameserver: str | None = None
    excluded_namespaces: frozenset[str] = field(default_factory=lambda: frozenset({"kube-system", "localdns-system"}))

    def __post_init__(self) -> None:
        # Settings are hashable (the policy memoises per settings): lists or sets given by hand become immutable.
        object.__setattr__(self, "extra_options", tuple(self.extra_options))
        object.__setattr__(self, "excluded_namespaces", frozenset(self.excluded_namespaces))
        _check_ip("local_ip", self.local_ip)
        if self.fallback_nameserver is not None:
            _check_ip("fallback_nameserver", self.fallback_nameserver)
            if ipaddress.ip_address(self.fallback_nameserver) == ipaddress.ip_address(self.local_ip):
                raise ConfigError("fallback_nameserver must differ from local_ip (it is the address used when the "
                                  "local cache does not answer)")
        if not is_dns1123_subdomain(self.cluster_domain):
            raise ConfigError(f"cluster_domain {self.cluster_domain!r} is not a valid DNS name "
                              "(lowercase letters, digits, '-' and '.', e.g. cluster.local)")
        if isinstance(self.ndots, bool) or not isinstance(self.ndots, int) or not 0 <= self.ndots <= MAX_NDOTS:
            raise ConfigError(f"ndots must be an integer from 0 to {MAX_NDOTS}, got {self.ndots!r}")
        for option in self.extra_options:
            if not option.name or any(c.isspace() for c in str(option)):
                raise ConfigError(f"extra_options entry {str(option)!r} must be name or name:value without spaces")
            if option.name == "ndots":
                raise ConfigError("extra_options must not set ndots; use ndots (LOCALDNS_NDOTS) instead")
        for namespace in self.excluded_namespaces:
            if not is_dns1123_label(namespace):
                raise ConfigError(f"excluded_namespaces entry {namespace!r} is not a valid namespace name")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], origins: Mapping[str, str] | None = None,
                     source: str = "settings") -> Settings:
        """Build settings from snake_case keys (the YAML file's shape); unknown keys are an error (typos).

        `origins` names where each key came from (a variable or file), so errors point at what to fix.
        """
        origins = origins or {}
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
        converted: dict[str, Any] = {}
        for key, raw in values.items():
            try:
                converted[key] = _CONVERTERS[key](raw)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{origins.get(key, key)}: {error}") from None
        try:
            return cls(**converted)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Defaults, then the YAML file in LOCALDNS_CONFIG (if set), then LOCALDNS_* variables."""
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        path = environ.get("LOCALDNS_CONFIG", "").strip()
        if path:
            values.update(load_file(path))
            origins.update({key: f"{path}: {key}" for key in values})
        for key in (f.name for f in fields(cls)):
            variable = ENV_PREFIX + key.upper()
            if variable in environ:
                values[key] = environ[variable]
                origins[key] = f"{variable} ({key})"
        source = "LOCALDNS_* environment" + (f" and {path}" if path else "")
        return cls.from_mapping(values, origins, source)

    def describe(self) -> dict[str, Any]:
        """The effective settings as plain data (for logs and `preview`)."""
        return {
            "local_ip": self.local_ip,
            "cluster_domain": self.cluster_domain,
            "ndots": self.ndots,
            "extra_options": [str(o) for o in self.extra_options],
            "fallback_nameserver": self.fallback_nameserver,
            "excluded_namespaces": sorted(self.excluded_namespaces),
        }


ENV_PREFIX = "LOCALDNS_"


def load_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"LOCALDNS_CONFIG: cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"LOCALDNS_CONFIG: {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"LOCALDNS_CONFIG: {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _check_ip(name: str, value: object) -> None:
    try:
        ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(f"{name} {value!r} is not an IP address") from None


def _text_list(raw: object) -> list[str]:
    """A comma-separated string (environment) or a YAML list of strings."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return [item.strip() for item in raw if item.strip()]
    raise TypeError(f"expected a comma-separated string or a list of strings, got {raw!r}")


def _options(raw: object) -> tuple[DNSOption, ...]:
    """`name[:value]` strings (comma-separated, or a list), or pod dnsConfig items {name, value}, mixed freely."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if items is None:
        return ()
    if not isinstance(items, list):
        raise TypeError(f"expected a comma-separated string or a list, got {raw!r}")
    options = []
    for item in items:
        if isinstance(item, str):
            if item.strip():
                options.append(DNSOption.parse(item))
        elif isinstance(item, dict) and not set(item) - {"name", "value"} and isinstance(item.get("name"), str):
            value = item.get("value")
            options.append(DNSOption(item["name"].strip(), None if value is None else str(value).strip()))
        else:
            raise TypeError(f"option {item!r} must be 'name', 'name:value' or {{name: ..., value: ...}}")
    return tuple(options)


def _ndots(raw: object) -> int:
    if isinstance(raw, bool):
        raise TypeError(f"expected an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    raise ValueError(f"expected an integer from 0 to {MAX_NDOTS}, got {raw!r}")


def _optional_ip(raw: object) -> str | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "off", "none", "false")):
        return None
    if not isinstance(raw, str):
        raise TypeError(f"expected an IP address or 'off', got {raw!r}")
    return raw.strip()


def _string(raw: object) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"expected a string, got {raw!r}")
    return raw.strip()


def _namespaces(raw: object) -> frozenset[str]:
    return frozenset(_text_list(raw))


_CONVERTERS = {
    "local_ip": _string,
    "cluster_domain": lambda raw: _string(raw).rstrip("."),
    "ndots": _ndots,
    "extra_options": _options,
    "fallback_nameserver": _optional_ip,
    "excluded_namespaces": _namespaces,
}

