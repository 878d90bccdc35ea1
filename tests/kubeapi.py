"""FakeKubeAPI: a small kube-apiserver for tests, spoken to over real HTTP by the official kubernetes client.

No kube-apiserver (nor etcd) can run on this machine, so this server follows the published REST contract
(https://kubernetes.io/docs/reference/using-api/api-concepts/) for the calls the project makes, and says where it
stops:
- paths: `/api/v1/...` (core) and `/apis/GROUP/VERSION/...`; namespaced (`.../namespaces/NS/RESOURCE[/NAME]`) and
  cluster-scoped (`.../RESOURCE[/NAME]`) resources; `/status` subresources; list across namespaces.
- verbs: get, list (`labelSelector` with =, ==, !=, in, notin, exists, !exists; `fieldSelector` on
  metadata.name/metadata.namespace and the few per-resource fields the real server supports, e.g. pods'
  spec.nodeName and status.phase; `limit`/`continue`), create (201; 409 AlreadyExists; generateName), update/PUT
  (409 Conflict on a stale metadata.resourceVersion; no resourceVersion = unconditional), patch (json-patch,
  merge-patch, strategic-merge-patch: lists with a known patch merge key are merged by it, other lists replaced;
  a resourceVersion in the patch is a precondition), delete (returns the object; DeleteOptions preconditions).
  `dryRun=All` validates and answers without storing.
- errors are `Status` objects with code, reason, message and details, as the real server sends them
  (NotFound 404, AlreadyExists 409, Conflict 409, Forbidden 403, Unauthorized 401, BadRequest 400, Invalid 422,
  UnsupportedMediaType 415, MethodNotAllowed 405).
- every write bumps one global resourceVersion; create sets metadata.uid, creationTimestamp, resourceVersion and
  (for resources that have it) generation; generation grows when anything but metadata and status changes; the
  main resource ignores status changes of resources with a /status subresource; a Secret's type is immutable
  (422). Lists are `kind: <Kind>List` with
  metadata.resourceVersion, items without kind/apiVersion, ordered by namespace and name as etcd returns them.
- validating admission: `admit(validator)` runs a validator on every create and update (a patch is an update, with
  the whole old and new object, as admission sees it) before the object is stored; it refuses by raising ApiError
  (tests/deploy/admission.py evaluates a ValidatingAdmissionPolicy's CEL this way). The requester is `user`, with
  `user_extra` (e.g. the node-name claim of a pod's service account token).
- watch (`?watch=1`): chunked JSON events from a resourceVersion, 410 Expired for a compacted one, bookmarks,
  timeoutSeconds; see tests/kubeapi_watch.py.
- the pods proxy subresource, GET `/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy[/PATH][?QUERY]`, as the real
  server's pod ResourceLocation and proxy transport do it: NAME may be `NAME`, `NAME:PORT` or `http:NAME:PORT`
  (no port: the pod's first containerPort, else 80); the request goes over HTTP to the pod's first
  `status.podIPs` address (the one `status.podIP` repeats) with the path and query as given, and the pod's status,
  Content-Type and body come back as they are. 404 NotFound for an unknown pod; 400 BadRequest `address not
  allowed` for a pod without an address, or one that is not global unicast; 503 ServiceUnavailable `error trying
  to reach service: ...` when the pod does not answer. RBAC names it `pods/proxy` (`forbid("get", "pods/proxy")`;
  a fault on `pods` does not cover it). Where it stops: a loopback podIP is allowed (the real server refuses it
  with `address not allowed`: a test's pods can only listen on loopback); only GET, only http (https: 400);
  no request header but Accept is passed on, no URL rewriting of HTML answers; no services or nodes proxy.
Not implemented (answers 400/405 rather than pretending): server-side apply, deletecollection,
validation of object schemas, finalizers and graceful deletion, namespace termination.

The resource table, selectors and merge rules are in tests/kubeapi_rules.py, the watch in tests/kubeapi_watch.py.
Test hooks: `forbid(...)`, `conflict_next(...)`, `before_next(...)` (also for verb "watch"), `delay(...)`,
`admit(...)`, `seed(...)`, `get_object(...)`, `requests` (every request, in order), `watches` (end, drop, compact,
bookmark). Use as a context manager; `client()` and `kubeconfig_path` point at it.
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import http.client
import ipaddress
import json
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonpatch
import yaml

from tests.kubeapi_rules import (
    RESOURCE_TYPES,
    ApiError,
    ResourceType,
    field_value,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    strip_type,
    without,
)
from tests.kubeapi_watch import History


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any
    verb: str = ""
    resource: str = ""
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    status: int = 0


@dataclass
class _Target:
    type: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    proxy_path: str = ""  # for the proxy subresource: the path after `/proxy`, passed on to the pod

    @property
    def rbac_resource(self) -> str:
        """The resource as RBAC names it: `pods/proxy` for the proxy (a write to /status has always counted as its
        resource's here)."""
        return f"{self.type.plural}/proxy" if self.subresource == "proxy" else self.type.plural


@dataclass
class _ProxyRequest:
    """A proxy request, resolved under the lock to where it goes; forwarded outside it."""

    host: str
    port: int
    path: str


@dataclass
class _Proxied:
    """The pod's answer, handed back as it is."""

    content_type: str
    data: bytes


@dataclass
class _WatchRequest:
    target: _Target
    query: dict[str, list[str]]


@dataclass
class _Fault:
    verb: str
    resource: str
    namespace: str | None = None
    name: str | None = None
    remaining: int | None = None  # None: forever
    action: Callable[[FakeKubeAPI], None] | None = None

    def matches(self, verb: str, target: _Target) -> bool:
        return (self.verb in (verb, "*") and self.resource in (target.rbac_resource, "*")
                and self.namespace in (None, target.namespace) and self.name in (None, target.name))


@dataclass
class _Faults:
    forbidden: list[_Fault] = field(default_factory=list)
    conflicts: list[_Fault] = field(default_factory=list)
    before: list[_Fault] = field(default_factory=list)
    delay_seconds: float = 0.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubeAPI:
    """A threading HTTP server on 127.0.0.1:<random port> holding Kubernetes objects in memory."""

    def __init__(self, token: str = "fake-token", user: str = "system:serviceaccount:test:tester",
                 user_extra: dict[str, list[str]] | None = None) -> None:
        self.token, self.user = token, user
        self.user_extra = user_extra or {}
        self._validators: list[Callable[[dict], None]] = []
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._store: dict[tuple[str, str, str, str], dict] = {}  # (group, plural, namespace or "", name)
        self._resource_version = 1
        self._faults = _Faults()
        self._stopping = threading.Event()
        self.watches = History(self._lock)
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kube-api",
                                        daemon=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-kube-api-")
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.kubeconfig_path = Path(self._tmp.name) / "kubeconfig"
        self.kubeconfig_path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
        }))

    # ---- lifecycle ----
    def start(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed handlers
        self.watches.end()  # and ends open watch streams, as a server shutting down does
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._tmp.cleanup()

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self):
        """A `kubernetes.client.ApiClient` configured from this server's kubeconfig, as a user's would be."""
        from kubernetes import config
        return config.new_client_from_config(config_file=str(self.kubeconfig_path))

    # ---- test hooks ----
    def forbid(self, verb: str, resource: str, namespace: str | None = None, name: str | None = None) -> None:
        """Answer 403 Forbidden to matching requests from now on (verb or resource may be "*")."""
        with self._lock:
            self._faults.forbidden.append(_Fault(verb, resource, namespace, name))

    def allow_all(self) -> None:
        with self._lock:
            self._faults.forbidden.clear()

    def conflict_next(self, verb: str, resource: str, name: str | None = None, times: int = 1) -> None:
        """Answer 409 Conflict to the next `times` matching requests, as if another writer got there first."""
        with self._lock:
            self._faults.conflicts.append(_Fault(verb, resource, None, name, remaining=times))

    def before_next(self, verb: str, resource: str, name: str | None, action: Callable[[FakeKubeAPI], None]) -> None:
        """Run `action(api)` just before the next matching request is served: a racing writer, for real."""
        with self._lock:
            self._faults.before.append(_Fault(verb, resource, None, name, remaining=1, action=action))

    def admit(self, validator: Callable[[dict], None]) -> None:
        """Validating admission from now on: `validator(request)` sees an admission.k8s.io/v1 AdmissionRequest's
        fields (operation, resource, name, namespace, userInfo, object, oldObject) and raises ApiError to refuse."""
        with self._lock:
            self._validators.append(validator)

    def _admit(self, operation: str, target: _Target, old: dict | None, new: dict) -> None:
        request = {
            "operation": operation, "name": new.get("metadata", {}).get("name"), "namespace": target.namespace,
            "resource": {"group": target.type.group, "version": target.type.version, "resource": target.type.plural},
            "subResource": target.subresource or "",
            "userInfo": {"username": self.user, "extra": copy.deepcopy(self.user_extra)},
            "object": copy.deepcopy(new), "oldObject": copy.deepcopy(old),
        }
        for validator in self._validators:
            validator(request)

    def delay(self, seconds: float) -> None:
        """Hold every response this long (0 to stop), to make clients time out."""
        self._faults.delay_seconds = seconds

    def seed(self, obj: dict) -> dict:
        """Store an object as if created through the API (kind and apiVersion pick the resource)."""
        rtype = self._type_of_kind(obj["apiVersion"], obj["kind"])
        obj = json.loads(json.dumps(obj))  # what went over the wire: no shared sub-objects
        namespace = obj["metadata"].get("namespace") if rtype.namespaced else None
        if rtype.namespaced and not namespace:
            raise ValueError(f"{rtype.kind} {obj['metadata'].get('name')} needs metadata.namespace")
        with self._lock:
            return copy.deepcopy(self._create(_Target(rtype, namespace, None, None), obj, seeding=True))

    def get_object(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        rtype = self._type_of_plural(resource)
        with self._lock:
            obj = self._store.get((rtype.group, rtype.plural, namespace or "", name))
            return copy.deepcopy(obj)

    def objects(self, resource: str) -> list[dict]:
        rtype = self._type_of_plural(resource)
        with self._lock:
            return [copy.deepcopy(o) for k, o in sorted(self._store.items()) if k[:2] == (rtype.group, rtype.plural)]

    def requests_for(self, verb: str, resource: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.verb == verb and r.resource == resource]

    # ---- the resource model ----
    @staticmethod
    def _type_of_plural(plural: str) -> ResourceType:
        for rtype in RESOURCE_TYPES:
            if rtype.plural == plural:
                return rtype
        raise KeyError(f"unknown resource {plural}")

    @staticmethod
    def _type_of_kind(api_version: str, kind: str) -> ResourceType:
        for rtype in RESOURCE_TYPES:
            if rtype.api_version == api_version and rtype.kind == kind:
                return rtype
        raise KeyError(f"unknown kind {api_version} {kind}")

    def _route(self, path: str) -> _Target:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":  # namespaced resource (a namespace's own /status is 3 long)
            if not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
                namespace, rest = rest[1], rest[2:]
        if group == "" and namespace is not None and len(rest) >= 3 and rest[0] == "pods" and rest[2] == "proxy":
            # The API server decodes the path before it routes (NAME:PORT may come as NAME%3APORT); what follows
            # /proxy goes to the pod, trailing slash and all.
            after = path.split(f"/pods/{rest[1]}/proxy", 1)[1]
            pods = self._type_of_plural("pods")
            return _Target(pods, namespace, unquote(rest[1]), "proxy", unquote(after))
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        for rtype in RESOURCE_TYPES:
            if (rtype.group, rtype.version, rtype.plural) == (group, version, rest[0]):
                break
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not rtype.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        subresource = rest[2] if len(rest) == 3 else None
        if subresource is not None and not (subresource == "status" and rtype.has_status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Target(rtype, namespace, rest[1] if len(rest) >= 2 else None, subresource)

    def _key(self, target: _Target, name: str) -> tuple[str, str, str, str]:
        return (target.type.group, target.type.plural, target.namespace or "", name)

    @staticmethod
    def _details(target: _Target, name: str | None) -> dict:
        details: dict = {"name": name or "", "kind": target.type.plural}
        if target.type.group:
            details["group"] = target.type.group
        return details

    def _qualified(self, target: _Target) -> str:
        return f"{target.type.plural}.{target.type.group}" if target.type.group else target.type.plural

    def _not_found(self, target: _Target, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{self._qualified(target)} "{name}" not found', self._details(target, name))

    def _conflict(self, target: _Target, name: str) -> ApiError:
        return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {self._qualified(target)} "{name}": the '
                        "object has been modified; please apply your changes to the latest version and try again",
                        self._details(target, name))

    def _bump(self, obj: dict) -> None:
        self._resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self._resource_version)

    def _existing(self, target: _Target) -> dict:
        assert target.name is not None
        obj = self._store.get(self._key(target, target.name))
        if obj is None:
            raise self._not_found(target, target.name)
        return obj

    def _create(self, target: _Target, body: dict, dry_run: bool = False, seeding: bool = False) -> dict:
        meta = body.setdefault("metadata", {})
        if target.type.has_status and not seeding:
            body.pop("status", None)  # status is the controllers' to write, through /status
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", f"{target.type.kind} is invalid: metadata.name: Required value: name or "
                           "generateName is required", self._details(target, None))
        if target.type.namespaced:
            if meta.get("namespace") not in (None, "", target.namespace):
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                               "namespace sent on the request")
            meta["namespace"] = target.namespace
        else:
            meta.pop("namespace", None)
        key = self._key(target, meta["name"])
        if key in self._store:
            raise ApiError(409, "AlreadyExists", f'{self._qualified(target)} "{meta["name"]}" already exists',
                           self._details(target, meta["name"]))
        body["kind"], body["apiVersion"] = target.type.kind, target.type.api_version
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        meta.pop("deletionTimestamp", None)
        if target.type.has_generation:
            meta["generation"] = 1
        if target.type.kind == "Namespace":
            body.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            body.setdefault("status", {}).setdefault("phase", "Active")
        if target.type.kind == "Pod":
            body.setdefault("status", {}).setdefault("phase", "Pending")
        if not seeding:
            self._admit("CREATE", target, None, body)
        if dry_run:
            return body
        self._bump(body)
        self._store[key] = body
        self.watches.record("ADDED", target.type, target.namespace, body)
        return body

    def _write(self, target: _Target, old: dict, new: dict, dry_run: bool) -> dict:
        """Store `new` in place of `old` following update rules (identity kept, status split, generation)."""
        assert target.name is not None
        meta = new.setdefault("metadata", {})
        if meta.get("name", target.name) != target.name:
            raise ApiError(400, "BadRequest", f'the name of the object ({meta.get("name")}) does not match the name '
                           f"on the URL ({target.name})")
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise self._conflict(target, target.name)
        new["kind"], new["apiVersion"] = target.type.kind, target.type.api_version
        if target.type.kind == "Secret" and new.get("type", "Opaque") != old.get("type", "Opaque"):
            raise ApiError(422, "Invalid", f'Secret "{target.name}" is invalid: type: Invalid value: '
                           f'"{new.get("type")}": field is immutable', self._details(target, target.name))
        for kept in ("name", "namespace", "uid", "creationTimestamp", "generation"):
            if kept in old["metadata"]:
                meta[kept] = old["metadata"][kept]
            else:
                meta.pop(kept, None)
        if target.subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
        elif target.type.has_status:
            new["status"] = copy.deepcopy(old.get("status"))
            if new["status"] is None:
                new.pop("status")
        if target.type.has_generation and without(new, "metadata", "status") != without(old, "metadata", "status"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
        self._admit("UPDATE", target, old, new)
        if dry_run:
            return new
        self._bump(new)
        self._store[self._key(target, target.name)] = new
        self.watches.record("MODIFIED", target.type, target.namespace, new)
        return new

    def _list(self, target: _Target, query: dict[str, list[str]]) -> dict:
        labels = parse_label_selector(query.get("labelSelector", [""])[0])
        fields = parse_field_selector(query.get("fieldSelector", [""])[0], target.type.plural)
        items = [
            strip_type(copy.deepcopy(obj)) for key, obj in sorted(self._store.items())
            if key[:2] == (target.type.group, target.type.plural)
            and (target.namespace is None or key[2] == target.namespace)
            and all(test(obj.get("metadata", {}).get("labels") or {}) for test in labels)
            and all((field_value(obj, path) == value) == equal for path, value, equal in fields)
        ]
        start = int(base64.urlsafe_b64decode(query["continue"][0]).decode()) if query.get("continue") else 0
        limit = int(query.get("limit", ["0"])[0] or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta: dict = {"resourceVersion": str(self._resource_version)}
        if limit and start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        return {"kind": f"{target.type.kind}List", "apiVersion": target.type.api_version, "metadata": meta,
                "items": page}

    def _patch(self, target: _Target, content_type: str, patch: Any, dry_run: bool) -> dict:
        old = self._existing(target)
        current = copy.deepcopy(old)  # a patch that changes metadata.resourceVersion makes it a precondition
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "json patch must be a list of operations")
            try:
                new = jsonpatch.apply_patch(current, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                # as the real server: a generic 422 whose cause carries the patch library's message
                raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request",
                               {"causes": [{"reason": "UnexpectedServerResponse", "message": str(exc)}]}) from None
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            new = merge_patch(current, patch, strategic=content_type.startswith("application/strategic"))
        else:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json-patch+json, "
                           "application/merge-patch+json, application/strategic-merge-patch+json")
        if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
            raise ApiError(422, "Invalid", "the patch removed the object's metadata",
                           self._details(target, target.name))
        return self._write(target, old, new, dry_run)

    def _delete(self, target: _Target, options: dict | None, dry_run: bool) -> dict:
        obj = self._existing(target)
        pre = (options or {}).get("preconditions") or {}
        if pre.get("uid") not in (None, obj["metadata"]["uid"]):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {self._qualified(target)} '
                           f'"{target.name}": Precondition failed: UID in precondition: {pre["uid"]}, UID in object '
                           f'meta: {obj["metadata"]["uid"]}', self._details(target, target.name))
        if pre.get("resourceVersion") not in (None, obj["metadata"]["resourceVersion"]):
            raise self._conflict(target, target.name or "")
        if not dry_run:
            del self._store[self._key(target, target.name or "")]
            self._resource_version += 1
            gone = copy.deepcopy(obj)  # a DELETED event carries the version of the deletion
            gone["metadata"]["resourceVersion"] = str(self._resource_version)
            self.watches.record("DELETED", target.type, target.namespace, gone)
        return obj

    # ---- HTTP ----
    def _serve(self, method: str, raw_path: str, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        url = urlsplit(raw_path)
        query = parse_qs(url.query)
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip() or None
        record = RecordedRequest(method, url.path, query, content_type, None)
        with self._lock:
            self.requests.append(record)
        try:
            record.body = json.loads(raw_body) if raw_body else None
        except ValueError:
            record.status = 400
            return 400, ApiError(400, "BadRequest", "the request body is not JSON").status()
        if self._faults.delay_seconds:
            self._stopping.wait(self._faults.delay_seconds)
        try:
            if headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if url.path == "/version":
                return 200, {"major": "1", "minor": "35", "gitVersion": "v1.35.0", "platform": "linux/amd64"}
            target = self._route(url.path)
            verb = {"GET": "list" if target.name is None else "get", "POST": "create", "PUT": "update",
                    "PATCH": "patch", "DELETE": "delete"}.get(method)
            if verb == "list" and query.get("watch", ["false"])[0] in ("true", "1"):
                verb = "watch"
            record.verb, record.resource = verb or method.lower(), target.type.plural
            record.namespace, record.name, record.subresource = target.namespace, target.name, target.subresource
            if target.subresource == "proxy" and method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} through the proxy is not supported by FakeKubeAPI")
            if verb is None or (verb == "create" and target.name) or (
                    verb in ("update", "patch") and not target.name) or (verb == "delete" and not target.name):
                raise ApiError(405, "MethodNotAllowed", f"{method} {url.path} is not supported by FakeKubeAPI")
            status, body = self._answer(verb, target, query, content_type, record.body)
            if isinstance(body, _ProxyRequest):
                body.path += f"?{url.query}" if url.query else ""  # the query goes to the pod as it came
                status, body = self._forward(body, headers.get("Accept"))
        except ApiError as err:
            status, body = err.code, err.status()
        record.status = status
        return status, body

    def _proxy_request(self, target: _Target) -> _ProxyRequest:
        """Where a proxy request goes, as the real server's pod ResourceLocation works it out."""
        assert target.name is not None
        parts = target.name.split(":")  # NAME, NAME:PORT or SCHEME:NAME:PORT
        scheme, name, port = ["", *parts, ""][:3] if len(parts) < 3 else parts[:3]
        if len(parts) > 3 or not name or scheme not in ("", "http", "https"):
            raise ApiError(400, "BadRequest", f'invalid pod request "{target.name}"')
        if scheme == "https":
            raise ApiError(400, "BadRequest", "FakeKubeAPI proxies to pods over http only")
        pod = self._existing(_Target(target.type, target.namespace, name, None))
        if not port:
            ports = [c["ports"][0]["containerPort"] for c in pod.get("spec", {}).get("containers") or []
                     if c.get("ports")]
            port = str(ports[0]) if ports else "80"
        ips = [entry.get("ip") for entry in (pod.get("status") or {}).get("podIPs") or []]
        try:
            address = ipaddress.ip_address(ips[0] if ips else "")
        except ValueError:
            address = None
        # The real server's rule is IsGlobalUnicast(); loopback is let through here (module docstring).
        if address is None or not (address.is_loopback or _global_unicast(address)):
            raise ApiError(400, "BadRequest", "address not allowed")
        if not port.isdigit():
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: dial tcp {address}:{port}: "
                           "unknown port")
        return _ProxyRequest(str(address), int(port), target.proxy_path or "/")

    def _forward(self, request: _ProxyRequest, accept: str | None) -> tuple[int, Any]:
        """The pod's answer as it is, or 503 as the real proxy transport says it when the pod does not answer."""
        host = f"[{request.host}]" if ":" in request.host else request.host
        connection = http.client.HTTPConnection(request.host, request.port, timeout=30)  # the real dial timeout
        try:
            connection.request("GET", request.path, headers={"Accept": accept} if accept else {})
            response = connection.getresponse()
            data = response.read()
        except ConnectionRefusedError:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: dial tcp {host}:"
                           f"{request.port}: connect: connection refused") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: dial tcp {host}:"
                           f"{request.port}: {exc or type(exc).__name__}") from None
        finally:
            connection.close()
        return response.status, _Proxied(response.getheader("Content-Type") or "", data)

    def _answer(self, verb: str, target: _Target, query: dict, content_type: str | None,
                body: Any) -> tuple[int, Any]:
        name = target.name
        if verb == "create" and isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            name = body["metadata"].get("name")
        probe = _Target(target.type, target.namespace, name, target.subresource)
        with self._lock:
            due = [f for f in self._faults.before if f.matches(verb, probe)]
            for fault in due:
                self._faults.before.remove(fault)
        for fault in due:  # outside the lock: the action may call this server over HTTP, as a racing client would
            assert fault.action is not None
            fault.action(self)
        with self._lock:
            if any(f.matches(verb, probe) for f in self._faults.forbidden):
                where = f' in the namespace "{target.namespace}"' if target.namespace else " at the cluster scope"
                named = f'{self._qualified(target)} "{name}"' if name else self._qualified(target)
                raise ApiError(403, "Forbidden", f'{named} is forbidden: User "{self.user}" cannot {verb} resource '
                               f'"{target.rbac_resource}" in API group "{target.type.group}"{where}',
                               self._details(target, name))
            for fault in self._faults.conflicts:
                if fault.remaining and fault.matches(verb, probe):
                    fault.remaining -= 1
                    raise self._conflict(target, name or "")
            dry_run = "All" in query.get("dryRun", [])
            if verb in ("create", "update") and not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be a JSON object")
            if verb == "watch":
                return 200, _WatchRequest(target, query)  # streamed by the handler, outside the lock
            if target.subresource == "proxy":
                return 200, self._proxy_request(target)  # forwarded outside the lock
            if verb == "get":
                return 200, copy.deepcopy(self._existing(target))
            if verb == "list":
                return 200, self._list(target, query)
            if verb == "create":
                return 201, copy.deepcopy(self._create(target, copy.deepcopy(body), dry_run))
            if verb == "update":
                return 200, copy.deepcopy(self._write(target, self._existing(target), copy.deepcopy(body), dry_run))
            if verb == "patch":
                return 200, copy.deepcopy(self._patch(target, content_type or "", body, dry_run))
            return 200, copy.deepcopy(self._delete(target, body, dry_run))

    def _stream(self, handler: BaseHTTPRequestHandler, request: _WatchRequest) -> None:
        target = request.target

        def snapshot() -> tuple[list[dict], int]:
            objects = [copy.deepcopy(obj) for key, obj in sorted(self._store.items())
                       if key[:2] == (target.type.group, target.type.plural)
                       and (target.namespace is None or key[2] == target.namespace)]
            return objects, self._resource_version

        self.watches.serve(handler, target.type, target.namespace, request.query, snapshot, self._stopping)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 expects

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = api._serve(self.command, self.path, self.headers, raw)
                if isinstance(body, _WatchRequest):
                    api._stream(self, body)
                    return
                if isinstance(body, _Proxied):
                    data, content_type = body.data, body.content_type
                else:
                    data, content_type = json.dumps(body).encode(), "application/json"
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nothing to tell it

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # the record in api.requests is the log
                pass

        return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients that time out just go away
            super().handle_error(request, client_address)


def _global_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Go's net.IP.IsGlobalUnicast: not unspecified, loopback, link-local, multicast or (IPv4) broadcast; private
    ranges count as global unicast."""
    return not (address.is_unspecified or address.is_loopback or address.is_link_local or address.is_multicast
                or str(address) == "255.255.255.255")
