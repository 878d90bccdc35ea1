"""The webhook's floor: a minimal FastAPI admission endpoint (parse the review, allow, no patch), served with the
very same server settings as `python -m webhook serve` (webhook.server: uvicorn, TLS context, no access log).
Whatever the real webhook costs above this is its own work: policy, patch, logging, metrics.

Run: python -m bench.floor --port P --tls-cert FILE --tls-key FILE
"""
from __future__ import annotations

import argparse

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def create_floor_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.draining = False

    @app.post("/mutate")
    async def mutate(request: Request) -> JSONResponse:
        review = await request.json()
        return JSONResponse({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                             "response": {"uid": review["request"]["uid"], "allowed": True}})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    args = parser.parse_args()
    from webhook.server import serve

    serve(create_floor_app(), args.tls_cert, args.tls_key, args.host, args.port, drain_seconds=1)


if __name__ == "__main__":
    main()
