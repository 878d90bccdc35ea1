"""`python -m certs local`: a CA, a serving certificate and its key as files, for running the webhook locally."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from certs.authority import new_ca, new_serving_cert

DEFAULT_DNS_NAMES = ("localhost",)
DEFAULT_IP_ADDRESSES = ("127.0.0.1",)


@dataclass(frozen=True)
class LocalFiles:
    ca: Path
    cert: Path
    key: Path


def write_local(
    out_dir: str | os.PathLike[str],
    dns_names: Sequence[str] = DEFAULT_DNS_NAMES,
    ip_addresses: Sequence[str] = DEFAULT_IP_ADDRESSES,
) -> LocalFiles:
    """Write `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `out_dir`, creating it if needed.

    Each file is written to a temporary name and renamed, so a webhook watching the directory never reads half a file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca = new_ca()
    leaf = new_serving_cert(ca, list(dns_names), list(ip_addresses))
    files = LocalFiles(ca=out / "ca.crt", cert=out / "tls.crt", key=out / "tls.key")
    _write_atomically(files.key, leaf.key_pem(), mode=0o600)
    _write_atomically(files.cert, leaf.cert_pem(), mode=0o644)
    _write_atomically(files.ca, ca.cert_pem(), mode=0o644)
    return files


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
