"""kube-dns's ConfigMap reaches the caches: every cache mounts the copy in its own namespace (optional, so the cache
starts without it) and reads it with --kube-dns-config; the kube-dns-mirror component keeps that copy, and the RBAC
it grants is exactly what `python -m clustertools mirror-kube-dns` needs, checked against an API server that enforces
it."""
from __future__ import annotations

import pytest

from tests.deploy.rbac import rbac_allows
from tests.deploy.render import container, expanded_args, find, find_all, flag_values, pod_spec, rendered

ACCOUNT = "system:serviceaccount:localdns-system:localdns-webhook"
KUBE_DNS_DATA = {"stubDomains": '{"acme.local": ["10.0.0.53"]}', "upstreamNameservers": '["10.0.0.54"]',
                 "federations": "ignored"}


@pytest.fixture(scope="module")
def mirrored() -> list[dict]:
    return rendered(("builtin-certs", "kube-dns-mirror"))


@pytest.mark.parametrize("components", [("builtin-certs",), ("builtin-certs", "iptables-mode")])
def test_every_cache_mounts_the_copy_optionally(components) -> None:
    objects = rendered(components)
    daemonset = find(objects, "DaemonSet", "localdns-cache", "localdns-system")
    spec = pod_spec(daemonset)
    [volume] = [v for v in spec["volumes"] if v["name"] == "kube-dns-config"]
    assert volume["configMap"] == {"name": "localdns-kube-dns", "optional": True}
    cache = container(daemonset, "cache")
    [mount] = [m for m in cache["volumeMounts"] if m["name"] == "kube-dns-config"]
    args = expanded_args(cache, {"status.hostIP": "192.0.2.7"})
    assert flag_values(args, "--kube-dns-config") == [mount["mountPath"]] and mount["readOnly"] is True
    assert not [o for o in objects if o["metadata"].get("namespace") == "kube-system" and "Role" in o["kind"]]


def test_the_mirror_needs_no_more_than_its_rbac(mirrored) -> None:
    from clustertools.kubednsmirror import sync_once
    from localdns.kube import KubeError, connect
    from tests.kubeapi import ApiError, FakeKubeAPI

    roles = {role["metadata"]["namespace"]: role for role in find_all(mirrored, "Role")
             if role["metadata"]["name"] == "localdns-kube-dns-mirror"}
    bindings = [b for b in find_all(mirrored, "RoleBinding") if b["metadata"]["name"] == "localdns-kube-dns-mirror"]
    assert set(roles) == {"kube-system", "localdns-system"}
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": "localdns-webhook",
                                  "namespace": "localdns-system"}] for b in bindings) and len(bindings) == 2
    denied: list[tuple] = []

    class RBACEnforcingAPI(FakeKubeAPI):
        def _answer(self, verb, target, query, content_type, body):
            rules = roles[target.namespace]["rules"] if target.namespace in roles else []
            if not rbac_allows(rules, verb, target.type.group, target.type.plural, target.name):
                denied.append((verb, target.type.plural, target.namespace, target.name))
                raise ApiError(403, "Forbidden", f"{ACCOUNT} cannot {verb} {target.type.plural} {target.name}")
            return super()._answer(verb, target, query, content_type, body)

    with RBACEnforcingAPI(user=ACCOUNT) as api:
        api.seed(find(mirrored, "ConfigMap", "localdns-kube-dns", "localdns-system"))  # as `kubectl apply` makes it
        api.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-dns", "namespace": "kube-system"},
                  "data": KUBE_DNS_DATA})
        api.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "kube-system"}})
        cluster = connect(str(api.kubeconfig_path))
        assert sync_once(cluster) is True and not denied
        copy = api.get_object("configmaps", "localdns-kube-dns", "localdns-system")
        assert copy["data"] == {k: v for k, v in KUBE_DNS_DATA.items() if k != "federations"}
        assert sync_once(cluster) is False  # nothing to change: no write
        with pytest.raises(KubeError):  # and nothing beyond the grant: another ConfigMap of kube-system
            sync_once(cluster, source="kube-system/other")
        assert denied == [("get", "configmaps", "kube-system", "other")]
    mirror = container(find(mirrored, "Deployment", "localdns-webhook", "localdns-system"), "kube-dns-mirror")
    assert mirror["command"] == ["python", "-m", "clustertools"] and mirror["args"] == ["mirror-kube-dns"]
    assert mirror["securityContext"]["runAsNonRoot"] is True and mirror["securityContext"]["readOnlyRootFilesystem"]
