"""A tiny HTTP/1.1 server for /health, /ready and /metrics: GET only, one request per connection, bounded reads."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("cache.health")

Response = tuple[int, bytes, str]  # status, body, content type
Route = Callable[[], Response]
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0


async def serve_http(host: str, port: int, routes: dict[str, Route]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            route = routes.get(path)
            if route is None:
                status, body, ctype = 404, b"not found\n", "text/plain"
            elif method not in ("GET", "HEAD"):
                status, body, ctype = 405, b"GET only\n", "text/plain"
            else:
                status, body, ctype = route()
            writer.write(f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_HEAD, reuse_port=True)


def text(status: int, message: str) -> Response:
    return status, (message + "\n").encode(), "text/plain; charset=utf-8"
