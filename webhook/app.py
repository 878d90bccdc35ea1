"""The HTTP surface: POST /mutate and /dry-run, GET /healthz, /readyz and /metrics. What is done to a pod lives in
admit.py (the decision in policy.py)."""
from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect

from webhook import logs, review
from webhook.admit import admit
from webhook.config import BODY_ALLOWANCE_BYTES, DEFAULT_LIMITS, DEFAULT_MAX_BODY_BYTES, Settings
from webhook.metrics import OUTCOMES, Metrics
from webhook.netpol import NetworkPolicies

log = logging.getLogger("localdns.webhook")


class BodyTooLarge(Exception):
    pass


class Busy(Exception):
    """The bodies already held in memory use up the budget: this one is refused (503) rather than buffered."""


class BodyBudget:
    """Bytes of request bodies held at once, beyond each request's allowance (config.ServerLimits)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise Busy(f"request bodies in memory would exceed {self.limit} bytes; retry later")
        self.held += size


async def read_body(request: Request, limit: int, budget: BodyBudget | None = None) -> bytes:
    """The request body, refusing (before reading it all) anything over `limit` bytes, or anything beyond the
    allowance that the budget cannot hold."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise review.BadReview(f"invalid Content-Length {declared[:32]!r}")
        if int(declared) > limit:
            raise BodyTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size, taken = [], 0, 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
            if budget is not None and size - taken > BODY_ALLOWANCE_BYTES:
                budget.take(size - BODY_ALLOWANCE_BYTES - taken)
                taken = size - BODY_ALLOWANCE_BYTES
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        if budget is not None:
            budget.held -= taken


def create_app(settings: Settings | None = None, metrics: Metrics | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               body_budget_bytes: int = DEFAULT_LIMITS.body_budget_bytes,
               networkpolicies: NetworkPolicies | None = None) -> FastAPI:
    """The app; `networkpolicies` is the view pods are checked against (none: no check, as when unsynced)."""
    settings = settings or Settings()
    metrics = metrics or Metrics()
    budget = BodyBudget(body_budget_bytes)
    app = FastAPI(title="localdns webhook", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.draining = False

    # Label children bound once: `labels()` hashes and locks on every call, this path runs per admission.
    admitted = {outcome: metrics.admissions.labels(outcome) for outcome in OUTCOMES}
    in_flight, duration, warned = metrics.in_flight, metrics.duration, metrics.warnings

    async def mutate(request: Request, dry_run: bool = False) -> Response:
        started = time.perf_counter()
        in_flight.inc()
        outcome = "error"
        try:
            try:
                admission = review.parse(await read_body(request, max_body_bytes, budget))
            except BodyTooLarge as error:
                outcome = "bad-request"
                return JSONResponse({"error": str(error)}, status_code=413)
            except Busy as error:
                outcome = "bad-request"
                return JSONResponse({"error": str(error)}, status_code=503)
            except ClientDisconnect:  # the client left (or was closed for being slow): nobody to answer
                outcome = "bad-request"
                return Response(status_code=400)
            except review.BadReview as error:
                outcome = "bad-request"
                log.warning("rejected admission request: %s", logs.text(str(error)))
                return JSONResponse({"error": str(error)}, status_code=400)
            answer, outcome = answer_review(admission, settings, networkpolicies, dry_run)
            if "warnings" in answer["response"]:
                warned.inc()
            return Response(review.compact_json(answer).encode(), media_type="application/json")
        finally:
            admitted[outcome].inc()
            duration.observe(time.perf_counter() - started)
            in_flight.dec()

    # A plain Starlette route: the body is read and checked here, so FastAPI's per-request endpoint machinery
    # (dependency solving, response model handling) would only add cost on the one path that runs per admission.
    app.router.add_route("/mutate", mutate, methods=["POST"])

    async def mutate_dry_run(request: Request) -> Response:  # the entry for namespaces labelled inject=dry-run
        return await mutate(request, dry_run=True)

    app.router.add_route("/dry-run", mutate_dry_run, methods=["POST"])

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok\n")

    @app.get("/readyz")
    async def readyz() -> Response:
        if app.state.draining:
            return PlainTextResponse("draining\n", status_code=503)
        return PlainTextResponse("ok\n")

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def answer_review(admission: review.AdmissionRequest, settings: Settings,
                  networkpolicies: NetworkPolicies | None = None, dry_run: bool = False) -> tuple[dict[str, Any], str]:
    """The AdmissionReview answer and the outcome label. Never raises: an internal error allows the pod as is."""
    if not admission.is_pod_create:
        return review.response(admission), "ignored"
    pod = admission.object
    try:
        policies = networkpolicies.in_namespace(admission.namespace) \
            if networkpolicies is not None and networkpolicies.synced else None
        admitted = admit(pod, admission.namespace, settings, policies, dry_run)
    except Exception:  # a bug must not cost the pod its creation: answer allowed, unchanged, and say so
        name, generated = _pod_name(pod)
        log.exception("uid=%s pod=%s/%s%s: internal error, pod left unchanged", logs.field(admission.uid),
                      logs.field(admission.namespace), logs.field(name), "*" if generated else "",
                      extra={"fields": {"uid": admission.uid, "namespace": admission.namespace,
                                        "pod": _shown(name, generated), "outcome": "error"}})
        return review.response(admission, warnings=["localdns: internal error, DNS settings left unchanged"]), "error"
    decision = admitted.decision
    if log.isEnabledFor(logging.INFO):  # the line is built only when someone reads it
        rollout = f"dry-run (would {decision.outcome.value})" if dry_run else decision.outcome.value
        name, generated = _pod_name(pod)
        logs.info_line(log, f"uid={logs.field(admission.uid)} pod={logs.field(admission.namespace)}/"
                            f"{logs.field(name)}{'*' if generated else ''} "
                            f"outcome={rollout}{' (dry run)' if admission.dry_run else ''}: "
                            f"{logs.text(decision.reason)}",
                       {"uid": admission.uid, "namespace": admission.namespace, "pod": _shown(name, generated),
                        "outcome": admitted.outcome, "decision": decision.outcome.value,
                        "dryRun": admission.dry_run, "reason": decision.reason})
    return review.response(admission, admitted.patch, list(admitted.warnings)), admitted.outcome


def _pod_name(pod: dict[str, Any]) -> tuple[str, bool]:
    """The pod's name, or its generateName and True for controller-made pods, which have none yet at admission
    (`generateName*` in the log; both are strings: review.check_pod saw to it)."""
    metadata = pod.get("metadata") or {}
    name = metadata.get("name")
    return (name, False) if name else (metadata.get("generateName") or "", True)


def _shown(name: str, generated: bool) -> str:
    """As the log's `pod` key has it: the name, or `generateName*`."""
    return f"{name}*" if generated else name
