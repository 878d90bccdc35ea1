"""`python -m certs show`: what is deployed, in words a person can check against the cluster."""
from __future__ import annotations

import datetime as dt

from cryptography import x509

from certs.authority import common_name_of, dns_names_of, fingerprint, ip_addresses_of
from certs.reconcile import Snapshot, Target
from certs.rotation import Step


def _cert_line(cert: x509.Certificate, now: dt.datetime) -> str:
    left = cert.not_valid_after_utc - now
    until = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    state = f"expires {until} ({left.days} days left)" if left.total_seconds() > 0 else f"EXPIRED {until}"
    return f"CN={common_name_of(cert)} [{fingerprint(cert)}] issued by CN={_issuer_cn(cert)}, {state}"


def _issuer_cn(cert: x509.Certificate) -> str:
    names = cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.issuer.rfc4514_string()


def describe(snap: Snapshot, target: Target, step: Step, now: dt.datetime) -> str:
    observed = snap.observed
    lines = []
    owner = "managed elsewhere (only caBundle is ours)" if snap.external else "managed by localdns-certs"
    if not snap.external:
        ca_where = f"CA Secret {target.namespace}/{target.ca_secret_name}"
        lines.append(f"{ca_where}: " + (_cert_line(observed.signer.cert, now) if observed.signer else "missing"))
    where = f"Secret {target.namespace}/{target.secret}"
    if observed.leaf is None:
        lines.append(f"{where}: missing")
    else:
        lines.append(f"{where} ({owner}):")
        lines.append(f"  tls.crt: {_cert_line(observed.leaf.cert, now)}")
        names = [*dns_names_of(observed.leaf.cert), *ip_addresses_of(observed.leaf.cert)]
        lines.append(f"  names: {', '.join(names) or '(none)'}")
        for ca in observed.bundle:
            lines.append(f"  ca.crt: {_cert_line(ca, now)}")
    lines.append(f"MutatingWebhookConfiguration {snap.webhooks.name}:")
    for name, bundle in zip(snap.webhooks.webhook_names, observed.webhook_bundles):
        if not bundle:
            verdict = "caBundle empty or unreadable"
        elif list(bundle) == list(observed.bundle):
            verdict = "caBundle matches ca.crt"
        else:
            verdict = "caBundle DIFFERS from ca.crt"
        lines.append(f"  webhook {name}: {verdict}")
    when = f" (at {step.look_again_at:%Y-%m-%d %H:%M} UTC)" if step.look_again_at else ""
    lines.append(f"next: {step.action.value}: {step.reason}{when}")
    return "\n".join(lines)
