"""The node side of `python -m cache --setup-network`: the link-local interface, the NOTRACK rules, and teardown.

`NodeNetwork` only wires the parts together: `netif` knows interfaces, `iptables` knows rules. The daemon calls
`ensure_interface()` before it binds, `ensure_rules()` once its listeners serve and then `sync()` every
--sync-interval from a worker thread, and `teardown()` on exit unless --skip-teardown.

Upgrades hand over with SO_REUSEPORT: the new instance binds the same addresses while the old one drains. So an
instance that exits must not remove what the other still uses: `teardown()` leaves everything in place while a
socket that is not this process's own is bound to a listen address and the DNS port (`sockets.other_listeners`).

With the fail-open fallback (`fallback=True`) the rules differ (iptables.rules_for) and a nat chain per family holds
the DNATs to kube-dns (fallback.py). `fallback_endpoints` is what the chains should hold: None leaves them as they
are, so a restarted cache keeps the endpoints its predecessor programmed until it has resolved them itself.
Each variant removes the other's rules, so switching the fallback on or off needs no manual step.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable

from . import netif
from .errors import SetupError
from .fallback import by_family, dnat_rules, endpoints_in
from .iptables import FALLBACK_CHAIN, IPAddress, Iptables, Rule, rules_for, xtables_lock
from .sockets import other_listeners

log = logging.getLogger(__name__)


class NodeNetwork:
    """The interface and rules for the cache's listen addresses: ensured, repaired, removed; failures counted
    through `on_error(errortype)` and logged, never raised from the periodic paths."""

    def __init__(self, addresses: list[IPAddress], dns_port: int, health_port: int | None,
                 interface_name: str, interface_kind: str, on_error: Callable[[str], None],
                 iptables: Iptables | None = None, fallback: bool = False) -> None:
        self.addresses = list(addresses)
        self.dns_port = dns_port
        self.health_port = health_port
        self.interface_name = interface_name
        self.interface_kind = interface_kind
        self.on_error = on_error
        self.fallback = fallback
        self.rules: list[Rule] = rules_for(self.addresses, dns_port, health_port, fallback)
        # The other variant's rules: removed when found (the fallback switched on or off, or an older version).
        self.stale: list[Rule] = [rule for rule in rules_for(self.addresses, dns_port, health_port, not fallback)
                                  if rule not in self.rules]
        self.families = sorted({address.version for address in self.addresses})
        self.fallback_endpoints: list[IPAddress] | None = None  # what to program; None: keep what is there
        self.programmed: list[IPAddress] = []  # what the fallback chains held after the last ensure_rules()
        self._iptables = iptables

    # --- setup ------------------------------------------------------------------------------------------------

    def ensure_interface(self) -> None:
        """Create/repair the interface and its addresses; raises SetupError (already counted and logged)."""
        try:
            netif.ensure_interface(self.interface_name, self.interface_kind, self.addresses)
        except SetupError as exc:
            self._failed(exc.errortype, str(exc))
            raise
        except Exception as exc:  # netlink itself failing: count it, never let it pass silently
            self._failed("interfaceadd", f"interface {self.interface_name}: {exc}")
            raise SetupError(str(exc), "interfaceadd") from exc

    def ensure_rules(self) -> bool:
        """Insert each missing rule (prepended), remove the other variant's, program the fallback chains. Never
        raises; True when everything is in place."""
        try:
            iptables = self.iptables
            with self._lock_for(iptables):
                for family in self.families:
                    _require_binary(iptables, family)
                if self.fallback:  # before the rules that jump to them
                    for family in self.families:
                        iptables.ensure_chain(family, "nat", FALLBACK_CHAIN)
                missing = 0
                # Reversed so that, on a fresh node, the prepended rules read in table order.
                for rule in reversed(self.rules):
                    try:
                        if not iptables.exists(rule):
                            iptables.insert(rule)
                            missing += 1
                            log.info("inserted rule: %s", rule.describe())
                    except SetupError as exc:
                        if exc.errortype == "iptables_lock":
                            raise
                        self._failed(exc.errortype, f"rule {rule.describe()}: {exc}")
                        return False
                if missing:
                    log.info("iptables: %d of %d rules were missing and are now in place", missing, len(self.rules))
                if self._delete_all(iptables, self.stale):
                    log.info("removed the rules of the fallback %s", "off" if self.fallback else "on")
                if self.fallback:
                    self._program_fallback(iptables)
                else:
                    for family in self.families:
                        if iptables.delete_chain(family, "nat", FALLBACK_CHAIN):
                            log.info("removed the fallback chain (--fallback-endpoints none)")
                return True
        except SetupError as exc:
            self._failed(exc.errortype, str(exc))
            return False

    def _program_fallback(self, iptables: Iptables) -> None:
        """Make each family's chain hold `fallback_endpoints` (when known); read back what it holds."""
        wanted = by_family(self.fallback_endpoints) if self.fallback_endpoints is not None else None
        programmed: list[IPAddress] = []
        for family in self.families:
            current = endpoints_in(iptables.chain_rules(family, "nat", FALLBACK_CHAIN) or [])
            if wanted is not None and current != wanted[family]:
                iptables.replace_chain(family, "nat", FALLBACK_CHAIN, dnat_rules(wanted[family]))
                log.info("fallback (IPv%d): queries go to %s while no cache is bound", family,
                         ", ".join(map(str, wanted[family])) or "nowhere (no endpoint of this family)")
                current = endpoints_in(iptables.chain_rules(family, "nat", FALLBACK_CHAIN) or [])
            programmed += current
        self.programmed = programmed

    def sync(self) -> bool:
        """The periodic check: interface and rules, repaired where missing. Never raises."""
        interface_ok = True
        try:
            self.ensure_interface()
        except SetupError:
            interface_ok = False
        return self.ensure_rules() and interface_ok

    # --- teardown ---------------------------------------------------------------------------------------------

    def teardown(self) -> bool:
        """On exit: remove rules, then the interface, unless another instance still serves. True when removed."""
        serving = self.other_listeners()
        if serving:
            log.info("another instance still serves %s (sockets %s); leaving the interface and rules in place",
                     ", ".join(f"{a}:{self.dns_port}" for a in self.addresses), ", ".join(sorted(serving)))
            return False
        self.remove()
        return True

    def remove(self) -> None:
        """Rules first (traffic then takes the node's ordinary path), then the fallback chains, then the interface.
        Both variants' rules go, whichever this instance uses. Counts each failure."""
        try:
            iptables = self.iptables
            with self._lock_for(iptables):
                for family in self.families:
                    _require_binary(iptables, family)
                self._delete_all(iptables, self.rules + self.stale)
                for family in self.families:
                    try:
                        iptables.delete_chain(family, "nat", FALLBACK_CHAIN)
                    except SetupError as exc:
                        if exc.errortype == "iptables_lock":
                            raise
                        self._failed("iptables", f"fallback chain: {exc}")
                self.programmed = []
        except SetupError as exc:
            self._failed(exc.errortype, f"removing rules: {exc}")
        try:
            if netif.remove_interface(self.interface_name):
                log.info("removed interface %s", self.interface_name)
        except Exception as exc:
            self._failed("interfacedel", str(exc))

    def _delete_all(self, iptables: Iptables, rules: list[Rule]) -> int:
        """Delete each rule (every copy); the number of rules deleted."""
        deleted = 0
        for rule in rules:
            try:
                # Delete every copy: a rule inserted twice (an admin, a lost race) must not survive.
                for _ in range(16):
                    if not iptables.exists(rule):
                        break
                    iptables.delete(rule)
                    deleted += 1
            except SetupError as exc:
                if exc.errortype == "iptables_lock":
                    raise
                self._failed("iptables", f"rule {rule.describe()}: {exc}")
        return deleted

    def other_listeners(self) -> set[str]:
        """Sockets bound to a listen address and the DNS port (UDP, or TCP listening) that are not ours."""
        return other_listeners(self.addresses, self.dns_port)

    # --- helpers ----------------------------------------------------------------------------------------------

    @property
    def iptables(self) -> Iptables:
        if self._iptables is None:
            self._iptables = Iptables.detect()
            log.info("iptables backend: %s", self._iptables.backend)
        return self._iptables

    @staticmethod
    def _lock_for(iptables: Iptables) -> contextlib.AbstractContextManager[None]:
        # iptables-legacy takes the xtables lock itself for every call (-w): holding it here would make our own
        # child wait for us. iptables-nft never takes it, so we hold it around the whole batch for the programs
        # that still coordinate through it.
        return xtables_lock() if iptables.backend == "nft" else contextlib.nullcontext()

    def _failed(self, errortype: str, message: str) -> None:
        log.error("node network setup: %s", message)
        try:
            self.on_error(errortype)
        except Exception:  # a metrics callback must never break setup
            log.exception("on_error callback failed")


def _require_binary(iptables: Iptables, family: int) -> None:
    binary = iptables.binary(family)
    if shutil.which(binary) is None:
        raise SetupError(f"{binary} not found on PATH; the image needs the iptables package for the node's "
                         f"{iptables.backend} backend", "iptables")
