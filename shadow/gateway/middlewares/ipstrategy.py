"""Traefik's client-IP strategies and IP checker (pkg/ip: strategy.go, checker.go) and the source
criterion shared by rateLimit and inFlightReq (pkg/middlewares/extractor.go)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from shadow.gateway.middlewares.request import MiddlewareRequest, first_header

__all__ = ["IPChecker", "IPStrategy", "SourceCriterion", "parse_ip"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IPAddress | None:
    """An IP address (an IPv4-mapped IPv6 address as its IPv4 form, as Go's net.IP compares), or None."""
    text = text.strip().split("%", 1)[0]  # an IPv6 zone does not take part (Go's As16 drops it)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True, slots=True)
class IPChecker:
    """Go's ip.Checker: addresses and CIDR ranges. Build with `IPChecker.parse`."""

    addresses: tuple[IPAddress, ...]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> IPChecker:
        """ValueError naming the entry that is neither an IP nor a CIDR range."""
        if not entries:
            raise ValueError("no trusted IPs provided")
        addresses: list[IPAddress] = []
        networks: list[IPNetwork] = []
        for entry in entries:
            addr = parse_ip(entry)
            if addr is not None and entry.strip() == entry:
                addresses.append(addr)
                continue
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
            if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
                mapped = network.network_address.ipv4_mapped
                if mapped is not None:
                    network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}", strict=False)
            networks.append(network)
        return cls(tuple(addresses), tuple(networks))

    def contains(self, text: str) -> bool:
        """Go's Checker.Contains; an empty or unparsable address is not contained."""
        addr = parse_ip(text)
        if addr is None:
            return False
        return addr in self.addresses or any(addr.version == n.version and addr in n for n in self.networks)

    def is_authorized(self, addr: str) -> bool:
        """Go's Checker.IsAuthorized: `addr` may carry a port ("1.2.3.4:80", "[::1]:80")."""
        host = addr
        if addr.startswith("["):
            host = addr[1:].split("]", 1)[0]
        elif addr.count(":") == 1:
            host = addr.split(":", 1)[0]
        return self.contains(host)


def _ipv6_subnet(ip: str, bits: int | None) -> str:
    """Go's getIPv6SubnetIP: an IPv6 address masked to `bits` (zone dropped); anything else, or an
    invalid prefix length, unchanged."""
    if bits is None:
        return ip
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if not isinstance(addr, ipaddress.IPv6Address):
            return ip
        return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False).network_address)
    except ValueError:
        return ip


@dataclass(frozen=True, slots=True)
class IPStrategy:
    """`ipStrategy`: `depth` (the depth-th address from the right of X-Forwarded-For), else
    `excludedIPs` (the first address from the right not in them), else the socket's address;
    `ipv6Subnet` masks an IPv6 result to that prefix."""

    depth: int = 0
    excluded: IPChecker | None = None
    ipv6_subnet: int | None = None

    def client_ip(self, req: MiddlewareRequest) -> str:
        if self.depth > 0:
            parts = first_header(req.headers, "X-Forwarded-For").split(",")
            if len(parts) < self.depth:
                return ""
            return _ipv6_subnet(parts[len(parts) - self.depth].strip(), self.ipv6_subnet)
        if self.excluded is not None:
            for part in reversed(first_header(req.headers, "X-Forwarded-For").split(",")):
                candidate = part.strip()
                if candidate and not self.excluded.contains(candidate):
                    return candidate
            return ""
        return _ipv6_subnet(req.remote_ip, self.ipv6_subnet)


@dataclass(frozen=True, slots=True)
class SourceCriterion:
    """`sourceCriterion`: one of `ipStrategy` (the default), `requestHeaderName`, `requestHost`."""

    ip_strategy: IPStrategy | None = None
    request_header_name: str = ""
    request_host: bool = False

    def source(self, req: MiddlewareRequest) -> str:
        if self.request_header_name:
            return first_header(req.headers, self.request_header_name)
        if self.request_host:
            return req.host
        return (self.ip_strategy or IPStrategy()).client_ip(req)
