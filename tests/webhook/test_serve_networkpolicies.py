"""`python -m webhook serve` as the Deployment runs it, with its NetworkPolicy view talking to an API server (the
in-test one, tests/kubeapi.py): it syncs, admissions follow the cluster's policies, SIGTERM ends both; without
credentials, or with `--networkpolicies off`, it serves and injects as without the check."""
from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.kubeapi import FakeKubeAPI
from tests.webhook.samples import pod
from tests.webhook.test_webhook_drain import accepts, free_port, wait_until
from webhook.review import review_for

REPO = Path(__file__).resolve().parents[2]
DENY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-egress", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}


@contextmanager
def serving(tls_files, tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    port = free_port()
    log = tmp_path / "webhook.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALDNS_") and k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config of the developer's
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key), "--drain-seconds", "1", *options],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_until(lambda: accepts(port) or process.poll() is not None, "the webhook to listen")
        assert process.poll() is None, log.read_text()
        yield process, port, log
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


def https(port: int, ca: Path, path: str, body: dict | None = None) -> str:
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(f"https://localhost:{port}{path}", method="POST" if body else "GET",
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        return answer.read().decode()


def synced(port: int, ca: Path) -> float | None:
    """The view's gauge; None when it is not exported (the check switched off)."""
    lines = https(port, ca, "/metrics").splitlines()
    return next((float(line.split()[-1]) for line in lines
                 if line.startswith("localdns_webhook_networkpolicies_synced")), None)


def test_serve_checks_pods_against_the_clusters_policies(tls_files, tmp_path):
    with FakeKubeAPI() as api:
        api.seed(DENY)
        with serving(tls_files, tmp_path, "--kubeconfig", str(api.kubeconfig_path)) as (process, port, log):
            wait_until(lambda: synced(port, tls_files.ca) == 1, "the view synced")
            answer = json.loads(https(port, tls_files.ca, "/mutate", review_for(pod(), "shop")))["response"]
            assert "patch" not in answer and "shop/default-deny-egress" in answer["warnings"][0]
            assert "patch" in json.loads(https(port, tls_files.ca, "/mutate", review_for(pod(), "other")))["response"]
            process.terminate()
            assert process.wait(timeout=30) == 0
        assert "NetworkPolicy check on: 1 policies in 1 namespaces" in log.read_text()
        assert {r.verb for r in api.requests} == {"list", "watch"}


def test_serve_without_credentials_or_with_the_check_off_injects_as_before(tls_files, tmp_path):
    with serving(tls_files, tmp_path, "--kubeconfig", str(tmp_path / "absent")) as (_, port, log):
        answer = json.loads(https(port, tls_files.ca, "/mutate", review_for(pod(), "shop")))["response"]
        assert "patch" in answer and synced(port, tls_files.ca) == 0
        wait_until(lambda: "NetworkPolicy check off" in log.read_text(), "the reason in the log")
        assert "cannot load Kubernetes credentials: kubeconfig" in log.read_text()
    with serving(tls_files, tmp_path, "--networkpolicies", "off") as (_, port, _log):
        assert "patch" in json.loads(https(port, tls_files.ca, "/mutate", review_for(pod(), "shop")))["response"]
        assert synced(port, tls_files.ca) is None  # no view, no gauge: an alert on an unsynced view cannot fire
