"""Egress policy: which URLs and addresses the executor may send a tenant's request to."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Allowed:
    host: str
    port: int
    scheme: str


@dataclass(frozen=True, slots=True)
class Denied:
    reason: str


def _nets(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Everything that is not plain public unicast. Python's is_private/is_global flags changed
# between patch releases (and for IPv4-mapped addresses), so the ranges are spelled out.
_BLOCKED_V4 = _nets(
    "0.0.0.0/8",  # "this network", unspecified
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # CGNAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local (cloud metadata lives here)
    "172.16.0.0/12",  # RFC 1918
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # TEST-NET-1
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",  # RFC 1918
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address
)
# IPv6 global unicast is 2000::/3; everything outside it (loopback, unspecified, ULA
# fc00::/7, link-local fe80::/10, site-local, multicast ff00::/8, discard 100::/64, local NAT64
# 64:ff9b:1::/48, SRv6 5f00::/16...) is refused, except the forms that embed an IPv4 address,
# which are judged by that address.
_GLOBAL_V6 = ipaddress.IPv6Network("2000::/3")
_BLOCKED_V6 = _nets(
    "2001::/23",  # IETF protocol assignments: Teredo, benchmarking 2001:2::/48, ORCHID
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation (RFC 9637)
)
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")


def parse_allowlist(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) that open otherwise refused ranges; ValueError if malformed."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def parse_address(text: str) -> Address | None:
    """An IP address from a resolver or URL host (zone id dropped), or None if it is not one."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a v6 address stands for: mapped, compatible, 6to4 or NAT64 forms."""
    if ip in _MAPPED:
        return ip.ipv4_mapped
    if ip in _SIXTOFOUR:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _listed(ip: Address, allowlist: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in allowlist)


def check_address(ip: Address, allowlist: Sequence[Network] = ()) -> bool:
    """True when a connection to `ip` is allowed: a public unicast address, or one the
    operator opened with the allowlist."""
    if _listed(ip, allowlist):
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in _BLOCKED_V4)
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        return check_address(embedded, allowlist)
    if ip not in _GLOBAL_V6:
        return False
    return not any(ip in net for net in _BLOCKED_V6)


def _looks_numeric_v4(host: str) -> bool:
    # What socket.inet_aton would take as an address: 2130706433, 0x7f.1, 0177.0.0.1, 127.1.
    parts = host.split(".")
    return all(p and (p.isdigit() or p.lower().startswith("0x")) for p in parts)


def check_url(url: str) -> Allowed | Denied:
    """Whether a URL is one the executor may try at all: http(s), a host, a valid port.

    Addresses are judged later, after resolution (check_address); an IP literal here is only
    refused when it is not in canonical form, since resolvers read legacy forms inconsistently.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return Denied(f"malformed url: {e}")
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        return Denied(f"scheme {scheme or '(none)'!r} not allowed")
    host = parts.hostname
    if not host:
        return Denied("url has no host")
    if ":" in host:
        if parse_address(host) is None:
            return Denied("malformed IPv6 literal")
    elif _looks_numeric_v4(host.rstrip(".")):
        literal = parse_address(host)
        if literal is None or str(literal) != host:
            return Denied("non-canonical IPv4 literal")
    if port == 0:
        return Denied("port 0 not allowed")
    return Allowed(host=host, port=port or ALLOWED_SCHEMES[scheme], scheme=scheme)
