"""The egress policy as a function over address values and URLs: nothing is sent anywhere."""

from __future__ import annotations

import ipaddress

import pytest

from executor.domain.egress import (
    Allowed,
    Denied,
    check_address,
    check_url,
    embedded_ipv4,
    parse_address,
    parse_allowlist,
)

REFUSED = [
    # IPv4: unspecified, RFC 1918, CGNAT, loopback, link-local/metadata, special-purpose
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6: unspecified, loopback, ULA, link-local (with zone), site-local, multicast, ...
    "::",
    "::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "fe80::1",
    "fe80::1%eth0",
    "febf::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "100::1",
    "64:ff9b:1::1",
    "5f00::1",
    "2001::1",  # Teredo
    "2001:2::1",  # benchmarking
    "2001:db8::1",
    "3fff::1",
    "4000::1",  # outside 2000::/3: not assigned as global unicast
    # IPv4 addresses embedded in IPv6: mapped, compatible, 6to4, NAT64
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:7f00:1",
    "::127.0.0.1",
    "::10.0.0.1",
    "::0.0.0.2",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "2002:c0a8:101::",
    "64:ff9b::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "::ffff:0:127.0.0.1",  # SIIT translated form
]

ALLOWED = [
    "1.1.1.1",
    "8.8.8.8",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "192.169.0.1",
    "198.20.0.1",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "::8.8.8.8",
    "2002:808:808::1",
    "64:ff9b::8.8.8.8",
]


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = parse_address(text)
    assert address is not None, text
    return address


@pytest.mark.parametrize("address", REFUSED)
def test_special_addresses_are_refused(address: str) -> None:
    assert check_address(ip(address)) is False


@pytest.mark.parametrize("address", ALLOWED)
def test_public_unicast_is_allowed(address: str) -> None:
    assert check_address(ip(address)) is True


def test_allowlist_opens_exactly_its_ranges() -> None:
    allow = parse_allowlist(["127.0.0.0/8", "::1/128", "10.1.0.0/16"])
    assert check_address(ip("127.0.0.1"), allow)
    assert check_address(ip("127.9.9.9"), allow)
    assert check_address(ip("::1"), allow)
    assert check_address(ip("10.1.2.3"), allow)
    assert not check_address(ip("10.2.0.1"), allow)
    assert not check_address(ip("169.254.169.254"), allow)
    assert not check_address(ip("fe80::1"), allow)
    assert not check_address(ip("::2"), allow)


def test_allowlisted_ipv4_also_opens_its_embedded_forms() -> None:
    allow = parse_allowlist(["127.0.0.0/8"])
    assert check_address(ip("::ffff:127.0.0.1"), allow)
    assert check_address(ip("64:ff9b::127.0.0.1"), allow)
    assert not check_address(ip("::ffff:10.0.0.1"), allow)


def test_an_ipv6_allowlist_entry_does_not_open_ipv4() -> None:
    allow = parse_allowlist(["::/0"])
    assert check_address(ip("fe80::1"), allow)
    assert not check_address(ip("127.0.0.1"), allow)


def test_allowlist_parsing() -> None:
    assert parse_allowlist([" 127.0.0.1 ", "", "10.0.0.0/8"]) == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert parse_allowlist(["10.0.0.1/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError):
        parse_allowlist(["not-a-cidr"])


@pytest.mark.parametrize(
    ("v6", "v4"),
    [
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::1.2.3.4", "1.2.3.4"),
        ("2002:102:304::1", "1.2.3.4"),
        ("64:ff9b::1.2.3.4", "1.2.3.4"),
    ],
)
def test_embedded_ipv4_forms(v6: str, v4: str) -> None:
    assert embedded_ipv4(ipaddress.IPv6Address(v6)) == ipaddress.IPv4Address(v4)


@pytest.mark.parametrize("v6", ["::", "::1", "2001:db8::1", "fe80::1"])
def test_no_embedded_ipv4(v6: str) -> None:
    assert embedded_ipv4(ipaddress.IPv6Address(v6)) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/x", Allowed("example.com", 80, "http")),
        ("https://example.com/x", Allowed("example.com", 443, "https")),
        ("HTTPS://Example.COM:8443/x?y=1", Allowed("example.com", 8443, "https")),
        ("http://user:pw@example.com/", Allowed("example.com", 80, "http")),
        ("http://127.0.0.1:8080/", Allowed("127.0.0.1", 8080, "http")),
        ("http://[::1]:8080/", Allowed("::1", 8080, "http")),
    ],
)
def test_urls_the_executor_may_try(url: str, expected: Allowed) -> None:
    assert check_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "gopher://example.com:70/",
        "javascript:alert(1)",
        "example.com/path",
        "http:///path",
        "http://",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://example.com:abc/",
        "http://[::1/",
        "http://[not-an-ip]/",
        # legacy numeric IPv4 forms that resolvers read as 127.0.0.1
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://127.000.000.001/",
    ],
)
def test_urls_refused_before_any_lookup(url: str) -> None:
    assert isinstance(check_url(url), Denied)
