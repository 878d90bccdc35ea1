"""A real TLS server on loopback and a client that trusts only a given CA bundle, for proving chains work.

The server presents whatever certificate and key it was last given, as the webhook does after re-reading its
mounted Secret; the client is Python's ssl with default verification (chain, names, purpose, validity).
"""
from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading
from pathlib import Path


class LoopbackTLSServer:
    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="certs-tls-")
        self._context: ssl.SSLContext | None = None
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LoopbackTLSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        self._dir.cleanup()

    def present(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Serve this certificate (chain) and key from the next connection on."""
        cert, key = Path(self._dir.name, "tls.crt"), Path(self._dir.name, "tls.key")
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        os.chmod(key, 0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._context = context

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                context = self._context
                if context is None:
                    continue  # nothing to present yet: the client sees the connection close
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (ssl.SSLError, OSError):
                    pass  # the client side reports what went wrong

    def handshake(self, trusted_bundle_pem: bytes, server_hostname: str) -> bytes:
        """Connect trusting only `trusted_bundle_pem`; returns the server's greeting or raises ssl.SSLError."""
        client = ssl.create_default_context(cadata=trusted_bundle_pem.decode())
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            with client.wrap_socket(raw, server_hostname=server_hostname) as tls:
                return tls.recv(2)
