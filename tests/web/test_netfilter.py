"""stcloud.web.netfilter: client address behind proxies, allowlist matching (pure)."""
from __future__ import annotations

import ipaddress

import pytest

from stcloud.web import netfilter as nf

SEED_RANGES = nf.parse_networks(["34.82.0.0/16", "35.185.0.0/16"])
LOCAL_PROXY = nf.parse_networks(["127.0.0.1/32"])


def ip(s):
    return ipaddress.ip_address(s)


@pytest.mark.parametrize("addr,allowed", [
    ("34.82.1.2", True), ("34.82.255.255", True), ("35.185.0.1", True),
    ("34.83.0.1", False), ("35.186.0.1", False), ("10.0.0.1", False), ("2001:db8::1", False),
])
def test_seed_ranges(addr, allowed):
    assert nf.is_allowed(ip(addr), SEED_RANGES) is allowed


def test_empty_allowlist_allows_all_and_unknown_client_is_refused():
    assert nf.is_allowed(ip("203.0.113.9"), ())
    assert not nf.is_allowed(None, SEED_RANGES)


def test_ipv6_and_single_addresses():
    nets = nf.parse_networks(["2001:db8:abcd::/48", "198.51.100.7", "::1"])
    assert nf.is_allowed(ip("2001:db8:abcd:12::5"), nets)
    assert not nf.is_allowed(ip("2001:db8:abce::1"), nets)
    assert nf.is_allowed(ip("198.51.100.7"), nets)
    assert not nf.is_allowed(ip("198.51.100.8"), nets)
    assert nf.is_allowed(ip("::1"), nets)


@pytest.mark.parametrize("raw,expected", [
    ("34.82.1.2", "34.82.1.2"), ("34.82.1.2:5555", "34.82.1.2"), ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"), ("fe80::1%eth0", "fe80::1"), ("::ffff:34.82.1.2", "34.82.1.2"),
    (' "34.82.1.2" ', "34.82.1.2"), ("unknown", None), ("", None), (None, None), ("[::1", None),
])
def test_parse_address(raw, expected):
    got = nf.parse_address(raw)
    assert (str(got) if got else None) == expected


def test_bad_network_names_the_entry():
    with pytest.raises(ValueError, match="nope"):
        nf.parse_networks(["10.0.0.0/8", "nope"])


def test_peer_is_the_client_without_trusted_proxies():
    # a forged X-Forwarded-For from a direct (untrusted) peer is ignored
    assert str(nf.client_address("203.0.113.9", ["34.82.1.2"], ())) == "203.0.113.9"
    assert str(nf.client_address("203.0.113.9", ["34.82.1.2"], LOCAL_PROXY)) == "203.0.113.9"


def test_trusted_proxy_xff_read_right_to_left():
    # nginx on the same host appends Replicate's address to whatever the client sent
    assert str(nf.client_address("127.0.0.1", ["34.82.1.2"], LOCAL_PROXY)) == "34.82.1.2"
    # the attacker prepended a Replicate address; the proxy appended the real one
    assert str(nf.client_address("127.0.0.1", ["34.82.1.2, 203.0.113.9"], LOCAL_PROXY)) == "203.0.113.9"


def test_chain_of_trusted_proxies_is_skipped():
    trusted = nf.parse_networks(["127.0.0.1/32", "10.0.0.0/8"])
    # client -> CDN edge (10.1.1.1, trusted) -> nginx (127.0.0.1) -> us
    assert str(nf.client_address("127.0.0.1", ["1.1.1.1, 34.82.9.9, 10.1.1.1"], trusted)) == "34.82.9.9"
    # several header lines are one list, in order
    assert str(nf.client_address("127.0.0.1", ["1.1.1.1, 34.82.9.9", "10.1.1.1"], trusted)) == "34.82.9.9"
    # everything trusted: the leftmost hop is the client
    assert str(nf.client_address("127.0.0.1", ["10.2.2.2, 10.1.1.1"], trusted)) == "10.2.2.2"


def test_trusted_proxy_without_xff_is_the_client():
    assert str(nf.client_address("127.0.0.1", [], LOCAL_PROXY)) == "127.0.0.1"
    assert str(nf.client_address("127.0.0.1", None, LOCAL_PROXY)) == "127.0.0.1"


def test_garbage_hop_written_by_our_side_is_not_guessed():
    assert nf.client_address("127.0.0.1", ["34.82.1.2, garbage"], LOCAL_PROXY) is None
    # garbage left of the first untrusted hop is never read
    assert str(nf.client_address("127.0.0.1", ["garbage, 34.82.1.2"], LOCAL_PROXY)) == "34.82.1.2"


def test_ipv6_proxy_and_client():
    trusted = nf.parse_networks(["::1/128", "fd00::/8"])
    assert str(nf.client_address("::1", ["2001:db8::7, fd00::2"], trusted)) == "2001:db8::7"
    assert str(nf.client_address("::ffff:127.0.0.1", ["34.82.1.2"], LOCAL_PROXY)) == "34.82.1.2"
