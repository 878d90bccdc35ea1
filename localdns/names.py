"""The names an installation of localdns gives its objects, defined once: deploy/ creates exactly these, and the
cluster tools and certs look for them (tests/deploy checks the manifests against this module)."""
from __future__ import annotations

NAMESPACE = "localdns-system"
WEBHOOK = "localdns-webhook"  # the webhook's Deployment, Service, ServiceAccount and MutatingWebhookConfiguration
TLS_SECRET = "localdns-webhook-tls"  # the serving certificate the webhook mounts (kubernetes.io/tls with ca.crt)
CA_SECRET_SUFFIX = "-ca"  # the CA Secret of certs is named after the serving Secret: localdns-webhook-tls-ca
# The name the API server dials for the webhook's Service, and verifies its certificate against.
WEBHOOK_SERVICE_HOST = f"{WEBHOOK}.{NAMESPACE}.svc"
CACHE_DAEMONSET = "localdns-cache"
# The copy of kube-system/kube-dns's stubDomains and upstreamNameservers that every cache mounts (--kube-dns-config);
# kept by `python -m clustertools mirror-kube-dns` (component kube-dns-mirror).
KUBE_DNS_COPY = "localdns-kube-dns"
CLUSTER_DOMAIN = "cluster.local"  # kubelet's default --cluster-domain

# A namespace opts in with this label; the MutatingWebhookConfiguration selects namespaces by it. With the value
# dry-run its pods keep their DNS and are only annotated with what would have been injected.
INJECT_LABEL = "localdns.io/inject"
INJECT_ENABLED = "enabled"
INJECT_DRY_RUN = "dry-run"
OPT_IN_SELECTOR = f"{INJECT_LABEL}={INJECT_ENABLED}"
DRY_RUN_SELECTOR = f"{INJECT_LABEL}={INJECT_DRY_RUN}"
# The webhook's path for each label value: one entry of the MutatingWebhookConfiguration each, the same Service.
WEBHOOK_PATHS = {INJECT_ENABLED: "/mutate", INJECT_DRY_RUN: "/dry-run"}

# What certs writes: the label that marks a Secret as its own (others are only read), and when it last wrote the
# caBundle (an annotation on the MutatingWebhookConfiguration; rotation waits count from it).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_CERTS = "localdns-certs"
CA_BUNDLE_SYNCED_AT = "localdns.io/ca-bundle-synced-at"
