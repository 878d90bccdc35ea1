"""`python -m clustertools mirror-kube-dns`: the copy follows kube-dns's ConfigMap key by key (changed, removed, or the
whole ConfigMap deleted), leaves other keys of the copy alone, and a failure leaves the copy as it was."""
from __future__ import annotations

import pytest

from clustertools.__main__ import main
from clustertools.kubednsmirror import sync_once
from localdns.kube import connect
from tests.kubeapi import FakeKubeAPI


def configmap(namespace: str, name: str, data: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            **({"data": data} if data is not None else {})}


def test_the_copy_follows_each_key_and_a_deleted_source():
    with FakeKubeAPI() as api:
        api.seed(configmap("localdns-system", "localdns-kube-dns", {"note": "kept"}))
        api.seed(configmap("kube-system", "kube-dns", {"stubDomains": '{"a.b": ["10.0.0.1"]}',
                                                       "upstreamNameservers": '["10.0.0.2"]'}))
        cluster = connect(str(api.kubeconfig_path))
        assert sync_once(cluster)
        copy = lambda: api.get_object("configmaps", "localdns-kube-dns", "localdns-system")["data"]  # noqa: E731
        assert copy() == {"note": "kept", "stubDomains": '{"a.b": ["10.0.0.1"]}', "upstreamNameservers": '["10.0.0.2"]'}

        # One key changed to a bad value, the other removed: copied as they are (the cache judges each key).
        cluster.patch("ConfigMap", "kube-dns", "kube-system",
                      {"data": {"stubDomains": "{not json", "upstreamNameservers": None}}, "merge")
        assert sync_once(cluster)
        assert copy() == {"note": "kept", "stubDomains": "{not json"}

        cluster.delete("ConfigMap", "kube-dns", "kube-system")  # kube-dns back to its defaults: so are the caches
        assert sync_once(cluster)
        assert copy() == {"note": "kept"}
        assert not sync_once(cluster)


def test_a_missing_copy_or_an_unreachable_api_is_one_clear_error(capsys):
    with FakeKubeAPI() as api:
        code = main(["mirror-kube-dns", "--once", "--kubeconfig", str(api.kubeconfig_path)])
    assert code == 2
    assert "localdns-system/localdns-kube-dns does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("reference", ["kube-dns", "/x", "x/"])
def test_references_are_namespace_slash_name(reference, capsys):
    with FakeKubeAPI() as api:
        code = main(["mirror-kube-dns", "--once", "--source", reference, "--kubeconfig", str(api.kubeconfig_path)])
    assert code == 2 and "expected NAMESPACE/NAME" in capsys.readouterr().err
