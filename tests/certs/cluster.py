"""Shared set-up for the certs tests: a FakeKubeAPI holding the webhook's MutatingWebhookConfiguration."""
from __future__ import annotations

import base64
import contextlib
import io
import subprocess
import sys

from cryptography import x509

from certs.__main__ import main
from certs.kube import Kube
from certs.reconcile import Target
from localdns.kube import Client
from tests.kubeapi import FakeKubeAPI

TARGET = Target()
NAMESPACE = TARGET.namespace
WEBHOOK_NAMES = ("pods.localdns.io", "pods-fallback.localdns.io")


def webhook_configuration(ca_bundle: bytes | None = None) -> dict:
    client_config: dict = {"service": {"name": "localdns-webhook", "namespace": NAMESPACE, "path": "/mutate",
                                       "port": 443}}
    if ca_bundle is not None:
        client_config["caBundle"] = base64.b64encode(ca_bundle).decode()
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "localdns-webhook"},
        "webhooks": [{"name": name, "clientConfig": client_config, "admissionReviewVersions": ["v1"],
                      "sideEffects": "None", "failurePolicy": "Ignore", "timeoutSeconds": 2} for name in WEBHOOK_NAMES],
    }


def seeded_api() -> FakeKubeAPI:
    api = FakeKubeAPI(user="system:serviceaccount:localdns-system:localdns-webhook")
    api.seed(webhook_configuration())
    return api


def kube_for(api: FakeKubeAPI, timeout: float = 5.0) -> Kube:
    return Kube(Client(api.client(), timeout), NAMESPACE)


def replace_webhook_configuration(api: FakeKubeAPI, mwc: dict) -> None:
    """Someone else's write (kubectl, another tool): through the official client's typed API, not ours."""
    from kubernetes import client

    client.AdmissionregistrationV1Api(api.client()).replace_mutating_webhook_configuration("localdns-webhook", mwc)


def ca_bundles(api: FakeKubeAPI) -> list[bytes]:
    mwc = api.get_object("mutatingwebhookconfigurations", "localdns-webhook")
    assert mwc is not None
    return [base64.b64decode(w["clientConfig"].get("caBundle", "")) for w in mwc["webhooks"]]


def secret_data(api: FakeKubeAPI, name: str = TARGET.secret) -> dict[str, bytes]:
    secret = api.get_object("secrets", name, NAMESPACE)
    assert secret is not None, f"Secret {name} missing"
    return {k: base64.b64decode(v) for k, v in secret.get("data", {}).items()}


def seed_secret(api: FakeKubeAPI, name: str, data: dict[str, bytes], managed: bool = True) -> None:
    labels = {"app.kubernetes.io/managed-by": "localdns-certs"} if managed else {}
    api.seed({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
              "data": {k: base64.b64encode(v).decode() for k, v in data.items()}})


def certs_in(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem) if pem.strip() else []


def run_main(*argv: str) -> subprocess.CompletedProcess:
    """`python -m certs ARGV` in this process (the client's imports take seconds per process)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def run_cli(api: FakeKubeAPI, *args: str) -> subprocess.CompletedProcess:
    return run_main(*args, "--kubeconfig", str(api.kubeconfig_path))


def run_cli_process(api: FakeKubeAPI, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The same in a real process, to see exactly what a user sees (exit code, no traceback)."""
    return subprocess.run([sys.executable, "-m", "certs", *args, "--kubeconfig", str(api.kubeconfig_path)],
                          capture_output=True, text=True, timeout=timeout)


def writes(api: FakeKubeAPI) -> list[tuple[str, str, str | None]]:
    return [(r.verb, r.resource, r.name) for r in api.requests if r.verb in ("create", "update", "patch", "delete")]
