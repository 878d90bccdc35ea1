"""Node setup for `python -m cache --setup-network`: the link-local interface, the NOTRACK rules, and teardown.

`NodeNetwork` only wires the parts together: `cache.netif` knows interfaces, `cache.iptables` knows rules. The
daemon calls `ensure_interface()` before it binds, `ensure_rules()` once its listeners serve and then `sync()`
every --sync-interval from a worker thread, and `teardown()` on exit unless --skip-teardown.

Upgrades hand over with SO_REUSEPORT: the new instance binds the same addresses while the old one drains. So an
instance that exits must not remove what the other still uses. `teardown()` looks at the sockets of this network
namespace (/proc/net/{udp,tcp}{,6}, which the kernel scopes to the reader's netns) and leaves everything in place
when a socket that is not this process's own is bound to a listen address and the DNS port.

`python -m cache.netsetup teardown --listen IP:PORT ...` is the explicit uninstall (see docs/node.md).
"""
from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable

from cache import netif
from cache.iptables import Iptables, IptablesError, Rule, rules_for, xtables_lock

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

TCP_LISTEN = "0A"  # the kernel's state code for LISTEN in /proc/net/tcp


class NetworkSetupError(OSError):
    """The node network cannot be set up as asked; the message says what to change.

    An OSError, so that a daemon's start-up path that reports "cannot start: ..." for a socket it cannot bind
    reports this the same way: both mean the node does not offer the address the cache was told to serve.
    """

    def __init__(self, message: str, errortype: str) -> None:
        super().__init__(message)
        self.errortype = errortype


class NodeNetwork:
    def __init__(self, addresses: list[IPAddress], dns_port: int, health_port: int | None,
                 interface_name: str, interface_kind: str, on_error: Callable[[str], None],
                 iptables: Iptables | None = None) -> None:
        self.addresses = list(addresses)
        self.dns_port = dns_port
        self.health_port = health_port
        self.interface_name = interface_name
        self.interface_kind = interface_kind
        self.on_error = on_error
        self.rules: list[Rule] = rules_for(self.addresses, dns_port, health_port)
        self._iptables = iptables

    # --- setup ------------------------------------------------------------------------------------------------

    def ensure_interface(self) -> None:
        """Create/repair the interface and its addresses; raises NetworkSetupError (already counted and logged)."""
        try:
            netif.ensure_interface(self.interface_name, self.interface_kind, self.addresses)
        except netif.InterfaceError as exc:
            self._failed(exc.errortype, str(exc))
            raise NetworkSetupError(str(exc), exc.errortype) from exc
        except Exception as exc:  # netlink itself failing: count it, never let it pass silently
            self._failed("interfaceadd", f"interface {self.interface_name}: {exc}")
            raise NetworkSetupError(str(exc), "interfaceadd") from exc

    def ensure_rules(self) -> bool:
        """Insert each missing rule (prepended). Never raises; True when every rule is in place."""
        try:
            iptables = self.iptables
            with self._lock_for(iptables):
                missing = 0
                for family in sorted({rule.family for rule in self.rules}):
                    _require_binary(iptables, family)
                # Reversed so that, on a fresh node, the prepended rules read in table order.
                for rule in reversed(self.rules):
                    try:
                        if not iptables.exists(rule):
                            iptables.insert(rule)
                            missing += 1
                            log.info("inserted rule: %s", rule.describe())
                    except IptablesError as exc:
                        if exc.errortype == "iptables_lock":
                            raise
                        self._failed(exc.errortype, f"rule {rule.describe()}: {exc}")
                        return False
                if missing:
                    log.info("iptables: %d of %d rules were missing and are now in place", missing, len(self.rules))
                return True
        except IptablesError as exc:
            self._failed(exc.errortype, str(exc))
            return False

    def sync(self) -> bool:
        """The periodic check: interface and rules, repaired where missing. Never raises."""
        interface_ok = True
        try:
            self.ensure_interface()
        except NetworkSetupError:
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
        """Rules first (traffic then takes the node's ordinary path), then the interface. Counts each failure."""
        try:
            iptables = self.iptables
            with self._lock_for(iptables):
                for family in sorted({rule.family for rule in self.rules}):
                    _require_binary(iptables, family)
                for rule in self.rules:
                    try:
                        # Delete every copy: a rule inserted twice (an admin, a lost race) must not survive.
                        for _ in range(16):
                            if not iptables.exists(rule):
                                break
                            iptables.delete(rule)
                    except IptablesError as exc:
                        if exc.errortype == "iptables_lock":
                            raise
                        self._failed("iptables", f"rule {rule.describe()}: {exc}")
        except IptablesError as exc:
            self._failed(exc.errortype, f"removing rules: {exc}")
        try:
            if netif.remove_interface(self.interface_name):
                log.info("removed interface %s", self.interface_name)
        except Exception as exc:
            self._failed("interfacedel", str(exc))

    def other_listeners(self) -> set[str]:
        """Sockets bound to a listen address and the DNS port (UDP, or TCP listening) that are not ours."""
        own = _own_socket_inodes()
        wanted = {(address, self.dns_port) for address in self.addresses}
        return {f"{proto}:{inode}" for proto, address, port, inode in _bound_sockets()
                if (address, port) in wanted and inode not in own}

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
        raise IptablesError(f"{binary} not found on PATH; the image needs the iptables package for the node's "
                            f"{iptables.backend} backend")


# --- sockets of this network namespace -----------------------------------------------------------------------------

def parse_proc_net(text: str, version: int, listen_only: bool) -> list[tuple[IPAddress, int, str]]:
    """(address, port, inode) of each socket in a /proc/net/{tcp,udp}{,6} table; TCP only in LISTEN if asked."""
    sockets: list[tuple[IPAddress, int, str]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], fields[9]
        if listen_only and state != TCP_LISTEN:
            continue
        hex_address, hex_port = local.split(":")
        sockets.append((_proc_address(hex_address, version), int(hex_port, 16), inode))
    return sockets


def _proc_address(hex_address: str, version: int) -> IPAddress:
    # The kernel prints each 32-bit word in host (little-endian on every platform we ship) byte order.
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.IPv4Address(words) if version == 4 else ipaddress.IPv6Address(words)


def _bound_sockets() -> Iterable[tuple[str, IPAddress, int, str]]:
    for proto, version, listen_only in (("udp", 4, False), ("udp6", 6, False), ("tcp", 4, True), ("tcp6", 6, True)):
        try:
            with open(f"/proc/net/{proto}") as table:
                text = table.read()
        except OSError:  # no IPv6 on this node
            continue
        for address, port, inode in parse_proc_net(text, version, listen_only):
            yield proto, address, port, inode


def _own_socket_inodes() -> set[str]:
    inodes: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return inodes


# --- explicit uninstall: python -m cache.netsetup teardown ---------------------------------------------------------

def _listen(value: str) -> tuple[IPAddress, int]:
    host, _, port = value.rpartition(":")
    return ipaddress.ip_address(host.strip("[]")), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache.netsetup",
                                     description="Set up or remove the cache's node network by hand.")
    parser.add_argument("action", choices=["setup", "teardown", "status"])
    parser.add_argument("--listen", action="append", type=_listen, required=True, metavar="IP:PORT")
    parser.add_argument("--health-port", type=int, default=8080)
    parser.add_argument("--interface-name", default="nodelocaldns")
    parser.add_argument("--interface-kind", default="dummy")
    parser.add_argument("--force", action="store_true", help="teardown even while another instance serves")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    ports = {port for _, port in args.listen}
    if len(ports) != 1:
        parser.error("all --listen addresses must use the same port")
    errors: list[str] = []
    network = NodeNetwork([address for address, _ in args.listen], ports.pop(), args.health_port,
                          args.interface_name, args.interface_kind, errors.append)
    if args.action == "setup":
        try:
            network.ensure_interface()
        except NetworkSetupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0 if network.ensure_rules() else 1
    if args.action == "status":
        serving = network.other_listeners()
        present = [rule for rule in network.rules if _exists_quietly(network.iptables, rule)]
        addresses = netif.interface_addresses(args.interface_name)
        shown = " ".join(sorted(map(str, addresses))) if addresses is not None else "absent"
        print(f"interface {args.interface_name}: {shown}")
        print(f"rules: {len(present)} of {len(network.rules)} present ({network.iptables.backend})")
        print(f"serving sockets: {', '.join(sorted(serving)) or 'none'}")
        return 0
    if not args.force and (serving := network.other_listeners()):
        print(f"error: a cache still serves these addresses ({', '.join(sorted(serving))}); stop it first "
              "or pass --force", file=sys.stderr)
        return 1
    network.remove()
    return 1 if errors else 0


def _exists_quietly(iptables: Iptables, rule: Rule) -> bool:
    try:
        return iptables.exists(rule)
    except IptablesError:
        return False


if __name__ == "__main__":
    sys.exit(main())
