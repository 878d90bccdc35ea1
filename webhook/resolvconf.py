"""Kubelet's rules for a pod's resolver configuration, and the resolv.conf text the runtime writes from it.

Facts carried over from Kubernetes (pkg/kubelet/network/dns and pkg/apis/core/validation), implemented here:
- dnsPolicy ClusterFirst (not hostNetwork) and ClusterFirstWithHostNet: nameservers = the cluster DNS IPs;
  searches = `<ns>.svc.<domain> svc.<domain> <domain>` followed by the node's search domains; options = `ndots:5`
  (the node's options are dropped). ClusterFirst with hostNetwork and Default: the node's resolv.conf.
  None: nothing, only the pod's dnsConfig.
- A pod's dnsConfig is appended: nameservers and searches with duplicates removed (first one kept), options merged
  by name with the pod's value winning. Kubelet merges options through a Go map, so their order in the file is
  not defined; resolvers read options independently of order once names are unique, so this module keeps the
  first-seen order to stay deterministic.
- Kubelet then trims to what the resolvers accept: at most 3 nameservers, 32 search domains, 2048 characters in
  the search line, no search domain over 253 characters.
- kube-apiserver rejects a pod whose dnsConfig has more than 3 nameservers, 32 searches or 2048 search characters,
  a nameserver that is not an IP, a search that is not a DNS-1123 subdomain (a trailing dot allowed), an option
  without a name, or dnsPolicy None without a nameserver.
- containerd and CRI-O write the file as `search ...`, one `nameserver` line each, then `options ...`.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_LIST_CHARS = 2048
MAX_SEARCH_NAME_CHARS = 253  # DNS-1123 subdomain maximum; kubelet drops longer search domains
DEFAULT_OPTIONS = ("ndots:5",)

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(rf"^{_LABEL}$")
_SUBDOMAIN_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def is_dns1123_label(value: str) -> bool:
    return isinstance(value, str) and len(value) <= 63 and _LABEL_RE.match(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    return isinstance(value, str) and len(value) <= MAX_SEARCH_NAME_CHARS and _is_subdomain(value)


def is_ip(value: object) -> bool:
    if isinstance(value, str) and len(value) <= MAX_SEARCH_NAME_CHARS:
        return _is_ip_text(value)
    return _is_ip(value)


# Every admission checks the same few names and addresses again (the local IP, the namespace's search domains):
# remembered (short strings only, at most 4096 of each: a few MB at worst), they cost a dict lookup instead of a
# regex match or an ipaddress parse.
@functools.lru_cache(maxsize=4096)
def _is_subdomain(value: str) -> bool:
    return _SUBDOMAIN_RE.match(value) is not None


@functools.lru_cache(maxsize=4096)
def _is_ip_text(value: str) -> bool:
    return _is_ip(value)


def _is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ResolverConfig:
    """What kubelet hands the container runtime (the CRI DNSConfig): options as `name` or `name:value`."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def omit_duplicates(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))  # the first of each kept, in order


def option_text(option: Mapping[str, Any]) -> str:
    """A pod dnsConfig option as the runtime writes it; an empty value means no value, as in kubelet."""
    value = option.get("value")
    name = option.get("name") or ""
    return f"{name}:{value}" if value else name


def parse_option(text: str) -> dict[str, str]:
    """An option as resolv.conf writes it (`name` or `name:value`), as a pod dnsConfig option."""
    name, sep, value = text.partition(":")
    return {"name": name, "value": value} if sep else {"name": name}


def merge_options(options: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pod dnsConfig options merged by name: a later one's value replaces an earlier one's, in the earlier one's
    place (kubelet's merge, in a stable order). An option without a value has no `value` key."""
    merged: dict[str, dict[str, Any]] = {}
    for option in options:
        # A pod's option may lack its name: kube-apiserver decodes it (and rejects it only at validation, after
        # admission), so it is merged under "" and reported by validation_errors instead of raising here.
        name = option.get("name") or ""
        item = {"name": name}
        if option.get("value") is not None:
            item["value"] = option["value"]
        merged[name] = item
    return list(merged.values())


def cluster_searches(namespace: str, cluster_domain: str) -> list[str]:
    return [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]


def parse_resolv_conf(text: str) -> ResolverConfig:
    """Read a resolv.conf as kubelet reads the node's: nameservers accumulate, the last search/options line wins."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.strip().split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            nameservers.append(fields[1])
        elif fields[0] == "search":
            searches = [name.removesuffix(".") for name in fields[1:]]
        elif fields[0] == "options":
            options = fields[1:]
    return ResolverConfig(tuple(nameservers), tuple(searches), tuple(options))


def effective_policy(spec: Mapping[str, Any]) -> str:
    """The policy kubelet applies: "cluster", "host" or "none" (ClusterFirst on hostNetwork means host)."""
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not spec.get("hostNetwork")):
        return "cluster"
    if policy in ("ClusterFirst", "Default"):
        return "host"
    return "cluster"  # kubelet's own fallback for a policy it does not know


def pod_resolver_config(spec: Mapping[str, Any], namespace: str, cluster_dns: Sequence[str], cluster_domain: str,
                        node: ResolverConfig = ResolverConfig()) -> ResolverConfig:
    """What kubelet computes for a pod spec in `namespace`, given the cluster DNS IPs and the node's resolv.conf."""
    policy = effective_policy(spec)
    if policy == "none":
        base = ResolverConfig()
    elif policy == "cluster" and cluster_dns:
        searches = cluster_searches(namespace, cluster_domain) if cluster_domain else []
        base = ResolverConfig(tuple(cluster_dns), tuple(omit_duplicates([*searches, *node.searches])),
                              DEFAULT_OPTIONS)
    else:
        base = node
    dns_config = spec.get("dnsConfig")
    if dns_config is not None:
        base = ResolverConfig(
            tuple(omit_duplicates([*base.nameservers, *(dns_config.get("nameservers") or [])])),
            tuple(omit_duplicates([*base.searches, *(dns_config.get("searches") or [])])),
            tuple(option_text(option) for option in merge_options(
                [*(parse_option(text) for text in base.options), *(dns_config.get("options") or [])])),
        )
    return fit_limits(base)


def fit_limits(config: ResolverConfig) -> ResolverConfig:
    """Kubelet's trimming: first 3 nameservers, first 32 searches, none over 253 chars, search line <= 2048."""
    searches = [name for name in config.searches[:MAX_SEARCH_PATHS] if len(name) <= MAX_SEARCH_NAME_CHARS]
    while searches and len(" ".join(searches)) > MAX_SEARCH_LIST_CHARS:
        searches.pop()
    return ResolverConfig(config.nameservers[:MAX_NAMESERVERS], tuple(searches), config.options)


def render(config: ResolverConfig) -> str:
    """The /etc/resolv.conf text the container runtime writes for this configuration."""
    lines = []
    if config.searches:
        lines.append("search " + " ".join(config.searches))
    lines.extend(f"nameserver {server}" for server in config.nameservers)
    if config.options:
        lines.append("options " + " ".join(config.options))
    return "".join(line + "\n" for line in lines)


def validation_errors(dns_policy: str | None, dns_config: Mapping[str, Any] | None) -> list[str]:
    """kube-apiserver's checks on a pod's dnsPolicy/dnsConfig, as messages naming the field and the limit."""
    if dns_policy == "None":
        if dns_config is None:
            return ["spec.dnsConfig: required when dnsPolicy is None"]
        if not dns_config.get("nameservers"):
            return ["spec.dnsConfig.nameservers: at least one nameserver is required when dnsPolicy is None"]
    if dns_config is None:
        return []
    errors = []
    nameservers = dns_config.get("nameservers") or []
    searches = dns_config.get("searches") or []
    if len(nameservers) > MAX_NAMESERVERS:
        errors.append(f"spec.dnsConfig.nameservers: {len(nameservers)} nameservers, more than the limit of "
                      f"{MAX_NAMESERVERS}")
    errors.extend(f"spec.dnsConfig.nameservers[{i}]: {ns!r} is not an IP address"
                  for i, ns in enumerate(nameservers) if not is_ip(ns))
    if len(searches) > MAX_SEARCH_PATHS:
        errors.append(f"spec.dnsConfig.searches: {len(searches)} search paths, more than the limit of "
                      f"{MAX_SEARCH_PATHS}")
    length = len(" ".join(searches))
    if length > MAX_SEARCH_LIST_CHARS:
        errors.append(f"spec.dnsConfig.searches: {length} characters (with spaces), more than the limit of "
                      f"{MAX_SEARCH_LIST_CHARS}")
    errors.extend(f"spec.dnsConfig.searches[{i}]: {name!r} is not a valid DNS-1123 subdomain"
                  for i, name in enumerate(searches) if not is_dns1123_subdomain(name.removesuffix(".")))
    errors.extend(f"spec.dnsConfig.options[{i}]: the option name must not be empty"
                  for i, option in enumerate(dns_config.get("options") or []) if not option.get("name"))
    return errors
