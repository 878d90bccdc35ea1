"""An HTTPS load client for the admission endpoint, lean enough not to be the bottleneck: keep-alive HTTP/1.1 over
asyncio streams, a prebuilt AdmissionReview, one JSON line of results on stdout.

Closed loop (`--connections N`): each connection sends the next review as soon as the last answer arrived.
Open loop (`--rate R`): reviews are due every 1/R s whether or not earlier ones finished; latency counts from when a
review was due, so queueing shows (no coordinated omission).

Run: python -m bench.httpload --port P --ca ca.crt --seconds 10 [--connections 8 | --rate 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
import uuid

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"generateName": "web-7d9c8b6f5-", "labels": {"app": "web"},
                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9c8b6f5",
                                      "uid": "5e0c5b8e-0000-4000-8000-000000000001", "controller": True}]},
    "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                             "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
             "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "serviceAccountName": "default"},
}
UID_SLOT = "00000000-0000-4000-8000-000000000000"


def review_body(namespace: str = "bench") -> bytes:
    review = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": UID_SLOT, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": POD, "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    return json.dumps(review, separators=(",", ":")).encode()


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes):
        self.reader, self.writer, self.head, self.body = reader, writer, head, body

    async def admit(self) -> bytes:
        self.writer.write(self.head + self.body.replace(UID_SLOT.encode(), str(uuid.uuid4()).encode(), 1))
        headers = await self.reader.readuntil(b"\r\n\r\n")
        status = headers[9:12]
        length = 0
        for line in headers.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()}: {payload[:200]!r}")
        return payload


async def connect(port: int, context: ssl.SSLContext, body: bytes) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
    head = (f"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return Connection(reader, writer, head, body)


def summary(latencies: list[float], errors: int, seconds: float, sample: dict) -> dict:
    ordered = sorted(latencies)

    def rank(p: int) -> float:
        return ordered[max(0, -(-len(ordered) * p // 100) - 1)] * 1e3 if ordered else float("nan")

    return {"completed": len(ordered), "errors": errors, "seconds": seconds,
            "per_second": len(ordered) / seconds if seconds else 0.0,
            "p50_ms": rank(50), "p99_ms": rank(99), "max_ms": ordered[-1] * 1e3 if ordered else float("nan"),
            "avg_ms": sum(ordered) / len(ordered) * 1e3 if ordered else float("nan"), "sample": sample}


async def run(port: int, ca: str, seconds: float, connections: int, rate: float | None) -> dict:
    context = ssl.create_default_context(cafile=ca)
    body = review_body()
    pool = [await connect(port, context, body) for _ in range(connections)]
    first = json.loads(await pool[0].admit())  # what the server answers, for the report to check
    sample = {"allowed": first["response"].get("allowed"), "patched": "patch" in first["response"]}
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds

    async def closed_loop(conn: Connection) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < end:
            try:
                await conn.admit()
                latencies.append(time.perf_counter() - now)
            except (RuntimeError, OSError, asyncio.IncompleteReadError):
                errors += 1
                return

    async def one(conn: Connection, due: float, idle: asyncio.Queue) -> None:
        nonlocal errors
        try:
            await conn.admit()
            latencies.append(time.perf_counter() - due)
            idle.put_nowait(conn)
        except (RuntimeError, OSError, asyncio.IncompleteReadError):
            errors += 1

    if rate is None:
        await asyncio.gather(*(closed_loop(conn) for conn in pool))
    else:
        idle: asyncio.Queue = asyncio.Queue()
        for conn in pool:
            idle.put_nowait(conn)
        tasks = []
        for k in range(int(seconds * rate)):
            due = start + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                conn = await asyncio.wait_for(idle.get(), timeout=max(0.1, end + 5 - time.perf_counter()))
            except TimeoutError:
                errors += 1
                break
            tasks.append(asyncio.ensure_future(one(conn, due, idle)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    elapsed = time.perf_counter() - start
    for conn in pool:
        conn.writer.close()
    return summary(latencies, errors, elapsed, sample)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.httpload")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=None)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.port, args.ca, args.seconds, args.connections, args.rate))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
