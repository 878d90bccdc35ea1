"""Kubernetes access shared by `audit`, `rollout` and `status`.

Objects come back as plain dicts, exactly as the API server serves them (camelCase JSON), because that is what
`policy.decide` reads in an AdmissionReview too. Every API failure becomes a `ClusterError` whose message says what
went wrong and what to do; callers that can go on without one object record a `Gaps` entry instead, and the
commands mark their results partial.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import urllib3

INJECT_LABEL = "localdns.io/inject"
INJECT_LABEL_VALUE = "enabled"
OPT_IN_SELECTOR = f"{INJECT_LABEL}={INJECT_LABEL_VALUE}"
INSTALL_NAMESPACE = "localdns-system"
WEBHOOK_NAME = "localdns-webhook"  # Deployment, Service and MutatingWebhookConfiguration
TLS_SECRET = "localdns-webhook-tls"
CACHE_DAEMONSET = "localdns-cache"

EXIT_OK = 0
EXIT_FINDINGS = 1  # audit: something needs a restart; rollout: a restart failed; status: something is wrong
EXIT_ERROR = 2  # bad usage, cluster unreachable, credentials rejected: no result at all
EXIT_PARTIAL = 3  # some namespaces or objects could not be read: the result is incomplete

# Seconds for one API call (connect, and each read); a blackholed API server must not hang a command.
REQUEST_TIMEOUT = 30.0


class ClusterError(Exception):
    """An API call failed; str() is a complete sentence for the user."""


class Unreachable(ClusterError):
    pass


class Forbidden(ClusterError):
    pass


class NotFound(ClusterError):
    pass


class Conflict(ClusterError):
    pass


@dataclass(frozen=True)
class Resource:
    prefix: str  # "/api/v1" for the core group, "/apis/GROUP/VERSION" otherwise
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        path = self.prefix
        if self.namespaced and namespace is not None:
            path += f"/namespaces/{quote(namespace, safe='')}"
        path += f"/{self.plural}"
        return path + (f"/{quote(name, safe='')}" if name is not None else "")


# REST paths rather than the generated typed API classes: those take seconds to import, and `python -m webhook`
# builds every subcommand's parser (serve included) before running one.
RESOURCES: dict[str, Resource] = {
    "Namespace": Resource("/api/v1", "namespaces", namespaced=False),
    "Node": Resource("/api/v1", "nodes", namespaced=False),
    "Pod": Resource("/api/v1", "pods"),
    "Secret": Resource("/api/v1", "secrets"),
    "ConfigMap": Resource("/api/v1", "configmaps"),
    "ReplicaSet": Resource("/apis/apps/v1", "replicasets"),
    "Deployment": Resource("/apis/apps/v1", "deployments"),
    "StatefulSet": Resource("/apis/apps/v1", "statefulsets"),
    "DaemonSet": Resource("/apis/apps/v1", "daemonsets"),
    "Job": Resource("/apis/batch/v1", "jobs"),
    "CronJob": Resource("/apis/batch/v1", "cronjobs"),
    "MutatingWebhookConfiguration": Resource(
        "/apis/admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", namespaced=False),
}

PATCH_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


def describe(kind: str, name: str, namespace: str | None = None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def translate_status(code: int, reason: str, body: bytes | str | None, host: str, what: str) -> ClusterError:
    """One clear sentence for an API server error answer (a `Status` body) about `what`."""
    message = _status_message(body) or reason
    if code == 401:
        return ClusterError(
            f"the API server at {host} rejected the credentials (401 Unauthorized) while reading {what}: "
            "check the kubeconfig user, token or certificate"
        )
    if code == 403:
        return Forbidden(f"no permission for {what}: {message}")
    if code == 404:
        return NotFound(f"{what} not found{': ' + message if message else ''}")
    if code == 409:
        return Conflict(f"conflict on {what}: {message}")
    return ClusterError(f"the API server answered {code} {reason} for {what}: {message}")


def translate(exc: BaseException, host: str, what: str) -> ClusterError:
    """One clear sentence for a request that got no answer (or a client-side failure)."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status >= 400:  # kubernetes.client ApiException
        return translate_status(status, str(getattr(exc, "reason", "")), getattr(exc, "body", None), host, what)
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        reason = getattr(exc, "reason", None) or exc
        return Unreachable(
            f"cannot reach the Kubernetes API server at {host}: {_short(reason)}; "
            "check the --context/--kubeconfig and that the cluster is up"
        )
    return ClusterError(f"unexpected failure while reading {what}: {type(exc).__name__}: {exc}")


def _status_message(body: bytes | str | None) -> str:
    """The `message` of the API server's Status body."""
    try:
        status = json.loads(body or b"{}")
    except (ValueError, TypeError):
        return ""
    return str(status.get("message") or "") if isinstance(status, dict) else ""


def _short(reason: object) -> str:
    """The clause of urllib3's nested wrapping that says why, e.g. `[Errno 111] Connection refused`."""
    text = str(reason)
    if "timed out" in text.lower():
        return "timed out waiting for it (a slow API server? see --request-timeout)"
    for pattern in (r"\[Errno -?\d+\] [^'\")]+", r"\[SSL: [^\]]+\] [^'\"(]+"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip()
    return text


class Cluster:
    """The few REST calls the cluster tools make, answered as plain dicts."""

    def __init__(self, api_client: Any, timeout: float = REQUEST_TIMEOUT) -> None:
        self.api_client = api_client  # a configured kubernetes.client.ApiClient (auth, TLS, proxy)
        self.host = api_client.configuration.host
        self.timeout = (min(5.0, timeout), timeout)

    def request(self, method: str, path: str, what: str, query: dict[str, str] | None = None,
                body: Any = None, content_type: str | None = None) -> dict:
        headers = {"Accept": "application/json"} | ({"Content-Type": content_type} if content_type else {})
        try:
            params = self.api_client.param_serialize(
                method=method, resource_path=path, query_params=list((query or {}).items()),
                header_params=headers, body=body, auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(*params, _request_timeout=self.timeout)
            data = response.read()
        except Exception as exc:
            raise translate(exc, self.host, what) from None
        if not 200 <= response.status < 300:
            raise translate_status(response.status, response.reason or "", data, self.host, what)
        try:
            return json.loads(data or b"{}")
        except ValueError:
            raise ClusterError(f"the API server at {self.host} did not answer {what} with JSON") from None

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict:
        return self.request("GET", RESOURCES[kind].path(namespace, name), describe(kind, name, namespace))

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
        resource = RESOURCES[kind]
        what = f"{resource.plural} in namespace {namespace}" if namespace else resource.plural
        query = {"labelSelector": label_selector} if label_selector else {}
        items: list[dict] = []
        while True:  # pages, in case the server (or a proxy in front of it) paginates
            listing = self.request("GET", resource.path(namespace), what, query)
            items.extend(listing.get("items") or [])
            token = (listing.get("metadata") or {}).get("continue")
            if not token:
                break
            query = query | {"continue": token}
        # A list's items carry no kind; give them one so every object describes itself.
        for item in items:
            item.setdefault("kind", kind)
        return items

    def patch(self, kind: str, name: str, namespace: str | None, body: Any, patch_type: str = "strategic") -> dict:
        return self.request("PATCH", RESOURCES[kind].path(namespace, name), describe(kind, name, namespace),
                            body=body, content_type=PATCH_TYPES[patch_type])

    def delete(self, kind: str, name: str, namespace: str | None = None) -> dict:
        return self.request("DELETE", RESOURCES[kind].path(namespace, name), describe(kind, name, namespace))


def connect(kubeconfig: str | None = None, context: str | None = None, timeout: float = REQUEST_TIMEOUT) -> Cluster:
    """A client from the kubeconfig (named, $KUBECONFIG or ~/.kube/config), or in-cluster credentials in a pod."""
    from kubernetes import config as k8s_config  # imported here: the first command that talks to a cluster pays
    from kubernetes.client.api_client import ApiClient
    from kubernetes.client.configuration import Configuration
    from kubernetes.config.config_exception import ConfigException

    configuration = Configuration()
    default_path = os.path.expanduser(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config")
    path = os.path.expanduser(kubeconfig) if kubeconfig else default_path
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if not os.path.exists(path) and (kubeconfig or not in_pod):
        raise ClusterError(f"kubeconfig {path} does not exist" + ("" if kubeconfig else
                           " and this is not a pod with in-cluster credentials: pass --kubeconfig or set KUBECONFIG"))
    try:
        if os.path.exists(path):
            k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
        else:
            if context:
                raise ClusterError("--context needs a kubeconfig; inside a pod only the in-cluster credentials exist")
            k8s_config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise ClusterError(f"cannot use the Kubernetes credentials in {path if os.path.exists(path) else 'this pod'}: "
                           f"{exc}") from None
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot read the kubeconfig {path}: {exc}") from None
    # The error message says it once; urllib3's own retry warnings would only repeat it.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    # One retry at most: an unreachable cluster should be reported in seconds, not after a retry storm.
    configuration.retries = 1
    return Cluster(ApiClient(configuration), timeout)


@dataclass
class Gaps:
    """What could not be read. Non-empty means the result is partial."""

    items: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)


def opted_in_namespaces(cluster: Cluster, requested: list[str], gaps: Gaps, notes: list[str]) -> list[str]:
    """The namespaces to look at: all with the opt-in label, or those requested that carry it."""
    if not requested:
        try:
            listed = cluster.list("Namespace", label_selector=OPT_IN_SELECTOR)
        except Forbidden as exc:
            raise Forbidden(f"{exc}; name the namespaces to look at with -n/--namespace instead") from None
        return sorted(ns["metadata"]["name"] for ns in listed)
    chosen = []
    for name in requested:
        try:
            labels = cluster.get("Namespace", name)["metadata"].get("labels") or {}
        except NotFound:
            notes.append(f"namespace {name} does not exist")
            continue
        except Forbidden as exc:
            # Cannot see the label: look at it anyway, the user asked for it by name.
            gaps.add(f"{exc} (cannot check its opt-in label; assuming it is opted in)")
            chosen.append(name)
            continue
        if labels.get(INJECT_LABEL) == INJECT_LABEL_VALUE:
            chosen.append(name)
        else:
            notes.append(f"namespace {name} is not opted in (label {OPT_IN_SELECTOR} missing): "
                         "the webhook leaves its pods alone")
    return chosen


@dataclass(frozen=True)
class Owner:
    """What recreates a pod: the object a restart goes through."""

    kind: str  # Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet, Pod (bare), or another controller
    name: str
    namespace: str
    note: str = ""  # why the chain stopped early (owner deleted, not readable)

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def as_dict(self) -> dict:
        out = {"kind": self.kind, "namespace": self.namespace, "name": self.name}
        return out | ({"note": self.note} if self.note else {})


def controller_of(obj: dict) -> dict | None:
    """The ownerReference with controller: true (at most one per object, the API server enforces it)."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


class OwnerResolver:
    """Follows Pod -> ReplicaSet -> Deployment and Pod -> Job -> CronJob, listing each namespace's ReplicaSets and
    Jobs once (by uid, as ownerReferences name them) instead of one GET per pod."""

    # The intermediate kinds, and the kind that may own each in turn.
    HOPS = {"ReplicaSet": "Deployment", "Job": "CronJob"}

    def __init__(self, cluster: Cluster, gaps: Gaps) -> None:
        self.cluster = cluster
        self.gaps = gaps
        self._by_uid: dict[tuple[str, str], dict[str, dict] | None] = {}

    def owner_of(self, pod: dict) -> Owner:
        meta = pod["metadata"]
        namespace = meta.get("namespace", "")
        ref = controller_of(pod)
        if ref is None:
            return Owner("Pod", meta["name"], namespace)
        kind, name = ref.get("kind", ""), ref.get("name", "")
        if kind not in self.HOPS:
            return Owner(kind, name, namespace)
        middle, note = self._find(namespace, kind, name, ref.get("uid", ""))
        if middle is None:
            return Owner(kind, name, namespace, note)
        top = controller_of(middle)
        if top is not None and top.get("kind") == self.HOPS[kind]:
            return Owner(top["kind"], top.get("name", ""), namespace)
        if top is not None:
            return Owner(top.get("kind", ""), top.get("name", ""), namespace)
        return Owner(kind, name, namespace)

    def _find(self, namespace: str, kind: str, name: str, uid: str) -> tuple[dict | None, str]:
        key = (namespace, kind)
        if key not in self._by_uid:
            try:
                self._by_uid[key] = {o["metadata"].get("uid", ""): o for o in self.cluster.list(kind, namespace)}
            except (Forbidden, NotFound) as exc:
                self.gaps.add(f"{exc} (owners of its pods shown as the {kind}, not followed further)")
                self._by_uid[key] = None
        known = self._by_uid[key]
        if known is None:
            return None, f"{kind} not readable"
        if uid in known:
            return known[uid], ""
        return None, f"{kind} no longer exists (deleted while listing; its pods are going away)"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    parser.add_argument("--context", help="kubeconfig context to use (default: the current context)")
    parser.add_argument(
        "-n", "--namespace", action="append", default=[], metavar="NS",
        help="only these namespaces (repeatable or comma-separated; default: every opted-in namespace)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help="output format")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT, metavar="SECONDS",
                        help=f"give up on one API call after this long (default: {REQUEST_TIMEOUT:g})")


def connect_from(args: argparse.Namespace) -> Cluster:
    if args.request_timeout <= 0:
        raise ClusterError("--request-timeout must be positive")
    return connect(args.kubeconfig, args.context, args.request_timeout)


def requested_namespaces(args: argparse.Namespace) -> list[str]:
    names: list[str] = []
    for value in getattr(args, "namespace", None) or []:
        names.extend(n.strip() for n in value.split(",") if n.strip())
    return list(dict.fromkeys(names))


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: cluster errors and interrupts become one line on stderr and an exit code, never a traceback."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("interrupted: nothing further was started (restarts already requested go on in the cluster)",
                  file=sys.stderr)
            return 130
        except BrokenPipeError:
            return EXIT_ERROR
        except Exception as exc:
            if os.environ.get("LOCALDNS_DEBUG"):
                raise
            print(f"error: unexpected {type(exc).__name__}: {exc} (set LOCALDNS_DEBUG=1 for details)", file=sys.stderr)
            return EXIT_ERROR

    wrapper.__name__ = run.__name__
    wrapper.__doc__ = run.__doc__
    return wrapper


def iter_pods(cluster: Cluster, namespaces: list[str], gaps: Gaps) -> Iterator[tuple[str, list[dict]]]:
    """Each namespace's pods; a namespace that cannot be read is a gap, not the end of the run."""
    for namespace in namespaces:
        try:
            yield namespace, cluster.list("Pod", namespace)
        except (Forbidden, NotFound) as exc:
            gaps.add(str(exc))
