"""Target: a request body, any bytes, POSTed to the webhook's /mutate and /dry-run: the real ASGI app (body reading,
review.parse, admit, the patch and the answer's encoding), called in process without a socket. The namespace
`shop` has a NetworkPolicy that blocks DNS for pods labelled app=locked, so the NetworkPolicy check runs too.

The rules (tests/webhook/oracle.py, which the hostile-input tests use as well): never a 5xx; a 4xx carries a
message; a 200 is an AdmissionReview in the request's apiVersion, allowed, for the request's uid, never an
internal error, whose JSON patch applies to the object as sent; and no error is logged. Bodies are mutated as JSON
half the time (fuzz/jsonmutate.py), so most stay AdmissionReviews and reach the decision.
"""
from __future__ import annotations

import asyncio
from collections.abc import MutableMapping, Sequence
from typing import Any

from fuzz import jsonmutate
from fuzz.logged import Errors
from tests.webhook.oracle import judge
from webhook.app import create_app
from webhook.config import Settings
from webhook.metrics import Metrics
from webhook.netpol import Policy, compile_policy

ERRORS = Errors("localdns.webhook")
SETTINGS = Settings(fallback_nameserver="10.96.0.10")
LOCKED = compile_policy({"metadata": {"name": "locked", "namespace": "shop"},
                         "spec": {"podSelector": {"matchLabels": {"app": "locked"}}, "policyTypes": ["Egress"]}},
                        SETTINGS.local_ip)


class Policies:
    """The namespaces' NetworkPolicies, synced: the view the server keeps of the cluster's, fixed here."""

    synced = True

    def in_namespace(self, namespace: str) -> Sequence[Policy]:
        return [LOCKED] if namespace == "shop" else []


APP = create_app(SETTINGS, Metrics(), networkpolicies=Policies())
LOOP = asyncio.new_event_loop()


async def post(path: str, body: bytes) -> tuple[int, bytes]:
    """One request through the ASGI app, as uvicorn hands it over: (status, body)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localdns-webhook"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8443)}
    sent = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await APP(scope, receive, send)
    return status, b"".join(chunks)


def check(data: bytes) -> str:
    """Raise AssertionError where the webhook breaks a rule; otherwise what it answered to /mutate: a 4xx, allowed
    as is, or patched."""
    outcome = ""
    for path in ("/mutate", "/dry-run"):
        status, answer = LOOP.run_until_complete(post(path, data))
        patch = judge(data, status, answer)
        ERRORS.check()
        outcome = outcome or ("patched" if patch else "allowed" if status == 200 else str(status))
    return outcome


MUTATOR = jsonmutate.mutate


if __name__ == "__main__":
    from fuzz.__main__ import alone
    alone("webhook_review")
