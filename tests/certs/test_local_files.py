"""`python -m certs local`: files the webhook can serve with and a client can trust, key private."""
from __future__ import annotations

import stat
import subprocess
import sys

from cryptography import x509

from certs.local import write_local
from tests.certs.handshake import LoopbackTLSServer
from tests.conftest import require_tool


def test_write_local_gives_a_working_localhost_chain(tmp_path):
    files = write_local(tmp_path / "tls")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    with LoopbackTLSServer() as server:
        server.present(files.cert.read_bytes(), files.key.read_bytes())
        assert server.handshake(files.ca.read_bytes(), "localhost") == b"ok"
        assert server.handshake(files.ca.read_bytes(), "127.0.0.1") == b"ok"


def test_cli_writes_requested_names_and_openssl_agrees(tmp_path):
    openssl = require_tool("openssl")
    result = subprocess.run(
        [sys.executable, "-m", "certs", "local", "--out", tmp_path, "--dns-name", "webhook.test", "--ip", "::1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["webhook.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]
    verify = subprocess.run(
        [openssl, "verify", "-CAfile", tmp_path / "ca.crt", "-verify_hostname", "webhook.test", tmp_path / "tls.crt"],
        capture_output=True, text=True, timeout=30,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_cli_refuses_a_bad_ip_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "certs", "local", "--out", tmp_path, "--ip", "not-an-ip"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "not-an-ip" in result.stderr
    assert not (tmp_path / "tls.key").exists()


def test_cli_defaults_to_localhost_and_loopback(tmp_path):
    from tests.certs.cluster import run_main
    result = run_main("local", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
