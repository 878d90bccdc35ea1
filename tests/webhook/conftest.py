"""Fixtures for the webhook tests: a fresh local CA, the real HTTPS server on a free loopback port, and a client
that verifies that CA. kube-apiserver cannot run here, so requests are AdmissionReviews built exactly as the
admission.k8s.io/v1 (and v1beta1) API defines them (`webhook.review.review_for`)."""
from __future__ import annotations

import base64
import contextlib
import copy
import json
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import jsonpatch
import pytest

from certs.local import LocalFiles, write_local
from webhook.app import create_app
from webhook.config import Settings
from webhook.review import review_for
from webhook.server import RunningServer, running


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> LocalFiles:
    return write_local(tmp_path_factory.mktemp("webhook-tls"), ["localhost"], ["127.0.0.1"])


@dataclass
class Admitted:
    """One /mutate round trip: the HTTP answer, its review response, and the pod as the API server stores it."""

    status: int
    review: dict
    response: dict
    patch: list
    pod: dict


class Webhook:
    def __init__(self, server: RunningServer, client: httpx.Client) -> None:
        self.server, self.client, self.url = server, client, server.url

    def post(self, body: bytes | dict, **headers: str) -> httpx.Response:
        if isinstance(body, dict):
            return self.client.post(f"{self.url}/mutate", json=body, headers=headers)
        return self.client.post(f"{self.url}/mutate", content=body, headers=headers)

    def admit(self, pod: dict, namespace: str = "shop", api_version: str = "admission.k8s.io/v1",
              operation: str = "CREATE") -> Admitted:
        sent = copy.deepcopy(pod)
        uid = str(uuid.uuid4())
        answer = self.post(review_for(sent, namespace, uid=uid, api_version=api_version, operation=operation))
        assert answer.status_code == 200, answer.text
        review = answer.json()
        response = review["response"]
        assert response["uid"] == uid and response["allowed"] is True
        patch = []
        if "patch" in response:
            assert response["patchType"] == "JSONPatch"
            patch = json.loads(base64.b64decode(response["patch"]))
        # The patch must apply to the object exactly as it was sent (kube-apiserver rejects the pod otherwise).
        stored = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
        return Admitted(answer.status_code, review, response, patch, stored)

    def metric(self, name: str, **labels: str) -> float:
        text = self.client.get(f"{self.url}/metrics").text
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        raise AssertionError(f"metric {wanted} not exported")


@pytest.fixture
def start_webhook(tls_files: LocalFiles):
    """Start a webhook with given settings; everything started is stopped at teardown."""
    with contextlib.ExitStack() as stack:
        def start(settings: Settings | None = None, **app_options) -> Webhook:
            server = stack.enter_context(running(create_app(settings or Settings(), **app_options),
                                                 str(tls_files.cert), str(tls_files.key)))
            client = stack.enter_context(httpx.Client(verify=ssl.create_default_context(cafile=str(tls_files.ca)),
                                                      timeout=10))
            return Webhook(server, client)
        yield start


@pytest.fixture(scope="module")
def webhook(tls_files: LocalFiles) -> Iterator[Webhook]:
    """The webhook with default settings, shared by a module's tests."""
    with running(create_app(Settings()), str(tls_files.cert), str(tls_files.key)) as server, \
            httpx.Client(verify=ssl.create_default_context(cafile=str(tls_files.ca)), timeout=10) as client:
        yield Webhook(server, client)


def contextlib_exit_stack():
    import contextlib
    return contextlib.ExitStack()

