"""Rotation never breaks a handshake: after every step, whichever of the previous or current serving certificate
the webhook presents, a client trusting only the previous or current caBundle (the API server) still connects."""
from __future__ import annotations

import datetime as dt

from cryptography import x509

from certs.authority import is_signed_by, new_ca, new_serving_cert, utcnow
from certs.reconcile import reconcile_once
from certs.rotation import Action, Policy
from tests.certs.cluster import (
    TARGET,
    ca_bundles,
    kube_for,
    replace_webhook_configuration,
    secret_data,
    seed_secret,
    seeded_api,
    webhook_configuration,
)
from tests.certs.handshake import LoopbackTLSServer
from tests.kubeapi import FakeKubeAPI

HOST = "localdns-webhook.localdns-system.svc"
# No propagation wait: here each step is checked against both its predecessor and successor state instead.
POLICY = Policy(TARGET.dns_names(), propagation=dt.timedelta(0))


def seed_aged(api: FakeKubeAPI, ca_age: dt.timedelta, leaf_age: dt.timedelta) -> x509.Certificate:
    """Certificates made in the past, still valid now: the clock is real, the certificates are old."""
    now = utcnow()
    ca = new_ca(now=now - ca_age)
    leaf = new_serving_cert(ca, list(TARGET.dns_names()), now=now - leaf_age)
    seed_secret(api, TARGET.ca_secret_name, {"tls.crt": ca.cert_pem(), "tls.key": ca.key_pem()})
    seed_secret(api, TARGET.secret, {"tls.crt": leaf.cert_pem(), "tls.key": leaf.key_pem(), "ca.crt": ca.cert_pem()})
    mwc = api.get_object("mutatingwebhookconfigurations", "localdns-webhook")
    for webhook in webhook_configuration(ca.cert_pem())["webhooks"]:
        mwc["webhooks"][[w["name"] for w in mwc["webhooks"]].index(webhook["name"])]["clientConfig"] = \
            webhook["clientConfig"]
    replace_webhook_configuration(api, mwc)
    return ca.cert


def served_and_trusted(api: FakeKubeAPI) -> tuple[tuple[bytes, bytes], bytes]:
    data = secret_data(api)
    bundles = ca_bundles(api)
    assert len(set(bundles)) == 1
    return (data["tls.crt"], data["tls.key"]), bundles[0]


def walk_and_check(api: FakeKubeAPI) -> list[Action]:
    kube = kube_for(api)
    actions = []
    previous = served_and_trusted(api)
    with LoopbackTLSServer() as server:
        for _ in range(12):
            step = reconcile_once(kube, TARGET, POLICY, utcnow())
            actions.append(step.action)
            current = served_and_trusted(api)
            for leaf in (previous[0], current[0]):
                server.present(*leaf)
                for bundle in (previous[1], current[1]):
                    assert server.handshake(bundle, HOST) == b"ok", f"after {step.action.value}"
            previous = current
            if step.action is Action.NOTHING:
                return actions
    raise AssertionError(f"did not settle: {actions}")


def test_ca_roll_with_overlap_keeps_every_handshake_working():
    with seeded_api() as api:
        old_ca = seed_aged(api, ca_age=dt.timedelta(days=5 * 365 - 170), leaf_age=dt.timedelta(days=61))
        old_leaf = secret_data(api)["tls.crt"], secret_data(api)["tls.key"]
        actions = walk_and_check(api)
        assert actions == [Action.NEW_CA, Action.TRUST_SIGNER, Action.SYNC_WEBHOOKS, Action.ISSUE_LEAF,
                           Action.DROP_OLD_CAS, Action.SYNC_WEBHOOKS, Action.NOTHING]
        (leaf_pem, _), bundle = served_and_trusted(api)
        new_ca_cert = x509.load_pem_x509_certificates(secret_data(api, TARGET.ca_secret_name)["tls.crt"])[0]
        assert new_ca_cert != old_ca and x509.load_pem_x509_certificates(bundle) == [new_ca_cert]
        assert is_signed_by(x509.load_pem_x509_certificate(leaf_pem), new_ca_cert)
        # The overlap is what made it work: the old leaf against the final bundle is refused.
        with LoopbackTLSServer() as server:
            server.present(*old_leaf)
            try:
                server.handshake(bundle, HOST)
            except OSError as refused:
                assert "certificate verify failed" in str(refused)
            else:
                raise AssertionError("the old leaf must not chain to the new CA")


def test_leaf_renewal_well_before_expiry_keeps_every_handshake_working():
    with seeded_api() as api:
        seed_aged(api, ca_age=dt.timedelta(days=100), leaf_age=dt.timedelta(days=61))
        before = secret_data(api)
        assert walk_and_check(api) == [Action.ISSUE_LEAF, Action.NOTHING]
        after = secret_data(api)
        assert after["tls.crt"] != before["tls.crt"] and after["ca.crt"] == before["ca.crt"]
        leaf = x509.load_pem_x509_certificate(after["tls.crt"])
        assert leaf.not_valid_after_utc - utcnow() > dt.timedelta(days=89)
