"""`python -m clustertools mirror-kube-dns`: the copy follows kube-dns's ConfigMap key by key (changed, removed, or the
whole ConfigMap deleted), leaves other keys of the copy alone, and a failure leaves the copy as it was."""
from __future__ import annotations

import json
import subprocess
import sys
import time

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


def test_the_sidecar_logs_a_failure_and_the_recovery_with_time_and_level(tmp_path):
    """As the Deployment runs it (no --once): a failure is logged once, and so is the recovery (an INFO line, which
    was lost when the sidecar set up no logging), each as one JSON object with `--log-format json`."""
    with FakeKubeAPI() as api:
        api.seed(configmap("kube-system", "kube-dns", {"stubDomains": '{"a.b": ["10.0.0.1"]}'}))
        log = tmp_path / "stderr"
        with log.open("w") as stderr:
            sidecar = subprocess.Popen([sys.executable, "-m", "clustertools", "mirror-kube-dns", "--interval", "0.1",
                                        "--log-format", "json", "--kubeconfig", str(api.kubeconfig_path)],
                                       stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                wait_for_line(log, "does not exist")  # the copy is not there yet
                api.seed(configmap("localdns-system", "localdns-kube-dns"))
                lines = wait_for_line(log, "works again")
            finally:
                sidecar.terminate()
                sidecar.wait(timeout=10)
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"]) for r in records] == [("ERROR", "localdns.kube-dns-mirror"),
                                                             ("INFO", "localdns.kube-dns-mirror"),
                                                             ("INFO", "localdns.kube-dns-mirror")]
    assert "localdns-system/localdns-kube-dns does not exist" in records[0]["msg"]
    assert records[1]["msg"] == "copied kube-system/kube-dns to localdns-system/localdns-kube-dns: stubDomains"
    assert records[2]["msg"] == "mirroring kube-system/kube-dns works again"
    assert all(r["time"].endswith("Z") for r in records)


def wait_for_line(path, text: str, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines()
        if any(text in line for line in lines):
            return lines
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)
