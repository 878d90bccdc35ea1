"""The serving certificate is re-read when its files change: new connections get the new one, no restart."""
from __future__ import annotations

import os
import shutil
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certs.local import write_local
from tests.webhook.samples import pod
from webhook.app import create_app
from webhook.review import review_for
from webhook.server import running


def served_certificate(server, ca_file: Path, server_name: str | None = "localhost") -> bytes:
    """DER of the certificate a fresh connection is served, verified against `ca_file`."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if server_name is None:  # no SNI at all: connect by IP address
        context.check_hostname = False
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=server_name) as tls:
            return tls.getpeercert(binary_form=True)


def der(cert_file: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(Encoding.DER)


def reloads(app, result: str) -> float:
    return app.state.metrics.certificate_reloads.labels(result)._value.get()


def test_replaced_files_are_served_to_new_connections(tmp_path):
    first = write_local(tmp_path / "tls", ["localhost"], ["127.0.0.1"])
    first_ca = tmp_path / "first-ca.crt"
    shutil.copy(first.ca, first_ca)
    app = create_app()
    with running(app, str(first.cert), str(first.key)) as server:
        assert served_certificate(server, first_ca) == der(first.cert)
        old_client = httpx.Client(verify=ssl.create_default_context(cafile=str(first_ca)), timeout=10)
        with old_client:
            assert old_client.post(f"{server.url}/mutate", json=review_for(pod(), "shop")).status_code == 200

            second = write_local(tmp_path / "tls", ["localhost"], ["127.0.0.1"])  # a new CA and certificate
            assert served_certificate(server, second.ca) == der(second.cert)
            assert served_certificate(server, second.ca, server_name=None) == der(second.cert)
            with pytest.raises(ssl.SSLCertVerificationError):
                served_certificate(server, first_ca)  # the old certificate is no longer served
            # the connection opened before the rotation is not disturbed
            assert old_client.post(f"{server.url}/mutate", json=review_for(pod(), "shop")).status_code == 200
    assert reloads(app, "success") == 1
    expiry = x509.load_pem_x509_certificate(second.cert.read_bytes()).not_valid_after_utc.timestamp()
    assert app.state.metrics.certificate_expiry._value.get() == expiry


def test_connections_without_sni_also_get_the_new_certificate(tmp_path):
    first = write_local(tmp_path, ["localhost"], ["127.0.0.1"])
    with running(create_app(), str(first.cert), str(first.key)) as server:
        second = write_local(tmp_path, ["localhost"], ["127.0.0.1"])
        assert served_certificate(server, second.ca, server_name=None) == der(second.cert)


def test_broken_files_keep_the_previous_certificate_until_fixed(tmp_path):
    good = write_local(tmp_path, ["localhost"], ["127.0.0.1"])
    good_cert, good_ca = der(good.cert), tmp_path / "good-ca.crt"
    shutil.copy(good.ca, good_ca)
    app = create_app()
    with running(app, str(good.cert), str(good.key)) as server:
        good.cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        assert served_certificate(server, good_ca) == good_cert
        os.unlink(good.key)  # mid-rotation: a file missing for a moment
        assert served_certificate(server, good_ca) == good_cert
        fixed = write_local(tmp_path, ["localhost"], ["127.0.0.1"])
        assert served_certificate(server, fixed.ca) == der(fixed.cert)
    assert reloads(app, "failure") >= 1 and reloads(app, "success") == 1


def test_secret_volume_symlink_swap_is_picked_up(tmp_path):
    """kubelet updates a Secret volume by writing a new directory and renaming the `..data` symlink over."""
    volume = tmp_path / "secret"
    volume.mkdir()
    first = write_local(volume / "..2026_01", ["localhost"], ["127.0.0.1"])
    os.symlink("..2026_01", volume / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        os.symlink(f"..data/{name}", volume / name)
    with running(create_app(), str(volume / "tls.crt"), str(volume / "tls.key")) as server:
        assert served_certificate(server, first.ca) == der(first.cert)
        second = write_local(volume / "..2026_02", ["localhost"], ["127.0.0.1"])
        os.symlink("..2026_02", volume / "..data_tmp")
        os.replace(volume / "..data_tmp", volume / "..data")
        assert served_certificate(server, volume / "ca.crt") == der(second.cert)
