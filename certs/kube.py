"""Kubernetes I/O for the certificates: read and write the two Secrets, read and patch the webhooks' caBundle.

Every call names the object it touches, so any failure becomes a `CertsError` that says which object, what the API
server answered and how to fix it. Writes carry the resourceVersion they were based on: a racing writer makes them
fail with a conflict (`Retry`), and the caller re-reads and decides again.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
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


SYNCED_AT_ANNOTATION = "localdns.io/ca-bundle-synced-at"


@dataclass(frozen=True)
class WebhooksState:
    name: str
    webhook_names: tuple[str, ...]
    bundles: tuple[bytes, ...]  # decoded caBundle of each webhook, b"" when unset
    resource_version: str = ""
    has_annotations: bool = False
    synced_at: dt.datetime | None = None  # when we last wrote caBundle (annotation), for rotation waits


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
        self.api = api
        # Secrets go through the client's generic request path: importing CoreV1Api builds every core model and
        # costs this sidecar about 20 MB and 1.5 s of start-up for two calls.
        self.admission = client.AdmissionregistrationV1Api(api)

    def _secrets(self, method: str, name: str | None = None, body: dict | None = None) -> dict:
        path = f"/api/v1/namespaces/{self.namespace}/secrets" + (f"/{name}" if name else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self.api.param_serialize(method, path, header_params=headers, body=body,
                                           auth_settings=["BearerToken"])
        response = self.api.call_api(*request, _request_timeout=self.timeout)
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return json.loads(response.data)

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
                secret = self._secrets("GET", name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        meta = secret.get("metadata") or {}
        labels = meta.get("labels") or {}
        data = {key: _b64decode(value, f"{what} key {key}") for key, value in (secret.get("data") or {}).items()}
        return SecretState(name, data, meta.get("resourceVersion", ""), labels.get(MANAGED_BY_LABEL) == MANAGED_BY,
                           secret.get("type") or "Opaque", dict(labels), dict(meta.get("annotations") or {}))

    def save_secret(self, name: str, data: dict[str, bytes], previous: SecretState | None) -> None:
        """Create the Secret, or replace exactly the version we read; a racing writer raises Retry.

        Labels and annotations others put on it are kept, and so is its type (immutable once created).
        """
        what = f"Secret {self.namespace}/{name}"
        meta: dict = {"name": name, "namespace": self.namespace,
                      "labels": {**(previous.labels if previous else {}), MANAGED_BY_LABEL: MANAGED_BY}}
        if previous is not None:
            meta["resourceVersion"] = previous.resource_version
            if previous.annotations:
                meta["annotations"] = previous.annotations
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                "type": previous.type if previous else "kubernetes.io/tls",
                "data": {key: base64.b64encode(value).decode() for key, value in data.items()}}
        if previous is None:
            with self._calling("create", what, "secrets"):
                self._secrets("POST", body=body)
        else:
            with self._calling("update", what, "secrets"):
                self._secrets("PUT", name, body)

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
        annotations = mwc.metadata.annotations or {}
        return WebhooksState(
            name,
            tuple(w.name for w in webhooks),
            tuple(_b64decode_lenient(w.client_config.ca_bundle or "") for w in webhooks),
            mwc.metadata.resource_version,
            bool(annotations),
            _parse_time(annotations.get(SYNCED_AT_ANNOTATION)),
        )

    def set_ca_bundle(self, state: WebhooksState, bundle_pem: bytes, now: dt.datetime) -> None:
        """Set every webhook's caBundle and note when, in one patch that applies only to the version we read
        (a test of resourceVersion, and of each webhook's name at its position); otherwise Retry."""
        what = f"MutatingWebhookConfiguration {state.name}"
        encoded = base64.b64encode(bundle_pem).decode()
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        patch: list[dict] = [{"op": "test", "path": "/metadata/resourceVersion", "value": state.resource_version}]
        if state.has_annotations:
            patch.append({"op": "add", "path": "/metadata/annotations/" + SYNCED_AT_ANNOTATION.replace("/", "~1"),
                          "value": stamp})
        else:
            patch.append({"op": "add", "path": "/metadata/annotations", "value": {SYNCED_AT_ANNOTATION: stamp}})
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


def _parse_time(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _b64decode_lenient(value: str) -> bytes:
    """A caBundle that is not base64 is as good as none: the next sync rewrites it."""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise CertsError(f"{what} is not base64") from None
