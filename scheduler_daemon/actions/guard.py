"""The webhook SSRF guard: the address checked is the address connected to.

A resolver that wraps aiohttp's refuses every address that is not public (loopback, private,
link-local such as the cloud metadata endpoints 169.254.169.254 and 169.254.170.2, carrier-
grade NAT, multicast, reserved, unspecified, IPv6 loopback/ULA/link-local and IPv4-mapped
forms of all of these); IP literals in URLs, which aiohttp does not resolve, are checked
before the request. Legacy numeric spellings (2130706433, 0x7f.1, 017700000001) are refused by
aiohttp itself as non-canonical.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    allow_private_networks: bool = False
    allow_hosts: frozenset[str] = frozenset()


class BlockedTarget(OSError):
    """A webhook target the guard refuses; the message names the setting that would allow
    it."""


def refusal(address: IPAddress, policy: GuardPolicy) -> str | None:
    """Why ``address`` may not be connected to, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:
        return "link-local (cloud metadata) addresses are never allowed"
    if address.is_global and not address.is_multicast:
        return None
    if policy.allow_private_networks:
        if address.is_loopback:
            return None
        if address.is_private and not (
            address.is_multicast or address.is_unspecified or address.is_reserved
        ):
            return None
    return (
        "not a public address; set webhook.allow_private_networks = true, or list the "
        "host in webhook.allow_hosts, to allow it"
    )


def check_literal(host: str, policy: GuardPolicy) -> None:
    """Refuse an IP-literal URL host the resolver would never see."""
    if host.lower() in policy.allow_hosts:
        return
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    reason = refusal(address, policy)
    if reason is not None:
        raise BlockedTarget(f"webhook target {host} refused: {reason}")


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: Callable[[], GuardPolicy]) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        policy = self._policy()
        if host.lower() in policy.allow_hosts:
            return results
        for result in results:
            reason = refusal(ipaddress.ip_address(result["host"]), policy)
            if reason is not None:
                raise BlockedTarget(f"webhook target {host} ({result['host']}) refused: {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()
