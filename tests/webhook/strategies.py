"""Hypothesis strategies for pods as admission sends them (DNS settings, annotations, policies, OS, affinity), for
pods that kube-apiserver's decoder would refuse (a value of the wrong type anywhere the webhook reads), and for
AdmissionReview bodies.

What the API server can send follows from how it works: it decodes the request into the typed Pod (a value of the
wrong type is refused with 400 before admission), applies defaults, and encodes it again for the webhook, before
validation. So each field holds its declared type or is absent (omitempty), a list may be empty or absent, a
list item that was null arrives as the zero value ({} or ""), and nothing is checked yet: an option without a
name, an empty key or operator, any string at all in a name."""
from __future__ import annotations

import copy
import itertools

from hypothesis import strategies as st

from webhook.config import DNSOption, Settings

LOCAL_IP = "169.254.20.10"

names = st.sampled_from(["example.com", "corp.example", "svc.cluster.local", "cluster.local", "a.b.c.d",
                         "shop.svc.cluster.local", "x" * 63 + ".example", "Bad_Name", "-bad", "ends.with.dot.",
                         ("a" * 60 + ".") * 4 + "example"])
ips = st.sampled_from([LOCAL_IP, "10.96.0.10", "10.0.0.2", "8.8.8.8", "fd00::10", "::1", "not-an-ip", "300.1.1.1"])
option_names = st.sampled_from(["ndots", "edns0", "timeout", "attempts", "rotate", "single-request-reopen", ""])
options = st.fixed_dictionaries({"name": option_names},
                                optional={"value": st.one_of(st.none(), st.sampled_from(["", "1", "2", "5", "15"]))})
dns_configs = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={
        "nameservers": st.one_of(st.none(), st.lists(ips, max_size=4)),
        "searches": st.one_of(st.none(), st.lists(names, max_size=34)),
        "options": st.one_of(st.none(), st.lists(options, max_size=5)),
    }),
)
annotation_values = st.one_of(st.sampled_from(["disabled", "false", "False", "enabled", "true", "no", "", "2", "0",
                                               "15", "16", "-1", "abc", " 3 "]), st.text(max_size=5))
annotations = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["localdns.io/inject", "localdns.io/ndots", "localdns.io/injected", "team"]),
    annotation_values, max_size=4))
# Node affinity as the API server sends it (typed, unvalidated): the webhook reads it to spot Windows pods.
_expressions = st.fixed_dictionaries({"key": st.sampled_from(["kubernetes.io/os", "zone", ""]),
                                      "operator": st.sampled_from(["In", "NotIn", "Exists", ""])},
                                     optional={"values": st.lists(st.sampled_from(["windows", "linux", ""]),
                                                                  max_size=3)})
_terms = st.fixed_dictionaries({}, optional={"matchExpressions": st.lists(_expressions, max_size=2)})
affinities = st.one_of(st.just({}), st.fixed_dictionaries({}, optional={"nodeAffinity": st.fixed_dictionaries(
    {}, optional={"requiredDuringSchedulingIgnoredDuringExecution": st.fixed_dictionaries(
        {"nodeSelectorTerms": st.one_of(st.none(), st.lists(_terms, max_size=3))})})}))
# Node affinity shapes, well-formed or not: whatever a client sends, the webhook must answer, never trip.
malformed_affinities = st.recursive(
    st.one_of(st.none(), st.booleans(), st.sampled_from(["windows", "linux", "kubernetes.io/os", "In"])),
    lambda children: st.one_of(st.lists(children, max_size=2), st.dictionaries(st.sampled_from(
        ["nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms", "matchExpressions",
         "key", "operator", "values"]), children, max_size=3)),
    max_leaves=12)
specs = st.fixed_dictionaries({"containers": st.just([{"name": "app", "image": "nginx"}])}, optional={
    "dnsPolicy": st.sampled_from(["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None", "", "Bogus"]),
    "hostNetwork": st.booleans(),
    "dnsConfig": dns_configs,
    "nodeSelector": st.dictionaries(st.sampled_from(["kubernetes.io/os", "zone"]),
                                    st.sampled_from(["linux", "windows", "a"]), max_size=2),
    "os": st.fixed_dictionaries({"name": st.sampled_from(["linux", "windows"])}),
    "affinity": affinities,
})
metadatas = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "generateName": st.just("web-"), "name": st.just("web-1"), "namespace": st.sampled_from(["", "other"]),
    "annotations": annotations, "labels": st.just({"app": "web"})}))
pods = st.builds(lambda metadata, spec: {"apiVersion": "v1", "kind": "Pod", "spec": spec,
                                         **({} if metadata is None else {"metadata": metadata})}, metadatas, specs)
# The shapes admission decodes but a Pod rarely has: metadata or spec absent or null, annotations null. A patch
# must still apply to them (each level it writes under may or may not exist yet).
_ABSENT = object()
sparse_pods = st.builds(
    lambda metadata, spec: {"apiVersion": "v1", "kind": "Pod",
                            **{key: value for key, value in (("metadata", metadata), ("spec", spec))
                               if value is not _ABSENT}},
    st.one_of(st.just(_ABSENT), st.none(), metadatas.filter(lambda m: m is not None)),
    st.one_of(st.just(_ABSENT), st.none(), specs))
namespaces = st.sampled_from(["default", "shop", "kube-system", "localdns-system", "a" * 63])
all_settings = st.builds(
    Settings,
    local_ip=st.sampled_from([LOCAL_IP, "fd00::a"]),
    cluster_domain=st.sampled_from(["cluster.local", "corp.internal"]),
    ndots=st.integers(0, 15),
    extra_options=st.lists(st.sampled_from([DNSOption("edns0"), DNSOption("timeout", "2"),
                                            DNSOption("single-request-reopen")]), max_size=2).map(tuple),
    fallback_nameserver=st.sampled_from([None, "10.96.0.10"]),
)

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children,
                                                                                 max_size=3)),
    max_leaves=10)

# Strings as the API server passes them before validation: anything, line breaks and escapes included.
odd_text = st.one_of(st.sampled_from(["web-", "", "a\nb", "x\r\n2026-01-01 00:00:00,000 INFO localdns.webhook: forged",
                                      "\x1b[31m", "\u2028", 'q"uote', "sp ace", "a=b", "ns/name", "é"]),
                     st.text(max_size=12))
api_server_options = st.fixed_dictionaries({}, optional={  # `name` may be absent: validation comes after admission
    "name": st.one_of(option_names, odd_text), "value": st.one_of(st.sampled_from(["", "1", "5", "15"]), odd_text)})
api_server_specs = st.fixed_dictionaries({"containers": st.just([{"name": "app", "image": "nginx"}])}, optional={
    "dnsPolicy": st.one_of(st.sampled_from(["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]), odd_text),
    "hostNetwork": st.booleans(),
    "dnsConfig": st.fixed_dictionaries({}, optional={
        "nameservers": st.lists(st.one_of(ips, odd_text), max_size=4),
        "searches": st.lists(st.one_of(names, odd_text), max_size=34),
        "options": st.lists(api_server_options, max_size=5)}),
    "nodeSelector": st.dictionaries(st.one_of(st.just("kubernetes.io/os"), odd_text),
                                    st.one_of(st.sampled_from(["linux", "windows"]), odd_text), max_size=2),
    "os": st.fixed_dictionaries({}, optional={"name": st.one_of(st.sampled_from(["linux", "windows"]), odd_text)}),
    "affinity": affinities,
})
api_server_metadatas = st.fixed_dictionaries({}, optional={
    "name": odd_text, "generateName": odd_text, "labels": st.just({"app": "web"}),
    "annotations": st.dictionaries(st.one_of(st.sampled_from(["localdns.io/inject", "localdns.io/ndots",
                                                              "localdns.io/injected"]), odd_text),
                                   st.one_of(annotation_values, odd_text), max_size=4)})
api_server_pods = st.builds(lambda metadata, spec: {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                                                    "spec": spec}, api_server_metadatas, api_server_specs)

# Every place the webhook reads (and a few it does not), where an ill-typed pod gets a value of any JSON type.
_AFFINITY_TERM = ("spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                  "nodeSelectorTerms", 0)
READ_PATHS = [
    ("metadata",), ("metadata", "name"), ("metadata", "generateName"), ("metadata", "annotations"),
    ("metadata", "annotations", "localdns.io/inject"), ("metadata", "annotations", "localdns.io/ndots"),
    ("metadata", "annotations", "localdns.io/injected"), ("spec",), ("spec", "dnsPolicy"), ("spec", "hostNetwork"),
    ("spec", "nodeSelector"), ("spec", "nodeSelector", "kubernetes.io/os"), ("spec", "os"), ("spec", "os", "name"),
    ("spec", "affinity"), ("spec", "affinity", "nodeAffinity"), _AFFINITY_TERM[:4], _AFFINITY_TERM[:5],
    _AFFINITY_TERM, (*_AFFINITY_TERM, "matchExpressions"), (*_AFFINITY_TERM, "matchExpressions", 0),
    (*_AFFINITY_TERM, "matchExpressions", 0, "key"), (*_AFFINITY_TERM, "matchExpressions", 0, "values"),
    (*_AFFINITY_TERM, "matchExpressions", 0, "values", 0), ("spec", "dnsConfig"),
    ("spec", "dnsConfig", "nameservers"), ("spec", "dnsConfig", "nameservers", 0), ("spec", "dnsConfig", "searches"),
    ("spec", "dnsConfig", "searches", 0), ("spec", "dnsConfig", "options"), ("spec", "dnsConfig", "options", 0),
    ("spec", "dnsConfig", "options", 0, "name"), ("spec", "dnsConfig", "options", 0, "value"),
    ("spec", "containers"), ("metadata", "labels"), ("status",),
]


def placed(pod: dict, path: tuple, value: object) -> dict:
    """A copy of `pod` with `value` at `path`, making each missing parent (an object, or a list for an index)."""
    pod = copy.deepcopy(pod)
    node: object = pod
    for key, after in itertools.pairwise(path):
        wanted = list if isinstance(after, int) else dict
        child = node[key] if (key in node if isinstance(node, dict) else key < len(node)) else None  # type: ignore
        if not isinstance(child, wanted):
            child = [{}] if wanted is list else {}
            if isinstance(node, list) and key >= len(node):
                node.append(child)
            else:
                node[key] = child  # type: ignore[index]
        node = child
    if isinstance(node, list) and not node:
        node.append(value)
    else:
        node[path[-1]] = value  # type: ignore[index]
    return pod


ill_typed_pods = st.builds(placed, st.one_of(api_server_pods, pods), st.sampled_from(READ_PATHS), json_values)
