"""`status`, node by node: is the cache ready there, and is the node's fail-open fallback armed to catch its pods'
DNS while it is not?

The fallback is rules in the node's kernel (docs/node.md, "When the cache is down"), which the API server does not
show. Each cache exports their state on its metrics port: `localdns_fallback_armed` (absent with
`--fallback-endpoints none`), `localdns_fallback_endpoints` and `localdns_fallback_last_refresh_timestamp_seconds`,
read here through the API server's pods proxy (RBAC: `get` on `pods/proxy` in localdns-system). Where no cache
container runs, nothing reports, but the rules of its last run stay in the kernel: the fallback is then unknown,
not absent.

`observe` reads (the I/O); `judge` is pure: the nodes' facts in, a row per node and the checks out.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clustertools.cachepods import (
    DEFAULT_SYNC_INTERVAL,
    CacheSettings,
    PodState,
    cache_settings,
    config_source,
    pick,
    pod_state,
)
from clustertools.checks import FAIL, OK, UNKNOWN, WARN, Check, worst
from clustertools.output import plural
from clustertools.scope import Gaps
from localdns import names
from localdns.kube import JSON, Client, Forbidden, KubeError, NotFound, Unavailable, Unreachable

ARMED, NOT_ARMED, OFF, UNREAD = "armed", "not armed", "off", "unknown"
STALE_SYNCS = 3  # a refresh older than this many sync intervals means kube-dns has not answered for that long
METRICS_TIMEOUT = 10.0  # a cache answers in milliseconds; a node that does not is unknown, and nobody waits 30 s
READERS = 8  # metrics read at once: a large cluster is read in seconds, and the API server is not flooded
GAUGES = {"localdns_fallback_armed": "armed", "localdns_fallback_endpoints": "endpoints",
          "localdns_fallback_last_refresh_timestamp_seconds": "last_refresh"}
FORBIDDEN = "not allowed to read its metrics (get on pods/proxy)"
NO_CACHE_RUNNING = "no cache running to report (the rules of its last run stay in the kernel)"
NEVER_RAN = "no cache running to report (the rules of an earlier cache, if one ran, stay in the kernel)"


@dataclass(frozen=True)
class Fallback:
    """The fallback's gauges as one cache exports them. `armed` None: absent, the fallback is off."""

    armed: int | None
    endpoints: int = 0
    last_refresh: float = 0.0  # unix time; 0: not refreshed by this cache yet


@dataclass(frozen=True)
class NodeFacts:
    node: str
    pod: str  # the cache pod looked at; "" when the node has none
    state: PodState | None  # None: no cache pod on the node
    injected: int = 0  # injected pods on the node
    fallback: Fallback | None = None  # None: not read
    unread: str = ""  # why the fallback was not read, when its cache runs


def parse_fallback(page: str) -> Fallback:
    """The three gauges from a cache's Prometheus text page; ValueError when the page is not one."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    ours = False
    try:
        for family in text_string_to_metric_families(page):
            ours = ours or family.name.startswith(("coredns_", "localdns_"))
            for sample in family.samples:
                if sample.name in GAUGES:
                    values[GAUGES[sample.name]] = sample.value
    except (ValueError, TypeError, IndexError) as exc:  # the parser's errors for a page that is not the format
        raise ValueError(f"not Prometheus text ({exc})") from None
    if not ours:  # something else answers on that port: its silence about the fallback would read as "off"
        raise ValueError("not a localdns cache's metrics (no coredns_* or localdns_* metric)")
    if "armed" not in values:
        return Fallback(None)
    return Fallback(int(values["armed"]), int(values.get("endpoints", 0)), float(values.get("last_refresh", 0.0)))


# ---- the judge (pure) ----

def judge_node(facts: NodeFacts, sync_interval: float, now: float) -> dict[str, Any]:
    """One node's row: the cache and the fallback in words, the numbers read, and the state they add up to."""
    state = facts.state
    ready = state is not None and state.ready
    cache = "ready" if ready else "not ready" if state is not None else "missing"
    reason = "" if ready else state.reason if state is not None else "no cache pod on this node"
    fallback, fallback_state, detail = _fallback_verdict(facts, ready, sync_interval, now)
    row: dict[str, Any] = {
        "node": facts.node, "pod": facts.pod or None, "cache": cache, "reason": reason,
        "injectedPods": facts.injected, "fallback": fallback, "endpoints": None, "lastRefresh": None,
        "refreshedSecondsAgo": None,
    }
    if facts.fallback is not None and facts.fallback.armed is not None:
        row["endpoints"] = facts.fallback.endpoints
        if facts.fallback.last_refresh > 0:
            refreshed = dt.datetime.fromtimestamp(facts.fallback.last_refresh, dt.UTC)
            row["lastRefresh"] = refreshed.strftime("%Y-%m-%dT%H:%M:%SZ")
            row["refreshedSecondsAgo"] = round(max(0.0, now - facts.fallback.last_refresh), 1)
    row["fallbackState"], row["detail"] = fallback_state, detail
    row["state"] = worst([OK if ready else FAIL, fallback_state])
    return row


def _fallback_verdict(facts: NodeFacts, ready: bool, sync_interval: float, now: float) -> tuple[str, str, str]:
    """(fallback, state, the sentence) for one node."""
    state, gauges = facts.state, facts.fallback
    if state is None or not state.running:
        return UNREAD, UNKNOWN, "unknown: " + (NO_CACHE_RUNNING if state is not None and state.ran_before
                                               else NEVER_RAN)
    if gauges is None:
        return UNREAD, UNKNOWN, f"unknown: {facts.unread}"
    if gauges.armed is None:
        if ready:
            return OFF, OK, "off (--fallback-endpoints none)"
        return OFF, WARN, "off (--fallback-endpoints none): while this cache is not ready, pods here have no DNS"
    if not gauges.armed:
        why = ("no kube-dns endpoint known (is the headless Service localdns-kube-dns in kube-system?)"
               if gauges.endpoints == 0 else "its rules are not in place (see the cache's setup errors)")
        return NOT_ARMED, FAIL, f"not armed: {why}: the fallback cannot act"
    armed = f"armed: {plural(gauges.endpoints, 'endpoint')}"
    limit = STALE_SYNCS * sync_interval
    if gauges.last_refresh > 0:
        age = max(0.0, now - gauges.last_refresh)
        if age <= limit:
            return ARMED, OK, f"{armed}, refreshed {ago(age)} ago"
        return ARMED, WARN, (f"{armed}, last refreshed {ago(age)} ago (more than {STALE_SYNCS} sync intervals of "
                             f"{ago(sync_interval)}): kube-dns has not answered for localdns-kube-dns since, and the "
                             "endpoints may be gone")
    running_for = now - state.started if state.started is not None else None
    if running_for is not None and running_for > limit:
        return ARMED, WARN, (f"{armed} kept from an earlier run, never refreshed by this cache in {ago(running_for)}: "
                             "kube-dns does not answer for localdns-kube-dns, and the endpoints may be gone")
    return ARMED, OK, f"{armed} kept from an earlier run, not refreshed by this cache yet"


def check_fallback(rows: list[dict[str, Any]]) -> Check:
    """The summary line: on how many nodes the fallback is armed, and where it is not."""
    if not rows:
        return Check("fallback", UNKNOWN, "no cache pod to ask")
    armed = sum(r["fallback"] == ARMED for r in rows)
    off = sum(r["fallback"] == OFF for r in rows)
    parts = [f"armed on {armed} of {plural(len(rows), 'node')}"]
    if off:
        parts.append(f"off on {plural(off, 'node')} (--fallback-endpoints none)")
    for state, word in ((FAIL, "not armed"), (WARN, "warnings"), (UNKNOWN, "unknown")):
        where = [r["node"] for r in rows if r["fallbackState"] == state]
        if where:
            parts.append(f"{word} on {', '.join(where)}")
    return Check("fallback", worst(r["fallbackState"] for r in rows), "; ".join(parts))


def check_cache(daemonset: JSON, ready_nodes: set[str] | None, injected_nodes: Mapping[str, list[str]],
                fallback: Mapping[str, str] | None = None) -> Check:
    """The DaemonSet ready on every node it wants, and what the injected pods on nodes without a ready cache get:
    `fallback` maps a node to its fallback's state (`judge`), when known."""
    status = daemonset.get("status", {})
    desired = int(status.get("desiredNumberScheduled") or 0)
    ready = int(status.get("numberReady") or 0)
    detail = f"ready on {ready} of {plural(desired, 'node')}"
    problems = ["the DaemonSet runs on no node"] if desired == 0 else []
    if ready_nodes is not None:
        stranded = {node: pods for node, pods in injected_nodes.items() if node and node not in ready_nodes}
        groups: dict[str, list[str]] = {}
        for node in sorted(stranded):
            groups.setdefault((fallback or {}).get(node, NOT_ARMED), []).append(node)
        outcome = {ARMED: "they resolve through the fallback, by kube-dns", OFF: "their DNS fails",
                   NOT_ARMED: "their DNS fails", UNREAD: "their DNS works only if the fallback's rules are there"}
        for kind in (NOT_ARMED, OFF, UNREAD, ARMED):
            where = groups.get(kind, [])
            if where:
                count = sum(len(stranded[node]) for node in where)
                problems.append(f"{plural(count, 'injected pod')} on nodes without a ready cache "
                                f"({', '.join(where)}): {outcome[kind]}")
    return Check("cache", FAIL if problems or ready < desired else OK, "; ".join([detail, *problems]))


def judge(facts: list[NodeFacts], sync_interval: float, now: float) -> tuple[list[dict[str, Any]], Check]:
    rows = [judge_node(f, sync_interval, now) for f in sorted(facts, key=lambda f: f.node)]
    return rows, check_fallback(rows)


def ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


# ---- the reading (I/O) ----

def check(client: Client, daemonset: JSON, injected_nodes: Mapping[str, list[str]], gaps: Gaps, notes: list[str],
          now: dt.datetime) -> tuple[list[Check], list[dict[str, Any]]]:
    """`status`'s cache and fallback checks, and a row per node."""
    settings = cache_settings(daemonset, _config_file(client, daemonset, notes))
    facts = observe(client, daemonset, settings, injected_nodes, gaps)
    if facts is None:
        return [check_cache(daemonset, None, injected_nodes),
                Check("fallback", UNKNOWN, "not read: the cache pods cannot be listed")], []
    rows, fallback = judge(facts, settings.sync_interval, now.timestamp())
    ready = {r["node"] for r in rows if r["cache"] == "ready"}
    return [check_cache(daemonset, ready, injected_nodes, {r["node"]: r["fallback"] for r in rows}), fallback], rows


def _config_file(client: Client, daemonset: JSON, notes: list[str]) -> str | None:
    """The text of the caches' --config file, from its ConfigMap: it may set the sync interval."""
    source = config_source(daemonset)
    if source is None:
        return None
    configmap, key = source
    try:
        data = client.get("ConfigMap", configmap, names.NAMESPACE).get("data") or {}
    except (Forbidden, NotFound) as exc:
        notes.append(f"the caches' settings file is not read ({exc}): a sync interval set there is not known, "
                     f"{DEFAULT_SYNC_INTERVAL:g} s is assumed")
        return None
    return str(data.get(key) or "")


def observe(client: Client, daemonset: JSON, settings: CacheSettings, injected_nodes: Mapping[str, list[str]],
            gaps: Gaps) -> list[NodeFacts] | None:
    """Every node with a cache pod or an injected pod, and what its cache says; None when the cache pods cannot
    be listed (a gap)."""
    labels = (daemonset.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    if not labels:
        return None
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    try:
        pods = client.list("Pod", names.NAMESPACE, label_selector=selector)
    except Forbidden as exc:
        gaps.add(f"{exc} (cannot tell which nodes have a ready cache)")
        return None
    chosen = pick(pods)
    nodes = sorted((set(chosen) | set(injected_nodes)) - {""})  # a pod for no node is counted by the DaemonSet

    def facts(node: str) -> NodeFacts:
        pod = chosen.get(node)
        injected = len(injected_nodes.get(node, []))
        if pod is None:
            return NodeFacts(node, "", None, injected)
        state = pod_state(pod)
        name = str(pod["metadata"]["name"])
        if not state.running:
            return NodeFacts(node, name, state, injected)
        fallback, unread = read_fallback(client, name, settings)
        return NodeFacts(node, name, state, injected, fallback, unread)

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        found = list(pool.map(facts, nodes))
    if any(f.unread == FORBIDDEN for f in found):
        gaps.add(f"cannot read the caches' metrics, so not whether each node's fallback is armed: grant 'get' on "
                 f"pods/proxy in namespace {names.NAMESPACE}")
    return found


def read_fallback(client: Client, pod: str, settings: CacheSettings) -> tuple[Fallback | None, str]:
    """The gauges from one cache, or None and why not (FORBIDDEN: RBAC refused the pods proxy)."""
    if settings.metrics_port is None:
        return None, "the caches export no metrics (--metrics off)"
    port = settings.metrics_port
    try:
        page = client.proxy_get("Pod", pod, names.NAMESPACE, port, "/metrics",
                                timeout=min(client.timeout, METRICS_TIMEOUT))
    except Forbidden:
        return None, FORBIDDEN
    except Unavailable as exc:
        return None, f"the API server could not reach its metrics on port {port} ({exc.said or exc})"
    except Unreachable:
        return None, f"its metrics on port {port} did not answer within {min(client.timeout, METRICS_TIMEOUT):g} s"
    except KubeError as exc:
        return None, f"cannot read its metrics on port {port}: {exc}"
    try:
        return parse_fallback(page), ""
    except ValueError as exc:
        return None, f"what port {port} answers is {exc}"

