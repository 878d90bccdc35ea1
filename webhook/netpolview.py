"""The webhook's read-only view of every NetworkPolicy in the cluster, kept current so that admission reads policies
from memory and never calls the API server.

How it stays current, as kube-apiserver's watch contract asks (api-concepts, "Efficient detection of changes"):
list every NetworkPolicy, then watch from the list's resourceVersion and apply each event; when the server ends
the stream (its timeoutSeconds), watch again from the last version seen. List again when the version is gone
(410 Expired: compacted away) and when the stream is cut or refused. Failures back off exponentially, from nothing
(the first) to BACKOFF_CAP seconds, with jitter; any event resets it.

`synced` is true while the last list succeeded: pods are checked against the view from the first list on, and
injected as without NetworkPolicies before it and while listing fails (localdns_webhook_networkpolicies_synced).

Why a thread, not an asyncio task: the Kubernetes client (localdns/kube.py, urllib3) blocks, and the event loop
that answers admissions must never wait on the API server. The thread is the only writer. It replaces one
namespace's entry at a time (a new sorted tuple of immutable Policy objects), or the whole dict after a list; the
event loop reads an entry without a lock, which is safe because reading or replacing one dict entry, or one
attribute, is atomic in CPython and nothing published is ever changed in place.

The `kubernetes` package is imported when the view connects (in `serve`), never for `preview` or by admission.
"""
from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from localdns.kube import Client, Expired, KubeError, Watch, connect
from webhook import netpol
from webhook.metrics import Metrics

log = logging.getLogger("localdns.webhook")

KIND = "NetworkPolicy"
WATCH_SECONDS = 300  # the server ends each watch after this long; the view watches again from where it was
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0


class PolicyView:
    """Every NetworkPolicy, compiled for the local IP, by namespace. Start it once; `stop` ends it."""

    def __init__(self, connect_client: Callable[[], Client], local_ip: str, metrics: Metrics | None = None,
                 backoff_first: float = BACKOFF_FIRST, backoff_cap: float = BACKOFF_CAP,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        self._connect, self._local_ip, self._metrics = connect_client, local_ip, metrics
        if metrics is not None:
            metrics.watch_networkpolicies()
        self._backoff_first, self._backoff_cap, self._watch_seconds = backoff_first, backoff_cap, watch_seconds
        self._by_namespace: dict[str, tuple[netpol.Policy, ...]] = {}
        self._objects: dict[str, dict[str, netpol.Policy]] = {}  # the thread's own working copy
        self._synced = False
        self._version = ""  # the last resourceVersion seen (list, event or bookmark)
        self._failures = 0
        self._stopping = threading.Event()
        self._watch: Watch | None = None
        self._thread = threading.Thread(target=self._run, name="networkpolicy-view", daemon=True)

    @classmethod
    def from_credentials(cls, kubeconfig: str | None, timeout: float, local_ip: str,
                         metrics: Metrics | None = None) -> PolicyView:
        """A view with the shared client's credentials (in the cluster: the pod's ServiceAccount)."""
        return cls(lambda: connect(kubeconfig, timeout=timeout, timeout_flag="--api-timeout"), local_ip, metrics)

    # ---- what admission reads (any thread) ----
    @property
    def synced(self) -> bool:
        return self._synced

    def in_namespace(self, namespace: str) -> Sequence[netpol.Policy]:
        return self._by_namespace.get(namespace, ())

    @property
    def resource_version(self) -> str:
        """The version the view is current to: where its next watch starts."""
        return self._version

    # ---- lifecycle ----
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the thread ----
    def _run(self) -> None:
        try:
            client = self._connect()
        except KubeError as error:
            log.error("NetworkPolicy check off: %s. Pods are injected without it.", error)
            return
        version = None
        while not self._stopping.is_set():
            try:
                version = self._list(client) if version is None else self._follow(client, version)
            except Exception:  # a bug must neither end the view nor leave a stale one in force: start over
                log.exception("NetworkPolicy view: internal error; pods are injected without the check until a "
                              "list succeeds")
                self._set_synced(False)
                self._failures += 1
                version = None
            self._version = version or self._version

    def _pause(self) -> None:
        """Wait before the next try: nothing after the first failure, then doubling up to the cap, jittered."""
        if self._failures > 1:
            delay = min(self._backoff_cap, self._backoff_first * 2 ** (self._failures - 2))
            self._stopping.wait(delay * random.uniform(0.5, 1.0))

    def _list(self, client: Client) -> str | None:
        """List every policy and publish them; the version to watch from, or None to list again."""
        self._pause()
        if self._stopping.is_set():
            return None
        try:
            items, version = client.listing(KIND)
        except KubeError as error:
            self._failures += 1
            # The first failure of a run is a warning; the ones after it, until a list succeeds, only repeat it.
            log.log(logging.WARNING if self._synced or self._failures == 1 else logging.DEBUG,
                    "cannot list NetworkPolicies (%s); pods are injected without the NetworkPolicy check until a list "
                    "succeeds", error)
            self._set_synced(False)
            return None
        self._objects = {}
        for item in items:
            self._upsert(item)
        self._by_namespace = {ns: _sorted(policies) for ns, policies in self._objects.items()}
        self._set_synced(True)
        return version

    def _follow(self, client: Client, version: str) -> str | None:
        """Apply one watch stream's events; the version to watch from next, or None to list again."""
        self._pause()
        if self._stopping.is_set():
            return None
        progressed = False
        try:
            self._watch = client.watch(KIND, version, timeout_seconds=self._watch_seconds)
            if self._stopping.is_set():  # stop() came while connecting, before there was a stream to close
                self._watch.close()
            for event in self._watch:
                version = self._apply(event) or version
                self._version = version
                progressed = True
                self._failures = 0
        except Expired as error:
            log.info("NetworkPolicy watch: %s", error)
            self._failures += 1
            return None
        except KubeError as error:
            if not self._stopping.is_set():
                log.warning("NetworkPolicy watch ended: %s; listing them again", error)
            self._failures += 1
            return None
        finally:
            self._watch = None
        if not progressed:  # a stream that ends at once, again and again, must not spin
            self._failures += 1
        return version

    def _apply(self, event: Mapping[str, Any]) -> str | None:
        """One event into the view; the resourceVersion it carries."""
        obj = event["object"]
        metadata = obj.get("metadata") or {}
        if event.get("type") in ("ADDED", "MODIFIED"):
            self._publish(self._upsert(obj))
        elif event.get("type") == "DELETED":
            namespace = metadata.get("namespace") or ""
            self._objects.get(namespace, {}).pop(str(metadata.get("name") or ""), None)
            self._publish(namespace)
        return metadata.get("resourceVersion") or None  # BOOKMARK: only the version

    def _upsert(self, obj: Mapping[str, Any]) -> str:
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        try:
            policy = netpol.compile_policy(obj, self._local_ip)
        except netpol.PolicyError as error:
            log.warning("%s; until it changes, it is taken to block DNS for every pod in %s", error, namespace)
            policy = netpol.unreadable(namespace, name, str(error))
        self._objects.setdefault(namespace, {})[name] = policy
        return namespace

    def _publish(self, namespace: str) -> None:
        policies = self._objects.get(namespace)
        if policies:
            self._by_namespace[namespace] = _sorted(policies)
        else:
            self._objects.pop(namespace, None)
            self._by_namespace.pop(namespace, None)
        self._count()

    def _set_synced(self, synced: bool) -> None:
        if synced and not self._synced:
            log.info("NetworkPolicy check on: %d policies in %d namespaces", sum(map(len, self._objects.values())),
                     len(self._objects))
        self._synced = synced
        if self._metrics is not None and self._metrics.networkpolicies_synced is not None:
            self._metrics.networkpolicies_synced.set(1 if synced else 0)
        self._count()

    def _count(self) -> None:
        if self._metrics is not None and self._metrics.networkpolicies is not None:
            self._metrics.networkpolicies.set(sum(map(len, self._objects.values())))


def _sorted(policies: Mapping[str, netpol.Policy]) -> tuple[netpol.Policy, ...]:
    return tuple(policies[name] for name in sorted(policies))
