"""Kubernetes I/O for the certificates: read and write the two Secrets, read and patch the webhooks' caBundle.

Every call names the object it touches, so any failure becomes a `CertsError` that says which object, what the API
server answered and how to fix it. Writes carry the resourceVersion they were based on: a racing writer makes them
fail with a conflict (`Retry`), and the caller re-reads and decides again.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "localdns-certs"


class CertsError(Exception):
    """A failure a person must act on; the message names the object and the fix."""


class Retry(Exception):
    """Someone else changed the object between our read and our write: read again."""


@dataclass(frozen=True)
class SecretState:
    name: str
    data: dict[str, bytes]
    resource_version: str
    managed: bool  # written by us (labelled); other Secrets are only read
    type: str = "kubernetes.io/tls"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhooksState:
    name: str
    webhook_names: tuple[str, ...]
    bundles: tuple[bytes, ...]  # decoded caBundle of each webhook, b"" when unset


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster credentials inside a pod (unless a kubeconfig is named), the user's kubeconfig elsewhere."""
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError) as exc:
        raise CertsError(f"cannot load Kubernetes credentials ({exc}); pass --kubeconfig FILE [--context NAME] "
                         "or run inside a pod with a ServiceAccount") from None


class Kube:
    def __init__(self, api: client.ApiClient, namespace: str, timeout: float = 10.0) -> None:
        self.namespace = namespace
        self.timeout = timeout
        self.host = api.configuration.host
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)

    @contextlib.contextmanager
    def _calling(self, verb: str, what: str, resource: str) -> Iterator[None]:
        try:
            yield
        except ApiException as exc:
            raise self._explain(exc, verb, what, resource) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            timed_out = "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower()
            why = f"did not answer within {self.timeout:g} s" if timed_out else "could not be reached"
            raise CertsError(f"{what}: the API server at {self.host} {why} ({type(exc).__name__}); check that it "
                             "is reachable from here, or raise --timeout") from None

    def _explain(self, exc: ApiException, verb: str, what: str, resource: str) -> Exception:
        if exc.status == 409 or (exc.status == 422 and verb == "patch"):
            return Retry(what)
        message = _status_message(exc)
        if exc.status == 403:
            return CertsError(f"{what}: not allowed to {verb} it ({message}); grant the ServiceAccount '{verb}' on "
                              f"{resource} (deploy/ has the Role and ClusterRole this needs)")
        if exc.status == 401:
            return CertsError(f"{what}: the API server rejected our credentials ({message}); check --kubeconfig "
                              "and --context, or the pod's ServiceAccount token")
        return CertsError(f"{what}: the API server answered {exc.status} {exc.reason} to {verb} ({message})")

    def read_secret(self, name: str) -> SecretState | None:
        what = f"Secret {self.namespace}/{name}"
        with self._calling("get", what, "secrets"):
            try:
                secret = self.core.read_namespaced_secret(name, self.namespace, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        data = {key: _b64decode(value, f"{what} key {key}") for key, value in (secret.data or {}).items()}
        labels = secret.metadata.labels or {}
        return SecretState(name, data, secret.metadata.resource_version, labels.get(MANAGED_BY_LABEL) == MANAGED_BY,
                           secret.type or "Opaque", dict(labels), dict(secret.metadata.annotations or {}))

    def save_secret(self, name: str, data: dict[str, bytes], previous: SecretState | None) -> None:
        """Create the Secret, or replace exactly the version we read; a racing writer raises Retry.

        Labels and annotations others put on it are kept, and so is its type (immutable once created).
        """
        what = f"Secret {self.namespace}/{name}"
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name, namespace=self.namespace,
                labels={**(previous.labels if previous else {}), MANAGED_BY_LABEL: MANAGED_BY},
                annotations=(previous.annotations or None) if previous else None,
                resource_version=previous.resource_version if previous else None,
            ),
            type=previous.type if previous else "kubernetes.io/tls",
            data={key: base64.b64encode(value).decode() for key, value in data.items()},
        )
        if previous is None:
            with self._calling("create", what, "secrets"):
                self.core.create_namespaced_secret(self.namespace, body, _request_timeout=self.timeout)
        else:
            with self._calling("update", what, "secrets"):
                self.core.replace_namespaced_secret(name, self.namespace, body, _request_timeout=self.timeout)

    def read_webhooks(self, name: str) -> WebhooksState:
        what = f"MutatingWebhookConfiguration {name}"
        with self._calling("get", what, "mutatingwebhookconfigurations"):
            try:
                mwc = self.admission.read_mutating_webhook_configuration(name, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 404:
                    raise CertsError(f"{what} not found; apply the manifests first (kubectl apply -k deploy/...) "
                                     "or pass --webhook-configuration with its name") from None
                raise
        webhooks = mwc.webhooks or []
        if not webhooks:
            raise CertsError(f"{what} has no webhooks; re-apply it from deploy/")
        return WebhooksState(
            name,
            tuple(w.name for w in webhooks),
            tuple(_b64decode(w.client_config.ca_bundle or "", f"{what} webhook {w.name} caBundle")
                  for w in webhooks),
        )

    def set_ca_bundle(self, state: WebhooksState, bundle_pem: bytes) -> None:
        """Set every webhook's caBundle; each position is guarded by a test of its name (reordered: Retry)."""
        what = f"MutatingWebhookConfiguration {state.name}"
        encoded = base64.b64encode(bundle_pem).decode()
        patch: list[dict] = []
        for index, webhook_name in enumerate(state.webhook_names):
            patch.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook_name})
            patch.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded})
        with self._calling("patch", what, "mutatingwebhookconfigurations"):
            self.admission.patch_mutating_webhook_configuration(state.name, patch, _request_timeout=self.timeout)


def _status_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise CertsError(f"{what} is not base64") from None
