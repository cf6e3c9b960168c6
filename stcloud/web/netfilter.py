"""Who sent this request, and may they? Pure: no Flask, no database.

The client address is the socket peer. Only when the peer is a trusted proxy is
``X-Forwarded-For`` consulted, and then right to left: each trusted proxy appends the
address it received the connection from, so the rightmost entries are the ones our own
proxies wrote. Walking left, the first address that is not a trusted proxy is the client.
Entries further left were written by the client (or anything before it) and can be forged,
so they are never read. A peer that is not trusted gets its ``X-Forwarded-For`` ignored.
"""
from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """IPs and CIDRs (v4 and v6) -> networks. Raises ValueError naming a bad entry."""
    out = []
    for value in values or ():
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return tuple(out)


@functools.lru_cache(maxsize=1024)  # pure; a webhook or a proxied request parses the same few peers
def parse_address(value: str | None) -> IPAddress | None:
    """An address from a socket peer or an ``X-Forwarded-For`` entry; None if unparsable.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]:443`` and
    ``fe80::1%eth0``. IPv4-mapped IPv6 (``::ffff:1.2.3.4``, what a dual-stack socket
    reports for IPv4 clients) becomes the IPv4 address, so v4 allowlists still match.
    """
    if not value:
        return None
    text = value.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]  # zone id: not part of the address for matching
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _in_any(addr: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def split_forwarded_for(values: Iterable[str] | str | None) -> list[str]:
    """All ``X-Forwarded-For`` header lines, in order, as one list of entries."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [part.strip() for line in values for part in line.split(",") if part.strip()]


def client_address(peer: str | None, forwarded_for: Iterable[str] | str | None,
                   trusted_proxies: Sequence[IPNetwork]) -> IPAddress | None:
    """The client's address, or None when it cannot be determined (then refuse it).

    ``forwarded_for`` is the list of ``X-Forwarded-For`` header values (several lines are
    joined in order). ``trusted_proxies`` are networks from :func:`parse_networks`.
    """
    current = parse_address(peer)
    if current is None:
        return None
    if not _in_any(current, trusted_proxies):
        return current  # direct connection, or an untrusted peer: its headers mean nothing
    for entry in reversed(split_forwarded_for(forwarded_for)):
        hop = parse_address(entry)
        if hop is None:
            # A trusted proxy should have written an address here. Something is off;
            # do not guess (the peer itself is a proxy, not the client).
            return None
        current = hop
        if not _in_any(current, trusted_proxies):
            return current
    # Every hop was a trusted proxy: the request came from inside (leftmost hop, or the peer).
    return current


def is_allowed(addr: IPAddress | None, allowed: Sequence[IPNetwork]) -> bool:
    """An empty allowlist allows everyone; otherwise the address must be in a network."""
    if not allowed:
        return True
    return addr is not None and _in_any(addr, allowed)
