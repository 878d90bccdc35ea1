"""Rotation decisions (pure) and their timing: renew early, roll the CA in order, wait for propagation."""
from __future__ import annotations

import datetime as dt

from certs.authority import new_ca, new_serving_cert
from certs.reconcile import reconcile_once
from certs.rotation import Action, Observed, Policy, bundle_after_trusting_signer, next_step
from tests.certs.cluster import TARGET, kube_for, seeded_api

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
POLICY = Policy(TARGET.dns_names())  # 90-day leaf renewed 30 days early, CA rolled 180 days early, 5 min waits


def settled(ca, leaf, bundle=None) -> Observed:
    bundle = tuple(bundle or [ca.cert])
    return Observed(ca, leaf, bundle, (bundle, bundle))


def test_a_valid_state_needs_nothing_until_the_leaf_is_due():
    ca = new_ca(now=T0)
    leaf = new_serving_cert(ca, list(TARGET.dns_names()), now=T0)
    step = next_step(settled(ca, leaf), POLICY, T0 + DAY)
    assert step.action is Action.NOTHING and step.look_again_at == T0 + 60 * DAY
    assert next_step(settled(ca, leaf), POLICY, T0 + 60 * DAY).action is Action.ISSUE_LEAF


def test_leaf_without_a_service_name_or_expired_is_replaced_at_once():
    ca = new_ca(now=T0)
    partial = new_serving_cert(ca, list(TARGET.dns_names())[:3], now=T0)
    step = next_step(settled(ca, partial), POLICY, T0 + DAY)
    assert step.action is Action.ISSUE_LEAF and "localdns-webhook.localdns-system.svc.cluster.local" in step.reason
    short = new_serving_cert(ca, list(TARGET.dns_names()), lifetime=DAY, now=T0)
    step = next_step(settled(ca, short), POLICY, T0 + 2 * DAY)
    assert step.action is Action.ISSUE_LEAF and "expired" in step.reason


def test_ca_is_rolled_well_before_expiry():
    ca = new_ca(now=T0)
    leaf = new_serving_cert(ca, list(TARGET.dns_names()), now=T0)
    assert next_step(settled(ca, leaf), POLICY, ca.cert.not_valid_after_utc - 181 * DAY).action is not Action.NEW_CA
    assert next_step(settled(ca, leaf), POLICY, ca.cert.not_valid_after_utc - 179 * DAY).action is Action.NEW_CA


def test_webhooks_out_of_sync_are_synced_before_anything_else():
    ca = new_ca(now=T0)
    leaf = new_serving_cert(ca, list(TARGET.dns_names()), now=T0)
    observed = Observed(ca, leaf, (ca.cert,), ((ca.cert,), ()))
    assert next_step(observed, POLICY, T0 + DAY).action is Action.SYNC_WEBHOOKS


def test_new_bundle_keeps_only_cas_still_in_use_and_unexpired():
    old, unused, expired = new_ca(now=T0), new_ca(now=T0), new_ca(lifetime=DAY, now=T0)
    signer = new_ca(now=T0 + 10 * DAY)
    leaf = new_serving_cert(old, list(TARGET.dns_names()), now=T0)
    observed = Observed(signer, leaf, (old.cert, unused.cert, expired.cert), ())
    assert bundle_after_trusting_signer(observed, T0 + 10 * DAY) == [old.cert, signer.cert]


def test_full_roll_waits_for_propagation_between_steps():
    """Walk the steps with a clock that only moves when told to wait: no step happens before its time."""
    clock = [T0]
    with seeded_api() as api:
        kube = kube_for(api)
        first = [reconcile_once(kube, TARGET, POLICY, clock[0]).action for _ in range(4)]
        assert first == [Action.NEW_CA, Action.ISSUE_LEAF, Action.SYNC_WEBHOOKS, Action.NOTHING]
        ca_expiry = T0 + 5 * 365 * DAY
        # Years later (a watch that had stopped), the expired leaf is replaced at once, no wait: nothing served.
        clock[0] = ca_expiry - 200 * DAY
        assert [reconcile_once(kube, TARGET, POLICY, clock[0]).action for _ in range(2)] == [
            Action.ISSUE_LEAF, Action.NOTHING]
        # Then the CA falls due while the leaf is good: record each step and each wait until settled.
        clock[0] = ca_expiry - 179 * DAY
        trail = []
        for _ in range(15):
            step = reconcile_once(kube, TARGET, POLICY, clock[0])
            trail.append(step.action)
            if step.action is Action.WAIT:
                assert step.look_again_at == clock[0] + POLICY.propagation
                # one second early is still too early
                early = reconcile_once(kube, TARGET, POLICY, step.look_again_at - dt.timedelta(seconds=1))
                assert early.action is Action.WAIT
                clock[0] = step.look_again_at
            if step.action is Action.NOTHING:
                break
        assert trail == [Action.NEW_CA, Action.TRUST_SIGNER, Action.SYNC_WEBHOOKS, Action.WAIT, Action.ISSUE_LEAF,
                         Action.WAIT, Action.DROP_OLD_CAS, Action.SYNC_WEBHOOKS, Action.NOTHING]


def test_a_late_ca_bundle_write_restarts_the_wait():
    """If caBundle could only be written long after the new CA was made, the wait counts from that write."""
    old = new_ca(now=T0)
    leaf = new_serving_cert(old, list(TARGET.dns_names()), now=T0)
    signer = new_ca(now=T0 + DAY)
    bundle = (old.cert, signer.cert)
    written = T0 + 3 * DAY
    observed = Observed(signer, leaf, bundle, (bundle, bundle), webhooks_synced_at=written)
    step = next_step(observed, POLICY, written + dt.timedelta(minutes=1))
    assert step.action is Action.WAIT and step.look_again_at == written + POLICY.propagation
    assert next_step(observed, POLICY, written + POLICY.propagation).action is Action.ISSUE_LEAF
