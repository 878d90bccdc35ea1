"""A mutator that knows JSON, for bodies that must parse before the code under test reads them: libFuzzer's byte
mutations of an AdmissionReview almost always break the JSON, so half the time a value inside it is changed instead
(replaced by one of another type, removed, copied elsewhere, or a key the webhook reads added), and the body stays
JSON. Pure: the same input and seed give the same output, as libFuzzer requires."""
from __future__ import annotations

import json
import random
from typing import Any

# Keys and values the webhook reads (review.py, policy.py, resolvconf.py), so that mutations reach its decisions.
KEYS = ("apiVersion", "kind", "request", "uid", "operation", "namespace", "subResource", "dryRun", "object",
        "metadata", "name", "generateName", "annotations", "labels", "spec", "dnsPolicy", "hostNetwork", "dnsConfig",
        "nameservers", "searches", "options", "value", "nodeSelector", "os", "affinity", "nodeAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms", "matchExpressions", "key", "operator",
        "values", "localdns.io/inject", "localdns.io/ndots", "kubernetes.io/os", "group", "version", "app")
STRINGS = ("", "Pod", "CREATE", "UPDATE", "v1", "admission.k8s.io/v1", "admission.k8s.io/v1beta1", "AdmissionReview",
           "shop", "kube-system", "ClusterFirst", "ClusterFirstWithHostNet", "Default", "None", "disabled", "false",
           "enabled", "windows", "linux", "In", "NotIn", "ndots", "timeout", "edns0", "2", "-1", "99999999999",
           "169.254.20.10", "10.96.0.10", "fd00::10", "a.b.c", "svc.cluster.local", "x" * 300, "é\u2028\ud800",
           "localdns.io/inject", "locked")


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, 1, -1, 5, 33, 2**31, 2**64, 1.5, 1e308))
    if kind in (3, 4, 5):
        return rng.choice(STRINGS)
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _containers(root: Any) -> list[Any]:
    """Every list and object in the tree, iteratively (a body may nest deep)."""
    found, stack = [], [root]
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)):
            found.append(item)
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def mutate_json(doc: Any, rng: random.Random) -> Any:
    """`doc` with one change somewhere inside it (in place; the root itself may be replaced)."""
    containers = _containers(doc)
    if not containers or rng.randrange(20) == 0:
        return _value(rng)
    target = rng.choice(containers)
    operation = rng.randrange(4)
    if isinstance(target, dict):
        key = rng.choice(list(target)) if target and operation < 3 else rng.choice(KEYS)
        if operation == 0 and target:
            del target[key]
        elif operation == 1:
            target[key] = json.loads(json.dumps(rng.choice(containers)))  # a part copied elsewhere (or into itself)
        else:
            target[key] = _value(rng)
    else:
        index = rng.randrange(len(target) + 1)
        if operation == 0 and target:
            del target[min(index, len(target) - 1)]
        else:
            target.insert(index, _value(rng))
    return doc


def mutate(data: bytes, max_size: int, seed: int, byte_mutate: Any) -> bytes:
    """libFuzzer's custom mutator: `byte_mutate(data, max_size)` (atheris.Mutate) half the time, or when `data` is
    not JSON; otherwise one change inside the JSON."""
    rng = random.Random(seed)
    if rng.randrange(2):
        try:
            out = json.dumps(mutate_json(json.loads(data), rng)).encode()
        except (ValueError, RecursionError):  # not JSON (or nested past what json handles): bytes it is
            pass
        else:
            if len(out) <= max_size:
                return out
    mutated: bytes = byte_mutate(data, max_size)
    return mutated
