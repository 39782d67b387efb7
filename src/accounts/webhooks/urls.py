"""Where a webhook may point: the SSRF check, made when a URL is saved and again before each delivery.

A URL is http(s), names a host and no credentials; every address its host resolves to must be public (not
loopback, private, link-local, shared, multicast, reserved or unspecified, an IPv4 address inside IPv6 judged as
the IPv4 address it carries) unless WEBHOOK_ALLOW_PRIVATE_URLS is on. A delivery connects to the very address
that was checked, so a DNS answer that changes between the check and the connection cannot lead it elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from accounts.core.errors import FieldError, InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT = 3.0
"""Seconds a host's DNS lookup may take."""
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeUrl(InvalidInput):
    """400: a webhook URL that is malformed, or leads somewhere webhooks may not go."""

    type = "/problems/unsafe-webhook-url"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[FieldError(field="url", message=detail)])


@dataclass(frozen=True, kw_only=True)
class Target:
    """A webhook URL taken apart: what to connect to and what to say in the request."""

    scheme: str
    host: str
    """The host as DNS and TLS know it: lower case, IDNA-encoded, an IPv6 address without brackets."""
    port: int
    path: str
    """The path and query, as sent in the request line."""

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = {"http": 80, "https": 443}[self.scheme]
        return host if self.port == default else f"{host}:{self.port}"

    def url_at(self, address: IPAddress) -> str:
        """The URL with `address` in place of the host: what a delivery connects to."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse(url: str) -> Target:
    """Take a webhook URL apart, refusing what no delivery may use (UnsafeUrl)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or an unclosed IPv6 bracket
        raise UnsafeUrl(f"The URL cannot be read: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("A webhook URL must be http:// or https://.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeUrl("A webhook URL may not hold credentials (user:password@).")
    if parts.fragment:
        raise UnsafeUrl("A webhook URL may not have a fragment (#...).")
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise UnsafeUrl("A webhook URL may not contain spaces or control characters.")
    host = _host(parts)
    return Target(
        scheme=scheme,
        host=host,
        port=port if port is not None else {"http": 80, "https": 443}[scheme],
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


def _host(parts: SplitResult) -> str:
    hostname = (parts.hostname or "").rstrip(".")
    if not hostname:
        raise UnsafeUrl("A webhook URL must name a host.")
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:
        encoded = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeUrl("The URL's host is not a valid host name.") from None
    if len(encoded) > 253 or not all(0 < len(label) <= 63 for label in encoded.split(".")):
        raise UnsafeUrl("The URL's host is not a valid host name.")
    return encoded


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not be delivered to `address` (None: it is public). An IPv4 address carried in IPv6
    (mapped, NAT64, 6to4) is judged as that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal(embedded)
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


async def resolve(target: Target) -> list[IPAddress]:
    """Every address the target's host resolves to (an address literal is its own), in the resolver's order."""
    try:
        return [ipaddress.ip_address(target.host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        raise UnsafeUrl(f"The host {target.host} does not resolve.") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UnsafeUrl(f"The host {target.host} does not resolve.")
    return found


async def check(url: str, *, allow_private: bool) -> tuple[Target, IPAddress]:
    """The URL taken apart and the address to deliver to, once every address its host resolves to is allowed;
    UnsafeUrl otherwise (one refused address refuses the URL: the resolver may hand out any of them)."""
    target = parse(url)
    addresses = await resolve(target)
    if not allow_private:
        for address in addresses:
            if (reason := refusal(address)) is not None:
                raise UnsafeUrl(f"Webhooks may not point at {target.host}: {reason}.")
    return target, addresses[0]
