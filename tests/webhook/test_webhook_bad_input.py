"""Bad input gets a 4xx that says what is wrong: never a 500, never a crash, and the server keeps serving."""
from __future__ import annotations

import json
import socket
import ssl
import warnings

import pytest

from tests.webhook.samples import pod
from webhook.review import review_for


def _review(**request_changes) -> dict:
    review = review_for(pod(), "shop", uid="u1")
    for key, value in request_changes.items():
        if value is _DELETE:
            del review["request"][key]
        else:
            review["request"][key] = value
    return review


_DELETE = object()


def _pod_with(path: list[str], value) -> dict:
    review = review_for(pod(annotations={}), "shop", uid="u1")
    target = review["request"]["object"]
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return review


CASES = {
    "not JSON": (b"{this is not json", "not JSON"),
    "not UTF-8": (b"\xff\xfe\x00", "not JSON"),
    "empty body": (b"", "not JSON"),
    "JSON array": (b"[]", "JSON object"),
    "JSON string": (b'"AdmissionReview"', "JSON object"),
    "no apiVersion": ({"kind": "AdmissionReview", "request": {}}, "apiVersion"),
    "wrong apiVersion": ({**review_for(pod(), "shop"), "apiVersion": "admission.k8s.io/v2"}, "apiVersion"),
    "wrong kind": ({**review_for(pod(), "shop"), "kind": "Pod"}, "kind must be AdmissionReview"),
    "no request": ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "no request"),
    "null request": ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": None},
                     "no request"),
    "request not an object": ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": [1]},
                              "request must be an object"),
    "no uid": (_review(uid=_DELETE), "request.uid"),
    "uid not a string": (_review(uid=42), "request.uid must be a string"),
    "empty uid": (_review(uid=""), "request.uid must not be empty"),
    "kind not an object": (_review(kind="Pod"), "request.kind must be an object"),
    "kind.kind not a string": (_review(kind={"group": "", "version": "v1", "kind": 5}), "request.kind.kind"),
    "operation missing": (_review(operation=_DELETE), "request.operation"),
    "namespace not a string": (_review(namespace=["shop"]), "request.namespace must be a string"),
    "dryRun not a boolean": (_review(dryRun="yes"), "request.dryRun must be a boolean"),
    "pod without namespace": (_review(namespace=""), "request.namespace is required"),
    "object not a pod object": (_review(object="a pod"), "request.object must be a Pod object"),
    "object missing": (_review(object=_DELETE), "request.object must be a Pod object"),
    "metadata a list": (_pod_with(["metadata"], []), "metadata"),
    "annotations a list": (_pod_with(["metadata", "annotations"], ["a"]), "metadata.annotations must be an object"),
    "annotation value a number": (_pod_with(["metadata", "annotations"], {"localdns.io/ndots": 2}),
                                  "metadata.annotations['localdns.io/ndots'] must be a string"),
    "labels a list": (_pod_with(["metadata", "labels"], ["app=web"]), "metadata.labels must be an object"),
    "label value a list": (_pod_with(["metadata", "labels"], {"app": ["web"]}),
                           "metadata.labels['app'] must be a string"),
    "spec a string": (_pod_with(["spec"], "spec"), "request.object.spec must be an object"),
    "dnsPolicy a number": (_pod_with(["spec", "dnsPolicy"], 1), "spec.dnsPolicy must be a string"),
    "hostNetwork a string": (_pod_with(["spec", "hostNetwork"], "true"), "spec.hostNetwork must be a boolean"),
    "nodeSelector a list": (_pod_with(["spec", "nodeSelector"], ["linux"]), "spec.nodeSelector must be an object"),
    "os.name a number": (_pod_with(["spec", "os"], {"name": 7}), "spec.os.name must be a string"),
    "dnsConfig a string": (_pod_with(["spec", "dnsConfig"], "1.1.1.1"), "spec.dnsConfig must be an object"),
    "nameservers a string": (_pod_with(["spec", "dnsConfig"], {"nameservers": "1.1.1.1"}),
                             "spec.dnsConfig.nameservers must be a list"),
    "nameserver a number": (_pod_with(["spec", "dnsConfig"], {"nameservers": [1]}),
                            "spec.dnsConfig.nameservers[0] must be a string"),
    "searches an object": (_pod_with(["spec", "dnsConfig"], {"searches": {"a": 1}}),
                           "spec.dnsConfig.searches must be a list"),
    "option a string": (_pod_with(["spec", "dnsConfig"], {"options": ["ndots:2"]}),
                        "spec.dnsConfig.options[0] must be an object"),
    "option value a number": (_pod_with(["spec", "dnsConfig"], {"options": [{"name": "ndots", "value": 2}]}),
                              "spec.dnsConfig.options[0].value must be a string"),
}


@pytest.mark.parametrize("body, message", CASES.values(), ids=CASES.keys())
def test_bad_review_gets_400_with_a_message(webhook, body, message):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = webhook.post(payload, **{"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert webhook.client.get(f"{webhook.url}/healthz").status_code == 200


def test_oversize_body_with_content_length_gets_413(start_webhook):
    hook = start_webhook(max_body_bytes=1024)
    answer = hook.post(json.dumps(_pod_with(["metadata", "annotations"], {"big": "x" * 2000})).encode())
    assert answer.status_code == 413
    assert "over the limit of 1024 bytes" in answer.json()["error"]
    assert hook.metric("localdns_webhook_admissions_total", outcome="bad-request") == 1
    assert hook.admit(pod()).patch  # still serving


def test_oversize_chunked_body_without_length_gets_413(start_webhook):
    hook = start_webhook(max_body_bytes=1024)

    def chunks():
        for _ in range(8):
            yield b"x" * 512

    answer = hook.client.post(f"{hook.url}/mutate", content=chunks())
    assert answer.status_code == 413
    assert "over the limit" in answer.json()["error"]


def test_body_at_the_limit_is_accepted(start_webhook):
    body = json.dumps(review_for(pod(), "shop", uid="u1")).encode()
    hook = start_webhook(max_body_bytes=len(body))
    assert hook.post(body).status_code == 200


def test_plain_http_on_the_tls_port_does_not_get_an_admission(webhook):
    # A client that forgot TLS gets no answer from the application; the server stays up.
    with socket.create_connection((webhook.server.host, webhook.server.port), timeout=5) as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        data = sock.recv(1024)
    assert b"allowed" not in data
    assert webhook.client.get(f"{webhook.url}/healthz").status_code == 200


def _handshake(webhook, highest: ssl.TLSVersion) -> str:
    """Handshake with a client willing to go as low as TLS 1.0 (security level 0), capped at `highest`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = highest
    with socket.create_connection((webhook.server.host, webhook.server.port), timeout=5) as sock:
        with context.wrap_socket(sock) as tls:
            return tls.version()


def test_tls_below_1_2_is_refused(webhook):
    assert _handshake(webhook, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"  # this client can connect at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        capped = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        _handshake(webhook, capped)


def test_wrong_method_and_path_are_4xx(webhook):
    assert webhook.client.get(f"{webhook.url}/mutate").status_code == 405
    assert webhook.client.post(f"{webhook.url}/validate", json={}).status_code == 404
