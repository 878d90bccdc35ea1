"""The daemon's life: node setup, listeners, health and metrics, reload on SIGHUP or file change, drain on SIGTERM.

Only wiring lives here; each mechanism is in its own module.
"""
from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from localdns import logformat

from . import config
from .config import Settings, SettingsError
from .health import Response, serve_http, text
from .kubednsconfig import KubeDnsConfig
from .metrics import Metrics
from .querylog import QueryLog, parse_classes
from .resolver import Resolver
from .server import Listeners
from .stats import Stats
from .store import Store
from .upstream import Group, Upstream

if TYPE_CHECKING:  # imported when --setup-network asks for it (node setup, iptables, the fallback's endpoints)
    from .endpoints import FallbackEndpoints
    from .netsetup import NodeNetwork

log = logging.getLogger("cache")

CONFIG_POLL = 2.0  # seconds between checks of the config file (a ConfigMap update swaps a symlink)
LOOP_PROBE_PAUSES = (1.0, 2.0, 4.0)
SETUP_ERROR_TYPES = ("interfaceadd", "iptables", "iptables_lock", "configmap")


def build_groups(settings: Settings, stats: Stats, environ: Mapping[str, str] | None = None,
                 kube_dns_config: KubeDnsConfig | None = None) -> dict[str, Group]:
    """One upstream group per forward zone, each upstream counting into `stats`."""
    return {zone: Group(zone, [Upstream(a, stats) for a in addresses], stats)
            for zone, addresses in settings.zones(environ, kube_dns_config).items()}


class Daemon:
    def __init__(self, settings: Settings, explicit: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.explicit = explicit if explicit is not None else {}
        self.environ = environ
        self.stats = Stats()
        self.store = Store(settings.limits)
        self.kube_dns_config: KubeDnsConfig | None = None
        self._follow_kube_dns_config(settings)
        self.resolver = Resolver(build_groups(settings, self.stats, environ, self.kube_dns_config), self.store,
                                 self.stats, settings.limits, on_loop=self._on_loop)
        self.query_log = QueryLog(self.stats)
        self._configure_query_log(settings)
        self.metrics = Metrics(self.stats, self.store)
        self.listeners = Listeners(self.resolver, settings.listen_addresses(), settings.udp_batch,
                                   settings.tcp_idle_timeout, settings.tcp_max_connections,
                                   settings.tcp_max_connections_per_client)
        self.network: NodeNetwork | None = None
        self.fallback: FallbackEndpoints | None = None
        self.serving = False
        self.draining = False
        self.exit_code = 0
        self.started = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._http: list[asyncio.Server] = []
        self._tasks: list[asyncio.Future[None]] = []
        self._config_digest = self._digest()

    # ---- life ----
    async def run(self) -> int:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        s = self.settings
        # First thing: a SIGTERM while the node is being set up (a pod deleted as it starts) must still end in a
        # clean stop, not in the default action, which kills the process halfway through its rules.
        for signum, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop),
                                (signal.SIGHUP, lambda: self.reload("SIGHUP"))):
            try:
                loop.add_signal_handler(signum, handler)
            except (RuntimeError, ValueError):  # not the main thread (embedded, as in the demo)
                pass
        try:
            if s.setup_network:
                self.network = self._node_network()
                await asyncio.to_thread(self.network.ensure_interface)
            await self.listeners.start()
            await self._start_http()
        except OSError as error:
            log.error("cannot start: %s", error)
            self.listeners.close()
            await self._stop_http()
            return 2
        self.serving = True
        if self.network is not None:  # NOTRACK rules only once the sockets answer: no window that drops queries
            rules_ok = await asyncio.to_thread(self.network.ensure_rules)
            if self.fallback is not None:
                self.fallback.record(rules_ok, self.network.programmed, refreshed=False)
        if self.network is not None:
            self._tasks.append(asyncio.ensure_future(self._sync_network(self.network)))
        if s.config:
            self._tasks.append(asyncio.ensure_future(self._watch_config()))
        self._tasks.append(asyncio.ensure_future(self._watch_kube_dns_config()))
        if s.remove_startup_taint:
            from .starttaint import remove_when_ready
            self._tasks.append(asyncio.ensure_future(remove_when_ready(self._is_ready)))
        self._tasks.append(asyncio.ensure_future(self._first_checks()))
        settle_garbage_collector()
        self.started.set()
        await self._stop.wait()
        if self.exit_code == 0 and s.drain > 0:
            self.draining = True
            log.info("draining: /ready answers 503, sockets keep answering for %.1fs", s.drain)
            await asyncio.sleep(s.drain)
            await self._answer_pending(s.limits.upstream_timeout)
        await self._shutdown()
        return self.exit_code

    async def _answer_pending(self, timeout: float) -> None:
        """Queries still waiting for an upstream get their answers (or SERVFAIL) before the sockets close."""
        deadline = time.monotonic() + timeout + 0.5
        while self.resolver.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def stop(self, exit_code: int = 0) -> None:
        if exit_code:
            self.exit_code = exit_code
        if self._stop is not None:
            self._stop.set()

    async def _shutdown(self) -> None:
        self.serving = False
        for task in self._tasks:
            task.cancel()
        self.listeners.close()
        await self._stop_http()
        for group in self.resolver.zones.values():
            group.close()
        self.query_log.close()
        if self.network is not None and not self.settings.skip_teardown:
            try:
                await asyncio.to_thread(self.network.teardown)
            except Exception as error:  # exiting anyway: say what is left behind
                log.error("network teardown failed: %s", error)
        log.info("stopped")

    async def _first_checks(self) -> None:
        """Check every upstream once (for /ready), then send the loop probes."""
        upstreams = [u for group in self.resolver.zones.values() for u in group.upstreams]
        await asyncio.gather(*(u.check(self.settings.limits.upstream_timeout) for u in upstreams))
        for pause in LOOP_PROBE_PAUSES:  # repeated: a server on the loop may start after us
            await self.resolver.probe_loops()
            await asyncio.sleep(pause)

    def _on_loop(self, zone: str) -> None:
        log.error("stopping: zone %s forwards back to this cache (a loop would multiply every query)", zone)
        self.stop(exit_code=1)

    # ---- node network (cache/netsetup) ----
    def _node_network(self) -> NodeNetwork:
        from .netsetup import NodeNetwork
        from .netsetup.fallback import parse_fallback

        for errortype in SETUP_ERROR_TYPES:
            self.stats.setup_errors[errortype] += 0
        listen = self.settings.listen_addresses()
        health = self.settings.http_address("health")
        fallback = parse_fallback(self.settings.fallback_endpoints)
        if fallback.enabled:
            from .endpoints import FallbackEndpoints
            self.fallback = FallbackEndpoints(fallback, self._route, self.stats, self.settings.limits.upstream_timeout)
        return NodeNetwork(addresses=[ipaddress.ip_address(host) for host, _ in listen], dns_port=listen[0][1],
                           health_port=health[1] if health else None, interface_name=self.settings.interface_name,
                           interface_kind=self.settings.interface_kind, on_error=self._setup_error,
                           fallback=fallback.enabled)

    def _route(self, qname: bytes) -> Group | None:
        found = self.resolver.route(qname)
        return found[1] if found else None

    def _setup_error(self, errortype: str) -> None:
        self.stats.setup_errors[errortype] += 1
        log.error("node network setup error: %s", errortype)

    async def _sync_network(self, network: NodeNetwork) -> None:
        """Every --sync-interval: the fallback's endpoints resolved, then interface and rules checked and repaired.
        Until the endpoints have resolved once, only the resolution is retried, every few seconds."""
        last_sync = time.monotonic()
        while True:
            retry = self.fallback.retry_in if self.fallback is not None else None
            await asyncio.sleep(retry if retry is not None else self.settings.sync_interval)
            try:
                endpoints = await self.fallback.refresh() if self.fallback is not None else None
                if endpoints is not None:
                    network.fallback_endpoints = endpoints
                if endpoints is None and time.monotonic() - last_sync < self.settings.sync_interval:
                    continue
                # One call: a failing interface repair must not skip the rule repair of the same round.
                ok = await asyncio.to_thread(network.sync)
                last_sync = time.monotonic()
                if self.fallback is not None:
                    self.fallback.record(ok, network.programmed, refreshed=endpoints is not None)
            except Exception as error:  # the next sync tries again
                log.error("node network sync failed: %s", error)

    # ---- health and metrics ----
    async def _start_http(self) -> None:
        health = self.settings.http_address("health")
        if health:
            self._http.append(await serve_http(*health, {"/health": self._health, "/ready": self._ready}))
        metrics = self.settings.http_address("metrics")
        if metrics:
            self._http.append(await serve_http(*metrics, {"/metrics": self._metrics}))

    async def _stop_http(self) -> None:
        for server in self._http:
            server.close()
        self._http = []

    def _health(self) -> Response:
        return text(200, "OK") if self.serving else text(503, "not serving")

    def _ready(self) -> Response:
        if self.draining or not self.serving:
            return text(503, "draining" if self.draining else "starting")
        if not self.resolver.ready:
            return text(503, "no upstream has answered yet")
        return text(200, "ready")

    def _is_ready(self) -> bool:
        return self._ready()[0] == 200

    def _metrics(self) -> Response:
        body, content_type = self.metrics.render()
        return 200, body, content_type

    # ---- reload ----
    def _digest(self) -> bytes | None:
        """What the config file holds now (None: no file), to tell a change. The content itself rather than a
        hash of it: a settings file is a few hundred bytes, and hashlib costs 0.7 MB of RSS to import."""
        if not self.settings.config:
            return None
        try:
            with open(self.settings.config, "rb") as file:
                return file.read()
        except OSError:
            return None

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL)
            digest = self._digest()
            if digest != self._config_digest:
                self._config_digest = digest
                self.reload("config file changed")

    def reload(self, reason: str) -> bool:
        """Re-read the config file (and resolv.conf); keep the cache and sockets; a bad file changes nothing."""
        try:
            new = config.resolve(self.explicit, self.environ)
        except (SettingsError, OSError) as error:
            self.stats.config_reloads["failed"] += 1
            log.error("reload (%s) failed, keeping the settings in force: %s", reason, error)
            return False
        ignored = config.restart_only_changes(self.settings, new)
        if ignored:
            log.warning("reload (%s): %s changed but take effect only after a restart", reason, ", ".join(ignored))
            new = replace(new, **{name: getattr(self.settings, name) for name in config.RESTART_ONLY})
        self._follow_kube_dns_config(new)
        self._regroup(new)
        logging.getLogger().setLevel(new.log_level.upper())
        logformat.use(new.log_format)
        self._configure_query_log(new)
        self.stats.config_reloads["ok"] += 1
        log.info("reloaded settings (%s)", reason)
        return True

    def _regroup(self, settings: Settings) -> None:
        """Upstream groups for `settings` and the kube-dns ConfigMap in force; the cache is kept."""
        old_groups = self.resolver.configure(build_groups(settings, self.stats, self.environ, self.kube_dns_config),
                                             settings.limits)
        # Exchanges in flight still use the old groups: close them once those have certainly ended.
        asyncio.get_running_loop().call_later(self.settings.limits.upstream_timeout + 1, close_groups, old_groups)
        self.settings = settings
        self._tasks.append(asyncio.ensure_future(self._first_checks()))

    # ---- kube-dns ConfigMap (cache/kubednsconfig.py) ----
    def _follow_kube_dns_config(self, settings: Settings) -> None:
        """Read the ConfigMap directory that `settings` name (none: forget it), judging every key again."""
        if not settings.kube_dns_config:
            self.kube_dns_config = None
            return
        self.stats.setup_errors["configmap"] += 0
        config = self.kube_dns_config
        if config is None or config.directory != settings.kube_dns_config:
            config = self.kube_dns_config = KubeDnsConfig(settings.kube_dns_config, settings.cluster_domain,
                                                          settings.is_own_address)
        else:  # the same directory: its last good values stay, should a key now be bad
            config.cluster_domain, config.is_self = settings.cluster_domain, settings.is_own_address
        self._refresh_kube_dns_config(force=True)

    def _refresh_kube_dns_config(self, force: bool = False) -> bool:
        config = self.kube_dns_config
        if config is None:
            return False
        changed, problems = config.refresh(force)
        for problem in problems:
            self.stats.setup_errors["configmap"] += 1
            log.error("kube-dns ConfigMap %s: bad %s; the last good value of that key stays in force",
                      config.directory, problem)
        if changed or force:
            log.info("kube-dns ConfigMap %s: %s", config.directory, config.describe())
        return changed

    async def _watch_kube_dns_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL)
            if self._refresh_kube_dns_config():
                self._regroup(self.settings)

    # ---- query log (cache/querylog.py) ----
    def _configure_query_log(self, settings: Settings) -> None:
        self.query_log.configure(parse_classes(settings.log_queries_class), settings.log_queries_rate,
                                 settings.log_queries_burst, settings.log_format)
        self.resolver.query_log = self.query_log if settings.log_queries else None


def close_groups(groups: list[Group]) -> None:
    for group in groups:
        group.close()


def settle_garbage_collector() -> None:
    """Once started: move everything start-up made (modules, settings, parser: tens of thousands of objects that
    live as long as the process) out of the collector's sight, so that a full collection only walks what was made since,
    instead of stalling the loop for milliseconds over objects that can never be garbage. The hit path creates no
    reference cycles; the collector stays on for the rest (misses, reloads)."""
    gc.collect()
    gc.freeze()
    return_free_memory()


def return_free_memory() -> None:
    """Hand the heap memory start-up freed back to the kernel (glibc's malloc_trim): the argument parser, the
    settings and the modules' import-time temporaries leave free pages that malloc keeps for reuse and the node
    counts as the cache's RSS. Once, after start-up; nothing where the C library has no malloc_trim (musl)."""
    import ctypes  # loaded already for the batched listener (cache/mmsg.py)

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def setup_logging(level: str, log_format: str = "text") -> None:
    logformat.configure(level.upper(), log_format)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (its datagram reads avoid the default loop's per-packet 256 KiB buffer)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    try:
        settings, explicit = config.load(argv)
    except SettingsError as error:
        raise SystemExit(f"python -m cache: {error}") from None
    setup_logging(settings.log_level, settings.log_format)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        daemon = Daemon(settings, explicit, dict(os.environ))
        return runner.run(daemon.run())
