"""`python -m clustertools mirror-kube-dns`: keeps kube-system/kube-dns's `stubDomains` and `upstreamNameservers` copied
into localdns-system/localdns-kube-dns, the ConfigMap the cache DaemonSet mounts for `--kube-dns-config`.

A pod can mount ConfigMaps of its own namespace only. node-local-dns runs in kube-system and mounts kube-dns's
ConfigMap directly; our caches run in localdns-system. Rather than a token and an API client on every node, this
sidecar of the webhook Deployment reads the one object and patches the one copy (component `kube-dns-mirror`:
RBAC `get` on kube-system/kube-dns, `get` and `patch` on the copy, nothing else). The values are copied verbatim:
the cache judges each key itself, and keeps a key's last good value when a new one is bad. A deleted kube-dns
ConfigMap empties the copy, as kube-dns itself then returns to its defaults.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from clustertools import cli
from localdns import names
from localdns.kube import DEFAULT_TIMEOUT, JSON, Client, KubeError, NotFound
from localdns.logformat import FORMATS, configure

KEYS = ("stubDomains", "upstreamNameservers")
SOURCE = "kube-system/kube-dns"
TARGET = f"{names.NAMESPACE}/{names.KUBE_DNS_COPY}"
INTERVAL = 30.0  # seconds between reads: two GETs per replica, nothing next to the kubelet's own ConfigMap sync

log = logging.getLogger("localdns.kube-dns-mirror")


def wanted(source: JSON | None) -> dict[str, str]:
    """The keys the cache reads, from kube-dns's ConfigMap (None: it does not exist)."""
    data = (source or {}).get("data") or {}
    return {key: data[key] for key in KEYS if isinstance(data.get(key), str)}


def patch_for(target: JSON, values: dict[str, str]) -> JSON | None:
    """A JSON merge patch that makes the copy hold exactly `values` in KEYS (None: it already does). Other keys
    of the copy are left alone; a key no longer wanted is removed (null)."""
    data = target.get("data") or {}
    changes = {key: values.get(key) for key in KEYS if data.get(key) != values.get(key)}
    return {"data": changes} if changes else None


def _split(reference: str) -> tuple[str, str]:
    namespace, _, name = reference.partition("/")
    if not namespace or not name:
        raise KubeError(f"{reference!r}: expected NAMESPACE/NAME")
    return namespace, name


def sync_once(cluster: Client, source: str = SOURCE, target: str = TARGET) -> bool:
    """Make the copy match the source once; returns whether it was changed. KubeError when either cannot be
    read or the copy cannot be written (the copy then keeps what it had)."""
    source_ns, source_name = _split(source)
    target_ns, target_name = _split(target)
    try:
        values = wanted(cluster.get("ConfigMap", source_name, source_ns))
    except NotFound:
        values = {}
    try:
        copy = cluster.get("ConfigMap", target_name, target_ns)
    except NotFound:
        raise KubeError(f"ConfigMap {target} does not exist; it is part of the kube-dns-mirror component: "
                           "kubectl apply -k deploy/ again") from None
    patch = patch_for(copy, values)
    if patch is None:
        return False
    cluster.patch("ConfigMap", target_name, target_ns, patch, patch_type="merge")
    log.info("copied %s to %s: %s", source, target, ", ".join(sorted(values)) or "no keys (none set)")
    return True


HELP = "keep kube-dns's stubDomains/upstreamNameservers copied for the caches (a sidecar)"
DESCRIPTION = (__doc__ or "").split("\n\n")[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG; in a pod, its ServiceAccount; "
                                             "else ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context to use (default: the current context)")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up on one API call after this long (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--source", default=SOURCE, help=f"NAMESPACE/NAME of kube-dns's ConfigMap (default {SOURCE})")
    parser.add_argument("--target", default=TARGET, help=f"NAMESPACE/NAME of the copy (default {TARGET})")
    parser.add_argument("--interval", type=float, default=INTERVAL,
                        help=f"seconds between reads (default {INTERVAL:g})")
    parser.add_argument("--once", action="store_true", help="copy once and exit (status 2 when it cannot)")
    parser.add_argument("--log-format", choices=FORMATS, default="text",
                        help="text (one line per record) or json (one JSON object per line; default text)")


def run(args: argparse.Namespace) -> int:
    if not args.once:  # the sidecar: its lines (a failure, the recovery) reach the container log with time and level
        configure(logging.INFO, args.log_format, sys.stderr, force=True)
    cluster = cli.connect_from(args)
    failing = ""
    while True:
        try:
            sync_once(cluster, args.source, args.target)
            if failing:
                log.info("mirroring %s works again", args.source)
            failing = ""
        except KubeError as error:
            if args.once:
                raise
            if str(error) != failing:  # once per distinct failure, not every interval
                log.error("cannot mirror %s to %s (the caches keep the copy they have): %s", args.source,
                          args.target, error)
            failing = str(error)
        if args.once:
            return 0
        time.sleep(args.interval)
