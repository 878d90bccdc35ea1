"""The cache DaemonSet's pods as the API server shows them, read without I/O: which node each is for, whether its
cache runs and why it is not ready, and the two settings `status` needs from the DaemonSet (the metrics port and
the sync interval), with the cache's own precedence: its flags, then its --config file, then its defaults."""
from __future__ import annotations

import datetime as dt
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from localdns.kube import JSON

# The cache's defaults (cache/config.py): `--metrics 0.0.0.0:9253`, `--sync-interval 60`.
DEFAULT_METRICS_PORT = 9253
DEFAULT_SYNC_INTERVAL = 60.0
MESSAGE_LIMIT = 160  # a kubelet message can be a page long (image pull errors); the line shows its start


@dataclass(frozen=True)
class CacheSettings:
    metrics_port: int | None  # None: --metrics off
    sync_interval: float


@dataclass(frozen=True)
class PodState:
    ready: bool
    running: bool  # the cache container runs: its metrics can be read, Ready or not
    reason: str  # why it is not ready; "" when it is
    started: float | None = None  # unix time the running container started, when the kubelet says
    ran_before: bool = False  # a container of this pod has run (and its rules may be in the kernel)


def node_of(pod: JSON) -> str:
    """The node a pod runs on or is meant for: a DaemonSet pod not yet scheduled names its node in the node
    affinity the DaemonSet controller gives it (matchFields metadata.name)."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and field.get("values"):
                return str(field["values"][0])
    return ""


def pod_state(pod: JSON) -> PodState:
    """Ready as the pod's Ready condition says; running as the first container's state says (a Ready pod with no
    container status yet runs); and, when not ready, why, in the kubelet's own words."""
    status = pod.get("status") or {}
    conditions = {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    container = _container_status(pod)
    state = (container or {}).get("state") or {}
    running = "running" in state if container is not None else ready
    started = _timestamp((state.get("running") or {}).get("startedAt"))
    restarts = int((container or {}).get("restartCount") or 0)
    ran_before = running or restarts > 0 or bool((container or {}).get("lastState"))
    if ready:
        return PodState(True, running, "", started, ran_before)
    return PodState(False, running, _why_not_ready(pod, status, conditions, container), started, ran_before)


def _container_status(pod: JSON) -> JSON | None:
    statuses = [c for c in (pod.get("status") or {}).get("containerStatuses") or [] if isinstance(c, dict)]
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return next((c for c in statuses if c.get("name") == containers[0].get("name")), statuses[0] if statuses else None)


def _why_not_ready(pod: JSON, status: JSON, conditions: Mapping[str, JSON], container: JSON | None) -> str:
    phase = status.get("phase") or "Pending"
    if phase in ("Failed", "Succeeded"):  # an evicted pod stays listed, Failed, until it is deleted
        evicted = status.get("reason") == "Evicted"
        said = _said(None if evicted else status.get("reason"), status.get("message"))
        return ("evicted" if evicted else phase.lower()) + (f": {said}" if said else "")
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "terminating"
    scheduled = conditions.get("PodScheduled") or {}
    if not (pod.get("spec") or {}).get("nodeName"):
        said = _said(scheduled.get("reason"), scheduled.get("message"))
        return f"not scheduled: {said}" if scheduled.get("status") == "False" and said else "not scheduled yet"
    if container is None:
        return "starting: no container status yet"
    state = container.get("state") or {}
    restarts = int(container.get("restartCount") or 0)
    history = []
    if restarts:
        history.append(f"restarted {restarts} {'time' if restarts == 1 else 'times'}")
    last = (container.get("lastState") or {}).get("terminated") or {}
    if last:
        history.append(f"last exit {last.get('exitCode', '?')}" + (f" {last['reason']}" if last.get("reason") else ""))
    after = f" ({', '.join(history)})" if history else ""
    if "waiting" in state:
        waiting = state["waiting"] or {}
        reason = str(waiting.get("reason") or "waiting")
        # CrashLoopBackOff's message only repeats the back-off; what killed it is in the history.
        message = "" if reason == "CrashLoopBackOff" else _said(None, waiting.get("message"))
        return reason + (f": {message}" if message else "") + after
    if "terminated" in state:
        ended = state["terminated"] or {}
        return f"terminated: {ended.get('reason') or 'exited'} exit {ended.get('exitCode', '?')}" + after
    return "running, not Ready: readiness probe failing" + after


def _said(reason: Any, message: Any) -> str:
    text = ": ".join(str(part).strip() for part in (reason, message) if part)
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 3] + "..."


def _timestamp(value: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() if value else None
    except ValueError:
        return None


def pick(pods: Iterable[JSON]) -> dict[str, JSON]:
    """One cache pod per node: during an upgrade a node has two (the surge pod beside the old one), and an evicted
    pod stays listed beside its replacement. A Ready pod wins, then one whose cache runs, then the newest."""
    def rank(pod: JSON) -> tuple[bool, bool, str]:
        state = pod_state(pod)
        return state.ready, state.running, str((pod.get("metadata") or {}).get("creationTimestamp") or "")

    chosen: dict[str, JSON] = {}
    for pod in pods:
        node = node_of(pod)
        if node not in chosen or rank(pod) > rank(chosen[node]):
            chosen[node] = pod
    return chosen


# ---- what the DaemonSet tells the cache ----

def _template_spec(daemonset: JSON) -> JSON:
    return (((daemonset.get("spec") or {}).get("template") or {}).get("spec")) or {}


def cache_container(daemonset: JSON) -> JSON:
    containers = _template_spec(daemonset).get("containers") or [{}]
    return next((c for c in containers if c.get("name") == "cache"), containers[0])


def cache_arguments(daemonset: JSON) -> list[str]:
    """The cache container's command line with $(VAR) expanded as the kubelet does, from the literal env values
    (a value from the downward API, such as the node's IP, stays as written: only ports and numbers matter here)."""
    container = cache_container(daemonset)
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item and item.get("name"):
            env[str(item["name"])] = _expand(str(item["value"]), env)
    return [_expand(str(a), env) for a in (container.get("command") or []) + (container.get("args") or [])]


def _expand(text: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def flag(arguments: list[str], name: str) -> str | None:
    """The value of `--name=VALUE` or `--name VALUE`; the last one wins, as in argparse."""
    value = None
    for i, arg in enumerate(arguments):
        if arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(arguments):
            value = arguments[i + 1]
    return value


def config_source(daemonset: JSON) -> tuple[str, str] | None:
    """(ConfigMap name, key) of the file the cache's --config names, through the container's volume mounts; None
    when there is no --config or it is not a ConfigMap's."""
    path = flag(cache_arguments(daemonset), "--config")
    if not path:
        return None
    container = cache_container(daemonset)
    volumes = {v.get("name"): v for v in _template_spec(daemonset).get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        where = str(mount.get("mountPath") or "").rstrip("/")
        if mount.get("subPath") and where == path:
            inside = str(mount["subPath"])
        elif where and path.startswith(where + "/"):
            inside = posixpath.join(str(mount.get("subPath") or ""), path[len(where) + 1:])
        else:
            continue
        configmap = (volumes.get(mount.get("name")) or {}).get("configMap") or {}
        if not configmap.get("name"):
            return None
        items = {i.get("path"): i.get("key") for i in configmap.get("items") or []}
        return str(configmap["name"]), str(items.get(inside, inside) if items else inside)
    return None


def cache_settings(daemonset: JSON, config_file: str | None = None) -> CacheSettings:
    """The metrics port and the sync interval the caches run with: flags, then the --config file's text (if read),
    then the cache's defaults. A value that does not parse is taken as the default (the cache would refuse it
    and not run, which the pods' state shows)."""
    arguments = cache_arguments(daemonset)
    try:
        document = yaml.safe_load(config_file) if config_file else {}
    except yaml.YAMLError:
        document = {}
    from_file = {str(k).lstrip("-").replace("_", "-"): v for k, v in document.items()} \
        if isinstance(document, dict) else {}

    def setting(name: str) -> Any:
        given = flag(arguments, f"--{name}")
        return given if given is not None else from_file.get(name)

    metrics = setting("metrics")
    port: int | None = DEFAULT_METRICS_PORT
    if str(metrics).strip() == "off":
        port = None
    elif metrics is not None:
        text = str(metrics).rpartition(":")[2]
        port = int(text) if text.isdigit() and 0 < int(text) < 65536 else DEFAULT_METRICS_PORT
    try:
        interval = float(setting("sync-interval") or DEFAULT_SYNC_INTERVAL)
    except (TypeError, ValueError):
        interval = DEFAULT_SYNC_INTERVAL
    return CacheSettings(port, interval if interval > 0 else DEFAULT_SYNC_INTERVAL)
