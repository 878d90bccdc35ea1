"""AdmissionReview (admission.k8s.io/v1 and v1beta1) in and out, following the published API exactly.

A review that is not one (not JSON, nested deeper than the parser allows, no `request`, wrong kind, fields of the
wrong type) raises `BadReview`, which the HTTP layer answers with a 4xx and the message. kube-apiserver never sends
such a body: only a misconfigured client does, and with failurePolicy Ignore even that cannot block a pod.

`check_pod` is the one place where the pod's fields are type-checked: every field the policy, the patch and the log
line read, down to node affinity's values. Each is checked against what kube-apiserver's decoder can produce for it
(the typed Pod, re-encoded: a string, an object or a list of the declared type; absent or null where empty), so a
body that passes reaches the policy with nothing it could trip on, and one that cannot come from the API server gets
400. Nothing here or downstream recurses into parts of the object it does not read, so a deeply nested value there
costs the parser alone.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


# One compact encoder for every answer (json.dumps with options builds a new encoder on each call; answers are
# trees built from decoded JSON, never circular, so that check is skipped). ASCII out:
# any string the request carried (even a lone surrogate escape in a uid) is escaped, never fails to encode.
compact_json = json.JSONEncoder(allow_nan=False, check_circular=False, separators=(",", ":")).encode


class BadReview(ValueError):
    """The body is not a usable AdmissionReview; the message says which part and why."""


class AdmissionRequest(NamedTuple):  # immutable like a frozen dataclass, built in a third of the time
    api_version: str
    uid: str
    kind: Mapping[str, Any]  # {group, version, kind}
    operation: str
    namespace: str
    sub_resource: str
    object: Any
    dry_run: bool

    @property
    def is_pod_create(self) -> bool:
        return (self.kind.get("group", "") == "" and self.kind.get("kind") == "Pod" and self.operation == "CREATE"
                and not self.sub_resource)


def _shown(value: Any) -> str:
    """A client's value for a message: a short string's repr, else its type (a container's repr could be huge or
    nested deeper than repr can go)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 64 else repr(value[:64]) + "..."
    return "null" if value is None else type(value).__name__


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if not isinstance(value, kind):
        raise BadReview(f"{where} must be {what}, got {type(value).__name__}")
    return value


def _field(obj: Mapping[str, Any], key: str, kind: type, default: Any, where: str, what: str) -> Any:
    """obj[key] checked to be a `kind`; `default` when absent or null (but not when present and falsy, e.g. [] for
    an object). Messages are built only on failure: this runs for every field of every admission."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise BadReview(f"{where} must be {what}, got {type(value).__name__}")
    return value


def _all_strings(items: Any, where: str) -> None:
    """Every value of a list or mapping is a string (a mapping's items are named by key, a list's by index)."""
    pairs = items.items() if isinstance(items, dict) else enumerate(items)
    for key, item in pairs:
        if not isinstance(item, str):
            raise BadReview(f"{where}[{_shown(key) if isinstance(key, str) else key}] must be a string, "
                            f"got {type(item).__name__}")


# A Pod from kube-apiserver nests about 20 levels; the bound leaves room for any real object and stays far below
# the depth at which the JSON parser or anything that walks the decoded value runs out of stack.
MAX_DEPTH = 512
TOO_DEEP = f"request body is JSON nested too deep (over {MAX_DEPTH} levels; a Pod from kube-apiserver nests about 20)"


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether a decoded JSON value has lists or objects nested more than `limit` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse(body: bytes) -> AdmissionRequest:
    try:
        review = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise BadReview(f"request body is not JSON: {error}") from None
    except RecursionError:  # the parser's own limit, which depends on the stack it runs on (about 900 levels)
        raise BadReview(TOO_DEEP) from None
    # The same answer for every body nested deeper than MAX_DEPTH, wherever the parser's own limit falls. A body with
    # fewer brackets than that cannot nest deeper (counting them costs next to nothing); only others are walked.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and nesting_exceeds(review, MAX_DEPTH):
        raise BadReview(TOO_DEEP)
    _expect(review, dict, "the request body", "a JSON object (an AdmissionReview)")
    api_version = review.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise BadReview(f"apiVersion must be one of {', '.join(API_VERSIONS)}, got {_shown(api_version)}")
    if review.get("kind") != "AdmissionReview":
        raise BadReview(f"kind must be AdmissionReview, got {_shown(review.get('kind'))}")
    if review.get("request") is None:
        raise BadReview("the AdmissionReview has no request")
    request = _expect(review["request"], dict, "request", "an object")
    uid = _expect(request.get("uid"), str, "request.uid", "a string")
    if not uid:
        raise BadReview("request.uid must not be empty")
    kind = _expect(request.get("kind"), dict, "request.kind", "an object {group, version, kind}")
    for key in ("group", "version", "kind"):
        _field(kind, key, str, "", "request.kind." + key, "a string")
    operation = _expect(request.get("operation"), str, "request.operation", "a string")
    namespace = _field(request, "namespace", str, "", "request.namespace", "a string")
    sub_resource = _field(request, "subResource", str, "", "request.subResource", "a string")
    dry_run = _field(request, "dryRun", bool, False, "request.dryRun", "a boolean")
    parsed = AdmissionRequest(api_version, uid, kind, operation, namespace, sub_resource, request.get("object"),
                              dry_run)
    if parsed.is_pod_create:
        if not namespace:
            raise BadReview("request.namespace is required for a Pod")
        check_pod(parsed.object)
    return parsed


def check_pod(pod: Any) -> None:
    """Raise BadReview if a field the webhook reads has the wrong type (the API server would not decode it)."""
    _expect(pod, dict, "request.object", "a Pod object")
    metadata = _field(pod, "metadata", dict, {}, "request.object.metadata", "an object")
    _field(metadata, "name", str, "", "metadata.name", "a string")
    _field(metadata, "generateName", str, "", "metadata.generateName", "a string")
    _all_strings(_field(metadata, "annotations", dict, {}, "metadata.annotations", "an object"),
                 "metadata.annotations")
    # NetworkPolicies select pods by these (admit.py)
    _all_strings(_field(metadata, "labels", dict, {}, "metadata.labels", "an object"), "metadata.labels")
    spec = _field(pod, "spec", dict, {}, "request.object.spec", "an object")
    _field(spec, "dnsPolicy", str, "", "spec.dnsPolicy", "a string")
    _field(spec, "hostNetwork", bool, False, "spec.hostNetwork", "a boolean")
    _all_strings(_field(spec, "nodeSelector", dict, {}, "spec.nodeSelector", "an object"), "spec.nodeSelector")
    _field(_field(spec, "os", dict, {}, "spec.os", "an object"), "name", str, "", "spec.os.name", "a string")
    _check_node_affinity(spec)
    dns_config = _field(spec, "dnsConfig", dict, {}, "spec.dnsConfig", "an object")
    if not dns_config:
        return
    for field in ("nameservers", "searches"):
        where = "spec.dnsConfig." + field
        _all_strings(_field(dns_config, field, list, [], where, "a list of strings"), where)
    options = _field(dns_config, "options", list, [], "spec.dnsConfig.options", "a list of {name, value}")
    for index, option in enumerate(options):
        where = f"spec.dnsConfig.options[{index}]"
        _expect(option, dict, where, "an object {name, value}")
        _field(option, "name", str, "", where + ".name", "a string")
        _field(option, "value", str, None, where + ".value", "a string")


def _check_node_affinity(spec: Mapping[str, Any]) -> None:
    """The required node affinity's terms, which the policy reads to spot pods that only run on Windows."""
    where = "spec.affinity"
    affinity = _field(spec, "affinity", dict, {}, where, "an object")
    if not affinity:  # most pods
        return
    node = _field(affinity, "nodeAffinity", dict, {}, where + ".nodeAffinity", "an object")
    where += ".nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    required = _field(node, "requiredDuringSchedulingIgnoredDuringExecution", dict, {}, where, "an object")
    terms = _field(required, "nodeSelectorTerms", list, [], where + ".nodeSelectorTerms", "a list")
    for t, term in enumerate(terms):
        at = f"{where}.nodeSelectorTerms[{t}]"
        _expect(term, dict, at, "an object")
        expressions = _field(term, "matchExpressions", list, [], at + ".matchExpressions", "a list")
        for e, expression in enumerate(expressions):
            item = f"{at}.matchExpressions[{e}]"
            _expect(expression, dict, item, "an object {key, operator, values}")
            _field(expression, "key", str, "", item + ".key", "a string")
            _field(expression, "operator", str, "", item + ".operator", "a string")
            _all_strings(_field(expression, "values", list, [], item + ".values", "a list of strings"),
                         item + ".values")


def response(request: AdmissionRequest, patch: list[dict[str, Any]] | None = None,
             warnings: list[str] | None = None) -> dict[str, Any]:
    """The AdmissionReview answer, in the request's apiVersion. Always allowed: this webhook never blocks a pod."""
    answer: dict[str, Any] = {"uid": request.uid, "allowed": True}
    if patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(compact_json(patch).encode()).decode()
    if warnings:
        answer["warnings"] = warnings
    return {"apiVersion": request.api_version, "kind": "AdmissionReview", "response": answer}


def review_for(pod: Mapping[str, Any], namespace: str, uid: str = "00000000-0000-0000-0000-000000000000",
               api_version: str = "admission.k8s.io/v1", operation: str = "CREATE") -> dict[str, Any]:
    """An AdmissionReview as kube-apiserver sends it for a Pod (used by `demo`, tests and tools)."""
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": metadata.get("name") or "" if isinstance(metadata := pod.get("metadata"), dict) else "",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
