"""HTTPS serving: uvicorn with TLS 1.2+, certificate files re-read when they change, SIGTERM drains.

Certificates are rotated by rewriting the files (a Secret volume swaps them atomically; `certs watch` renews them).
Every TLS handshake first checks the files' identity (inode, size, mtime); when they changed, a fresh SSLContext is
loaded and the handshake continues on it, so new connections get the new certificate without a restart and
established ones are not disturbed. A half-written pair fails to load: the previous certificate stays in use and
the next handshake tries again.

Slow clients are bounded (config.ServerLimits). uvicorn itself times out neither a TLS handshake (asyncio's 60 s
apply) nor a request head or body, limits neither the connections nor a head's size, and hands a connection to its
protocol only once TLS is done, so connections still in the handshake would go uncounted. So the server accepts
connections itself (`GuardedListener`): each is counted at accept by `ConnectionGuard`, then TLS runs with a timeout
(`loop.connect_accepted_socket`), then `GuardedHTTP`, uvicorn's httptools protocol, serves it with a deadline on
each wait for the client.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from cryptography import x509
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from webhook.config import DEFAULT_DRAIN_SECONDS, DEFAULT_LIMITS, ServerLimits

log = logging.getLogger("localdns.webhook")



def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    return context


def _identity(path: str) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_ino, info.st_size, info.st_mtime_ns


class CertificateReloader:
    """Owns the server's SSLContext; swaps in a fresh one when the certificate or key file changes on disk."""

    def __init__(self, cert_file: str, key_file: str,
                 on_reload: Callable[[bool], None] = lambda ok: None) -> None:
        self.cert_file, self.key_file, self._on_reload = cert_file, key_file, on_reload
        self._stamp = self._files_stamp()
        self._current = tls_context(cert_file, key_file)  # an unreadable pair at start is a startup error
        # The listening context also carries the certificate, for the handshake that first notices a change.
        self.context = tls_context(cert_file, key_file)
        self.context.sni_callback = self._on_client_hello

    def _files_stamp(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return _identity(self.cert_file), _identity(self.key_file)

    def current(self) -> ssl.SSLContext:
        """The context for the next handshake, reloading the files first if they changed."""
        try:
            stamp = self._files_stamp()
        except OSError as error:  # mid-rotation: keep serving the previous certificate
            log.warning("certificate files unreadable (%s); keeping the previous certificate", error)
            return self._current
        if stamp != self._stamp:
            try:
                fresh = tls_context(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as error:
                log.warning("certificate files changed but do not load (%s); keeping the previous one", error)
                self._on_reload(False)
                return self._current
            self._current, self._stamp = fresh, stamp
            log.info("reloaded TLS certificate from %s", self.cert_file)
            self._on_reload(True)
        return self._current

    def _on_client_hello(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        sock.context = self.current()


class ConnectionGuard:
    """The server's open connections: how many, and which are waiting for their client, longest first."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.open = 0
        self.waiting: dict[GuardedHTTP, None] = {}  # insertion order is the order they started waiting
        self._warned_at = float("-inf")

    def admit(self) -> bool:
        """Count a new connection; at the limit, first close the one that has waited longest for its client."""
        if self.open >= self.limits.max_connections:
            self._warn_full()
            if not self.waiting:  # every connection has a request being answered: refuse the new one
                return False
            next(iter(self.waiting)).evict()
        self.open += 1
        return True

    def _warn_full(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:  # under a flood of connections, once a minute is enough to say so
            self._warned_at = now
            log.warning("all %d connections in use: closing the one that waited longest for its client (or "
                        "refusing the new one); see docs/webhook.md, Limits", self.limits.max_connections)


class GuardedHTTP(HttpToolsProtocol):
    """uvicorn's HTTP protocol for one counted connection, with a deadline on each wait for the client: the TLS
    handshake, the idle time before a request, a request's head, its body. Made by GuardedListener at accept."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.handshake: asyncio.Task[Any] | None = None
        self._counted = True  # the guard admitted it before making it
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # from the end of a request (or the connection's start) to the end of the next head
        self._head_bytes = 0
        self._heads_done = 0  # heads parsed on this connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait(self.guard.limits.idle_seconds)  # uvicorn times idle connections out only after a response

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def evict(self) -> None:
        """Close at once: a slow client gets no TLS goodbye to wait for."""
        self._release()
        if self.handshake is not None and not self.handshake.done():
            self.handshake.cancel()
        elif self.transport is not None:
            self.transport.abort()

    def _release(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._counted:
            self._counted = False
            self.guard.open -= 1
            self.guard.waiting.pop(self, None)

    # Waiting for the client (with a deadline, and first in line to be evicted), or busy answering it.
    def _wait(self, seconds: float) -> None:
        if not self._counted:
            return
        self.guard.waiting.pop(self, None)
        self.guard.waiting[self] = None
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, self._on_deadline)

    def _busy(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        idle = self.transport is not None and self._in_head and self._head_bytes == 0 and \
            (self.cycle is None or self.cycle.response_complete)
        if idle:
            self.transport.close()  # a quiet keep-alive connection: close it politely, as uvicorn does
        else:
            self.evict()

    # Request progress, from httptools' callbacks.
    def data_received(self, data: bytes) -> None:
        in_head, heads = self._in_head, self._heads_done
        super().data_received(data)
        # Only a chunk that began inside a head and completed none counts toward it: one that ends a request's head
        # or body may carry that body and the next request's first bytes, which its own next chunk then counts.
        if in_head and self._in_head and heads == self._heads_done:
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.limits.max_head_bytes and not self.transport.is_closing():
                self._refuse_head()

    def _refuse_head(self) -> None:
        message = f"request line and headers over the limit of {self.guard.limits.max_head_bytes} bytes".encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
                             b"charset=utf-8\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(message), message))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._wait(self.guard.limits.header_seconds)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._heads_done += 1
        self._wait(self.guard.limits.body_seconds)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._busy()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait(self.guard.limits.idle_seconds)


class GuardedListener:
    """Accepts on a listening socket, counts each connection, and hands it to TLS and then GuardedHTTP. Stands in
    for the asyncio Server that uvicorn keeps (close, wait_closed) to stop accepting at shutdown."""

    def __init__(self, sock: socket.socket, guard: ConnectionGuard, context: Callable[[], ssl.SSLContext],
                 protocol: Callable[[], GuardedHTTP], backlog: int) -> None:
        self.sock, self.guard, self.context, self.protocol = sock, guard, context, protocol
        sock.listen(backlog)
        sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self._accepting = self.loop.create_task(self._accept())

    async def _accept(self) -> None:
        while True:
            try:
                connection, _ = await self.loop.sock_accept(self.sock)
            except OSError as error:  # out of file descriptors, say: let connections close, then go on
                log.warning("accept failed: %s", error)
                await asyncio.sleep(0.1)
                continue
            if not self.guard.admit():
                connection.close()
                continue
            protocol = self.protocol()
            protocol.handshake = self.loop.create_task(self._handshake(connection, protocol))

    async def _handshake(self, connection: socket.socket, protocol: GuardedHTTP) -> None:
        protocol._wait(self.guard.limits.handshake_seconds)
        try:
            await self.loop.connect_accepted_socket(
                lambda: protocol, connection, ssl=self.context(),
                ssl_handshake_timeout=self.guard.limits.handshake_seconds)
        except BaseException:  # timed out, failed, evicted (cancelled) or the client left: nothing to keep
            protocol._release()
            connection.close()

    def close(self) -> None:
        self._accepting.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that accepts through GuardedListener, and marks the app as draining (readyz 503) when told
    to stop."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard, context: Callable[[], ssl.SSLContext]):
        super().__init__(config)
        self.guard, self.context = guard, context

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup for the two ways this module serves (a host and port, or bound sockets)."""
        await self.lifespan.startup()
        config = self.config
        if sockets is None:
            sockets = [bound_socket(config.host, config.port)]
            log.info("listening on %s:%d (HTTPS)", config.host, config.port)

        def protocol() -> GuardedHTTP:
            return GuardedHTTP(config=config, server_state=self.server_state, app_state=self.lifespan.state,
                               guard=self.guard)

        self.servers = [GuardedListener(sock, self.guard, self.context, protocol,  # type: ignore[misc]
                                        config.backlog) for sock in sockets]
        self.started = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        if isinstance(app, FastAPI):
            app.state.draining = True
        if not self.should_exit:
            log.info("signal %d: draining in-flight requests (up to %s s), then exiting", sig,
                     self.config.timeout_graceful_shutdown)
        super().handle_exit(sig, frame)


def certificate_expiry(cert_file: str) -> float:
    """Unix time at which the first certificate in the file expires."""
    with open(cert_file, "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read()).not_valid_after_utc.timestamp()


def build_server(app: FastAPI, cert_file: str, key_file: str, host: str = "0.0.0.0", port: int = 8443,
                 drain_seconds: int = DEFAULT_DRAIN_SECONDS, limits: ServerLimits = DEFAULT_LIMITS) -> DrainingServer:
    metrics = getattr(app.state, "metrics", None)

    def record(ok: bool) -> None:
        if metrics is None:
            return
        metrics.certificate_reloads.labels("success" if ok else "failure").inc()
        if ok:
            with contextlib.suppress(OSError, ValueError):
                metrics.certificate_expiry.set(certificate_expiry(cert_file))

    reloader = CertificateReloader(cert_file, key_file, on_reload=record)
    if metrics is not None:
        metrics.certificate_expiry.set(certificate_expiry(cert_file))
    app.state.certificates = reloader
    guard = ConnectionGuard(limits)
    app.state.connections = guard
    # No ssl for uvicorn: GuardedListener runs TLS itself, after counting the connection.
    config = uvicorn.Config(
        app, host=host, port=port, access_log=False, log_config=None, timeout_graceful_shutdown=drain_seconds,
        timeout_keep_alive=max(1, round(limits.idle_seconds)), server_header=False, lifespan="off")
    return DrainingServer(config, guard, lambda: reloader.context)


def bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: FastAPI, cert_file: str, key_file: str, host: str, port: int,
          drain_seconds: int = DEFAULT_DRAIN_SECONDS, limits: ServerLimits = DEFAULT_LIMITS) -> None:
    """Serve in the foreground until SIGTERM/SIGINT, then drain and return (exit status 0)."""
    server = build_server(app, cert_file, key_file, host, port, drain_seconds, limits)
    # uvicorn re-raises the stop signal after draining, to the handlers that were in place before it started;
    # these make that a clean return instead of death by signal, since the drain already happened.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    log.info("stopped")


@dataclass
class RunningServer:
    host: str
    port: int
    server: DrainingServer

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


@contextlib.contextmanager
def running(app: FastAPI, cert_file: str, key_file: str, host: str = "127.0.0.1",
            start_timeout: float = 15.0, limits: ServerLimits = DEFAULT_LIMITS) -> Iterator[RunningServer]:
    """Serve in a background thread on a free port (bound before start, so no race); stop and join on exit."""
    sock = bound_socket(host, 0)
    port = sock.getsockname()[1]
    server = build_server(app, cert_file, key_file, host, port, drain_seconds=5, limits=limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"webhook-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"webhook server on {host}:{port} did not start")
            time.sleep(0.01)
        yield RunningServer(host, port, server)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
