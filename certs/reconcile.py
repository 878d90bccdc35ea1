"""Bootstrap and watch: read the cluster, ask `rotation.next_step`, apply that one step, repeat.

Reading comes first and fails before anything is written (a missing MutatingWebhookConfiguration, garbage in a
Secret). Each step writes one object; a conflict with another writer means reading again, never overwriting.
"""
from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from certs.authority import (
    CertificateError,
    KeyPair,
    bundle_pem,
    load_certificates,
    load_keypair,
    new_ca,
    new_serving_cert,
    service_dns_names,
    utcnow,
)
from certs.kube import CertsError, Kube, SecretState, WebhooksState
from certs.rotation import (
    Action,
    Observed,
    Policy,
    Step,
    bundle_after_trusting_signer,
    leaf_problem,
    next_step,
    signer_problem,
)
from localdns import names
from localdns.kube import Conflict, KubeError

Log = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    namespace: str = names.NAMESPACE
    service: str = names.WEBHOOK
    secret: str = names.TLS_SECRET
    webhook_configuration: str = names.WEBHOOK
    cluster_domain: str = names.CLUSTER_DOMAIN
    ca_secret: str = ""  # default: "<secret>-ca"

    @property
    def ca_secret_name(self) -> str:
        return self.ca_secret or f"{self.secret}{names.CA_SECRET_SUFFIX}"

    def dns_names(self) -> tuple[str, ...]:
        return tuple(service_dns_names(self.service, self.namespace, self.cluster_domain))


@dataclass(frozen=True)
class Snapshot:
    ca_secret: SecretState | None
    secret: SecretState | None
    webhooks: WebhooksState
    observed: Observed
    external: bool  # the serving Secret is someone else's (e.g. cert-manager's): only caBundle is ours


def _replace_hint(what: str, problem: str, namespace: str, name: str) -> CertsError:
    return CertsError(f"{what}: {problem}. Nothing was changed. Fix it, or let bootstrap replace it: rerun with "
                      f"--replace-invalid, or `kubectl -n {namespace} delete secret {name}`")


def _load_signer(state: SecretState | None, target: Target, replace_invalid: bool) -> KeyPair | None:
    if state is None or not state.data:
        return None
    what = f"CA Secret {target.namespace}/{state.name}"
    try:
        return load_keypair(state.data.get("tls.crt", b""), state.data.get("tls.key", b""), what)
    except CertificateError as exc:
        if replace_invalid:
            return None
        raise _replace_hint(what, str(exc).removeprefix(what + " "), target.namespace, state.name) from None


def _load_serving(state: SecretState | None, target: Target, replace_invalid: bool
                  ) -> tuple[KeyPair | None, tuple[x509.Certificate, ...]]:
    if state is None or not state.data:
        return None, ()
    what = f"Secret {target.namespace}/{state.name}"
    try:
        leaf = load_keypair(state.data.get("tls.crt", b""), state.data.get("tls.key", b""), what)
        bundle = load_certificates(state.data["ca.crt"], f"{what} ca.crt") if "ca.crt" in state.data else []
        return leaf, tuple(bundle)
    except CertificateError as exc:
        if replace_invalid:
            return None, ()
        raise _replace_hint(what, str(exc).removeprefix(what + " "), target.namespace, state.name) from None


def _webhook_bundle(raw: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(load_certificates(raw, "caBundle"))
    except CertificateError:
        return ()  # empty or garbage: the caBundle is ours to write, the next sync replaces it


def observe(kube: Kube, target: Target, replace_invalid: bool = False) -> Snapshot:
    webhooks = kube.read_webhooks(target.webhook_configuration)
    ca_secret = kube.read_secret(target.ca_secret_name)
    secret = kube.read_secret(target.secret)
    leaf, bundle = _load_serving(secret, target, replace_invalid)
    # Someone else's certificate (no managed-by label) is never taken over, unless it is garbage and replacing
    # garbage was asked for (then _load_serving gave None).
    external = secret is not None and not secret.managed and leaf is not None
    signer = None if external else _load_signer(ca_secret, target, replace_invalid)
    observed = Observed(signer, leaf, bundle, tuple(_webhook_bundle(b) for b in webhooks.bundles),
                        webhooks.synced_at)
    return Snapshot(ca_secret, secret, webhooks, observed, external)


def _external_step(snap: Snapshot, target: Target, policy: Policy, now: dt.datetime) -> Step:
    """A Secret we did not write: check it can serve, copy its ca.crt into caBundle, never touch the Secret."""
    what = f"Secret {target.namespace}/{target.secret}"
    leaf, bundle = snap.observed.leaf, list(snap.observed.bundle)
    if not bundle:
        raise CertsError(f"{what} is not managed by localdns-certs and has no ca.crt, so caBundle cannot be set. "
                         "Nothing was changed. Add ca.crt to it (cert-manager does for CA issuers), or delete it and "
                         "let bootstrap create one")
    assert leaf is not None
    if problem := leaf_problem(leaf, bundle, policy, now):
        raise CertsError(f"{what} is not managed by localdns-certs and cannot serve: {problem}. Nothing was "
                         "changed. Renew it with whatever issued it, or delete it and let bootstrap create one")
    if any(list(b) != bundle for b in snap.observed.webhook_bundles):
        return Step(Action.SYNC_WEBHOOKS, f"caBundle differs from ca.crt of {what} (managed elsewhere)")
    return Step(Action.NOTHING, f"{what} is managed elsewhere; caBundle matches its ca.crt")


def plan(snap: Snapshot, target: Target, policy: Policy, now: dt.datetime, replace_invalid: bool) -> Step:
    if snap.external:
        return _external_step(snap, target, policy, now)
    step = next_step(snap.observed, policy, now)
    signer = snap.observed.signer
    if step.action is Action.NEW_CA and signer is not None and not replace_invalid:
        if problem := signer_problem(signer, now):
            raise _replace_hint(f"CA Secret {target.namespace}/{target.ca_secret_name}", problem, target.namespace,
                                target.ca_secret_name)
    return step


def apply(step: Step, snap: Snapshot, kube: Kube, target: Target, policy: Policy, now: dt.datetime) -> None:
    observed = snap.observed
    if step.action is Action.NEW_CA:
        ca = new_ca(lifetime=policy.ca_lifetime, now=now)
        kube.save_secret(target.ca_secret_name, {"tls.crt": ca.cert_pem(), "tls.key": ca.key_pem()}, snap.ca_secret)
    elif step.action is Action.SYNC_WEBHOOKS:
        kube.set_ca_bundle(snap.webhooks, bundle_pem(observed.bundle), now)
    elif step.action is Action.ISSUE_LEAF:
        assert observed.signer is not None
        leaf = new_serving_cert(observed.signer, list(policy.dns_names), lifetime=policy.leaf_lifetime, now=now)
        _save_serving(kube, snap, target.secret, leaf, bundle_after_trusting_signer(observed, now))
    elif step.action is Action.TRUST_SIGNER:
        assert observed.leaf is not None
        _save_serving(kube, snap, target.secret, observed.leaf, bundle_after_trusting_signer(observed, now))
    elif step.action is Action.DROP_OLD_CAS:
        assert observed.leaf is not None and observed.signer is not None
        _save_serving(kube, snap, target.secret, observed.leaf, [observed.signer.cert])


def _save_serving(kube: Kube, snap: Snapshot, name: str, leaf: KeyPair, bundle: list[x509.Certificate]) -> None:
    data = {"tls.crt": leaf.cert_pem(), "tls.key": leaf.key_pem(), "ca.crt": bundle_pem(bundle)}
    kube.save_secret(name, data, snap.secret)


def reconcile_once(kube: Kube, target: Target, policy: Policy, now: dt.datetime, replace_invalid: bool = False
                   ) -> Step:
    """Read, decide and apply one step; returns it (WAIT and NOTHING change nothing)."""
    snap = observe(kube, target, replace_invalid)
    step = plan(snap, target, policy, now, replace_invalid)
    if step.action not in (Action.WAIT, Action.NOTHING):
        apply(step, snap, kube, target, policy, now)
    return step


def reconcile(kube: Kube, target: Target, policy: Policy, log: Log, replace_invalid: bool = False,
              clock: Callable[[], dt.datetime] = utcnow, max_steps: int = 20) -> Step:
    """Apply steps until only waiting (or nothing) is left; returns that last step."""
    for _ in range(max_steps):
        try:
            step = reconcile_once(kube, target, policy, clock(), replace_invalid)
        except Conflict as changed:
            log(f"{changed.what} changed while we worked on it; reading it again")
            continue
        if step.action in (Action.WAIT, Action.NOTHING):
            return step
        log(f"{step.action.value}: {step.reason}")
    raise CertsError(f"gave up after {max_steps} steps: Secrets {target.namespace}/{target.secret}, "
                     f"{target.ca_secret_name} or MutatingWebhookConfiguration {target.webhook_configuration} keep "
                     "changing under us; is another tool managing them?")


def watch(kube: Kube, target: Target, policy: Policy, log: Log, interval: float, stop: threading.Event,
          replace_invalid: bool = False, clock: Callable[[], dt.datetime] = utcnow) -> None:
    """Reconcile now, then whenever something falls due, and at least every `interval` s to repair drift."""
    while not stop.is_set():
        wait = interval
        try:
            step = reconcile(kube, target, policy, log, replace_invalid, clock)
            if step.look_again_at is not None:
                wait = min(interval, max(1.0, (step.look_again_at - clock()).total_seconds()))
        except (CertsError, KubeError) as err:
            log(f"error: {err}")
        stop.wait(wait)
