"""The objects certs keeps in the cluster: read and write the two Secrets, read and patch the webhooks' caBundle.

Calls go through the shared client (`localdns.kube`), whose errors name the object, what the API server answered
and how to fix it. Writes carry the resourceVersion they were based on: a racing writer makes them fail with
`Conflict`, and the caller re-reads and decides again.
"""
from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from localdns import names
from localdns.kube import Client, NotFound, describe


class CertsError(Exception):
    """A failure a person must act on; the message names the object and the fix."""


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
    resource_version: str = ""
    has_annotations: bool = False
    synced_at: dt.datetime | None = None  # when we last wrote caBundle (annotation), for rotation waits


class Kube:
    """The Secrets in one namespace and the cluster's MutatingWebhookConfigurations, as certs reads and writes them."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def read_secret(self, name: str) -> SecretState | None:
        try:
            secret = self.client.get("Secret", name, self.namespace)
        except NotFound:
            return None
        what = describe("Secret", name, self.namespace)
        meta = secret.get("metadata") or {}
        labels = meta.get("labels") or {}
        data = {key: _b64decode(value, f"{what} key {key}") for key, value in (secret.get("data") or {}).items()}
        return SecretState(name, data, meta.get("resourceVersion", ""),
                           labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY_CERTS,
                           secret.get("type") or "Opaque", dict(labels), dict(meta.get("annotations") or {}))

    def save_secret(self, name: str, data: dict[str, bytes], previous: SecretState | None) -> None:
        """Create the Secret, or replace exactly the version we read; a racing writer raises Conflict.

        Labels and annotations others put on it are kept, and so is its type (immutable once created).
        """
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": {
            **(previous.labels if previous else {}), names.MANAGED_BY_LABEL: names.MANAGED_BY_CERTS}}
        if previous is not None:
            meta["resourceVersion"] = previous.resource_version
            if previous.annotations:
                meta["annotations"] = previous.annotations
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                "type": previous.type if previous else "kubernetes.io/tls",
                "data": {key: base64.b64encode(value).decode() for key, value in data.items()}}
        if previous is None:
            self.client.create("Secret", self.namespace, body)
        else:
            self.client.replace("Secret", name, self.namespace, body)

    def read_webhooks(self, name: str) -> WebhooksState:
        what = describe("MutatingWebhookConfiguration", name)
        try:
            mwc = self.client.get("MutatingWebhookConfiguration", name)
        except NotFound:
            raise CertsError(f"{what} not found; apply the manifests first (kubectl apply -k deploy/...) "
                             "or pass --webhook-configuration with its name") from None
        webhooks = [w for w in mwc.get("webhooks") or [] if isinstance(w, dict)]
        if not webhooks:
            raise CertsError(f"{what} has no webhooks; re-apply it from deploy/")
        meta = mwc.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        return WebhooksState(
            name,
            tuple(str(w.get("name", "")) for w in webhooks),
            tuple(_b64decode_lenient((w.get("clientConfig") or {}).get("caBundle") or "") for w in webhooks),
            str(meta.get("resourceVersion", "")),
            bool(annotations),
            _parse_time(annotations.get(names.CA_BUNDLE_SYNCED_AT)),
        )

    def set_ca_bundle(self, state: WebhooksState, bundle_pem: bytes, now: dt.datetime) -> None:
        """Set every webhook's caBundle and note when, in one patch that applies only to the version we read
        (a test of resourceVersion, and of each webhook's name at its position); otherwise Conflict."""
        encoded = base64.b64encode(bundle_pem).decode()
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": state.resource_version}]
        if state.has_annotations:
            patch.append({"op": "add", "path": "/metadata/annotations/" +
                          names.CA_BUNDLE_SYNCED_AT.replace("~", "~0").replace("/", "~1"), "value": stamp})
        else:
            patch.append({"op": "add", "path": "/metadata/annotations",
                          "value": {names.CA_BUNDLE_SYNCED_AT: stamp}})
        for index, webhook_name in enumerate(state.webhook_names):
            patch.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook_name})
            patch.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded})
        self.client.patch("MutatingWebhookConfiguration", state.name, None, patch, "json")


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
