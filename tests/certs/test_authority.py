"""The CA and serving certificates: chains that OpenSSL and Python's ssl accept, the right names and usages."""
from __future__ import annotations

import datetime as dt
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.authority import (
    CertificateError,
    is_signed_by,
    load_keypair,
    new_ca,
    new_serving_cert,
    service_dns_names,
)
from tests.certs.handshake import LoopbackTLSServer
from tests.conftest import require_tool

NAMES = service_dns_names("localdns-webhook", "localdns-system", "cluster.local")


@pytest.fixture(scope="module")
def ca():
    return new_ca()


@pytest.fixture(scope="module")
def leaf(ca):
    return new_serving_cert(ca, NAMES)


def test_service_names_are_the_four_forms_a_client_may_use():
    assert service_dns_names("svc", "ns", "example.internal") == [
        "svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.example.internal"
    ]


def test_openssl_verifies_the_chain_for_every_service_name(ca, leaf, tmp_path):
    openssl = require_tool("openssl")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem())
    for name in NAMES:
        result = subprocess.run(
            [openssl, "verify", "-CAfile", tmp_path / "ca.crt", "-purpose", "sslserver", "-verify_hostname", name,
             tmp_path / "tls.crt"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith(": OK")


def test_openssl_rejects_a_name_not_in_the_certificate(ca, leaf, tmp_path):
    openssl = require_tool("openssl")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem())
    result = subprocess.run(
        [openssl, "verify", "-CAfile", tmp_path / "ca.crt", "-verify_hostname", "other.localdns-system.svc",
         tmp_path / "tls.crt"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0


def test_python_ssl_completes_a_handshake_by_service_name(ca, leaf):
    with LoopbackTLSServer() as server:
        server.present(leaf.cert_pem(), leaf.key_pem())
        assert server.handshake(ca.cert_pem(), "localdns-webhook.localdns-system.svc") == b"ok"
        with pytest.raises(ssl.SSLCertVerificationError):
            server.handshake(new_ca().cert_pem(), "localdns-webhook.localdns-system.svc")


def test_sans_hold_exactly_the_requested_names_and_ips(ca):
    leaf = new_serving_cert(ca, ["localhost"], ["127.0.0.1", "::1"])
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def test_keys_are_ecdsa_p256(ca, leaf):
    for pair in (ca, leaf):
        assert isinstance(pair.key, ec.EllipticCurvePrivateKey)
        assert isinstance(pair.key.curve, ec.SECP256R1)
        assert isinstance(pair.cert.public_key().curve, ec.SECP256R1)


def test_ca_may_only_sign_leaves(ca):
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign


def test_leaf_serves_tls_and_signs_nothing(leaf):
    assert not leaf.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert list(leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]


def test_serials_are_random_and_long(ca):
    serials = {new_serving_cert(ca, ["a"]).cert.serial_number for _ in range(5)} | {ca.cert.serial_number}
    assert len(serials) == 6
    assert all(s.bit_length() > 64 for s in serials)


def test_lifetimes_ca_years_leaf_months_and_leaf_never_outlives_ca():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ca = new_ca(now=now)
    leaf = new_serving_cert(ca, ["a"], now=now)
    assert ca.cert.not_valid_after_utc - now == dt.timedelta(days=5 * 365)
    assert leaf.cert.not_valid_after_utc - now == dt.timedelta(days=90)
    short_ca = new_ca(lifetime=dt.timedelta(days=10), now=now)
    assert new_serving_cert(short_ca, ["a"], now=now).cert.not_valid_after_utc == short_ca.cert.not_valid_after_utc


def test_pem_round_trip_and_signature_check(ca, leaf):
    loaded = load_keypair(leaf.cert_pem(), leaf.key_pem(), "Secret ns/x")
    assert loaded.cert == leaf.cert
    assert is_signed_by(loaded.cert, ca.cert)
    assert not is_signed_by(loaded.cert, new_ca().cert)


def test_a_key_from_another_certificate_is_refused(ca, leaf):
    other = new_serving_cert(ca, ["a"])
    with pytest.raises(CertificateError, match="Secret ns/x key does not match its certificate"):
        load_keypair(leaf.cert_pem(), other.key_pem(), "Secret ns/x")


@pytest.mark.parametrize("cert_pem,key_pem,message", [
    (b"garbage", b"garbage", "certificate is not a PEM certificate"),
    (b"", b"", "certificate is empty"),
])
def test_garbage_is_refused_with_the_source_named(cert_pem, key_pem, message):
    with pytest.raises(CertificateError, match=message) as err:
        load_keypair(cert_pem, key_pem, "Secret ns/x")
    assert "Secret ns/x" in str(err.value)


def test_garbage_key_is_refused(leaf):
    with pytest.raises(CertificateError, match="Secret ns/x key is not an unencrypted PEM private key"):
        load_keypair(leaf.cert_pem(), b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "Secret ns/x")
