"""What to do next with the webhook's certificates. Pure: an observed state and a time in, one step out.

The state lives in three places: the CA Secret (the signer: the newest CA and its key), the serving Secret
(`tls.crt`, `tls.key` and `ca.crt`, the bundle of CAs clients must trust) and the `caBundle` of every webhook in the
MutatingWebhookConfiguration (what the API servers trust). One step changes one of them; the caller re-reads and
asks again until nothing is left to do. Any prefix of the steps is a state in which every handshake still works,
so a run that stops half way is finished by the next one.

A CA roll, with overlap: NEW_CA (signer = CA2, bundle still CA1) -> TRUST_SIGNER (bundle CA1+CA2) -> SYNC_WEBHOOKS
-> wait until API servers trust CA2 -> ISSUE_LEAF (signed by CA2) -> wait until the webhook serves it ->
DROP_OLD_CAS (bundle CA2) -> SYNC_WEBHOOKS. Waits are derived from certificates' issue times (and from when
caBundle was last written, if that was later), so a restarted watcher waits exactly what is left.
"""
from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from certs.authority import CA_LIFETIME, CLOCK_SKEW, LEAF_LIFETIME, KeyPair, dns_names_of, is_ca, is_signed_by


@dataclass(frozen=True)
class Policy:
    dns_names: tuple[str, ...]
    leaf_lifetime: dt.timedelta = LEAF_LIFETIME
    leaf_renew_before: dt.timedelta = dt.timedelta(days=30)
    ca_lifetime: dt.timedelta = CA_LIFETIME
    # Longer than a leaf's lifetime, so a leaf never has to be cut short by its CA's expiry.
    ca_renew_before: dt.timedelta = dt.timedelta(days=180)
    # How long a change takes to reach every reader: kubelet refreshes mounted Secrets within about a minute or
    # two (sync period plus cache TTL), API servers see a new caBundle within seconds.
    propagation: dt.timedelta = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Observed:
    signer: KeyPair | None  # from the CA Secret; None when missing
    leaf: KeyPair | None  # from the serving Secret; None when missing
    bundle: tuple[x509.Certificate, ...]  # the serving Secret's ca.crt
    webhook_bundles: tuple[tuple[x509.Certificate, ...], ...]  # each webhook's caBundle, in order
    webhooks_synced_at: dt.datetime | None = None  # when caBundle was last written, if known


class Action(enum.StrEnum):
    NEW_CA = "new-ca"
    TRUST_SIGNER = "trust-signer"
    SYNC_WEBHOOKS = "sync-webhooks"
    ISSUE_LEAF = "issue-leaf"
    DROP_OLD_CAS = "drop-old-cas"
    WAIT = "wait"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Step:
    action: Action
    reason: str
    look_again_at: dt.datetime | None = None  # for WAIT and NOTHING: when something may become due


def issued_at(cert: x509.Certificate) -> dt.datetime:
    """When a certificate was made: its notBefore was backdated by the clock skew allowance."""
    return cert.not_valid_before_utc + CLOCK_SKEW


def leaf_problem(leaf: KeyPair, bundle: Sequence[x509.Certificate], policy: Policy, now: dt.datetime) -> str | None:
    """Why this serving certificate cannot serve now, or None when it can."""
    if now >= leaf.cert.not_valid_after_utc:
        return f"it expired at {leaf.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if now < leaf.cert.not_valid_before_utc:
        return f"it is not valid before {leaf.cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    missing = [n for n in policy.dns_names if n not in dns_names_of(leaf.cert)]
    if missing:
        return f"it does not cover {', '.join(missing)}"
    if not any(is_signed_by(leaf.cert, ca) for ca in bundle):
        return "no CA in ca.crt signed it"
    return None


def signer_problem(signer: KeyPair, now: dt.datetime) -> str | None:
    """Why this CA cannot sign, or None when it can (its key was matched when it was loaded)."""
    if not is_ca(signer.cert) or not is_signed_by(signer.cert, signer.cert):
        return "it is not a self-signed CA certificate"
    if now >= signer.cert.not_valid_after_utc:
        return f"it expired at {signer.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    return None


def bundle_after_trusting_signer(observed: Observed, now: dt.datetime) -> list[x509.Certificate]:
    """The bundle to publish: the CAs the current leaf still needs, plus the signer; expired CAs dropped."""
    assert observed.signer is not None
    keep = [ca for ca in observed.bundle if now < ca.not_valid_after_utc
            and (observed.leaf is not None and is_signed_by(observed.leaf.cert, ca))]
    return _unique([*keep, observed.signer.cert])


def _unique(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    seen: list[x509.Certificate] = []
    for cert in certs:
        if cert not in seen:
            seen.append(cert)
    return seen


def next_step(observed: Observed, policy: Policy, now: dt.datetime) -> Step:
    signer, leaf, bundle = observed.signer, observed.leaf, list(observed.bundle)
    if signer is None:
        return Step(Action.NEW_CA, "there is no CA yet")
    if problem := signer_problem(signer, now):
        return Step(Action.NEW_CA, f"the CA cannot sign: {problem}")
    ca_due = signer.cert.not_valid_after_utc - policy.ca_renew_before
    if now >= ca_due:
        return Step(Action.NEW_CA, f"the CA expires at {signer.cert.not_valid_after_utc:%Y-%m-%d} UTC: rolling it")
    if leaf is None:
        return Step(Action.ISSUE_LEAF, "there is no serving certificate yet")
    if signer.cert not in bundle:
        return Step(Action.TRUST_SIGNER, "ca.crt does not hold the CA yet")
    if any(list(b) != bundle for b in observed.webhook_bundles):
        return Step(Action.SYNC_WEBHOOKS, "a webhook's caBundle differs from ca.crt")
    if problem := leaf_problem(leaf, bundle, policy, now):
        return Step(Action.ISSUE_LEAF, f"the serving certificate cannot serve: {problem}")

    # API servers trust the signer once it has been in caBundle for the propagation time. caBundle gets it right
    # after it is made, unless that write failed for a while: then the time of the last write counts.
    in_bundle_since = max(issued_at(signer.cert), observed.webhooks_synced_at or issued_at(signer.cert))
    trusted_since = in_bundle_since + policy.propagation
    if not is_signed_by(leaf.cert, signer.cert):
        if now < trusted_since:
            return Step(Action.WAIT, "waiting for API servers to trust the new CA", trusted_since)
        return Step(Action.ISSUE_LEAF, "the serving certificate is signed by the previous CA")
    leaf_due = leaf.cert.not_valid_after_utc - policy.leaf_renew_before
    if now >= leaf_due:
        if now < trusted_since:
            return Step(Action.WAIT, "waiting for API servers to trust the new CA", trusted_since)
        return Step(Action.ISSUE_LEAF, f"the serving certificate expires at "
                                       f"{leaf.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: renewing it")
    if bundle != [signer.cert]:
        served_since = issued_at(leaf.cert) + policy.propagation
        if now < served_since:
            return Step(Action.WAIT, "waiting for the webhook to serve the new certificate", served_since)
        return Step(Action.DROP_OLD_CAS, "the previous CA signs nothing in use any more")
    return Step(Action.NOTHING, "certificates are valid and trusted", min(leaf_due, ca_due))
