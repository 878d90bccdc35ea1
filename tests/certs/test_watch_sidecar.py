"""`python -m certs watch` as the sidecar runs it: sets things up, repairs drift, stops cleanly on SIGTERM."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.certs.cluster import TARGET, ca_bundles, replace_webhook_configuration, secret_data, seeded_api


def wait_until(condition, what: str, limit: float = 30.0) -> None:
    """Poll a condition for a bounded time (a bound, not a speed requirement)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_watch_bootstraps_repairs_a_cleared_ca_bundle_and_exits_on_sigterm():
    with seeded_api() as api:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "certs", "watch", "--interval", "0.3", "--kubeconfig", str(api.kubeconfig_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            wait_until(lambda: api.get_object("secrets", TARGET.secret, TARGET.namespace) is not None
                       and ca_bundles(api)[0] != b"", "the first reconcile")
            wait_until(lambda: all(ca_bundles(api)), "every webhook's caBundle")
            mwc = api.get_object("mutatingwebhookconfigurations", "localdns-webhook")
            for webhook in mwc["webhooks"]:
                webhook["clientConfig"].pop("caBundle")
            replace_webhook_configuration(api, mwc)
            wait_until(lambda: ca_bundles(api) == [secret_data(api)["ca.crt"]] * 2, "the caBundle repair")
            api.forbid("get", "mutatingwebhookconfigurations")  # a failure is logged, the watch keeps going
            wait_until(lambda: api.requests[-1].status == 403, "a forbidden read")
            api.allow_all()
            watcher.send_signal(signal.SIGTERM)
            _, stderr = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()
        assert watcher.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert "sync-webhooks: a webhook's caBundle differs from ca.crt" in stderr
        assert "error: MutatingWebhookConfiguration localdns-webhook: not allowed to get it" in stderr
