"""A tiny HTTP/1.1 server for /health, /ready and /metrics: GET only, one request per connection, bounded reads.

Pods can reach the health port (it is on the link-local address) and anything that routes to the node can reach
the metrics port, so neither may be held by a few clients: each request and its response must be done within
EXCHANGE_TIMEOUT, one client address has at most MAX_PER_CLIENT connections open, and beyond MAX_CONNECTIONS a new
connection takes the place of the one open longest (kubelet's probe and a Prometheus scrape take milliseconds; a
connection that has been open for long is a slow client's).
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("cache.health")

Response = tuple[int, bytes, str]  # status, body, content type
Route = Callable[[], Response]
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
MAX_REQUEST_HEAD = 8192
EXCHANGE_TIMEOUT = 5.0  # seconds for the request head to arrive and the response to be taken
MAX_CONNECTIONS = 64  # per server
MAX_PER_CLIENT = 8  # per server and client address


async def serve_http(host: str, port: int, routes: dict[str, Route]) -> asyncio.Server:
    open_now: dict[asyncio.StreamWriter, str] = {}  # -> client address, the connection open longest first

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if sum(1 for other in open_now.values() if other == address) >= MAX_PER_CLIENT:
            writer.transport.abort()
            return
        if len(open_now) >= MAX_CONNECTIONS:
            oldest = next(iter(open_now))
            del open_now[oldest]
            oldest.transport.abort()
        open_now[writer] = address
        try:
            async with asyncio.timeout(EXCHANGE_TIMEOUT):
                await _exchange(reader, writer, routes)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass
        finally:
            open_now.pop(writer, None)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that does not take its response would hold it here
            else:
                writer.close()

    return await asyncio.start_server(handle, sock=listening_socket(host, port), limit=MAX_REQUEST_HEAD)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host (an IP literal) and listening, as start_server(host, port, reuse_port=True) would
    make it. Bound here because uvloop encodes a host name with the idna codec before it resolves it, even an IP
    literal, and importing that codec brings unicodedata and stringprep (0.4 MB of RSS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(100)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, routes: dict[str, Route]) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
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


def text(status: int, message: str) -> Response:
    return status, (message + "\n").encode(), "text/plain; charset=utf-8"
