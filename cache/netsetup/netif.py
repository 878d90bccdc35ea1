"""The cache's own network interface: made, checked and removed over netlink (pyroute2), nothing else.

The interface only exists to make the listen IPs local to the node (host routes, /32 or /128) so the cache can bind
them and pods' packets to them are delivered locally. It is idempotent: an existing interface of ours and addresses
already on it are reused; an address that another interface holds is never moved.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import SetupError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 addresses on an interface without carrier (a bridge with no ports) would stay "tentative" forever waiting
# for duplicate address detection, and a tentative address cannot be bound.
IFA_F_NODAD = 0x02


def ensure_interface(name: str, kind: str, addresses: list[IPAddress]) -> None:
    """Make sure interface `name` of `kind` is up and holds every address as a host route."""
    with IPRoute() as ipr:
        index = _index(ipr, name)
        owners = _address_owners(ipr)
        for address in addresses:
            owner = owners.get(address)
            if owner is not None and owner != index:
                raise SetupError(
                    f"listen address {address} is already on interface {_name(ipr, owner)!r}; the cache will not "
                    f"take it over. Remove it there, or listen on another address", "interfaceadd")
        if index is None:
            index = _create(ipr, name, kind)
        else:
            existing_kind = _kind(ipr, index)
            if existing_kind != kind:
                log.warning("interface %s exists as kind %s (not %s); reusing it", name, existing_kind, kind)
        ipr.link("set", index=index, state="up")
        for address in addresses:
            if owners.get(address) == index:
                continue
            family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            try:
                ipr.addr("add", index=index, address=str(address), prefixlen=address.max_prefixlen,
                         family=family, flags=IFA_F_NODAD if address.version == 6 else 0)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise SetupError(f"cannot add {address} to {name}: {_reason(exc)}", "interfaceadd") from exc
            log.info("added %s/%d to interface %s", address, address.max_prefixlen, name)


def remove_interface(name: str) -> bool:
    """Delete the interface (its addresses go with it); False when it was not there."""
    with IPRoute() as ipr:
        index = _index(ipr, name)
        if index is None:
            return False
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise SetupError(f"cannot delete interface {name}: {_reason(exc)}", "interfacedel") from exc
        return True


def interface_addresses(name: str) -> set[IPAddress] | None:
    """The addresses on interface `name`, or None when it does not exist."""
    with IPRoute() as ipr:
        index = _index(ipr, name)
        if index is None:
            return None
        return {address for address, owner in _address_owners(ipr).items() if owner == index}


def _create(ipr: IPRoute, name: str, kind: str) -> int:
    try:
        ipr.link("add", ifname=name, kind=kind)
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:  # created by a sibling instance a moment ago
            index = _index(ipr, name)
            if index is not None:
                return index
        if exc.code in (errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL) or "not supported" in str(exc).lower():
            raise SetupError(
                f"this kernel cannot create an interface of kind {kind!r} ({_reason(exc)}); pick another kind "
                f"with --interface-kind (e.g. --interface-kind bridge: an empty bridge holds the addresses alike)",
                "interfaceadd") from exc
        raise SetupError(f"cannot create interface {name} of kind {kind}: {_reason(exc)}", "interfaceadd") from exc
    index = _index(ipr, name)
    if index is None:
        raise SetupError(f"interface {name} vanished right after it was created", "interfaceadd")
    log.info("created interface %s (kind %s)", name, kind)
    return index


def _reason(exc: NetlinkError) -> str:
    return os.strerror(exc.code) if exc.code else str(exc)


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _name(ipr: IPRoute, index: int) -> str:
    links = ipr.get_links(index)
    return links[0].get_attr("IFLA_IFNAME") if links else f"#{index}"


def _kind(ipr: IPRoute, index: int) -> str | None:
    links = ipr.get_links(index)
    if not links:
        return None
    info = links[0].get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _address_owners(ipr: IPRoute) -> dict[IPAddress, int]:
    owners: dict[IPAddress, int] = {}
    for message in ipr.get_addr():
        text = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
        if text:
            owners[ipaddress.ip_address(text.split("%")[0])] = message["index"]
    return owners
