"""The webhook SSRF guard's address policy (no network)."""

from __future__ import annotations

import ipaddress

import pytest

from scheduler_daemon.actions.guard import BlockedTarget, GuardPolicy, check_literal, refusal

GUARDED = GuardPolicy()
PRIVATE_OK = GuardPolicy(allow_private_networks=True)

NEVER = [
    "169.254.169.254",  # cloud metadata
    "169.254.170.2",  # ECS task metadata
    "fe80::1",
    "::ffff:169.254.169.254",
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",
    "ff02::1",
    "0.0.0.0",
    "::",
    "240.0.0.1",
    "255.255.255.255",
]
PRIVATE = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", NEVER)
def test_never_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), GUARDED)
    assert refusal(ipaddress.ip_address(address), PRIVATE_OK)


@pytest.mark.parametrize("address", PRIVATE)
def test_private_only_when_allowed(address: str) -> None:
    reason = refusal(ipaddress.ip_address(address), GUARDED)
    assert reason is not None
    assert "webhook.allow_private_networks" in reason
    assert refusal(ipaddress.ip_address(address), PRIVATE_OK) is None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), GUARDED) is None


def test_literal_hosts_and_exceptions() -> None:
    with pytest.raises(BlockedTarget, match="allow_private_networks"):
        check_literal("127.0.0.1", GUARDED)
    with pytest.raises(BlockedTarget):
        check_literal("[::ffff:169.254.169.254]", PRIVATE_OK)
    check_literal("8.8.8.8", GUARDED)
    check_literal("hooks.example.com", GUARDED)  # names are checked once resolved
    check_literal("127.0.0.1", GuardPolicy(allow_hosts=frozenset({"127.0.0.1"})))
