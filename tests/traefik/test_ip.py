"""Traefik's client-IP strategies, IP checker and ipAllowList tables, ported.

Sources (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
- pkg/ip/strategy_test.go   TestRemoteAddrStrategy_GetIP, TestDepthStrategy_GetIP, TestTrustedIPsStrategy_GetIP
- pkg/ip/checker_test.go    TestIsAuthorized, TestNew, TestContainsIsAllowed, TestContainsBrokenIPs
- pkg/middlewares/ipallowlist/ip_allowlist_test.go  TestNewIPAllowLister, TestIPAllowLister_ServeHTTP
Go's Checker.Contains returns an error for an unparsable address; here it is "not contained"
(in Traefik both mean "not authorized").
"""

from __future__ import annotations

import pytest

from shadow.gateway.middlewares.ipallowlist import IPAllowList
from shadow.gateway.middlewares.ipstrategy import IPChecker, IPStrategy
from shadow.gateway.middlewares.request import LocalAnswer
from tests.traefik.gohttp import new_request

IPV6_BASIC = "::abcd:ffff:c0a8:1"
IPV6_BRACKETS_PORT = "[::abcd:ffff:c0a8:1]:80"
IPV6_BRACKETS_ZONE_PORT = "[::abcd:ffff:c0a8:1%1]:80"

REMOTE_ADDR = [  # (desc, remote addr ("" = Go's default 192.0.2.1:1234), ipv6Subnet, expected)
    ("Use RemoteAddr, ipv4", "", None, "192.0.2.1"),
    ("Use RemoteAddr, ipv6 brackets with port, no IPv6 subnet", IPV6_BRACKETS_PORT, None, "::abcd:ffff:c0a8:1"),
    ("Use RemoteAddr, ipv6 brackets with zone and port, no IPv6 subnet", IPV6_BRACKETS_ZONE_PORT, None,
     "::abcd:ffff:c0a8:1%1"),
    ("Use RemoteAddr, ipv6 basic, missing brackets, no IPv6 subnet", IPV6_BASIC, None, IPV6_BASIC),
    ("Use RemoteAddr, ipv4, ignore subnet", "", 24, "192.0.2.1"),
    ("Use RemoteAddr, ipv6 brackets with port, subnet", IPV6_BRACKETS_PORT, 80, "::abcd:0:0:0"),
    ("Use RemoteAddr, ipv6 brackets with zone and port, subnet", IPV6_BRACKETS_ZONE_PORT, 80, "::abcd:0:0:0"),
    ("Use RemoteAddr, ipv6 brackets with port, invalid subnet", IPV6_BRACKETS_PORT, 500, "::abcd:ffff:c0a8:1"),
]


@pytest.mark.parametrize(("desc", "remote", "subnet", "expected"), REMOTE_ADDR, ids=[c[0] for c in REMOTE_ADDR])
def test_remote_addr_strategy(desc: str, remote: str, subnet: int | None, expected: str) -> None:
    req = new_request("GET", "http://127.0.0.1", remote_addr=remote or "192.0.2.1:1234")
    assert IPStrategy(ipv6_subnet=subnet).client_ip(req) == expected


DEPTH = [  # (desc, depth, X-Forwarded-For, ipv6Subnet, expected)
    ("Use depth", 3, "10.0.0.4,10.0.0.3,10.0.0.2,10.0.0.1", None, "10.0.0.3"),
    ("Use nonexistent depth in XForwardedFor", 2, "", None, ""),
    ("Use depth that match the first IP in XForwardedFor", 2, "10.0.0.2,10.0.0.1", None, "10.0.0.2"),
    ("Use depth with IPv4 subnet", 2, "10.0.0.3,10.0.0.2,10.0.0.1", 80, "10.0.0.2"),
    ("Use depth with IPv6 subnet", 2, "10.0.0.3," + IPV6_BASIC + ",10.0.0.1", 80, "::abcd:0:0:0"),
]


@pytest.mark.parametrize(("desc", "depth", "xff", "subnet", "expected"), DEPTH, ids=[c[0] for c in DEPTH])
def test_depth_strategy(desc: str, depth: int, xff: str, subnet: int | None, expected: str) -> None:
    req = new_request("GET", "http://127.0.0.1", {"X-Forwarded-For": xff})
    assert IPStrategy(depth=depth, ipv6_subnet=subnet).client_ip(req) == expected


TRUSTED = [  # (desc, trusted IPs, X-Forwarded-For, expected)
    ("Trust all IPs", ["10.0.0.4", "10.0.0.3", "10.0.0.2", "10.0.0.1"], "10.0.0.4,10.0.0.3,10.0.0.2,10.0.0.1", ""),
    ("Do not trust all IPs", ["10.0.0.2", "10.0.0.1"], "10.0.0.4,10.0.0.3,10.0.0.2,10.0.0.1", "10.0.0.3"),
    ("Do not trust all IPs with CIDR", ["10.0.0.1/24"], "127.0.0.1,10.0.0.4,10.0.0.3,10.0.0.2,10.0.0.1", "127.0.0.1"),
    ("Trust all IPs with CIDR", ["10.0.0.1/24"], "10.0.0.4,10.0.0.3,10.0.0.2,10.0.0.1", ""),
]


@pytest.mark.parametrize(("desc", "trusted", "xff", "expected"), TRUSTED, ids=[c[0] for c in TRUSTED])
def test_trusted_ips_strategy(desc: str, trusted: list[str], xff: str, expected: str) -> None:
    req = new_request("GET", "http://127.0.0.1", {"X-Forwarded-For": xff})
    assert IPStrategy(excluded=IPChecker.parse(tuple(trusted))).client_ip(req) == expected


IS_AUTHORIZED = [
    ("remoteAddr not in range", ["1.2.3.4/24"], "10.2.3.1:123", False),
    ("remoteAddr in range", ["1.2.3.4/24"], "1.2.3.1:123", True),
    ("octal ip in remoteAddr", ["127.2.3.4/24"], "0127.2.3.1:123", False),
]


@pytest.mark.parametrize(("desc", "allow", "remote", "authorized"), IS_AUTHORIZED, ids=[c[0] for c in IS_AUTHORIZED])
def test_is_authorized(desc: str, allow: list[str], remote: str, authorized: bool) -> None:
    assert IPChecker.parse(tuple(allow)).is_authorized(remote) is authorized


NEW_CHECKER = [  # (desc, trusted IPs, error expected, expected networks)
    ("nil trusted IPs", [], True, []),
    ("trusted IPs containing empty string", ["1.2.3.4/24", "", "fe80::/16"], True, []),
    ("trusted IPs containing only an empty string", [""], True, []),
    ("trusted IPs containing an invalid string", ["foo"], True, []),
    ("IPv4 & IPv6 trusted IPs", ["1.2.3.4/24", "fe80::/16"], False, ["1.2.3.0/24", "fe80::/16"]),
    ("IPv4 only", ["127.0.0.1/8"], False, ["127.0.0.0/8"]),
]


@pytest.mark.parametrize(("desc", "trusted", "error", "networks"), NEW_CHECKER, ids=[c[0] for c in NEW_CHECKER])
def test_new_checker(desc: str, trusted: list[str], error: bool, networks: list[str]) -> None:
    if error:
        with pytest.raises(ValueError):
            IPChecker.parse(tuple(trusted))
        return
    assert [str(n) for n in IPChecker.parse(tuple(trusted)).networks] == networks


CONTAINS = [  # (desc, trusted, pass, reject)
    ("IPv4", ["1.2.3.4/24"], ["1.2.3.1", "1.2.3.32", "1.2.3.156", "1.2.3.255"],
     ["1.2.16.1", "1.2.32.1", "127.0.0.1", "8.8.8.8"]),
    ("IPv4 single IP", ["8.8.8.8"], ["8.8.8.8"], ["8.8.8.7", "8.8.8.9", "8.8.8.0", "8.8.8.255", "4.4.4.4", "127.0.0.1"]),
    ("IPv4 Net single IP", ["8.8.8.8/32"], ["8.8.8.8"],
     ["8.8.8.7", "8.8.8.9", "8.8.8.0", "8.8.8.255", "4.4.4.4", "127.0.0.1"]),
    ("multiple IPv4", ["1.2.3.4/24", "8.8.8.8/8"],
     ["1.2.3.1", "1.2.3.32", "1.2.3.156", "1.2.3.255", "8.8.4.4", "8.0.0.1", "8.32.42.128", "8.255.255.255"],
     ["1.2.16.1", "1.2.32.1", "127.0.0.1", "4.4.4.4", "4.8.8.8"]),
    ("IPv6", ["2a03:4000:6:d080::/64"],
     ["2a03:4000:6:d080::", "2a03:4000:6:d080::1", "2a03:4000:6:d080:dead:beef:ffff:ffff", "2a03:4000:6:d080::42"],
     ["2a03:4000:7:d080::", "2a03:4000:7:d080::1", "fe80::", "4242::1"]),
    ("IPv6 single IP", ["2a03:4000:6:d080::42/128"], ["2a03:4000:6:d080::42"],
     ["2a03:4000:6:d080::1", "2a03:4000:6:d080:dead:beef:ffff:ffff", "2a03:4000:6:d080::43"]),
    ("multiple IPv6", ["2a03:4000:6:d080::/64", "fe80::/16"],
     ["2a03:4000:6:d080::", "2a03:4000:6:d080::1", "2a03:4000:6:d080:dead:beef:ffff:ffff", "2a03:4000:6:d080::42",
      "fe80::1", "fe80:aa00:00bb:4232:ff00:eeee:00ff:1111", "fe80::fe80"],
     ["2a03:4000:7:d080::", "2a03:4000:7:d080::1", "4242::1"]),
    ("multiple IPv6 & IPv4", ["2a03:4000:6:d080::/64", "fe80::/16", "1.2.3.4/24", "8.8.8.8/8"],
     ["2a03:4000:6:d080::", "2a03:4000:6:d080::1", "2a03:4000:6:d080:dead:beef:ffff:ffff", "2a03:4000:6:d080::42",
      "fe80::1", "fe80:aa00:00bb:4232:ff00:eeee:00ff:1111", "fe80:aa00:00bb:4232:ff00:eeee:00ff:1111%vEthernet",
      "fe80::fe80", "1.2.3.1", "1.2.3.32", "1.2.3.156", "1.2.3.255", "8.8.4.4", "8.0.0.1", "8.32.42.128",
      "8.255.255.255"],
     ["2a03:4000:7:d080::", "2a03:4000:7:d080::1", "2a03:4000:7:d080::1%vmnet1", "4242::1", "1.2.16.1", "1.2.32.1",
      "127.0.0.1", "4.4.4.4", "4.8.8.8"]),
    ("broken IP-addresses", ["127.0.0.1/32"], [], []),
]


@pytest.mark.parametrize(("desc", "trusted", "passing", "rejected"), CONTAINS, ids=[c[0] for c in CONTAINS])
def test_contains_is_allowed(desc: str, trusted: list[str], passing: list[str], rejected: list[str]) -> None:
    checker = IPChecker.parse(tuple(trusted))
    for ip in passing:
        assert checker.contains(ip), ip
    for ip in rejected:
        assert not checker.contains(ip), ip


def test_contains_broken_ips() -> None:
    checker = IPChecker.parse(("1.2.3.4/24",))
    for ip in ("foo", "10.0.0.350", "fe:::80", "", "\\&$§&/("):
        assert not checker.contains(ip)


def test_new_ip_allow_lister() -> None:
    # "invalid IP": sourceRange ["foo"] is an error; "valid IP" loads; "invalid HTTP status code" 600 is an
    # error — the last one is the loader's check (tests/traefik/test_config.py).
    with pytest.raises(ValueError):
        IPChecker.parse(("foo",))
    assert IPChecker.parse(("10.10.10.10",)).contains("10.10.10.10")


SERVE = [  # (desc, source range, reject status code (0 = default), remote addr, expected)
    ("authorized with remote address", ["20.20.20.20"], 0, "20.20.20.20:1234", 200),
    ("non authorized with remote address", ["20.20.20.20"], 0, "20.20.20.21:1234", 403),
    ("authorized with remote address, reject 404", ["20.20.20.20"], 404, "20.20.20.20:1234", 200),
    ("non authorized with remote address, reject 404", ["20.20.20.20"], 404, "20.20.20.21:1234", 404),
]


@pytest.mark.parametrize(("desc", "source", "reject", "remote", "expected"), SERVE, ids=[c[0] for c in SERVE])
def test_ip_allow_lister_serve_http(desc: str, source: list[str], reject: int, remote: str, expected: int) -> None:
    mw = IPAllowList("traefikTest", IPChecker.parse(tuple(source)), IPStrategy(), reject or 403)
    out = mw.check(new_request("GET", "http://10.10.10.10", remote_addr=remote))
    assert (out.status if isinstance(out, LocalAnswer) else 200) == expected
