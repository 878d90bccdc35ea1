"""The one Kubernetes client of the cluster tools and certs: a few REST calls, objects as plain dicts, one error family.

Objects come back exactly as the API server serves them (camelCase JSON): that is what `policy.decide` reads in an
AdmissionReview too, and it needs none of the generated model classes, which take seconds to import.

A watch (`Client.watch`) is a stream of events read as they come; its ERROR events become the same errors, a 410
Expired among them (the resourceVersion is too old: list again). `Client.proxy_get` reads what a pod itself serves
(the caches' metrics) through the API server's proxy subresource, as text.

Every failure is a `KubeError` whose message is a whole sentence: which object, what the API server answered (or
that it did not answer), and what to do. The API server's answers become errors through one table (`ANSWERS`),
applied by one context manager (`map_exceptions`), the way httpx turns its transports' errors into its own.

Credentials, first found wins (docs/cluster-tools.md and docs/certs.md say the same):
1. a kubeconfig the user names: `--kubeconfig FILE`, else `$KUBECONFIG` (its files merged, as kubectl merges
   them), at `--context` if given;
2. inside a pod (`KUBERNETES_SERVICE_HOST` set), the pod's ServiceAccount;
3. `~/.kube/config`.
In a pod, a stray ~/.kube/config in the image never wins over the pod's own ServiceAccount; a KUBECONFIG set on
purpose does.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import urllib3

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# Seconds for one API call (each read of the answer); connecting gets at most CONNECT_TIMEOUT of it, so a
# blackholed API server is reported in seconds, and a slow but working one is given time.
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0

JSON = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One request in words, for the error message: `get` `Secret ns/name`, or `list` `pods in namespace shop`."""

    verb: str  # the RBAC verb: get, list, watch, create, update, patch, delete
    what: str
    resource: str  # for RBAC: plural.group, e.g. "deployments.apps", "secrets"
    host: str
    timeout: float
    timeout_flag: str  # the option that sets the timeout, named in the advice
    many: bool = False  # a list: "them", not "it"
    json_patch: bool = False


class KubeError(Exception):
    """An API call failed or could not be made; str() is a whole sentence for the user, `what` names the object,
    `said` is the API server's own message when it answered with one."""

    def __init__(self, message: str, what: str = "", said: str = "") -> None:
        super().__init__(message)
        self.what, self.said = what, said

    @classmethod
    def explain(cls, call: Call, code: int, reason: str, message: str) -> str:
        """The sentence for an answer `code reason` whose Status says `message`."""
        return f"the API server at {call.host} answered {code} {reason} to {call.verb} {call.what}: {message}"


class CredentialsError(KubeError):
    """No usable credentials: no kubeconfig, an unknown context, a broken file."""


class Unreachable(KubeError):
    """No answer at all: connection refused, timed out, a TLS failure."""


class Unauthorized(KubeError):
    @classmethod
    def explain(cls, call: Call, code: int, reason: str, message: str) -> str:
        return (f"the API server at {call.host} rejected the credentials (401 Unauthorized) for {call.what}: check "
                "the kubeconfig's user, token or certificate (--kubeconfig, --context), or the pod's ServiceAccount")


class Forbidden(KubeError):
    @classmethod
    def explain(cls, call: Call, code: int, reason: str, message: str) -> str:
        them = "them" if call.many else "it"
        return (f"{call.what}: not allowed to {call.verb} {them} ({message}); grant the ServiceAccount "
                f"'{call.verb}' on {call.resource} (deploy/ has the Roles localdns's own pods need), or use "
                "credentials that have it")


class NotFound(KubeError):
    @classmethod
    def explain(cls, call: Call, code: int, reason: str, message: str) -> str:
        return f"{call.what} not found" + (f": {message}" if message else "")


class Conflict(KubeError):
    """The object changed since it was read (the write was conditional on that version): read it again."""

    @classmethod
    def explain(cls, call: Call, code: int, reason: str, message: str) -> str:
        return f"conflict on {call.what}: it changed since it was read ({message})"


class Expired(KubeError):
    """410 Gone: the resourceVersion a watch (or a list's continue token) starts from is no longer kept: list again."""

    @classmethod
    def explain(cls, call: Call, code: int, reason: str, message: str) -> str:
        return f"{call.what}: the version to {call.verb} from is too old ({code} {reason}: {message}); list them again"


class Unavailable(KubeError):
    """503 Service Unavailable: through the proxy subresource, the API server could not reach the pod (nothing
    listens on the port, or the node does not answer); otherwise the API server itself is not ready."""

    @classmethod
    def explain(cls, call: Call, code: int, reason: str, message: str) -> str:
        return f"{call.what}: the API server at {call.host} could not reach it ({code} {reason}: {message})"


# The API server's answers, by HTTP status. Any other status is a plain KubeError.
ANSWERS: dict[int, type[KubeError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
                                       410: Expired, 503: Unavailable}
# A JSON patch whose `test` operation fails is answered 422 Invalid: the tests are the caller's preconditions on the
# version it read, so that answer means the same as 409.
PATCH_TEST_FAILED = 422


def status_message(body: bytes | str | None) -> str:
    """The `message` of the API server's Status body, or "" when the body is not one."""
    try:
        status = json.loads(body or b"{}")
    except (ValueError, TypeError):
        return ""
    return str(status.get("message") or "") if isinstance(status, dict) else ""


def answer_error(call: Call, code: int, reason: str, body: bytes | str | None) -> KubeError:
    """The error for an answer that is not a success."""
    kind = Conflict if code == PATCH_TEST_FAILED and call.json_patch else ANSWERS.get(code, KubeError)
    said = status_message(body)
    return kind(kind.explain(call, code, reason, said or reason), call.what, said)


@contextlib.contextmanager
def map_exceptions(call: Call) -> Iterator[None]:
    """Turn what the transport and the kubernetes client raise during `call` into this module's errors."""
    try:
        yield
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _unreachable(call, exc) from None
    except Exception as exc:
        # kubernetes.client.ApiException, named by its shape so that importing this module does not load the
        # client: status 0 for a TLS failure (it wraps urllib3's), the HTTP status for a retried answer.
        status = getattr(exc, "status", None)
        if not isinstance(status, int) or type(exc).__name__ != "ApiException":
            raise
        if status == 0:
            raise _unreachable(call, getattr(exc, "reason", None) or exc) from None
        raise answer_error(call, status, str(getattr(exc, "reason", "")), getattr(exc, "body", None)) from None


def _unreachable(call: Call, cause: object) -> Unreachable:
    timed_out = _timed_out(cause)
    if timed_out == "connect":
        return Unreachable(f"cannot reach the Kubernetes API server: timed out, the API server at {call.host} did not "
                           f"accept a connection within {min(CONNECT_TIMEOUT, call.timeout):g} s ({call.verb} "
                           f"{call.what}); check that it is reachable from here, and the --context/--kubeconfig",
                           call.what)
    if timed_out == "read":
        return Unreachable(f"cannot reach the Kubernetes API server: timed out, the API server at {call.host} did not "
                           f"answer within {call.timeout:g} s ({call.verb} {call.what}); check that it is reachable "
                           f"from here, or raise {call.timeout_flag}", call.what)
    return Unreachable(f"cannot reach the Kubernetes API server at {call.host}: {_short(cause)} ({call.what} could "
                       "not be reached); check that it is reachable from here, and the --context/--kubeconfig",
                       call.what)


def _timed_out(cause: object) -> str | None:
    """"connect" or "read" when the request timed out (urllib3 wraps the timeout in its retry error), else None."""
    reason = getattr(cause, "reason", None)
    for error in (cause, reason):
        if isinstance(error, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass, for history
            return None
        if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
            return "connect"
        if isinstance(error, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
            return "read"
    return "read" if "timed out" in str(cause).lower() else None


def _short(reason: object) -> str:
    """The clause of urllib3's nested wrapping that says why, e.g. `[Errno 111] Connection refused`."""
    text = str(reason)
    for pattern in (r"\[Errno -?\d+\] [^'\")]+", r"\[SSL: [^\]]+\] [^'\"(]+"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip()
    return text


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

    @property
    def rbac_name(self) -> str:
        """The resource as RBAC rules and `kubectl create role --resource` name it: plural.group."""
        group = self.prefix.split("/")[2] if self.prefix.startswith("/apis/") else ""
        return f"{self.plural}.{group}" if group else self.plural


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
    "NetworkPolicy": Resource("/apis/networking.k8s.io/v1", "networkpolicies"),
}

PATCH_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


def describe(kind: str, name: str, namespace: str | None = None) -> str:
    """How messages name an object: `Secret localdns-system/localdns-webhook-tls`, `Namespace shop`."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


class Client:
    """The REST calls localdns makes, answered as plain dicts. Every failure raises a KubeError."""

    def __init__(self, api_client: ApiClient, timeout: float = DEFAULT_TIMEOUT,
                 timeout_flag: str = "--request-timeout") -> None:
        self.api_client = api_client  # a configured kubernetes.client.ApiClient: auth, TLS, proxy
        self.host: str = api_client.configuration.host
        self.timeout = timeout
        self.timeout_flag = timeout_flag

    def _call(self, verb: str, kind: str, what: str, many: bool = False, json_patch: bool = False) -> Call:
        return Call(verb, what, RESOURCES[kind].rbac_name, self.host, self.timeout, self.timeout_flag, many,
                    json_patch)

    def _send(self, method: str, path: str, call: Call, query: dict[str, str] | None = None, body: Any = None,
              content_type: str | None = None, accept: str = "application/json") -> bytes:
        """One request; the body of a 2xx answer, or the error for any other."""
        headers = {"Accept": accept} | ({"Content-Type": content_type} if content_type else {})
        with map_exceptions(call):
            params = self.api_client.param_serialize(
                method=method, resource_path=path, query_params=list((query or {}).items()),
                header_params=headers, body=body, auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(*params, _request_timeout=(min(CONNECT_TIMEOUT, call.timeout),
                                                                           call.timeout))
            data: bytes = response.read()
        if not 200 <= response.status < 300:
            raise answer_error(call, response.status, response.reason or "", data)
        return data

    def request(self, method: str, path: str, call: Call, query: dict[str, str] | None = None, body: Any = None,
                content_type: str | None = None) -> JSON:
        data = self._send(method, path, call, query, body, content_type)
        try:
            answer = json.loads(data or b"{}")
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise KubeError(f"the API server at {self.host} did not answer {call.verb} {call.what} with a JSON object",
                            call.what)
        return answer

    def get(self, kind: str, name: str, namespace: str | None = None) -> JSON:
        return self.request("GET", RESOURCES[kind].path(namespace, name),
                            self._call("get", kind, describe(kind, name, namespace)))

    def proxy_get(self, kind: str, name: str, namespace: str | None, port: int, path: str,
                  timeout: float | None = None) -> str:
        """GET `path` from the object's `port` through the API server's proxy subresource
        (`.../pods/NAME:PORT/proxy/PATH`): what the pod answers, as text. RBAC: `get` on `pods/proxy`. The API
        server answers 503 when the pod does not (Unavailable); the pod's own errors come back as they are.
        `timeout` (at most the client's) bounds the wait for a pod that accepts and never answers."""
        resource = RESOURCES[kind]
        what = f"port {port} of {describe(kind, name, namespace)}"
        call = Call("get", what, f"{resource.plural}/proxy", self.host, min(timeout or self.timeout, self.timeout),
                    self.timeout_flag)
        target = resource.path(namespace) + f"/{quote(name, safe='')}:{port}/proxy/{quote(path.lstrip('/'))}"
        return self._send("GET", target, call, accept="text/plain, */*").decode("utf-8", "replace")

    def listing(self, kind: str, namespace: str | None = None,
                label_selector: str | None = None) -> tuple[list[JSON], str]:
        """Every object (all pages), and the list's resourceVersion: the version a watch of them continues from."""
        resource = RESOURCES[kind]
        call = self._call("list", kind, _collection(resource, namespace), many=True)
        query = {"labelSelector": label_selector} if label_selector else {}
        items: list[JSON] = []
        version = None
        while True:  # pages, in case the server (or a proxy in front of it) paginates
            listing = self.request("GET", resource.path(namespace), call, query)
            items.extend(listing.get("items") or [])
            meta = listing.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")  # every page is of the first's snapshot
            token = meta.get("continue")
            if not token:
                break
            query = query | {"continue": token}
        # A list's items carry no kind; give them one so every object describes itself.
        for item in items:
            item.setdefault("kind", kind)
        return items, version

    def watch(self, kind: str, resource_version: str, namespace: str | None = None,
              timeout_seconds: int = 300) -> Watch:
        """The changes after `resource_version` (from `listing`), as a stream the server ends after
        `timeout_seconds`; bookmarks asked for. 410 Gone (at once or as an ERROR event) raises Expired."""
        resource = RESOURCES[kind]
        call = self._call("watch", kind, _collection(resource, namespace), many=True)
        query = [("watch", "1"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(timeout_seconds))]
        with map_exceptions(call):
            params = self.api_client.param_serialize(
                method="GET", resource_path=resource.path(namespace), query_params=query,
                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            # Each read may wait for the server's own end of the stream, and then some.
            response = self.api_client.call_api(*params, _request_timeout=(min(CONNECT_TIMEOUT, self.timeout),
                                                                           timeout_seconds + self.timeout))
            if not 200 <= response.status < 300:
                raise answer_error(call, response.status, response.reason or "", response.read())
        return Watch(response.response, call)

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[JSON]:
        return self.listing(kind, namespace, label_selector)[0]

    def create(self, kind: str, namespace: str | None, body: JSON) -> JSON:
        what = describe(kind, str((body.get("metadata") or {}).get("name", "")), namespace)
        return self.request("POST", RESOURCES[kind].path(namespace), self._call("create", kind, what), body=body,
                            content_type="application/json")

    def replace(self, kind: str, name: str, namespace: str | None, body: JSON) -> JSON:
        """PUT: conditional on `metadata.resourceVersion` when the body carries one (Conflict otherwise)."""
        return self.request("PUT", RESOURCES[kind].path(namespace, name),
                            self._call("update", kind, describe(kind, name, namespace)), body=body,
                            content_type="application/json")

    def patch(self, kind: str, name: str, namespace: str | None, body: Any, patch_type: str = "strategic") -> JSON:
        call = self._call("patch", kind, describe(kind, name, namespace), json_patch=patch_type == "json")
        return self.request("PATCH", RESOURCES[kind].path(namespace, name), call, body=body,
                            content_type=PATCH_TYPES[patch_type])

    def delete(self, kind: str, name: str, namespace: str | None = None) -> JSON:
        return self.request("DELETE", RESOURCES[kind].path(namespace, name),
                            self._call("delete", kind, describe(kind, name, namespace)))


def _collection(resource: Resource, namespace: str | None) -> str:
    return f"{resource.plural} in namespace {namespace}" if namespace else resource.plural


class Watch:
    """One watch request's events, as the server sends them: iterate in one thread; `close()` from any thread
    ends the iteration (the socket is shut down under it)."""

    def __init__(self, response: urllib3.BaseHTTPResponse, call: Call) -> None:
        self._response, self._call = response, call

    def __iter__(self) -> Iterator[JSON]:
        """ADDED, MODIFIED, DELETED and BOOKMARK events until the server ends the stream. An ERROR event raises its
        error (Expired for 410); a stream cut in the middle raises Unreachable."""
        pending = b""
        with map_exceptions(self._call):
            try:
                for chunk in self._response.stream(amt=None, decode_content=True):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield self._event(line)
            except urllib3.exceptions.ProtocolError as exc:  # the connection ended without the stream's end
                self._response.close()
                raise Unreachable(f"the watch of {self._call.what} from the API server at {self._call.host} was cut "
                                  f"off ({_short(exc)})", self._call.what) from None
            except BaseException:  # closed, or abandoned half-read: the connection cannot be used again
                self._response.close()
                raise
        self._response.release_conn()
        if pending.strip():
            yield self._event(pending)

    def _event(self, line: bytes) -> JSON:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise KubeError(f"the API server at {self._call.host} sent a watch event that is not JSON for "
                            f"{self._call.what}: {line[:200]!r}", self._call.what)
        if event.get("type") == "ERROR":
            status = event["object"]
            code = status.get("code") if isinstance(status.get("code"), int) else 500
            raise answer_error(self._call, code, str(status.get("reason") or ""), json.dumps(status))
        return event

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already closed, or never connected: nothing to end
            self._response.shutdown()


HOME_KUBECONFIG = "~/.kube/config"


def credentials_source(kubeconfig: str | None, context: str | None, environ: Mapping[str, str]) -> str | None:
    """The kubeconfig to load (one path, or a KUBECONFIG list), or None for the pod's ServiceAccount: the order
    the module docstring gives. A --context needs a kubeconfig, so it never means the ServiceAccount."""
    if kubeconfig:
        return os.path.expanduser(kubeconfig)
    if environ.get("KUBECONFIG"):
        return environ["KUBECONFIG"]
    if environ.get("KUBERNETES_SERVICE_HOST") and not context:
        return None
    return os.path.expanduser(HOME_KUBECONFIG)


def connect(kubeconfig: str | None = None, context: str | None = None, timeout: float = DEFAULT_TIMEOUT,
            timeout_flag: str = "--request-timeout") -> Client:
    """A client with the first credentials found (see the module docstring), or CredentialsError saying what to do."""
    from kubernetes import config as k8s_config  # imported here: only a command that talks to a cluster pays
    from kubernetes.client.api_client import ApiClient
    from kubernetes.client.configuration import Configuration
    from kubernetes.config.config_exception import ConfigException

    how = "pass --kubeconfig FILE [--context NAME], set KUBECONFIG, or run inside a pod with a ServiceAccount"
    source = credentials_source(kubeconfig, context, os.environ)
    configuration = Configuration()
    try:
        if source is None:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            if not any(os.path.exists(os.path.expanduser(p)) for p in source.split(os.pathsep) if p):
                raise CredentialsError(f"cannot load Kubernetes credentials: kubeconfig {source} does not exist"
                                       f"{_why_no_pod(kubeconfig, context)}; {how}")
            k8s_config.load_kube_config(config_file=source, context=context, client_configuration=configuration,
                                        persist_config=False)
    except ConfigException as exc:
        where = f"kubeconfig {source}" if source else "this pod's ServiceAccount"
        raise CredentialsError(f"cannot load Kubernetes credentials from {where}: {exc}; {how}") from None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot load Kubernetes credentials: cannot read {source}: {exc}; {how}") from None
    # The error message says it once; urllib3's own retry warnings would only repeat it.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    # One retry at most: an unreachable cluster should be reported in seconds, not after a retry storm.
    configuration.retries = 1
    return Client(ApiClient(configuration), timeout, timeout_flag)


def _why_no_pod(kubeconfig: str | None, context: str | None) -> str:
    """Why the pod's ServiceAccount was not used instead of a missing default kubeconfig."""
    if kubeconfig or os.environ.get("KUBECONFIG"):
        return ""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return f" (--context {context} needs a kubeconfig; the pod has only its ServiceAccount)"
    return " and this is not a pod with in-cluster credentials"
