"""`python -m cache.netsetup setup|teardown|status --listen IP:PORT ...`: the node network by hand.

`teardown` is the explicit uninstall that deploy/uninstall runs on every node (see docs/node.md); it removes the
rules of both variants (with and without the fail-open fallback) and the fallback chains, whatever the flags say.
`setup --fallback-endpoints IP[,IP...]` arms the fallback without a cache (names are resolved by the cache only).
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from ..addresses import parse_host_port
from . import netif
from .errors import SetupError
from .fallback import FallbackSpec, endpoints_in, parse_fallback
from .iptables import FALLBACK_CHAIN, IPAddress, Iptables, Rule
from .network import NodeNetwork


def _listen(value: str) -> tuple[IPAddress, int]:
    try:
        host, port = parse_host_port(value, default_port=None)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return ipaddress.ip_address(host), port


def _fallback(value: str) -> FallbackSpec:
    try:
        spec = parse_fallback(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if spec.name is not None:
        raise argparse.ArgumentTypeError(f"{value}: only the cache resolves names; give IP[,IP...] or none here")
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cache.netsetup",
                                     description="Set up or remove the cache's node network by hand.")
    parser.add_argument("action", choices=["setup", "teardown", "status"])
    parser.add_argument("--listen", action="append", type=_listen, required=True, metavar="IP:PORT")
    parser.add_argument("--health-port", type=int, default=8080)
    parser.add_argument("--interface-name", default="nodelocaldns")
    parser.add_argument("--interface-kind", default="dummy")
    parser.add_argument("--force", action="store_true", help="teardown even while another instance serves")
    parser.add_argument("--fallback-endpoints", type=_fallback, default=FallbackSpec(), metavar="IP[,IP...]|none",
                        help="setup: send queries to these kube-dns endpoints while no cache is bound")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    ports = {port for _, port in args.listen}
    if len(ports) != 1:
        parser.error("all --listen addresses must use the same port")
    errors: list[str] = []
    fallback: FallbackSpec = args.fallback_endpoints
    network = NodeNetwork([address for address, _ in args.listen], ports.pop(), args.health_port,
                          args.interface_name, args.interface_kind, errors.append, fallback=fallback.enabled)
    if fallback.enabled:
        network.fallback_endpoints = list(fallback.addresses)
    if args.action == "setup":
        try:
            network.ensure_interface()
        except SetupError as exc:
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
        print(f"fallback endpoints: {', '.join(map(str, _fallback_quietly(network))) or 'none'}")
        print(f"serving sockets: {', '.join(sorted(serving)) or 'none'}")
        return 0
    if not args.force and (serving := network.other_listeners()):
        print(f"error: a cache still serves these addresses ({', '.join(sorted(serving))}); stop it first "
              "or pass --force", file=sys.stderr)
        return 1
    network.remove()
    return 1 if errors else 0


def _fallback_quietly(network: NodeNetwork) -> list[IPAddress]:
    try:
        return [endpoint for family in network.families
                for endpoint in endpoints_in(network.iptables.chain_rules(family, "nat", FALLBACK_CHAIN) or [])]
    except SetupError:
        return []


def _exists_quietly(iptables: Iptables, rule: Rule) -> bool:
    try:
        return iptables.exists(rule)
    except SetupError:
        return False


if __name__ == "__main__":
    sys.exit(main())
