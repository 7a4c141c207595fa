"""Which network addresses an input URL may reach, and resolving a host name once.

An ImageJob's `images[].url` is data from whoever may create ImageJobs: fetched
as given, it could read the cloud metadata service (169.254.169.254), the
Kubernetes API or anything else only the operator's network can reach. So a
URL's host is resolved once, every address it resolves to is checked, and the
connection is then made to that checked address (`fetch.py` pins it): a DNS
answer that changes between the check and the connection (rebinding) cannot
steer it elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from comfykube.errors import InputImageFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Named here although `is_global` already excludes them: what the refusal message says.
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` may not be fetched from by default, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden_reason(address.ipv4_mapped)
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    if not address.is_global:
        return "not a public address"  # e.g. 100.64.0.0/10 (carrier-grade NAT), 192.0.0.0/24
    return None


Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
Policy = Callable[[IPAddress], "str | None"]


async def resolve_dns(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the event loop's resolver runs in a thread)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputImageFailed(f"cannot resolve host {host!r}: {exc}", retryable=True) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def resolve_checked(
    host: str,
    port: int,
    *,
    allow_private: bool,
    resolve: Resolver = resolve_dns,
    policy: Policy = forbidden_reason,
) -> IPAddress:
    """The address to connect to for `host`: resolved once, every answer checked.

    All answers must pass, not just the first: a name that resolves to one public
    and one private address is refused rather than trusted half-way. (`resolve` and
    `policy` are replaceable for tests.)
    """
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    addresses = [literal] if literal is not None else await resolve(host, port)
    if not addresses:
        raise InputImageFailed(f"host {host!r} resolves to no address", retryable=True)
    if not allow_private:
        for address in addresses:
            reason = policy(address)
            if reason is not None:
                raise InputImageFailed(
                    f"host {host!r} resolves to {address}, {reason}: input URLs must be public "
                    "(INPUT_URL_ALLOW_PRIVATE=true lifts this for trusted clusters)"
                )
    return addresses[0]
