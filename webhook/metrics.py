"""Every Prometheus metric the webhook exports, in one place, on a registry per app (tests run several apps)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

# Outcomes beyond the policy's three: every Pod CREATE reviewed for a dry-run namespace (the pod is not changed), a
# review for something that is not a Pod CREATE, a rejected body, and an internal error (answered with allowed and
# no patch, so the pod is still created).
OUTCOMES = ("inject", "already-injected", "skip", "dry-run", "ignored", "bad-request", "error")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.admissions = Counter(
            "localdns_webhook_admissions", "Admission reviews answered, by outcome.", ["outcome"],
            registry=self.registry)
        self.duration = Histogram(
            "localdns_webhook_admission_duration_seconds", "Time to answer one admission review.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry)
        self.in_flight = Gauge(
            "localdns_webhook_admissions_in_flight", "Admission requests being received or answered now.",
            registry=self.registry)
        self.warnings = Counter(
            "localdns_webhook_warnings", "Admission responses that carried a warning to the user.",
            registry=self.registry)
        self.certificate_reloads = Counter(
            "localdns_webhook_certificate_reloads", "Serving certificate reloads from disk, by result.", ["result"],
            registry=self.registry)
        self.certificate_expiry = Gauge(
            "localdns_webhook_certificate_expiry_timestamp_seconds",
            "Unix time when the serving certificate in use expires.", registry=self.registry)
        # Registered by the NetworkPolicy view when it starts: absent with `--networkpolicies off`, so that an alert
        # on a view that cannot sync never fires where there is none.
        self.networkpolicies_synced: Gauge | None = None
        self.networkpolicies: Gauge | None = None
        for outcome in OUTCOMES:  # export zeros so dashboards and alerts see every series from the start
            self.admissions.labels(outcome)
        for result in ("success", "failure"):
            self.certificate_reloads.labels(result)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=self.registry)

    def watch_networkpolicies(self) -> None:
        """Export the NetworkPolicy view's gauges (from 0: not synced yet)."""
        if self.networkpolicies_synced is None:
            self.networkpolicies_synced = Gauge(
                "localdns_webhook_networkpolicies_synced",
                "1 when the webhook holds every NetworkPolicy of the cluster and checks pods against them; 0 before "
                "the first list and while listing fails (pods are then injected without the check).",
                registry=self.registry)
            self.networkpolicies = Gauge(
                "localdns_webhook_networkpolicies", "NetworkPolicies the webhook holds.", registry=self.registry)
