"""HTTPS serving: uvicorn with TLS 1.2+, certificate files re-read when they change, SIGTERM drains.

Certificates are rotated by rewriting the files (a Secret volume swaps them atomically; `certs watch` renews them).
Every TLS handshake first checks the files' identity (inode, size, mtime); when they changed, a fresh SSLContext is
loaded and the handshake continues on it, so new connections get the new certificate without a restart and
established ones are not disturbed. A half-written pair fails to load: the previous certificate stays in use and
the next handshake tries again.
"""
from __future__ import annotations

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

import uvicorn
from cryptography import x509
from fastapi import FastAPI

from webhook.config import DEFAULT_DRAIN_SECONDS

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


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that marks the app as draining (readyz 503) when told to stop."""

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
                 drain_seconds: int = DEFAULT_DRAIN_SECONDS) -> DrainingServer:
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
    config = uvicorn.Config(
        app, host=host, port=port, ssl_context_factory=lambda _config, _default: reloader.context,
        access_log=False, log_config=None, timeout_graceful_shutdown=drain_seconds, server_header=False,
        lifespan="off")
    return DrainingServer(config)


def serve(app: FastAPI, cert_file: str, key_file: str, host: str, port: int,
          drain_seconds: int = DEFAULT_DRAIN_SECONDS) -> None:
    """Serve in the foreground until SIGTERM/SIGINT, then drain and return (exit status 0)."""
    server = build_server(app, cert_file, key_file, host, port, drain_seconds)
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
            start_timeout: float = 15.0) -> Iterator[RunningServer]:
    """Serve in a background thread on a free port (bound before start, so no race); stop and join on exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = build_server(app, cert_file, key_file, host, port, drain_seconds=5)
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
