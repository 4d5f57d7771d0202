"""The client address comes from the socket unless a trusted proxy forwards it."""

from __future__ import annotations

import pytest

from interfaces.http.deps import client_ip

TRUSTED = ["10.0.0.0/8", "192.168.1.1"]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        (
            "203.0.113.9",
            "198.51.100.1",
            "203.0.113.9",
        ),  # untrusted peer: header ignored
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        (
            "10.1.2.3",
            "6.6.6.6, 198.51.100.1",
            "198.51.100.1",
        ),  # left part is the client's
        ("10.1.2.3", "198.51.100.1, 192.168.1.1", "198.51.100.1"),  # skip trusted hops
        ("10.1.2.3", "10.9.9.9", "10.1.2.3"),  # only proxies: fall back to the peer
        ("10.1.2.3", "not-an-address", "10.1.2.3"),
        ("10.1.2.3", "", "10.1.2.3"),
    ],
)
def test_client_address(peer: str, forwarded_for: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded_for, TRUSTED) == expected


def test_no_trusted_proxies_means_the_header_is_never_read() -> None:
    assert client_ip("10.1.2.3", "198.51.100.1", []) == "10.1.2.3"
