"""The cache's own network interface: made, checked and removed over netlink (rtnl.py), nothing else.

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

from .errors import SetupError
from .rtnl import NetlinkError, Rtnl

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 addresses on an interface without carrier (a bridge with no ports) would stay "tentative" forever waiting
# for duplicate address detection, and a tentative address cannot be bound.
IFA_F_NODAD = 0x02


def ensure_interface(name: str, kind: str, addresses: list[IPAddress]) -> None:
    """Make sure interface `name` of `kind` is up and holds every address as a host route."""
    with Rtnl() as rtnl:
        index = _index(name)
        owners = _address_owners(rtnl)
        for address in addresses:
            owner = owners.get(address)
            if owner is not None and owner != index:
                raise SetupError(
                    f"listen address {address} is already on interface {_name(owner)!r}; the cache will not "
                    f"take it over. Remove it there, or listen on another address", "interfaceadd")
        if index is None:
            index = _create(rtnl, name, kind)
        else:
            existing_kind = rtnl.link_kind(index)
            if existing_kind != kind:
                log.warning("interface %s exists as kind %s (not %s); reusing it", name, existing_kind, kind)
        rtnl.set_up(index)
        for address in addresses:
            if owners.get(address) == index:
                continue
            try:
                rtnl.add_address(index, address, IFA_F_NODAD if address.version == 6 else 0)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise SetupError(f"cannot add {address} to {name}: {_reason(exc)}", "interfaceadd") from exc
            log.info("added %s/%d to interface %s", address, address.max_prefixlen, name)


def remove_interface(name: str) -> bool:
    """Delete the interface (its addresses go with it); False when it was not there."""
    index = _index(name)
    if index is None:
        return False
    with Rtnl() as rtnl:
        try:
            rtnl.delete_link(index)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise SetupError(f"cannot delete interface {name}: {_reason(exc)}", "interfacedel") from exc
        return True


def interface_addresses(name: str) -> set[IPAddress] | None:
    """The addresses on interface `name`, or None when it does not exist."""
    index = _index(name)
    if index is None:
        return None
    with Rtnl() as rtnl:
        return {address for address, owner in _address_owners(rtnl).items() if owner == index}


def _create(rtnl: Rtnl, name: str, kind: str) -> int:
    try:
        rtnl.add_link(name, kind)
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:  # created by a sibling instance a moment ago
            index = _index(name)
            if index is not None:
                return index
        if exc.code in (errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL) or "not supported" in str(exc).lower():
            raise SetupError(
                f"this kernel cannot create an interface of kind {kind!r} ({_reason(exc)}); pick another kind "
                f"with --interface-kind (e.g. --interface-kind bridge: an empty bridge holds the addresses alike)",
                "interfaceadd") from exc
        raise SetupError(f"cannot create interface {name} of kind {kind}: {_reason(exc)}", "interfaceadd") from exc
    index = _index(name)
    if index is None:
        raise SetupError(f"interface {name} vanished right after it was created", "interfaceadd")
    log.info("created interface %s (kind %s)", name, kind)
    return index


def _reason(exc: NetlinkError) -> str:
    return os.strerror(exc.code) if exc.code else str(exc)


def _index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:  # no such interface
        return None


def _name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"#{index}"


def _address_owners(rtnl: Rtnl) -> dict[IPAddress, int]:
    return dict(rtnl.addresses())
