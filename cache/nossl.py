"""Keep OpenSSL out of the cache process, which speaks no TLS: asyncio and uvloop import `ssl` as they are imported,
and `ssl` loads libssl and libcrypto and builds its enums: 4.5 MB of RSS on every node (idle RSS of `python -m
cache`, as the bench starts it: 26.6 MiB before, 22.6 after).

`import_event_loop()` imports both with `ssl` hidden. asyncio gets the ImportError it is written for and runs
without TLS. uvloop only names ssl's classes and constants at import, for the TLS transports it would create when
asked to; it gets `_STAND_IN`, which names exactly those and can do nothing. Afterwards `ssl` is no longer hidden:
whatever imports it later gets the real module (the startup taint's HTTPS client, when that component is on).
A uvloop that names something else at import fails to import here, and the cache runs on asyncio's own loop.
"""
from __future__ import annotations

import logging
import sys
import types
from typing import Any

log = logging.getLogger("cache")


class _NoTls(Exception):
    """What every name of the stand-in is: no TLS in this process."""


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise _NoTls("the cache process has no TLS (cache/nossl.py)")


_STAND_IN = types.ModuleType("ssl", "Stand-in for ssl while uvloop is imported (cache/nossl.py).")
for _name in ("SSLContext", "MemoryBIO", "SSLError", "SSLWantReadError", "SSLSyscallError", "SSLZeroReturnError",
              "CertificateError"):
    setattr(_STAND_IN, _name, type(_name, (_NoTls,), {}))
_STAND_IN.create_default_context = _refuse  # type: ignore[attr-defined]
# uvloop keeps these as C ints: ssl's own values, though nothing here compares them with anything.
_STAND_IN.SSL_ERROR_WANT_READ, _STAND_IN.SSL_ERROR_WANT_WRITE, _STAND_IN.SSL_ERROR_SYSCALL = 2, 3, 5  # type: ignore


def import_event_loop() -> types.ModuleType | None:
    """Import asyncio, and uvloop when installed, without loading OpenSSL; uvloop's module, or None (not installed,
    or it needs more of ssl than the stand-in names). With ssl loaded already there is nothing to save: plain
    imports."""
    hide = "ssl" not in sys.modules
    try:
        if hide:
            sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError
        import asyncio  # noqa: F401
        if hide:
            sys.modules["ssl"] = _STAND_IN
        try:
            import uvloop
        except ImportError:
            return None
        except AttributeError as error:
            log.warning("uvloop needs more of ssl at import than cache/nossl.py names (%s): running on asyncio's "
                        "own loop", error)
            return None
        return uvloop
    finally:
        if hide:
            del sys.modules["ssl"]
